#!/usr/bin/env bash
# fuzz.sh BUILD_DIR SECONDS -- run every libFuzzer target for a bounded time,
# seeded from test/fuzz/corpus/<target>/ (copied) and from the seeds fuzz_seeds
# generates; new finds stay in /var/tmp.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
dir=$1 secs=${2:-30}
fail=0
# Structured seeds generated from code (test/fuzz/fuzz_seeds.cc): hostile
# layers, real cdimgs, real codec patches.
if [[ -x $dir/test/fuzz_seeds ]]; then
  "$dir/test/fuzz_seeds" /var/tmp/d4c-fuzz || { echo "FUZZ FAILURE: fuzz_seeds could not write the seeds"; exit 1; }
fi
for bin in "$dir"/test/*_fuzz; do
  [[ -x $bin ]] || continue
  name=$(basename "$bin")
  work=/var/tmp/d4c-fuzz/$name; mkdir -p "$work"
  [[ -d $src/test/fuzz/corpus/$name ]] && cp -n "$src/test/fuzz/corpus/$name"/* "$work/" 2>/dev/null || true
  echo "fuzzing $name for ${secs}s"
  if ! "$bin" -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=0 "$work" \
       >"$work.log" 2>&1; then
    echo "FUZZ FAILURE in $name:"; tail -40 "$work.log"; fail=1
  else
    grep -E '^(#[0-9]+|Done)' "$work.log" | tail -1
  fi
done
exit $fail
