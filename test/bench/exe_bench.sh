#!/usr/bin/env bash
# exe_bench.sh [CODEC_BENCH [OLD_CODEC_BENCH]] -- single executables: our bsdiff codec against
# bsdiff 4.3, xdelta3 and zstd --patch-from, all in the same run.
#
# Pairs: esbuild's Go binary (npm @esbuild/linux-x64, package/bin/esbuild)
# 0.20.0 -> 0.20.1 -> 0.20.2, fetched once with `npm pack` into
# $D4C_EXTRA_CORPUS (default /var/cache/d4c-corpus-extra; network needed only
# then), and biome's Rust binary 1.9.2 -> 1.9.3 from the corpus
# ($D4C_CORPUS, default /var/cache/d4c-corpus). Prints a markdown table of
# patch bytes and encode wall seconds; every patch is applied and compared.
# CODEC_BENCH defaults to build/test/codec_bench; OLD_CODEC_BENCH (a build
# before a codec change) adds a column; THREADS (default 2) is their thread
# count. Needs bsdiff, bspatch, xdelta3, zstd, npm (first run), bc.
set -euo pipefail
bench=$(realpath "${1:-build/test/codec_bench}")
old=${2:+$(realpath "$2")}
extra=${D4C_EXTRA_CORPUS:-/var/cache/d4c-corpus-extra}
corpus=${D4C_CORPUS:-/var/cache/d4c-corpus}
threads=${THREADS:-2}
work=$(mktemp -d "${D4C_BENCH_TMP:-/var/tmp}/d4c-exe-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

esbuild() {  # path of esbuild VERSION's binary, fetched if missing
  local dir=$extra/esbuild/$1
  if [[ ! -f $dir/package/bin/esbuild ]]; then
    mkdir -p "$dir"
    (cd "$dir" && npm pack --silent "@esbuild/linux-x64@$1" >/dev/null && tar xzf esbuild-linux-x64-"$1".tgz)
  fi
  echo "$dir/package/bin/esbuild"
}
biome() { echo "$corpus/biome/rootfs/$1/rootfs/app/node_modules/@biomejs/cli-linux-x64/biome"; }

pairs=("esbuild 0.20.0->0.20.1|$(esbuild 0.20.0)|$(esbuild 0.20.1)"
       "esbuild 0.20.1->0.20.2|$(esbuild 0.20.1)|$(esbuild 0.20.2)"
       "biome 1.9.2->1.9.3|$(biome 1.9.2)|$(biome 1.9.3)")

now() { date +%s.%N; }
# cell OUT COMMAND...: runs the encoder COMMAND, prints "bytes / wall seconds" of OUT
cell() {
  local out=$1 start end; shift
  start=$(now); "$@" >/dev/null 2>&1 || { echo "failed"; return; }; end=$(now)
  printf '%s B / %.1f s' "$(stat -c %s "$out")" "$(echo "$end - $start" | bc)"
}
same() { cmp -s "$1" "$2" || echo " ✗"; }

ours() {  # CODEC_BENCH A B: "bytes / encode seconds" of our bsdiff codec
  { "$1" bsdiff "$2" "$3" "$threads" || true; } |
    sed -n 's/.*bytes=\([0-9]*\) encode_s=\([0-9.]*\).*roundtrip=\(.*\)/\1 B \/ \2 s \3/p' | sed 's/ ok$//'
}

echo "| pair |${old:+ ours bsdiff before |} ours bsdiff ($threads threads) | bsdiff 4.3 | xdelta3 -9 -S djw | zstd -19 --long --patch-from |"
echo "|---|${old:+---:|}---:|---:|---:|---:|"
for p in "${pairs[@]}"; do
  IFS='|' read -r name a b <<<"$p"
  c_old=${old:+$(ours "$old" "$a" "$b") |}
  c_ours=$(ours "$bench" "$a" "$b")
  c_bsdiff="$(cell "$work/p.bsdiff" bsdiff "$a" "$b" "$work/p.bsdiff")"
  bspatch "$a" "$work/out" "$work/p.bsdiff" && c_bsdiff+=$(same "$work/out" "$b")
  c_xd="$(cell "$work/p.vcdiff" xdelta3 -f -e -9 -S djw -B $((1 << 30)) -s "$a" "$b" "$work/p.vcdiff")"
  xdelta3 -f -d -s "$a" "$work/p.vcdiff" "$work/out" && c_xd+=$(same "$work/out" "$b")
  c_zstd="$(cell "$work/p.zst" zstd -q -f -19 --long=31 --patch-from="$a" "$b" -o "$work/p.zst")"
  zstd -q -f -d --long=31 --patch-from="$a" "$work/p.zst" -o "$work/out" && c_zstd+=$(same "$work/out" "$b")
  echo "| $name |${c_old:+ $c_old} $c_ours | $c_bsdiff | $c_xd | $c_zstd |"
done
