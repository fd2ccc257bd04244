#!/usr/bin/env bash
# fuzz.sh BUILD_DIR SECONDS [JOBS] -- run every libFuzzer target for a bounded
# time, JOBS targets at once (default: one per core; each libFuzzer run is one
# thread), seeded from test/fuzz/corpus/<target>/ (copied) and from the seeds
# fuzz_seeds generates; new finds stay in /var/tmp.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
dir=$1 secs=${2:-30} jobs=${3:-$(nproc)}
# Structured seeds generated from code (test/fuzz/fuzz_seeds.cc): hostile
# layers, real cdimgs, real codec patches.
if [[ -x $dir/test/fuzz_seeds ]]; then
  "$dir/test/fuzz_seeds" /var/tmp/d4c-fuzz || { echo "FUZZ FAILURE: fuzz_seeds could not write the seeds"; exit 1; }
fi

# fuzz_one BIN: one target; prints its result and exits non-zero on a find
fuzz_one() {
  local bin=$1 name work
  name=$(basename "$bin")
  work=/var/tmp/d4c-fuzz/$name; mkdir -p "$work"
  [[ -d $src/test/fuzz/corpus/$name ]] && cp -n "$src/test/fuzz/corpus/$name"/* "$work/" 2>/dev/null || true
  if ! "$bin" -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=0 "$work" \
       >"$work.log" 2>&1; then
    echo "FUZZ FAILURE in $name:"; tail -40 "$work.log"; return 1
  fi
  echo "fuzzed $name for ${secs}s: $(grep -E '^(#[0-9]+|Done)' "$work.log" | tail -1)"
}

fail=0 running=0
for bin in "$dir"/test/*_fuzz; do
  [[ -x $bin ]] || continue
  if ((running >= jobs)); then
    wait -n || fail=1
    running=$((running - 1))
  fi
  fuzz_one "$bin" &
  running=$((running + 1))
done
while ((running > 0)); do
  wait -n || fail=1
  running=$((running - 1))
done
exit $fail
