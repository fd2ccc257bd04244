#!/usr/bin/env bash
# startup_bench.sh -- what a ctr-cli process costs before it does any work,
# for one or more builds side by side: the shared libraries it loads (ldd),
# the wall time of `ctr-cli --help` and of `ctr-cli cdimg merge --help`, and
# the page faults of `--help` (GNU time). Builds run one after the other in
# every repetition, so a shared machine's load hits them alike; medians.
# docs/architecture.md "Start-up" explains the numbers.
#
# Usage: startup_bench.sh --cli NAME=PATH [--cli NAME=PATH]... [--reps N]
#   --reps: runs of each command per build (default 41)
# Prints a markdown table on stdout.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
BENCH_SCRIPT=startup_bench.sh
die() { echo "$BENCH_SCRIPT: $*" >&2; exit 2; }
CLIS=() REPS=41
while (($#)); do
  case $1 in
    --cli) [[ $2 == *=* ]] || die "--cli wants NAME=PATH, got '$2'"; CLIS+=("$2"); shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
((${#CLIS[@]})) || die "no --cli NAME=PATH given"
[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "--reps wants a positive number, got '$REPS'"
for c in "${CLIS[@]}"; do [[ -x ${c#*=} ]] || die "${c#*=} is not an executable"; done
bench_scratch startup
mkdir -p "$BENCH_TMP/t"
TIMEFORMAT='%3R'
for _ in $(seq "$REPS"); do
  for c in "${CLIS[@]}"; do
    name=${c%%=*} cli=${c#*=}
    { time "$cli" --help >/dev/null; } 2>>"$BENCH_TMP/t/$name.help"
    { time "$cli" cdimg merge --help >/dev/null; } 2>>"$BENCH_TMP/t/$name.merge"
  done
done
printf '| build | shared libraries (ldd) | `--help` | `cdimg merge --help` | page faults of `--help` |\n'
printf '|---|---:|---:|---:|---:|\n'
for c in "${CLIS[@]}"; do
  name=${c%%=*} cli=${c#*=}
  faults=$(/usr/bin/time -f '%R' "$cli" --help 2>&1 >/dev/null | tail -n1)
  ms() { awk '{ printf "%.1f ms", $1 * 1000 }' <<<"$(median "$BENCH_TMP/t/$name.$1" 1)"; }
  printf '| %s | %s | %s | %s | %s |\n' "$name" "$(ldd "$cli" | wc -l)" "$(ms help)" "$(ms merge)" "$faults"
done
