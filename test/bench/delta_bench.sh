#!/usr/bin/env bash
# delta_bench.sh -- peer comparison of delta updates between consecutive image
# versions of the corpus (scripts/corpus.sh): how many bytes each method moves to
# bring a client from version A to version B, all computed in the same run.
#
#   docker pull          gzip sizes (from the OCI manifest) of B's layers not in A
#   zstd-19 layers       the same layers, uncompressed tar | zstd -19
#   rsync batch          rsync -a -c -H -A -X --delete --only-write-batch, zstd -19
#   casync               casync make A then B into one store: chunks B adds + B.caidx
#   xdelta3 tar          xdelta3 -9 -S djw -D -R -e on deterministic rootfs tars
#   zstd patch-from tar  zstd -19 --long=31 --patch-from=A.tar B.tar
#   per-file bsdiff      D4C's method: per regular file at the same path, bsdiff if
#                        changed, zstd -19 if new, 0 if unchanged (metadata not counted)
#   per-file best-of     same, smallest of bsdiff / xdelta3 / zstd --patch-from per file
#   ours <codec>         ctr-cli cdimg diff --codec zstd|xdelta3|bsdiff|auto: the WHOLE
#                        delta cdimg (index + metadata included); patch verified
#
# Usage: delta_bench.sh [--series NAME]... [--quick] [--no-ours] [--cli PATH]
#                       [--jobs N] [--reconvert] [--keep-tmp]
#   --series NAME  limit to a series (repeatable or comma-separated;
#                  default: every series of the corpus with rootfs/ and oci/)
#   --quick        skip the slowest methods: casync, zstd-19 layers, bsdiff in
#                  the per-file methods for the biome series (30 MB binary; the
#                  per-file best-of there is then over xdelta3/zstd only, marked
#                  †), and our codecs other than auto
#   --no-ours      peers only (do not run ctr-cli)
#   --cli PATH     ctr-cli binary (default $D4C_CLI, else build-bench/ or build/)
#   --jobs N       parallel jobs for the untimed per-file peer (default 2)
#   --reconvert    convert the images again even if a cached cdimg is readable
#   --keep-tmp     keep the scratch directory
# Environment: D4C_CORPUS (default /var/cache/d4c-corpus), D4C_WORK (default
#   /var/cache/d4c-work: cdimg cache in cdimg/<series>/<tag>/image.cdimg, reports
#   in bench/delta-<date>.md), D4C_BENCH_TMP (scratch parent, default /var/tmp),
#   D4C_BENCH_TIMEOUT (seconds per method and pair, default 1800).
# Needs root (root-owned rootfs trees), no network. Report on stdout and in
# $D4C_WORK/bench/delta-<date>.md; progress on stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../.." && pwd)
BENCH_LIB=$here/lib.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$BENCH_LIB"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "delta_bench.sh: $*" >&2; exit 2; }

SERIES=() QUICK=0 OURS=1 CLI=${D4C_CLI:-} BENCH_JOBS=2 KEEP=0 BENCH_RECONVERT=0
while (($#)); do
  case $1 in
    --series) [[ $# -ge 2 ]] || die "--series needs a value"; IFS=, read -ra s <<<"$2"; SERIES+=("${s[@]}"); shift 2 ;;
    --series=*) IFS=, read -ra s <<<"${1#*=}"; SERIES+=("${s[@]}"); shift ;;
    --quick) QUICK=1; shift ;;
    --no-ours) OURS=0; shift ;;
    --cli) [[ $# -ge 2 ]] || die "--cli needs a value"; CLI=$2; shift 2 ;;
    --cli=*) CLI=${1#*=}; shift ;;
    --jobs) [[ $# -ge 2 ]] || die "--jobs needs a value"; BENCH_JOBS=$2; shift 2 ;;
    --jobs=*) BENCH_JOBS=${1#*=}; shift ;;
    --reconvert) BENCH_RECONVERT=1; shift ;;
    --keep-tmp) KEEP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ $BENCH_JOBS =~ ^[1-9][0-9]*$ ]] || die "--jobs: not a positive number: $BENCH_JOBS"

