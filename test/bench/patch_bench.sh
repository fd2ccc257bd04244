#!/usr/bin/env bash
# patch_bench.sh -- how fast an update is applied, in MB/s of the patched root
# filesystem (regular-file bytes of B, corpus-stats.tsv) per wall second,
# timed side by side in one run on the same pair, REPS times, median taken:
#
#   ours fast        ctr-cli cdimg patch --threadNum 2 (the default: unchanged
#                    files copied as stored, changed ones at zstd level 1)
#   ours --level 19  the same delta with --level 19: convert's very bytes (the
#                    old default, what the snapshotter's compaction runs)
#   NAME fast        (--ab NAME=PATH) the fast patch of another ctr-cli build on
#                    the same delta, in the same repetitions: before/after
#   xdelta3 -d       xdelta3 -d on the whole rootfs tar (patch made with
#                    -9 -S djw, as delta_bench.sh does)
#   zstd -d          zstd -d --long=31 --patch-from on the whole rootfs tar
#                    (patch made with -19 -T2 --long=31)
#
# Every output is checked (untimed): ours has B's image id (patch itself
# checks every file's sha256) and --level 19 equals B's cdimg byte for byte;
# the peers' tars equal B's tar. Also reported: median CPU seconds
# (user+sys) and the largest peak RSS of the reps.
#
# Usage: patch_bench.sh [--series NAME]... [--reps N] [--cli PATH]
#                       [--ab NAME=PATH]... [--cdimg-dir DIR] [--keep-tmp]
#   --series NAME   repeatable or comma-separated (default: typescript biome
#                   debian); the first two versions of each in release order
#   --reps N        timed repetitions (default 3)
#   --cli PATH      ctr-cli binary (default $D4C_CLI, else build-bench/ or build/)
#   --ab NAME=PATH  repeatable: another ctr-cli build whose fast patch is timed
#                   beside ours (its output must have B's image id too)
#   --cdimg-dir DIR full images as DIR/<series>/<tag>/image.cdimg, reused when
#                   readable, else converted there (default $D4C_WORK/cdimg)
#   --keep-tmp      keep the scratch directory
# Environment: D4C_CORPUS (default /var/cache/d4c-corpus), D4C_WORK (default
#   /var/cache/d4c-work; report in bench/patch-<date>.md), D4C_BENCH_TMP
#   (scratch parent, default /var/tmp). Needs root (root-owned rootfs trees).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../.." && pwd)
BENCH_LIB=$here/lib.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$BENCH_LIB"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "patch_bench.sh: $*" >&2; exit 2; }

