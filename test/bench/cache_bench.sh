#!/usr/bin/env bash
# cache_bench.sh -- the di3fs content cache under eviction pressure: 16
# concurrent readers over a delta chain with a small budget, for two di3fs
# binaries in the same run (an older build and this one), as markdown on stdout.
#   part 1: one mount, 16 readers (each reads every file, in its own order)
#   part 2: two mounts (two images) with one cache root, 8 readers each: with a
#           per-image budget (the old binary, one --cache-size per daemon) the
#           node holds up to 2 x the budget; with one root, the budget is shared
# Per row: peak bytes of the cache directory (content + temporary files,
# sampled every ~20 ms), rebuilds per distinct file (the daemons' "N rebuilt"
# exit line / files), wall time of the readers, and whether every reader got
# the same bytes as a reference mount with an unbounded cache.
#
# Usage: cache_bench.sh [BUILD_DIR]   (root, /dev/fuse)
# Environment:
#   DI3FS_OLD     di3fs to compare with (e.g. a build of main); unset: only BUILD_DIR's
#   DI3FS_NEW     default BUILD_DIR/fs/di3fs
#   BUDGET        cache budget, bytes (default 1048576)
#   READERS       concurrent readers (default 16)
#   CHAIN         "TOP BASE..." cdimg chain to serve; default: typescript
#                 5.4.2 -> 5.4.3 -> 5.4.4 built with BUILD_DIR's ctr-cli from
#                 the corpus, cached in ${D4C_WORK:-/var/cache/d4c-work}/cache-bench
#   CHAIN2        a second image for part 2 (default: the typescript 5.4.2 full)
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$src/build}
DI3FS_NEW=${DI3FS_NEW:-$build/fs/di3fs}
DI3FS_OLD=${DI3FS_OLD:-}
CLI=$build/ctr-cli/ctr-cli
BUDGET=${BUDGET:-1048576}
READERS=${READERS:-16}
corpus=${D4C_CORPUS:-/var/cache/d4c-corpus}
work=${D4C_WORK:-/var/cache/d4c-work}/cache-bench
tmp=$(mktemp -d /var/tmp/d4c-bench-cache.XXXXXX)
MOUNTS=()
PIDS=()
cleanup() {
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    mountpoint -q "${MOUNTS[i]}" 2>/dev/null && umount -l "${MOUNTS[i]}" 2>/dev/null
  done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'log "failed (status $?) at line $LINENO"' ERR
log() { printf '[cache-bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}'; }

# ---- the chain -------------------------------------------------------------------------
if [[ -n ${CHAIN:-} ]]; then
  read -r -a chain <<<"$CHAIN"
else
  mkdir -p "$work"
  conv() {
    [[ -f $work/$1/image.cdimg ]] || "$CLI" convert --image "oci:$corpus/typescript/oci:$1" --output "$work/$1" --cdimg >/dev/null
    echo "$work/$1/image.cdimg"
  }
  a=$(conv 5.4.2) b=$(conv 5.4.3) c=$(conv 5.4.4)
  [[ -f $work/d1.cdimg ]] || "$CLI" cdimg diff --oldCdimg "$a" --newCdimg "$b" --outCdimg "$work/d1.cdimg" >/dev/null
  [[ -f $work/d2.cdimg ]] || "$CLI" cdimg diff --oldCdimg "$b" --newCdimg "$c" --outCdimg "$work/d2.cdimg" >/dev/null
  chain=("$work/d2.cdimg" "$work/d1.cdimg" "$a")
fi
chain2=${CHAIN2:-${chain[-1]}}
chain_args=(--cdimg "${chain[0]}")
for b in "${chain[@]:1}"; do chain_args+=(--base "$b"); done

# mount BIN MP LOG ARGS...: sets LAST_PID
mount_di3fs() {
  local bin=$1 mp=$2 logf=$3
  shift 3
  mkdir -p "$mp"
  "$bin" "$@" "$mp" 2>"$logf" &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
  MOUNTS+=("$mp")
  until mountpoint -q "$mp"; do
    kill -0 "$LAST_PID" 2>/dev/null || { cat "$logf" >&2; return 1; }
    sleep 0.01
  done
}
unmount() { umount "$1"; wait "$2" 2>/dev/null || true; }
# bytes of content and temporary files under a cache dir (not .lock/.ledger/.budget)
cache_bytes() {
  find "$1" -type f \( -name '.tmp.*' -o ! -name '.*' \) -printf '%s\n' 2>/dev/null | awk '{s+=$1} END{printf "%d\n", s}'
}
# sample DIR OUT: peak of cache_bytes until OUT.stop exists
sample() {
  local peak=0 b
  while [[ ! -e $2.stop ]]; do
    b=$(cache_bytes "$1")
    if ((b > peak)); then peak=$b; fi
    sleep 0.02
  done
  echo "$peak" >"$2"
}
# readers MP N OUTDIR: N readers, each sha256s every regular file in its own
# shuffled order; writes OUTDIR/r<k>.sum (sorted)
readers() {
  local mp=$1 n=$2 out=$3 k pids=()
  mkdir -p "$out"
  (cd "$mp" && find . -type f) >"$out/files"
  for ((k = 0; k < n; k++)); do
    (cd "$mp" && shuf --random-source=<(yes "$k") "$out/files" | tr '\n' '\0' | xargs -0 sha256sum | sort -k2 >"$out/r$k.sum") &
    pids+=($!)
  done
  wait "${pids[@]}"  # not a bare wait: the di3fs daemons are children too
}
rebuilt() { sed -n 's/.*cache: \([0-9]*\) rebuilt.*/\1/p' "$1" | awk '{s+=$1} END{print s+0}'; }

# reference sums from an unbounded mount
log "reference: ${chain[0]} (chain of ${#chain[@]})"
mount_di3fs "$DI3FS_NEW" "$tmp/ref" "$tmp/ref.log" "${chain_args[@]}" --cache-dir "$tmp/ref-cache" --cache-size 64G
readers "$tmp/ref" 1 "$tmp/ref-out"
files=$(wc -l <"$tmp/ref-out/files")
unmount "$tmp/ref" "$LAST_PID"
log "$files files"

bins=()
[[ -n $DI3FS_OLD ]] && bins+=("before:$DI3FS_OLD")
bins+=("after:$DI3FS_NEW")

echo "## di3fs content cache: $READERS readers, budget $BUDGET bytes ($(date -u +%F), $(nproc) cores, $(uname -r))"
echo
echo "Chain: ${chain[*]##*/} ($files files). Peak = sampled bytes of the cache directory (content + temporary files)."
echo
echo "| binary | mounts | peak cache bytes | peak / budget | rebuilds per file | uncached | readers' time (s) | bytes correct |"
echo "|---|---|---:|---:|---:|---:|---:|---|"
for entry in "${bins[@]}"; do
  name=${entry%%:*} bin=${entry#*:}
  # part 1: one mount
  run=$tmp/$name-1
  mkdir -p "$run"
  mount_di3fs "$bin" "$run/mnt" "$run/di3fs.log" "${chain_args[@]}" --cache-dir "$run/cache" --cache-size "$BUDGET"
  sample "$run/cache" "$run/peak" &
  sp=$!
  t0=$(now)
  readers "$run/mnt" "$READERS" "$run/out"
  secs=$(since "$t0")
  touch "$run/peak.stop"
  wait "$sp"
  unmount "$run/mnt" "$LAST_PID"
  ok=yes
  for s in "$run"/out/r*.sum; do cmp -s "$s" "$tmp/ref-out/r0.sum" || ok=NO; done
  peak=$(cat "$run/peak")
  rb=$(rebuilt "$run/di3fs.log")
  unc=$(sed -n 's/.*(\([0-9]*\) served uncached).*/\1/p' "$run/di3fs.log")
  echo "| $name | 1 | $peak | $(awk -v p="$peak" -v b="$BUDGET" 'BEGIN{printf "%.2f", p/b}') | $(awk -v r="$rb" -v f="$files" 'BEGIN{printf "%.2f", r/f}') | ${unc:--} | $secs | $ok |"
  log "$name, one mount: peak $peak, $rb rebuilt, ${secs}s"

  # part 2: two images, one cache root (the new layout) or one dir each (the old)
  run=$tmp/$name-2
  mkdir -p "$run"
  if "$bin" --help 2>&1 | grep -- --cache-root >/dev/null; then
    root_args=(--cache-root "$run/cache")
  else
    root_args=()
  fi
  mount_di3fs "$bin" "$run/m1" "$run/d1.log" "${chain_args[@]}" --cache-dir "$run/cache/img1" "${root_args[@]}" --cache-size "$BUDGET"
  p1=$LAST_PID
  mount_di3fs "$bin" "$run/m2" "$run/d2.log" --cdimg "$chain2" --cache-dir "$run/cache/img2" "${root_args[@]}" --cache-size "$BUDGET"
  p2=$LAST_PID
  sample "$run/cache" "$run/peak" &
  sp=$!
  t0=$(now)
  readers "$run/m1" $((READERS / 2)) "$run/out1" &
  r1=$!
  readers "$run/m2" $((READERS / 2)) "$run/out2" &
  r2=$!
  wait "$r1" "$r2"
  secs=$(since "$t0")
  touch "$run/peak.stop"
  wait "$sp"
  unmount "$run/m1" "$p1"
  unmount "$run/m2" "$p2"
  ok=yes
  for s in "$run"/out1/r*.sum; do cmp -s "$s" "$tmp/ref-out/r0.sum" || ok=NO; done
  peak=$(cat "$run/peak")
  rb=$(($(rebuilt "$run/d1.log") + $(rebuilt "$run/d2.log")))
  files2=$((files + $(wc -l <"$run/out2/files")))
  unc=$(cat "$run/d1.log" "$run/d2.log" | sed -n 's/.*(\([0-9]*\) served uncached).*/\1/p' | awk '{s+=$1} END{print s+0}')
  [[ ${root_args[*]:-} ]] || unc=-
  echo "| $name | 2 | $peak | $(awk -v p="$peak" -v b="$BUDGET" 'BEGIN{printf "%.2f", p/b}') | $(awk -v r="$rb" -v f="$files2" 'BEGIN{printf "%.2f", r/f}') | $unc | $secs | $ok |"
  log "$name, two mounts: peak $peak, $rb rebuilt, ${secs}s"
done