CORPUS=${D4C_CORPUS:-/var/cache/d4c-corpus}
WORK=${D4C_WORK:-/var/cache/d4c-work}
PEER_TIMEOUT=${D4C_BENCH_TIMEOUT:-1800}
[[ $(id -u) -eq 0 ]] || die "must run as root (the rootfs trees have root-only files)"
[[ -d $CORPUS ]] || die "no corpus at $CORPUS (build it: sudo bash scripts/corpus.sh)"
for t in jq tar zstd cmp awk find xargs timeout; do
  command -v "$t" >/dev/null || die "missing required tool: $t"
done
[[ -x /usr/bin/time ]] || echo "delta_bench.sh: /usr/bin/time missing (package 'time'): no peak memory" >&2

if ((${#SERIES[@]} == 0)); then
  for d in "$CORPUS"/*/; do
    d=${d%/}; [[ -f $d/oci/index.json && -d $d/rootfs ]] && SERIES+=("${d##*/}")
  done
  # canonical order first
  mapfile -t SERIES < <(printf '%s\n' "${SERIES[@]}" \
    | awk '{o = ($1=="typescript") ? 1 : ($1=="biome") ? 2 : ($1=="debian") ? 3 : 9; print o "\t" $1}' \
    | sort -k1,1n -k2,2 | cut -f2)
fi
((${#SERIES[@]})) || die "no series found under $CORPUS"

# ctr-cli: explicit, else build-bench/, else build/
if [[ -z $CLI ]]; then
  for c in "$src/build-bench/ctr-cli/ctr-cli" "$src/build/ctr-cli/ctr-cli"; do
    [[ -x $c ]] && { CLI=$c; break; }
  done
fi
OURS_WHY=""
if ((OURS == 0)); then OURS_WHY="--no-ours"
elif [[ -z $CLI || ! -x $CLI ]]; then OURS_WHY="no ctr-cli binary"; OURS=0
elif ! "$CLI" cdimg diff --help >/dev/null 2>&1; then OURS_WHY="ctr-cli has no 'cdimg diff'"; OURS=0
elif ! "$CLI" cdimg patch --help >/dev/null 2>&1; then OURS_WHY="ctr-cli has no 'cdimg patch'"; OURS=0
fi

BENCH_SCRIPT=delta_bench.sh
bench_scratch delta-bench
mkdir -p "$BENCH_TMP/log" "$BENCH_TMP/tar"
export BENCH_TMP BENCH_JOBS BENCH_LIB BENCH_RECONVERT

# ------------------------------------------------------------ result store
declare -A R=()        # R[<pair>.<method>.<field>] = value
FAILS=()               # "pair method: reason"
PAIRS=()               # "series tagA tagB"

# skip KEY REASON : mark a method as not run
skip() { R[$1.skip]=$2; }

# run_peer KEY FUNC ARGS... : run FUNC from lib.sh in a fresh bash with errexit,
# under a timeout; its key=value stdout lines land in R[KEY.*].
run_peer() {
  local key=$1 fn=$2; shift 2
  local out=$BENCH_TMP/log/$key.out err=$BENCH_TMP/log/$key.err rc=0 t0=$SECONDS k v why
  blog "$key ..."
  timeout -k 10 "$PEER_TIMEOUT" bash -c 'set -euo pipefail; source "$BENCH_LIB"; "$@"' _ "$fn" "$@" \
    >"$out" 2>"$err" || rc=$?
  while IFS='=' read -r k v; do [[ -n $k ]] && R[$key.$k]=$v; done <"$out"
  if ((rc)); then
    if ((rc == 124 || rc == 137)); then why="timeout after ${PEER_TIMEOUT}s"
    else why=$(grep -v '^[[:space:]]*$' "$err" | tail -n1 | cut -c1-160); fi
    R[$key.fail]=${why:-exit $rc}
    FAILS+=("$key: exit $rc: ${why:-no message}")
    blog "$key FAILED (exit $rc: ${why:-no message})"
  else
    R[$key.ok]=1
    blog "$key: ${R[$key.bytes]:-} bytes ($((SECONDS - t0)) s)"
  fi
  return 0
}

have() { command -v "$1" >/dev/null 2>&1; }
# release_order SERIES: stdin tags sorted as corpus-stats.tsv lists them
# (version sort for tags it does not list)
release_order() {
  [[ -f $CORPUS/corpus-stats.tsv ]] || { sort -V; return; }
  awk -F'\t' -v s="$1" 'FNR == NR { if ($1 == s) rank[$2] = FNR; next }
                        { printf "%d\t%s\n", ($0 in rank) ? rank[$0] : 1e9, $0 }' \
      "$CORPUS/corpus-stats.tsv" - | sort -t$'\t' -k1,1n -k2,2V | cut -f2
}

# ------------------------------------------------------------ the run
START=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
DATE_HUMAN=$(date '+%F %T %Z')
REPORT_DIR=$WORK/bench
REPORT=$REPORT_DIR/delta-$(date +%F-%H%M%S).md

np=0
for s in "${SERIES[@]}"; do
  sdir=$CORPUS/$s
  [[ -f $sdir/oci/index.json ]] || { FAILS+=("$s: no $sdir/oci/index.json"); continue; }
  # versions: tags of the OCI index that have an unpacked rootfs, in release
  # order (corpus-stats.tsv lists them so; the index order changes when
  # scripts/corpus.sh rebuilds one tag)
  mapfile -t tags < <(jq -r '.manifests[].annotations["org.opencontainers.image.ref.name"] // empty' \
                        "$sdir/oci/index.json" | while read -r t; do
                          [[ -d $sdir/rootfs/$t/rootfs ]] && echo "$t"; done | release_order "$s")
  ((${#tags[@]} >= 2)) || { FAILS+=("$s: fewer than two versions"); continue; }
  blog "series $s: ${tags[*]}"

  # our full images (cached under $WORK/cdimg), converted once per tag
  declare -A CD=()
  if ((OURS)); then
    for t in "${tags[@]}"; do
      run_peer "conv.$s.$t" ours_convert "$CLI" "$sdir/oci" "$t" "$WORK/cdimg/$s/$t"
      [[ -n ${R[conv.$s.$t.ok]:-} ]] && CD[$t]=$WORK/cdimg/$s/$t/image.cdimg
    done
  fi

  for ((i = 1; i < ${#tags[@]}; i++)); do
    a=${tags[i-1]} b=${tags[i]}
    np=$((np + 1)); p=p$np
    PAIRS+=("$s $a $b")
    ptmp=$BENCH_TMP/$p; mkdir -p "$ptmp"
    blog "=== pair $p: $s $a -> $b"

    # deterministic tars (kept for the next pair, where B becomes A)
    for t in "$a" "$b"; do
      tf=$BENCH_TMP/tar/$s-$t.tar
      [[ -f $tf ]] && continue
      if det_tar "$sdir/rootfs/$t/rootfs" "$tf.part"; then mv -f "$tf.part" "$tf"
      else rm -f "$tf.part"; FAILS+=("$p: tar of $s:$t failed"); fi
    done
    for tf in "$BENCH_TMP"/tar/*.tar; do
      [[ $tf == */$s-$a.tar || $tf == */$s-$b.tar ]] || rm -f "$tf"
    done
    at=$BENCH_TMP/tar/$s-$a.tar bt=$BENCH_TMP/tar/$s-$b.tar

    run_peer "$p.docker" peer_docker "$sdir" "$a" "$b" "$ptmp"
    if ((QUICK)); then skip "$p.zlayers" "--quick"
    else run_peer "$p.zlayers" peer_zstd_layers "$sdir" "$a" "$b" "$ptmp"; fi
    if have rsync; then run_peer "$p.rsync" peer_rsync "$sdir" "$a" "$b" "$ptmp"
    else skip "$p.rsync" "no rsync"; fi
    if ((QUICK)); then skip "$p.casync" "--quick"
    elif have casync; then run_peer "$p.casync" peer_casync "$sdir" "$a" "$b" "$ptmp"
    else skip "$p.casync" "no casync"; fi
    if [[ -f $at && -f $bt ]]; then
      if have xdelta3; then run_peer "$p.xdtar" peer_xdelta3_tar "$at" "$bt" "$ptmp"
      else skip "$p.xdtar" "no xdelta3"; fi
      run_peer "$p.zstar" peer_zstd_tar "$at" "$bt" "$ptmp"
    else
      skip "$p.xdtar" "no tar"; skip "$p.zstar" "no tar"
    fi
    nobs=0
    have bsdiff || nobs=1
    ((QUICK)) && [[ $s == biome ]] && nobs=1
    if have xdelta3; then
      export PF_NO_BSDIFF=$nobs
      run_peer "$p.perfile" peer_perfile "$sdir" "$a" "$b" "$ptmp"
      R[$p.perfile.nobsdiff]=$nobs
    else skip "$p.perfile" "no xdelta3"; fi

    for c in zstd xdelta3 bsdiff auto; do
      if ((OURS == 0)); then skip "$p.ours-$c" "$OURS_WHY"
      elif ((QUICK)) && [[ $c != auto ]]; then skip "$p.ours-$c" "--quick"
      elif [[ -z ${CD[$a]:-} || -z ${CD[$b]:-} ]]; then skip "$p.ours-$c" "convert failed"
      else run_peer "$p.ours-$c" ours_codec "$CLI" "${CD[$a]}" "${CD[$b]}" "$c" "$ptmp"
      fi
    done
    rm -rf "$ptmp"
  done
  unset CD
done
rm -rf "$BENCH_TMP/tar"
ELAPSED=$(( $(date +%s) - START ))

# ------------------------------------------------------------ report
commas() { sed -e ':a' -e 's/\([0-9]\)\([0-9]\{3\}\)\($\|[^0-9]\)/\1,\2\3/;ta' <<<"$1"; }
mb() { awk -v k="$1" 'BEGIN{printf "%.0f MB", k/1024}'; }

# val KEY [FIELD] : number, or empty if not available
val() {
  [[ -n ${R[$1.ok]:-} ]] && echo "${R[$1.${2:-bytes}]:-}"
  return 0
}
mname() { [[ -n ${1:-} ]] && echo "${MNAME[$1]:-$1}"; return 0; }
# cell KEY [FIELD] [MARK] : formatted bytes or n/a (reason)
cell() {
  local k=$1 f=${2:-bytes} v
  if [[ -n ${R[$k.skip]:-} ]]; then echo "n/a (${R[$k.skip]})"; return; fi
  if [[ -n ${R[$k.fail]:-} ]]; then echo "n/a (failed)"; return; fi
  v=${R[$k.$f]:-}
  [[ -n $v ]] || { echo "n/a"; return; }
  echo "$(commas "$v")${3:-}"
}
# ratio NUM DEN
ratio() {
  [[ -n $1 && -n $2 && $2 != 0 ]] || { echo "n/a"; return; }
  awk -v a="$1" -v b="$2" 'BEGIN{r=a/b; if (r >= 100) printf "%.0f×", r; else if (r >= 10) printf "%.1f×", r; else printf "%.2f×", r}'
}
# tcell KEY [PREFIX] : "secs s · peak MB"
tcell() {
  local k=$1 pre=${2:-} s m
  if [[ -n ${R[$k.skip]:-} ]]; then echo "n/a"; return; fi
  s=${R[$k.${pre}secs]:-}; m=${R[$k.${pre}kb]:-}
  [[ -n $s ]] || { echo "n/a"; return; }
  if [[ -n $m ]]; then printf '%s s · %s' "$s" "$(mb "$m")"; else printf '%s s' "$s"; fi
}

METHODS=(docker zlayers rsync casync xdtar zstar perfile perfile-best ours-zstd ours-xdelta3 ours-bsdiff ours-auto)
declare -A MNAME=([docker]="docker pull (gzip layers)" [zlayers]="zstd-19 layers" [rsync]="rsync batch (zstd-19)"
  [casync]="casync new chunks + index" [xdtar]="xdelta3 whole tar" [zstar]="zstd patch-from whole tar"
  [perfile]="per-file bsdiff (D4C)" [perfile-best]="per-file best-of" [ours-zstd]="ours zstd"
  [ours-xdelta3]="ours xdelta3" [ours-bsdiff]="ours bsdiff" [ours-auto]="ours auto")
PEERS=(docker zlayers rsync casync xdtar zstar)   # whole-image existing tools

# value and cell of METHOD for pair P
mval() {
  local p=$1 m=$2
  case $m in
    perfile) [[ ${R[$p.perfile.nobsdiff]:-0} == 1 || ${R[$p.perfile.bsmiss]:-0} != 0 ]] && return 0
             val "$p.perfile" bytes ;;
    perfile-best) [[ ${R[$p.perfile.bestmiss]:-0} != 0 ]] && return 0; val "$p.perfile" best ;;
    *) val "$p.$m" bytes ;;
  esac
}
mcell() {
  local p=$1 m=$2
  case $m in
    perfile)
      if [[ -n ${R[$p.perfile.ok]:-} && ${R[$p.perfile.nobsdiff]:-0} == 1 ]]; then
        if ((QUICK)); then echo "n/a (--quick)"; else echo "n/a (no bsdiff)"; fi
      elif [[ -n ${R[$p.perfile.ok]:-} && ${R[$p.perfile.bsmiss]:-0} != 0 ]]; then
        echo "n/a (bsdiff failed on ${R[$p.perfile.bsmiss]} files)"
      else cell "$p.perfile" bytes; fi ;;
    perfile-best)
      local mark=""
      [[ ${R[$p.perfile.nobsdiff]:-0} == 1 ]] && mark=" †"
      cell "$p.perfile" best "$mark" ;;
    ours-*)
      local mark=""
      [[ -n ${R[$p.$m.bytes]:-} && ${R[$p.$m.verified]:-1} == 0 ]] && mark=" ✗"
      if [[ -n ${R[$p.$m.fail]:-} && -n ${R[$p.$m.bytes]:-} ]]; then
        echo "$(commas "${R[$p.$m.bytes]}") ✗"
      else cell "$p.$m" bytes "$mark"; fi ;;
    *) cell "$p.$m" bytes ;;
  esac
}
# best whole-image peer: "bytes method"
bestpeer() {
  local p=$1 m v best="" bm=""
  for m in "${PEERS[@]}"; do
    v=$(mval "$p" "$m"); [[ -n $v ]] || continue
    if [[ -z $best ]] || ((v < best)); then best=$v; bm=$m; fi
  done
  [[ -n $best ]] && echo "$best $bm"
  return 0
}

# reference numbers (bytes, vN -> vN+1): best existing tool / per-file best-of /
# docker pull (MB, pigz -6 layers)
declare -A REF=(
  ["typescript 5.4.2 5.4.3"]="1645 xdtar 2009 5.9"
  ["typescript 5.4.3 5.4.4"]="4050 xdtar 4241 5.9"
  ["typescript 5.4.4 5.4.5"]="625 xdtar 840 5.9"
  ["biome 1.9.2 1.9.3"]="4170557 zstar 4059872 10.7"
  ["biome 1.9.3 1.9.4"]="4586620 zstar 4573134 10.7"
  ["debian v1 v2"]="1028974 zstar 846102 48.7"
)

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
ver() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo "?"; }
cli_rev=$(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo "?")

report() {
  local p s a b m row i
  echo "# Delta-update peer comparison — $DATE_HUMAN"
  echo
  echo "- machine: $(nproc) CPUs ($cpu), $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r)"
  echo "- corpus: $CORPUS; series: ${SERIES[*]}; options:$( ((QUICK)) && echo " --quick")$( ((OURS)) || echo " no ours ($OURS_WHY)") jobs=$BENCH_JOBS"
  echo "- tools: zstd $(ver zstd), xdelta3 $(ver xdelta3), rsync $(ver rsync), casync $(ver casync), bsdiff $(ver bsdiff), tar $(ver tar)"
  echo "- ours: ${CLI:-none} (tree at $cli_rev)"
  echo "- total run time: $((ELAPSED / 60)) min $((ELAPSED % 60)) s; load average at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg) (timings are wall clock: other load inflates them)"
  echo
  echo "## Bytes to move a client from A to B"
  echo
  row="| pair |"; for m in "${METHODS[@]}"; do row+=" ${MNAME[$m]} |"; done; echo "$row"
  row="|---|"; for m in "${METHODS[@]}"; do row+="---:|"; done; echo "$row"
  for i in "${!PAIRS[@]}"; do
    p=p$((i + 1)); read -r s a b <<<"${PAIRS[i]}"
    row="| $s $a→$b |"; for m in "${METHODS[@]}"; do row+=" $(mcell "$p" "$m") |"; done; echo "$row"
  done
  echo
  echo "Per-file methods count file contents only (no metadata), every path of B (a hardlinked"
  echo "path counts again, as in D4C; see the per-file details for the sum with hardlinks once)."
  echo "\"ours\" is the whole delta cdimg file (index, metadata, OCI config included);"
  echo "✗ = the patched image did not reproduce B. † = bsdiff skipped (--quick), best of xdelta3/zstd."
  echo
  echo "## Ratio to ours(auto)  (method bytes ÷ ours(auto) bytes: above 1× means ours moves less)"
  echo
  row="| pair |"; for m in "${METHODS[@]}"; do [[ $m == ours-auto ]] || row+=" ${MNAME[$m]} |"; done; echo "$row best existing tool |"
  row="|---|"; for m in "${METHODS[@]}"; do [[ $m == ours-auto ]] || row+="---:|"; done; echo "$row---:|"
  for i in "${!PAIRS[@]}"; do
    p=p$((i + 1)); read -r s a b <<<"${PAIRS[i]}"
    local oa; oa=$(mval "$p" ours-auto)
    [[ ${R[$p.ours-auto.verified]:-1} == 1 ]] || oa=""
    row="| $s $a→$b |"
    for m in "${METHODS[@]}"; do [[ $m == ours-auto ]] || row+=" $(ratio "$(mval "$p" "$m")" "$oa") |"; done
    local bp; bp=$(bestpeer "$p")
    echo "$row $(ratio "${bp%% *}" "$oa") |"
  done
  echo
  echo "## Time and peak memory (wall seconds · peak RSS)"
  echo
  echo "| pair | xdelta3 tar | zstd patch-from tar | zstd-19 layers | rsync | casync (B) | per-file all tools ($BENCH_JOBS jobs) | ours diff zstd | ours diff xdelta3 | ours diff bsdiff | ours diff auto | ours patch zstd | ours patch xdelta3 | ours patch bsdiff | ours patch auto |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for i in "${!PAIRS[@]}"; do
    p=p$((i + 1)); read -r s a b <<<"${PAIRS[i]}"
    row="| $s $a→$b | $(tcell "$p.xdtar") | $(tcell "$p.zstar") | $(tcell "$p.zlayers") | $(tcell "$p.rsync") | $(tcell "$p.casync") | $(tcell "$p.perfile") |"
    for m in zstd xdelta3 bsdiff auto; do row+=" $(tcell "$p.ours-$m") |"; done
    for m in zstd xdelta3 bsdiff auto; do row+=" $(tcell "$p.ours-$m" patch_) |"; done
    echo "$row"
  done
  if ((OURS)); then
    echo
    echo "Conversions (full cdimg, cached in $WORK/cdimg; a cached image shows no time):"
    for k in "${!R[@]}"; do if [[ $k == conv.*.bytes ]]; then echo "${k%.bytes}"; fi; done | sort -V | while read -r k; do
      local t=${k#conv.}
      echo "- ${t/./:} $(commas "${R[$k.bytes]}") bytes$( [[ ${R[$k.cached]:-} == 0 ]] && echo ", converted in $(tcell "$k")")"
    done
  fi
  echo
  echo "## Per-file details (same path)"
  echo
  echo "| pair | regular files | changed | new | new (zstd-19) | Σ bsdiff | Σ xdelta3 | Σ zstd patch-from | Σ best-of | Σ best-of, hardlinks once | smallest per changed file |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
  for i in "${!PAIRS[@]}"; do
    p=p$((i + 1)); read -r s a b <<<"${PAIRS[i]}"
    if [[ -z ${R[$p.perfile.ok]:-} ]]; then echo "| $s $a→$b | $(cell "$p.perfile") ||||||||||"; continue; fi
    echo "| $s $a→$b | ${R[$p.perfile.files]} | ${R[$p.perfile.changed]} | ${R[$p.perfile.new]} | $(commas "${R[$p.perfile.newbytes]}") | $(mcell "$p" perfile) | $(commas "${R[$p.perfile.xdelta3]}") | $(commas "${R[$p.perfile.zstd]}") | $(mcell "$p" perfile-best) | $(commas "${R[$p.perfile.best_once]}") | ${R[$p.perfile.wins]} |"
  done
  echo
  echo "## Check against the reference numbers"
  echo
  echo "| pair | docker pull MB (ref, pigz -6) | best existing tool (ref) | per-file best-of (ref) |"
  echo "|---|---:|---:|---:|"
  for i in "${!PAIRS[@]}"; do
    p=p$((i + 1)); read -r s a b <<<"${PAIRS[i]}"
    local ref=${REF["$s $a $b"]:-} rb rm rp rd bp
    read -r rb rm rp rd <<<"$ref"
    bp=$(bestpeer "$p")
    printf '| %s %s→%s | %s (%s) | %s %s (%s %s) | %s (%s) |\n' "$s" "$a" "$b" \
      "$(awk -v b="$(mval "$p" docker)" 'BEGIN{if (b!="") printf "%.1f", b/1e6; else printf "n/a"}')" "${rd:-?}" \
      "$(commas "${bp%% *}")" "$(mname "${bp##* }")" "$(commas "${rb:-?}")" "$(mname "${rm:-}")" \
      "$(mcell "$p" perfile-best)" "$(commas "${rp:-?}")"
  done
  if ((OURS)); then
    echo
    echo "## Targets (issue #3): ours (auto) smaller than every existing tool; diff no slower than xdelta3 on the whole tar"
    echo
    echo "| pair | ours auto bytes | best existing tool | bytes target | ours diff s | xdelta3 tar s | time ratio | time target |"
    echo "|---|---:|---:|:---:|---:|---:|---:|:---:|"
    for i in "${!PAIRS[@]}"; do
      p=p$((i + 1)); read -r s a b <<<"${PAIRS[i]}"
      local oa ot xt bt tt
      oa=$(mval "$p" ours-auto); bp=$(bestpeer "$p")
      ot=${R[$p.ours-auto.secs]:-}; xt=${R[$p.xdtar.secs]:-}
      bt="?"; [[ -n $oa && -n $bp ]] && { ((oa < ${bp%% *})) && bt="met" || bt="MISSED"; }
      tt="?"; [[ -n $ot && -n $xt ]] && tt=$(awk -v o="$ot" -v x="$xt" 'BEGIN{print (o <= x) ? "met" : "MISSED"}')
      printf '| %s %s→%s | %s | %s %s | %s | %s | %s | %s | %s |\n' "$s" "$a" "$b" "$(commas "${oa:-?}")" \
        "$(commas "${bp%% *}")" "$(mname "${bp##* }")" "$bt" "${ot:-?}" "${xt:-?}" \
        "$(awk -v o="$ot" -v x="$xt" 'BEGIN{if (o > 0 && x > 0) printf "%.2f×", o / x; else printf "n/a"}')" "$tt"
    done
  fi
  if ((${#FAILS[@]})); then
    echo
    echo "## Failures"
    echo
    for f in "${FAILS[@]}"; do echo "- $f"; done
  fi
}

mkdir -p "$REPORT_DIR"
report | tee "$REPORT"
blog "report written to $REPORT (run time ${ELAPSED}s)"
