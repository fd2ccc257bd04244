#!/usr/bin/env bash
# difftime_bench.sh -- how long making a delta takes, against xdelta3 -9 on the
# whole rootfs tar (issue 15's "diff time <= xdelta3 -9"), with one or more
# ctr-cli builds side by side in the same run: every repetition runs each
# build's `cdimg diff --threadNum 2` and xdelta3 one after the other, so load
# on a shared machine hits them alike; medians are reported.
#
#   ours <label>   ctr-cli cdimg diff --threadNum 2 (full cdimgs cached)
#   xdelta3 -9     xdelta3 -9 -S djw -D -R -B <2^k >= tar, >= 64 MiB> -e on
#                  deterministic rootfs tars (as delta_bench.sh)
#
# Every delta is checked once (untimed): patched onto A it gives B's image id
# (patch checks every file's sha256). Bytes are reported for each build, so a
# policy change shows what it costs or saves next to what it takes.
#
# Usage: difftime_bench.sh [--pair SERIES:A:B]... [--series NAME]...
#                          [--cli LABEL=PATH]... [--reps N] [--cdimg-dir DIR]
#                          [--keep-tmp]
#   --pair S:A:B    a pair of versions (repeatable)
#   --series NAME   the first two versions of a series in corpus-stats.tsv order
#                   (repeatable or comma-separated); default when no --pair:
#                   typescript biome debian
#   --cli L=PATH    a ctr-cli build labelled L (repeatable; default: "ours" =
#                   $D4C_CLI, else build-bench/ or build/)
#   --reps N        timed repetitions (default 3)
#   --cdimg-dir DIR full images as DIR/<series>/<tag>/image.cdimg, reused when
#                   readable, else converted there (default $D4C_WORK/cdimg)
#   --keep-tmp      keep the scratch directory
# Environment: D4C_CORPUS (default /var/cache/d4c-corpus), D4C_WORK (default
#   /var/cache/d4c-work; report in bench/difftime-<date>.md), D4C_BENCH_TMP
#   (scratch parent, default /var/tmp). Needs root (root-owned rootfs trees).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../.." && pwd)
BENCH_LIB=$here/lib.sh
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$BENCH_LIB"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "difftime_bench.sh: $*" >&2; exit 2; }

