#!/usr/bin/env bash
# expect_private.sh BUILD_DIR TARGET HEADER: passes when building TARGET fails
# because HEADER (another library's private header) is not on its include path.
set -u
out=$(cmake --build "$1" --target "$2" 2>&1)
if [[ $? == 0 ]]; then
  echo "FAIL: $2 compiled: a private header ($3) is reachable from another library" >&2
  exit 1
fi
if grep -q "$3: No such file or directory" <<<"$out"; then
  echo "ok: $3 is private (the include does not compile)"
  exit 0
fi
echo "FAIL: $2 failed to build for another reason:" >&2
echo "$out" >&2
exit 1
