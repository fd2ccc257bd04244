#!/usr/bin/env bash
# no_absl_mutex.sh SRC_DIR: passes when the libraries that run in ctr-cli's
# commands and di3fs (base/, cdimg/, fs/) lock with d4c::Mutex, not
# absl::Mutex/CondVar/Notification: the first blocking wait on an absl::Mutex
# measures the TSC frequency by sleeping ~3.3 ms (base/include/d4c/base/mutex.h).
set -u
src=$1
if hits=$(grep -rnE 'absl::(Mutex|MutexLock|CondVar|Notification|BlockingCounter|Barrier)\b|absl/synchronization/' \
            "$src/base" "$src/cdimg" "$src/fs" --include='*.cc' --include='*.h' |
          grep -vE '^[^:]+:[0-9]+:[[:space:]]*//'); then  # comments may name it
  echo "FAIL: absl synchronization in a library of short-lived processes; use d4c/base/mutex.h:" >&2
  echo "$hits" >&2
  exit 1
fi
echo "ok: base/, cdimg/ and fs/ lock with d4c::Mutex"
