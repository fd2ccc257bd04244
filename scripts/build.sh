#!/usr/bin/env bash
# build.sh [BUILD_DIR] [cmake args...] -- configure (once) and build with Ninja.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-$src/build}; shift || true
if [[ ! -f $dir/build.ninja ]]; then
  cmake -G Ninja -S "$src" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
fi
ninja -C "$dir" -j"$(nproc)"