PAIRS=() SERIES=() CLIS=() REPS=3 KEEP=0 CDIR=""
while (($#)); do
  case $1 in
    --pair) [[ $# -ge 2 ]] || die "--pair needs a value"; PAIRS+=("$2"); shift 2 ;;
    --series) [[ $# -ge 2 ]] || die "--series needs a value"; IFS=, read -ra s <<<"$2"; SERIES+=("${s[@]}"); shift 2 ;;
    --cli) [[ $# -ge 2 ]] || die "--cli needs a value"; CLIS+=("$2"); shift 2 ;;
    --reps) [[ $# -ge 2 ]] || die "--reps needs a value"; REPS=$2; shift 2 ;;
    --cdimg-dir) [[ $# -ge 2 ]] || die "--cdimg-dir needs a value"; CDIR=$2; shift 2 ;;
    --keep-tmp) KEEP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "--reps: not a positive number: $REPS"

CORPUS=${D4C_CORPUS:-/var/cache/d4c-corpus}
WORK=${D4C_WORK:-/var/cache/d4c-work}
CDIR=${CDIR:-$WORK/cdimg}
[[ $(id -u) -eq 0 ]] || die "must run as root (the rootfs trees have root-only files)"
[[ -f $CORPUS/corpus-stats.tsv ]] || die "no corpus at $CORPUS (build it: sudo bash scripts/corpus.sh)"
for t in jq tar xdelta3 awk sha256sum; do command -v "$t" >/dev/null || die "missing required tool: $t"; done
[[ -x /usr/bin/time ]] || die "needs GNU time at /usr/bin/time (package 'time')"

if ((${#CLIS[@]} == 0)); then
  c=${D4C_CLI:-}
  if [[ -z $c ]]; then
    for d in "$src/build-bench/ctr-cli/ctr-cli" "$src/build/ctr-cli/ctr-cli"; do [[ -x $d ]] && { c=$d; break; }; done
  fi
  CLIS=("ours=$c")
fi
LABELS=()
declare -A CLI_OF
for spec in "${CLIS[@]}"; do
  [[ $spec == *=* ]] || die "--cli: expected LABEL=PATH, got '$spec'"
  l=${spec%%=*} p=${spec#*=}
  [[ $l =~ ^[A-Za-z0-9_-]+$ ]] || die "--cli: label '$l' must be letters, digits, - or _"
  [[ -n $p && -x $p ]] || die "--cli $l: no executable at '$p' (build it, or give its path)"
  [[ -z ${CLI_OF[$l]:-} ]] || die "--cli: label '$l' given twice"
  LABELS+=("$l"); CLI_OF[$l]=$p
done

first_pair() { awk -F'\t' -v s="$1" '$1 == s { print $2 }' "$CORPUS/corpus-stats.tsv" | head -n2; }
if ((${#PAIRS[@]} == 0)); then
  ((${#SERIES[@]})) || SERIES=(typescript biome debian)
  for s in "${SERIES[@]}"; do
    mapfile -t tags < <(first_pair "$s")
    ((${#tags[@]} == 2)) || die "series $s: fewer than two versions in corpus-stats.tsv"
    PAIRS+=("$s:${tags[0]}:${tags[1]}")
  done
fi
for p in "${PAIRS[@]}"; do
  IFS=: read -r s a b <<<"$p"
  [[ -n $s && -n $a && -n $b ]] || die "--pair: expected SERIES:A:B, got '$p'"
  for t in "$a" "$b"; do
    [[ -d $CORPUS/$s/rootfs/$t/rootfs && -d $CORPUS/$s/oci ]] \
      || die "$s:$t is not in the corpus at $CORPUS (build it: sudo bash scripts/corpus.sh $s)"
  done
done

BENCH_SCRIPT=difftime_bench.sh
bench_scratch difftime-bench
export BENCH_TMP BENCH_LIB

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
binary_id() { printf '%s, built %s' "$(sha256sum "$1" | cut -c1-12)" "$(date -u -r "$1" '+%F %H:%M UTC')"; }

mkdir -p "$BENCH_TMP/t"
START=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
DATE_HUMAN=$(date '+%F %T %Z')
ROWS=()
for p in "${PAIRS[@]}"; do
  IFS=: read -r s a b <<<"$p"
  w=$BENCH_TMP/$s-$a-$b k=$s-$a-$b
  mkdir -p "$w"
  blog "=== $s $a -> $b: preparing (untimed)"
  for t in "$a" "$b"; do
    out=$(ours_convert "${CLI_OF[${LABELS[0]}]}" "$CORPUS/$s/oci" "$t" "$CDIR/$s/$t" 2>"$w/convert.err") \
      || die "convert of $s:$t failed: $(tail -n2 "$w/convert.err")"
  done
  ca=$CDIR/$s/$a/image.cdimg cb=$CDIR/$s/$b/image.cdimg
  det_tar "$CORPUS/$s/rootfs/$a/rootfs" "$w/a.tar"
  det_tar "$CORPUS/$s/rootfs/$b/rootfs" "$w/b.tar"
  win=$(pow2_at_least "$(fsize "$w/a.tar")" 67108864)
  idb=$(cdimg_id "${CLI_OF[${LABELS[0]}]}" "$cb")
  for ((r = 1; r <= REPS; r++)); do
    blog "$s $a -> $b rep $r/$REPS"
    for l in "${LABELS[@]}"; do
      rm -f "$w/d-$l.cdimg"
      timed "$k.$l" "${CLI_OF[$l]}" cdimg diff --oldCdimg "$ca" --newCdimg "$cb" --outCdimg "$w/d-$l.cdimg" --threadNum 2
    done
    timed "$k.xd" xdelta3 -9 -S djw -D -R -B "$win" -e -f -s "$w/a.tar" "$w/b.tar" "$w/p.vcdiff"
    if ((r == 1)); then  # every delta patches back to B (untimed)
      for l in "${LABELS[@]}"; do
        "${CLI_OF[$l]}" cdimg patch --baseCdimg "$ca" --diffCdimg "$w/d-$l.cdimg" --outCdimg "$w/o-$l.cdimg" --threadNum 2 >/dev/null \
          || die "$s $a -> $b: the delta of $l does not patch"
        [[ $(cdimg_id "${CLI_OF[$l]}" "$w/o-$l.cdimg") == "$idb" ]] || die "$s $a -> $b: $l's delta does not give image $idb"
        fsize "$w/d-$l.cdimg" >"$w/bytes-$l"
        rm -f "$w/o-$l.cdimg"
      done
    fi
  done
  xw=$(median "$BENCH_TMP/t/$k.xd" 1) xc=$(median "$BENCH_TMP/t/$k.xd" 2)
  row="| $s $a→$b"
  for l in "${LABELS[@]}"; do
    ow=$(median "$BENCH_TMP/t/$k.$l" 1) oc=$(median "$BENCH_TMP/t/$k.$l" 2)
    row+=" | $(cat "$w/bytes-$l") B · $ow s (CPU $oc s) · **$(ratio "$ow" "$xw")×**"
  done
  row+=" | $(fsize "$w/p.vcdiff") B · $xw s (CPU $xc s) |"
  ROWS+=("$row")
  rm -f "$w"/*.tar
done

ELAPSED=$(($(date +%s) - START))
mkdir -p "$WORK/bench"
REPORT=$WORK/bench/difftime-$(date +%F-%H%M%S).md
{
  echo "# Diff time against xdelta3 -9 on the whole tar, $DATE_HUMAN"
  echo
  echo "- machine: $(nproc) CPUs ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r)"
  for l in "${LABELS[@]}"; do echo "- $l: ${CLI_OF[$l]} (sha256 $(binary_id "${CLI_OF[$l]}"))"; done
  echo "- $REPS repetitions, each running every build's diff then xdelta3, alternating; medians"
  echo "- run time ${ELAPSED} s; load average at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  head="| pair"
  sep="|---"
  for l in "${LABELS[@]}"; do head+=" | $l: bytes · wall (CPU) · ÷ xdelta3"; sep+="|---:"; done
  echo "$head | xdelta3 -9 tar: bytes · wall (CPU) |"
  echo "$sep|---:|"
  printf '%s\n' "${ROWS[@]}"
} | tee "$REPORT"
blog "report written to $REPORT (run time ${ELAPSED}s)"
