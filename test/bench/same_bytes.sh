#!/usr/bin/env bash
# same_bytes.sh OLD_CTR_CLI NEW_CTR_CLI -- does a change keep every byte?
# Converts every corpus image and diffs every consecutive pair with both
# ctr-cli binaries (e.g. a build of main and a build of a refactor), then
# prints one row per file: sizes from both and whether the files are
# identical. Exit status 1 if any file differs. For refactors that must not
# change output (the full comparison with peers is delta_bench.sh).
#
# Environment: D4C_CORPUS (default /var/cache/d4c-corpus), D4C_BENCH_TMP
# (scratch parent, default /var/tmp; ~1 GB).
set -euo pipefail
[[ $# == 2 ]] || { echo "usage: $0 OLD_CTR_CLI NEW_CTR_CLI" >&2; exit 2; }
corpus=${D4C_CORPUS:-/var/cache/d4c-corpus}
[[ -f $corpus/corpus-stats.tsv ]] || { echo "no corpus at $corpus (build it: sudo bash scripts/corpus.sh)" >&2; exit 2; }
work=$(mktemp -d "${D4C_BENCH_TMP:-/var/tmp}/d4c-same-bytes.XXXXXX")
trap 'rm -rf "$work"' EXIT

declare -A bin=([old]=$(realpath "$1") [new]=$(realpath "$2"))
series=$(awk -F'\t' 'NR > 1 {print $1}' "$corpus/corpus-stats.tsv" | uniq)
for side in old new; do
  mkdir -p "$work/$side"
  for s in $series; do
    prev=
    for t in $(awk -F'\t' -v s="$s" 'NR > 1 && $1 == s {print $2}' "$corpus/corpus-stats.tsv"); do
      "${bin[$side]}" convert --image "oci:$corpus/$s/oci:$t" --output "$work/$side/x" --cdimg >/dev/null
      mv "$work/$side/x/image.cdimg" "$work/$side/$s-$t.cdimg"
      if [[ -n $prev ]]; then
        start=$(date +%s.%N)
        "${bin[$side]}" cdimg diff --oldCdimg "$work/$side/$s-$prev.cdimg" --newCdimg "$work/$side/$s-$t.cdimg" \
          --outCdimg "$work/$side/delta-$s-$prev-$t.cdimg" >/dev/null
        printf '%s diff %s %s->%s: %.2f s\n' "$side" "$s" "$prev" "$t" "$(echo "$(date +%s.%N) - $start" | bc)" >&2
      fi
      prev=$t
    done
  done
done

status=0
printf '| file | old bytes | new bytes | identical |\n|---|---:|---:|---|\n'
for f in "$work"/old/*.cdimg; do
  n=$work/new/${f##*/}
  same=yes
  cmp -s "$f" "$n" || { same=NO; status=1; }
  printf '| %s | %s | %s | %s |\n' "${f##*/}" "$(stat -c %s "$f")" "$(stat -c %s "$n")" "$same"
done
exit $status
