# ctrd_env.sh PREFIX -- sourced (after lib.sh, require_root, require_corpus) by
# the e2e tests that run our snapshotter under their own containerd: checks the
# tools, makes the temp dir $T (/tmp/d4c-PREFIX.XXXXXX: unix socket paths are
# limited to 108 bytes), defines bad/CTR/cleanup (trap on EXIT)/
# start_snapshotter (--root ${ROOT_ARG:-$SNAP_ROOT}) and writes containerd's
# config $T/config.toml with the snapshotter as proxy plugin "di3fs".
# shellcheck shell=bash
[[ -c /dev/fuse ]] || skip_or_fail "no /dev/fuse"
for t in containerd ctr runc jq; do
  command -v "$t" >/dev/null || skip_or_fail "$t is not installed (apt-get install containerd runc jq)"
done
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || skip_or_fail "no overlayfs"
SNAP=$D4C_BUILD_DIR/snapshotter/snapshotter
DI3FS=$D4C_BUILD_DIR/fs/di3fs
for b in "$SNAP" "$DI3FS" "$CTR_CLI"; do
  [[ -x $b ]] || { echo "FAIL: $b is not built" >&2; exit 1; }
done

# Short path: unix socket paths are limited to 108 bytes.
T=$(mktemp -d "/tmp/d4c-${1:?prefix}.XXXXXX")
CTRD_SOCK=$T/ctrd.sock
SNAP_SOCK=$T/snap.sock
SNAP_ROOT=$T/sn
CTRD_PID=
SNAP_PID=
fail=0
bad() { echo "FAIL: $*" >&2; fail=1; }
CTR() { ctr --address "$CTRD_SOCK" "$@"; }

cleanup() {
  set +e
  local i c pid
  if [[ -n $CTRD_PID ]] && kill -0 "$CTRD_PID" 2>/dev/null; then
    for c in $(CTR task ls -q 2>/dev/null); do CTR task kill -s SIGKILL "$c" >/dev/null 2>&1; done
    sleep 0.5
    for c in $(CTR task ls -q 2>/dev/null); do CTR task rm -f "$c" >/dev/null 2>&1; done
    for c in $(CTR container ls -q 2>/dev/null); do CTR container rm "$c" >/dev/null 2>&1; done
  fi
  [[ -n $CTRD_PID ]] && kill "$CTRD_PID" 2>/dev/null
  [[ -n $SNAP_PID ]] && kill "$SNAP_PID" 2>/dev/null
  for ((i = 0; i < 50; i++)); do
    kill -0 "$CTRD_PID" 2>/dev/null || kill -0 "$SNAP_PID" 2>/dev/null || break
    sleep 0.1
  done
  # containerd's shims and the detached di3fs daemons (SIGTERM unmounts)
  for pid in $(our_pids); do kill "$pid" 2>/dev/null; done
  sleep 1
  for pid in $(our_pids); do kill -9 "$pid" 2>/dev/null; done
  # whatever is still mounted below $T, deepest first
  awk -v t="$T/" 'index($2, t) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null
  done
  if [[ -z ${KEEP_TMP:-} && -z ${D4C_KEEP_E2E:-} ]]; then rm -rf "$T"; fi
}
trap cleanup EXIT

start_snapshotter() {
  rm -f "$SNAP_SOCK"  # a killed snapshotter leaves its socket file behind
  "$SNAP" --root "${ROOT_ARG:-$SNAP_ROOT}" --address "$SNAP_SOCK" --di3fs "$DI3FS" >>"$T/snapshotter.log" 2>&1 &
  SNAP_PID=$!
  wait_for 20 test -S "$SNAP_SOCK" || { cat "$T/snapshotter.log" >&2; echo "FAIL: snapshotter did not start" >&2; exit 1; }
}

cat >"$T/config.toml" <<EOF
version = 2
root = "$T/root"
state = "$T/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = "$CTRD_SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[proxy_plugins]
  [proxy_plugins.di3fs]
    type = "snapshot"
    address = "$SNAP_SOCK"
EOF
