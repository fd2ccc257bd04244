#!/usr/bin/env bash
# merge_bench.sh -- merge of two deltas D1 = A→B and D2 = B→C, in one run per
# triple of consecutive images:
#   diff A→C            ctr-cli cdimg diff (the delta merge must stand against)
#   merge (with A)      ctr-cli cdimg merge: re-diffs files both deltas changed
#   merge --compose     ctr-cli cdimg merge --compose: reads A's index only,
#                       copies blobs, chains the patches of files changed twice
# Times are wall seconds of the command (and its user + sys CPU seconds) (D1, D2 and the full images are made
# before, untimed); bytes are whole cdimg files. Every merged delta is patched
# onto A and must give C's exact bytes.
#
# With --compose-ab OLD_CLI, a second table: merge --compose of OLD_CLI and of
# the --cli build side by side on the same D1 and D2, alternating, --reps N
# times each (default 5), each followed by the same build's diff A→C, medians
# and their ratio; both composed deltas are patched onto A and must give C.
#
# Usage: merge_bench.sh [--cli PATH] [--threads N] [--compose-ab OLD_CLI [--reps N]]
#                       [--triple SERIES_A:TAG_A,SERIES_B:TAG_B,SERIES_C:TAG_C]...
#   default triples: typescript 5.4.2 5.4.3 5.4.4; biome 1.9.2 1.9.3 1.9.4;
#   debian v1 -> debian-python v1 -> debian-python v2 (a base system, then
#   python3 installed on it, then apt-get upgrade: the corpus has no third
#   debian version)
# Environment: D4C_CORPUS (default /var/cache/d4c-corpus), D4C_WORK (default
#   /var/cache/d4c-work: full cdimgs cached in cdimg/<series>/<tag>/image.cdimg,
#   shared with delta_bench.sh), D4C_BENCH_TMP (scratch parent, default /var/tmp).
# Prints a markdown table on stdout; progress on stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
src=$(cd "$here/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"
die() { echo "merge_bench.sh: $*" >&2; exit 2; }

CLI=${D4C_CLI:-} THREADS=2 TRIPLES=() OLD_CLI= REPS=5
while (($#)); do
  case $1 in
    --cli) CLI=$2; shift 2 ;;
    --compose-ab) OLD_CLI=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --triple) TRIPLES+=("$2"); shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
