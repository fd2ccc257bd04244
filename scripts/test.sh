#!/usr/bin/env bash
# test.sh -- from a fresh machine to a full test run: install dependencies,
# build the real-image corpus, build, run unit tests (parallel), end-to-end
# tests (real FUSE/containerd/registry, serial), an ASan+UBSan unit run and
# bounded libFuzzer runs. Exit non-zero on any failure.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
log() { printf '[test %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
jobs=$(nproc)

bash "$src/scripts/setup.sh"
log "corpus"; bash "$src/scripts/corpus.sh" >/dev/null
log "build"; bash "$src/scripts/build.sh" "$src/build"

results=()
run() {  # run NAME CMD...: record pass/fail, keep going
  local name=$1; shift
  log "$name"
  if "$@"; then results+=("PASS $name"); else results+=("FAIL $name"); fi
}
run "unit tests" ctest --test-dir "$src/build" -L unit -j"$jobs" --output-on-failure
run "end-to-end tests" ctest --test-dir "$src/build" -L e2e --output-on-failure
if [[ ${D4C_SKIP_SANITIZE:-0} != 1 ]]; then
  run "asan+ubsan build" bash "$src/scripts/build.sh" "$src/build-asan" -DD4C_SANITIZE=ON
  run "asan+ubsan unit tests" env ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1 \
    ctest --test-dir "$src/build-asan" -L unit -j"$jobs" --output-on-failure
fi
if [[ ${D4C_SKIP_FUZZ:-0} != 1 ]]; then
  fuzz_build() {  # only the fuzz targets and what they link: no need for grpc & co
    [[ -f $src/build-fuzz/build.ninja ]] || CC=clang CXX=clang++ cmake -G Ninja -S "$src" -B "$src/build-fuzz" \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo -DD4C_FUZZ=ON >/dev/null
    ninja -C "$src/build-fuzz" -j"$jobs" $(ninja -C "$src/build-fuzz" -t targets all | grep -o '^test/[a-z0-9_]*_fuzz' | sort -u) test/fuzz_seeds
  }
  run "fuzz build" fuzz_build
  run "fuzz (bounded)" bash "$src/scripts/fuzz.sh" "$src/build-fuzz" "${D4C_FUZZ_SECONDS:-30}"
fi

printf '\n== summary ==\n'; printf '%s\n' "${results[@]}"
failed=$(printf '%s\n' "${results[@]}" | grep -c '^FAIL' || true)
passed=$(printf '%s\n' "${results[@]}" | grep -c '^PASS' || true)
echo "$passed passed, $failed failed"
[[ $failed == 0 ]]