SERIES=() REPS=3 CLI=${D4C_CLI:-} KEEP=0 CDIR="" AB=()
while (($#)); do
  case $1 in
    --series) [[ $# -ge 2 ]] || die "--series needs a value"; IFS=, read -ra s <<<"$2"; SERIES+=("${s[@]}"); shift 2 ;;
    --reps) [[ $# -ge 2 ]] || die "--reps needs a value"; REPS=$2; shift 2 ;;
    --cli) [[ $# -ge 2 ]] || die "--cli needs a value"; CLI=$2; shift 2 ;;
    --ab) [[ $# -ge 2 && $2 == ?*=?* ]] || die "--ab needs NAME=PATH"; AB+=("$2"); shift 2 ;;
    --cdimg-dir) [[ $# -ge 2 ]] || die "--cdimg-dir needs a value"; CDIR=$2; shift 2 ;;
    --keep-tmp) KEEP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "--reps: not a positive number: $REPS"
((${#SERIES[@]})) || SERIES=(typescript biome debian)

CORPUS=${D4C_CORPUS:-/var/cache/d4c-corpus}
WORK=${D4C_WORK:-/var/cache/d4c-work}
CDIR=${CDIR:-$WORK/cdimg}
[[ $(id -u) -eq 0 ]] || die "must run as root (the rootfs trees have root-only files)"
[[ -f $CORPUS/corpus-stats.tsv ]] || die "no corpus at $CORPUS (build it: sudo bash scripts/corpus.sh)"
for t in jq tar zstd xdelta3 cmp awk; do command -v "$t" >/dev/null || die "missing required tool: $t"; done
[[ -x /usr/bin/time ]] || die "needs GNU time at /usr/bin/time (package 'time')"
if [[ -z $CLI ]]; then
  for c in "$src/build-bench/ctr-cli/ctr-cli" "$src/build/ctr-cli/ctr-cli"; do
    [[ -x $c ]] && { CLI=$c; break; }
  done
fi
[[ -n $CLI && -x $CLI ]] || die "no ctr-cli binary (build it, or --cli PATH)"

BENCH_SCRIPT=patch_bench.sh
bench_scratch patch-bench
export BENCH_TMP BENCH_LIB

# stat SERIES TAG COLUMN : a corpus-stats.tsv field (4 = rootfs_reg_bytes)
cstat() { awk -F'\t' -v s="$1" -v t="$2" -v c="$3" '$1 == s && $2 == t { print $c; exit }' "$CORPUS/corpus-stats.tsv"; }
# first two tags of SERIES in corpus-stats.tsv order
first_pair() { awk -F'\t' -v s="$1" '$1 == s { print $2 }' "$CORPUS/corpus-stats.tsv" | head -n2; }

maxcol() { awk -v c="$2" 'BEGIN { m = 0 } $c > m { m = $c } END { print m }' "$1"; }

mkdir -p "$BENCH_TMP/t"
START=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
DATE_HUMAN=$(date '+%F %T %Z')
ROWS=()
METHODS=(fast)
declare -A MNAME=([fast]="ours fast (default)" [l19]="ours --level 19 (old default)" [xd]="xdelta3 -d, whole tar" [zs]="zstd -d --patch-from, whole tar")
declare -A ABCLI=()
for ((i = 0; i < ${#AB[@]}; i++)); do
  name=${AB[i]%%=*} path=${AB[i]#*=}
  [[ -x $path ]] || die "--ab $name: not an executable: $path"
  METHODS+=("ab$i"); MNAME[ab$i]="$name fast"; ABCLI[ab$i]=$path
done
METHODS+=(l19 xd zs)

for s in "${SERIES[@]}"; do
  mapfile -t tags < <(first_pair "$s")
  ((${#tags[@]} == 2)) || die "series $s: fewer than two versions in corpus-stats.tsv"
  a=${tags[0]} b=${tags[1]} w=$BENCH_TMP/$s
  mkdir -p "$w"
  blog "=== $s $a -> $b: preparing (untimed)"
  for t in "$a" "$b"; do
    out=$(ours_convert "$CLI" "$CORPUS/$s/oci" "$t" "$CDIR/$s/$t" 2>"$w/convert.err") \
      || die "convert of $s:$t failed: $(tail -n2 "$w/convert.err")"
  done
  ca=$CDIR/$s/$a/image.cdimg cb=$CDIR/$s/$b/image.cdimg
  "$CLI" cdimg diff --oldCdimg "$ca" --newCdimg "$cb" --outCdimg "$w/d.cdimg" --threadNum 2 >/dev/null
  det_tar "$CORPUS/$s/rootfs/$a/rootfs" "$w/a.tar"
  det_tar "$CORPUS/$s/rootfs/$b/rootfs" "$w/b.tar"
  win=$(pow2_at_least "$(fsize "$w/a.tar")" 67108864)
  mem=$(zstd_mem_mb "$(fsize "$w/a.tar")")
  xdelta3 -9 -S djw -D -R -B "$win" -e -f -s "$w/a.tar" "$w/b.tar" "$w/p.vcdiff"
  zstd -q -f -19 -T2 --long=31 -M"${mem}MB" --patch-from="$w/a.tar" "$w/b.tar" -o "$w/p.zst"
  idb=$(cdimg_id "$CLI" "$cb")
  rootfs=$(cstat "$s" "$b" 4)
  for ((r = 1; r <= REPS; r++)); do
    blog "$s rep $r/$REPS"
    rm -f "$w"/out*
    timed "$s.fast" "$CLI" cdimg patch --baseCdimg "$ca" --diffCdimg "$w/d.cdimg" --outCdimg "$w/out-fast.cdimg" --threadNum 2
    for m in "${!ABCLI[@]}"; do
      timed "$s.$m" "${ABCLI[$m]}" cdimg patch --baseCdimg "$ca" --diffCdimg "$w/d.cdimg" --outCdimg "$w/out-$m.cdimg" --threadNum 2
    done
    timed "$s.l19" "$CLI" cdimg patch --baseCdimg "$ca" --diffCdimg "$w/d.cdimg" --outCdimg "$w/out-19.cdimg" --threadNum 2 --level 19
    timed "$s.xd" xdelta3 -d -D -R -B "$win" -f -s "$w/a.tar" "$w/p.vcdiff" "$w/out-xd.tar"
    timed "$s.zs" zstd -q -d -f --long=31 -M"${mem}MB" --patch-from="$w/a.tar" "$w/p.zst" -o "$w/out-zs.tar"
    if ((r == 1)); then  # check every output once (untimed)
      [[ $(cdimg_id "$CLI" "$w/out-fast.cdimg") == "$idb" ]] || die "$s: fast patch output is not image $idb"
      for m in "${!ABCLI[@]}"; do
        [[ $(cdimg_id "$CLI" "$w/out-$m.cdimg") == "$idb" ]] || die "$s: ${MNAME[$m]} output is not image $idb"
      done
      cmp -s "$w/out-19.cdimg" "$cb" || die "$s: --level 19 output differs from convert's $cb"
      cmp -s "$w/out-xd.tar" "$w/b.tar" || die "$s: xdelta3 output differs from B's tar"
      cmp -s "$w/out-zs.tar" "$w/b.tar" || die "$s: zstd output differs from B's tar"
      sizes="$(fsize "$w/d.cdimg") $(fsize "$w/p.vcdiff") $(fsize "$w/p.zst") $(fsize "$w/out-fast.cdimg") $(fsize "$cb")"
    fi
  done
  row="| $s $a→$b | $(awk -v b="$rootfs" 'BEGIN { printf "%.1f", b / 1e6 }') |"
  for m in "${METHODS[@]}"; do
    f=$BENCH_TMP/t/$s.$m
    wall=$(median "$f" 1) cpu=$(median "$f" 2) kb=$(maxcol "$f" 3)
    row+=" $(awk -v b="$rootfs" -v t="$wall" -v c="$cpu" -v k="$kb" \
      'BEGIN { printf "**%.0f** MB/s · %.2f s · CPU %.2f s · %.0f MB", (t > 0 ? b / 1e6 / t : 0), t, c, k / 1024 }') |"
  done
  read -r ds xs zs fo fb <<<"$sizes"
  row+=" $ds / $xs / $zs | $fo / $fb |"
  ROWS+=("$row")
  rm -f "$w"/*.tar "$w"/out*
done
ELAPSED=$(( $(date +%s) - START ))

report() {
  echo "# patch speed — $DATE_HUMAN"
  echo
  echo "- machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r)"
  echo "- load average at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg); run time ${ELAPSED} s; $REPS reps, median"
  # The binary may be older or newer than the checkout: name it by its own bytes and time.
  echo "- ours: $CLI (sha256 $(sha256sum "$CLI" | cut -c1-12), built $(date -u -r "$CLI" '+%F %T') UTC; checkout at $(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo "?"), which need not be what it was built from); zstd $(zstd -V | grep -o 'v[0-9.]*' | head -n1), xdelta3 $(xdelta3 -V 2>&1 | grep -o '[0-9]\.[0-9.a-z]*' | head -n1)"
  echo "- command: test/bench/patch_bench.sh --reps $REPS --series $(IFS=,; echo "${SERIES[*]}")$( ((${#AB[@]})) && printf ' --ab %s' "${AB[@]}")"
  for m in "${!ABCLI[@]}"; do
    echo "- ${MNAME[$m]}: ${ABCLI[$m]} (sha256 $(sha256sum "${ABCLI[$m]}" | cut -c1-12), built $(date -u -r "${ABCLI[$m]}" '+%F %T') UTC)"
  done
  echo
  echo "Cells: MB/s of B's root filesystem (regular-file bytes) per median wall second · median wall · median CPU (user+sys) · largest peak RSS."
  echo
  local h="| pair | rootfs MB |" l="|---|---:|"
  for m in "${METHODS[@]}"; do h+=" ${MNAME[$m]} |"; l+="---:|"; done
  echo "$h delta bytes: ours / xdelta3 / zstd | output bytes: ours fast / convert's B |"
  echo "$l---:|---:|"
  printf '%s\n' "${ROWS[@]}"
}
mkdir -p "$WORK/bench"
REPORT=$WORK/bench/patch-$(date +%F-%H%M%S).md
report | tee "$REPORT"
blog "report written to $REPORT"
