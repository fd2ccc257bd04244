#!/usr/bin/env bash
# install_snapshotter.sh on a throw-away prefix: it installs the binaries,
# adds the proxy plugin to an existing containerd config exactly once (keeping
# the rest of the file), writes a socket and a service unit that
# `systemd-analyze verify` accepts, and the installed snapshotter started with
# the unit's ExecStart line and the socket passed as systemd passes it
# (systemd-socket-activate: LISTEN_FDS) serves a containerd that uses the
# written config; the snapshotter refuses a socket bound to another path.
source "$(dirname "$0")/lib.sh"
require_root
command -v containerd >/dev/null || skip_or_fail "containerd not installed"
command -v systemd-analyze >/dev/null || skip_or_fail "systemd-analyze not installed (package systemd)"
T=$(mktemp -d /tmp/d4c-inst.XXXXXX)
CTRD_PID= SNAP_PID=
fail=0
bad() { echo "FAIL: $*" >&2; fail=1; }
cleanup() {
  set +e
  [[ -n $CTRD_PID ]] && kill "$CTRD_PID" 2>/dev/null
  [[ -n $SNAP_PID ]] && kill "$SNAP_PID" 2>/dev/null
  wait 2>/dev/null
  [[ -z ${D4C_KEEP_E2E:-} ]] && rm -rf "$T"
}
trap cleanup EXIT

CFG=$T/etc/config.toml
mkdir -p "$T/etc"
printf '%s\n' 'version = 2' "root = \"$T/root\"" "state = \"$T/state\"" \
  'disabled_plugins = ["io.containerd.grpc.v1.cri"]' '[grpc]' "  address = \"$T/c.sock\"" \
  '[ttrpc]' "  address = \"$T/c.sock.ttrpc\"" >"$CFG"
before=$(cat "$CFG")
inst() {
  bash "$D4C_SOURCE_DIR/install_snapshotter.sh" --build-dir "$D4C_BUILD_DIR" --prefix "$T/usr" --config "$CFG" \
    --root "$T/sn" --address "$T/s.sock" --unit "$T/di3fs-snapshotter.service" "$@"
}
inst >"$T/install1.log" 2>&1 || { cat "$T/install1.log" >&2; echo "FAIL: install_snapshotter.sh failed" >&2; exit 1; }
inst >"$T/install2.log" 2>&1 || bad "a second install failed: $(cat "$T/install2.log")"
for b in snapshotter di3fs ctr-cli; do [[ -x $T/usr/bin/$b ]] || bad "$b not installed"; done
n=$(grep -c '^\[proxy_plugins.di3fs\]' "$CFG")
((n == 1)) || bad "config has the plugin $n times, want once: $(cat "$CFG")"
[[ $(head -c ${#before} "$CFG") == "$before" ]] || bad "the existing config was not kept as it was"
grep -q "unchanged" "$T/install2.log" || bad "second install did not say the config was unchanged"
ls "$T"/etc/config.toml.bak-* >/dev/null 2>&1 || bad "no backup of the edited config"
out=$(systemd-analyze verify --man=no "$T/di3fs-snapshotter.socket" "$T/di3fs-snapshotter.service" 2>&1) ||
  bad "systemd-analyze verify: $out"
grep -q '^KillMode=process' "$T/di3fs-snapshotter.service" || bad "unit would kill di3fs daemons on restart (KillMode)"
grep -q '^Requires=di3fs-snapshotter.socket$' "$T/di3fs-snapshotter.service" || bad "service does not require its socket"
grep -q '^After=di3fs-snapshotter.socket' "$T/di3fs-snapshotter.service" || bad "service is not ordered after its socket"
grep -qx "ListenStream=$T/s.sock" "$T/di3fs-snapshotter.socket" || bad "socket unit does not listen on --address"
grep -qx 'SocketMode=0600' "$T/di3fs-snapshotter.socket" || bad "socket unit's mode is not 0600"
bash "$D4C_SOURCE_DIR/install_snapshotter.sh" --build-dir "$D4C_BUILD_DIR" --prefix "$T/usr2" --config "$CFG" \
  --root "$T/sn" --address "$T/s.sock" --unit "$T/nosd/di3fs-snapshotter.service" --no-systemd >"$T/install3.log" 2>&1 ||
  bad "--no-systemd install failed: $(cat "$T/install3.log")"
[[ -e $T/nosd ]] && bad "--no-systemd wrote units"
grep -q -- '--supervise' "$T/install3.log" || bad "--no-systemd does not say how to keep the socket (--supervise)"

# run what the unit runs with the socket systemd would pass, and containerd
# with the edited config
exec_start=$(sed -n 's/^ExecStart=//p' "$T/di3fs-snapshotter.service")
# systemd-socket-activate starts the program on the first connection (poke)
poke() { wait_for 10 test -S "$1" && timeout 5 curl -s --unix-socket "$1" http://snapshotter/ >/dev/null 2>&1; true; }
if command -v systemd-socket-activate >/dev/null && command -v curl >/dev/null; then
  # a socket on another path than --address is refused, clearly
  poke "$T/other.sock" &
  out=$(timeout 20 systemd-socket-activate -l "$T/other.sock" $exec_start 2>&1) && bad "snapshotter served a socket on another path"
  [[ $out == *"bound to '$T/other.sock', not to --address $T/s.sock"* ]] || bad "wrong socket path: unclear: $out"
  systemd-socket-activate -l "$T/s.sock" $exec_start >"$T/snapshotter.log" 2>&1 &
  SNAP_PID=$!
  poke "$T/s.sock" &
  wait_for 20 grep -q 'serving on unix:.*(passed socket)' "$T/snapshotter.log" ||
    bad "installed snapshotter did not serve the passed socket: $(tail -5 "$T/snapshotter.log")"
else
  e2e_log "systemd-socket-activate or curl not installed: the snapshotter binds the socket itself"
  $exec_start >"$T/snapshotter.log" 2>&1 &
  SNAP_PID=$!
  wait_for 20 test -S "$T/s.sock" || bad "installed snapshotter did not create $T/s.sock: $(tail -5 "$T/snapshotter.log")"
fi
containerd --config "$CFG" >"$T/containerd.log" 2>&1 &
CTRD_PID=$!
wait_for 30 ctr --address "$T/c.sock" version || bad "containerd with the edited config did not start"
# (List is answered from containerd's metadata; Prepare reaches the plugin)
out=$(ctr --address "$T/c.sock" snapshots --snapshotter di3fs prepare probe 2>&1) || bad "ctr snapshots prepare: $out"
out=$(ctr --address "$T/c.sock" snapshots --snapshotter di3fs ls 2>&1) || bad "ctr snapshots ls: $out"
[[ $out == *probe* ]] || bad "prepared snapshot not listed: $out"
wait_for 5 grep -q 'rpc=Prepare key=.*probe' "$T/snapshotter.log" || bad "Prepare did not reach the installed snapshotter"
ctr --address "$T/c.sock" snapshots --snapshotter di3fs rm probe || bad "ctr snapshots rm"
((fail == 0)) && e2e_log "install: binaries, config (plugin once, rest kept), units verified, installed snapshotter serves containerd on the passed socket"
exit $fail