((${#TRIPLES[@]})) || TRIPLES=(typescript:5.4.2,typescript:5.4.3,typescript:5.4.4
                               biome:1.9.2,biome:1.9.3,biome:1.9.4
                               debian:v1,debian-python:v1,debian-python:v2)
if [[ -z $CLI ]]; then
  for c in "$src/build-bench/ctr-cli/ctr-cli" "$src/build/ctr-cli/ctr-cli"; do [[ -x $c ]] && { CLI=$c; break; }; done
fi
[[ -x $CLI ]] || die "no ctr-cli binary (--cli PATH)"
[[ -z $OLD_CLI || -x $OLD_CLI ]] || die "--compose-ab: $OLD_CLI is not an executable"
"$CLI" cdimg merge --help 2>&1 | grep -- --compose >/dev/null || die "$CLI has no 'cdimg merge --compose'"
CORPUS=${D4C_CORPUS:-/var/cache/d4c-corpus}
WORK=${D4C_WORK:-/var/cache/d4c-work}
BENCH_TMP=$(mktemp -d "${D4C_BENCH_TMP:-/var/tmp}/d4c-merge-bench.XXXXXX")
trap 'rm -rf "$BENCH_TMP"' EXIT
export BENCH_TMP

full() {  # full SERIES TAG : cached full cdimg path
  local out=$WORK/cdimg/$1/$2
  ours_convert "$CLI" "$CORPUS/$1/oci" "$2" "$out" >/dev/null || die "convert $1:$2 failed"
  echo "$out/image.cdimg"
}
run() {  # run CMD... : "wall cpu" seconds (cpu = user + sys), to the millisecond
  # bash's own `time` (no /usr/bin/time process in the measurement, which would
  # add its start-up to commands that take ~10 ms, and keeps only 10 ms steps)
  local tf=$BENCH_TMP/time TIMEFORMAT='%3R %3U %3S'
  { time "$@" >>"$BENCH_TMP/log" 2>&1 || die "failed: $* (log: $BENCH_TMP/log)"; } 2>"$tf"
  awk '{printf "%s %.3f\n", $1, $2 + $3}' "$tf"
}
cell() { printf '%s s (cpu %s s), %s B' "${1% *}" "${1#* }" "$2"; }

AB=()
printf '| A → B → C | D1 + D2 | diff A→C | merge (with A) | merge --compose | compose vs diff |\n'
printf '|---|---:|---:|---:|---:|---:|\n'
for t in "${TRIPLES[@]}"; do
  IFS=, read -r sa sb sc <<<"$t"
  blog "triple $t"
  A=$(full "${sa%%:*}" "${sa#*:}"); B=$(full "${sb%%:*}" "${sb#*:}"); C=$(full "${sc%%:*}" "${sc#*:}")
  d=$BENCH_TMP/$(echo "$t" | tr ':,/' '___'); mkdir -p "$d"
  ln -s "$A" "$d/a.cdimg"  # merge finds A next to the deltas by image id
  "$CLI" cdimg diff --oldCdimg "$A" --newCdimg "$B" --outCdimg "$d/d1.cdimg" --threadNum "$THREADS" >>"$BENCH_TMP/log"
  "$CLI" cdimg diff --oldCdimg "$B" --newCdimg "$C" --outCdimg "$d/d2.cdimg" --threadNum "$THREADS" >>"$BENCH_TMP/log"
  sum=$(($(fsize "$d/d1.cdimg") + $(fsize "$d/d2.cdimg")))
  s_diff=$(run "$CLI" cdimg diff --oldCdimg "$A" --newCdimg "$C" --outCdimg "$d/ac.cdimg" --threadNum "$THREADS")
  s_old=$(run "$CLI" cdimg merge --lowerCdimg "$d/d1.cdimg" --upperCdimg "$d/d2.cdimg" --outCdimg "$d/m.cdimg" \
    --threadNum "$THREADS")
  s_new=$(run "$CLI" cdimg merge --compose --lowerCdimg "$d/d1.cdimg" --upperCdimg "$d/d2.cdimg" \
    --outCdimg "$d/c.cdimg" --threadNum "$THREADS")
  for m in m c; do
    # --level 19: convert's level, so the patched file is convert's bytes (docs/design.md)
    "$CLI" cdimg patch --baseCdimg "$A" --diffCdimg "$d/$m.cdimg" --outCdimg "$d/p.cdimg" --threadNum "$THREADS" \
      --level 19 >>"$BENCH_TMP/log" || die "$t: patch of merged delta $m failed (log: $BENCH_TMP/log)"
    cmp -s "$d/p.cdimg" "$C" || die "$t: patched $m.cdimg differs from C"
    rm -f "$d/p.cdimg"
  done
  printf '| %s → %s → %s | %s B | %s | %s | %s | %s× (cpu %s×) faster, %s of D1+D2 |\n' \
    "$sa" "${sb}" "${sc}" "$sum" "$(cell "$s_diff" "$(fsize "$d/ac.cdimg")")" \
    "$(cell "$s_old" "$(fsize "$d/m.cdimg")")" "$(cell "$s_new" "$(fsize "$d/c.cdimg")")" \
    "$(awk -v a="${s_diff% *}" -v b="${s_new% *}" 'BEGIN{if (b > 0) printf "%.1f", a / b; else printf "n/a"}')" \
    "$(awk -v a="${s_diff#* }" -v b="${s_new#* }" 'BEGIN{if (b > 0) printf "%.1f", a / b; else printf "n/a"}')" \
    "$(awk -v a="$(fsize "$d/c.cdimg")" -v b="$sum" 'BEGIN{printf "%.3f", a / b}')"
  if [[ -n $OLD_CLI ]]; then
    # old and new compose alternating on the same D1 and D2, and diff A→C of
    # each build between them; medians
    for k in $(seq "$REPS"); do
      for v in old new; do
        cli=$CLI; [[ $v == old ]] && cli=$OLD_CLI
        run "$cli" cdimg merge --compose --lowerCdimg "$d/d1.cdimg" --upperCdimg "$d/d2.cdimg" \
          --outCdimg "$d/$v.cdimg" --threadNum "$THREADS" >>"$d/times.$v"
        run "$cli" cdimg diff --oldCdimg "$A" --newCdimg "$C" --outCdimg "$d/ac.$v.cdimg" \
          --threadNum "$THREADS" >>"$d/diff.$v"
      done
    done
    for v in old new; do
      "$CLI" cdimg patch --baseCdimg "$A" --diffCdimg "$d/$v.cdimg" --outCdimg "$d/p.cdimg" --threadNum "$THREADS" \
        --level 19 >>"$BENCH_TMP/log" || die "$t: patch of the $v compose failed (log: $BENCH_TMP/log)"
      cmp -s "$d/p.cdimg" "$C" || die "$t: the $v compose patched differs from C"
    done
    ratio() { awk -v a="$(median "$d/diff.$1" 1)" -v b="$(median "$d/times.$1" 1)" 'BEGIN{printf "%.1f", a / b}'; }
    AB+=("$(printf '| %s → %s → %s | %s B | %s s (cpu %s s), %s B | %s s (cpu %s s), %s B | %s s · %s s | %s× · **%s×** |' \
      "$sa" "$sb" "$sc" "$sum" "$(median "$d/times.old" 1)" "$(median "$d/times.old" 2)" "$(fsize "$d/old.cdimg")" \
      "$(median "$d/times.new" 1)" "$(median "$d/times.new" 2)" "$(fsize "$d/new.cdimg")" \
      "$(median "$d/diff.old" 1)" "$(median "$d/diff.new" 1)" "$(ratio old)" "$(ratio new)")")
  fi
  rm -rf "$d"
done
if [[ -n $OLD_CLI ]]; then
  printf '\nmerge --compose, %s alternating runs each, medians (old: %s)\n\n' "$REPS" "$OLD_CLI"
  printf '| A → B → C | D1 + D2 | compose old | compose new | diff A→C old · new | diff ÷ compose old · new |\n|---|---:|---:|---:|---:|---:|\n'
  printf '%s\n' "${AB[@]}"
fi
