#!/usr/bin/env bash
# A killed di3fs is replaced on the same FUSE connection: the container
# reading from it keeps getting correct bytes (issue: reliability). Under its
# own containerd with the di3fs snapshotter, typescript corpus image:
#  1. a container sha256sums three big files in a loop (each read through one
#     open descriptor) while the host drops the page cache, so reads reach
#     di3fs; its daemon is killed with SIGKILL 5 times
#  2. every sum is right, no read failed, the loop went on after each kill;
#     the snapshotter logged each takeover and never detached the mount
#  3. kill -9 of the snapshotter, restart (it adopts the daemon and holds its
#     connection again), kill -9 of di3fs: the container still reads right
#  4. the snapshotter under --supervise (with --cri-image-proxy): the
#     supervisor holds the /dev/fuse copy the snapshotter stores in it
#     (FDSTORE=1), so kill -9 of the snapshotter child AND of di3fs at the
#     same moment (the child stopped first, so it cannot replace the daemon
#     before it dies) is survived 3 times: the next child gets the copy back
#     (LISTEN_FDNAMES fuse-<id>) and starts the replacement; the container
#     still reads right; the CRI proxy's socket is the same one throughout
#  5. a new container on the image runs
# Needs Linux 6.9 (FUSE_NOTIFY_RESEND); on an older kernel the snapshotter
# holds nothing (the old way: docs/operations.md) and the test skips.
source "$(dirname "$0")/lib.sh"
require_root
require_corpus
source "$(dirname "$0")/ctrd_env.sh" tko

v1=$(corpus_tags typescript | head -1)
[[ -n $v1 ]] || skip_or_fail "typescript series missing from the corpus"
CD1=$(cdimg_for typescript "$v1")
ID1=$(image_id --cdimg "$CD1")
HEX=${ID1#sha256:}
N1=d4c.test/ts:$v1
LIB=app/node_modules/typescript/lib
FILES=(tsc.js tsserver.js typescript.js)
ROOTFS=$D4C_CORPUS/typescript/rootfs/$v1/rootfs
declare -A WANT
for f in "${FILES[@]}"; do WANT[/$LIB/$f]=$(sha256sum "$ROOTFS/$LIB/$f" | cut -c1-64); done

start_snapshotter
containerd --config "$T/config.toml" >"$T/containerd.log" 2>&1 &
CTRD_PID=$!
wait_for 30 CTR version || { tail -20 "$T/containerd.log" >&2; echo "FAIL: containerd did not start" >&2; exit 1; }
"$CTR_CLI" load --address "$CTRD_SOCK" --image "$N1" --cdimg "$CD1" >/dev/null || { echo "FAIL: load $N1" >&2; exit 1; }

PIDFILE=$SNAP_ROOT/run/$HEX.pid
MP=$SNAP_ROOT/mnt/$HEX
# The reader: sums (or an error line) appended to /tmp/sums in its own rootfs.
READER='while :; do for f in '"${FILES[*]/#//$LIB/}"'; do busybox sha256sum "$f" >>/tmp/sums 2>&1 || echo "READ-ERROR $f $?" >>/tmp/sums; done; done'
CTR run -d --snapshotter=di3fs "$N1" tko-reader sh -c "$READER" >/dev/null || { echo "FAIL: ctr run -d" >&2; exit 1; }
sums() { CTR task exec --exec-id "x$RANDOM$RANDOM" tko-reader sh -c 'cat /tmp/sums' 2>&1 || true; }
count() { sums | grep -c . || true; }
at_least() { (($(count) >= $1)); }
# replaced OLD-PID: the pid file names another daemon, and it runs
replaced() { local p; p=$(cat "$PIDFILE"); [[ $p != "$1" ]] && kill -0 "$p"; }
wait_for 30 test -s "$PIDFILE" || { echo "FAIL: no di3fs pid file $PIDFILE" >&2; exit 1; }
wait_for 30 at_least 3 || bad "the reader printed nothing: $(sums | head -5)"
if grep -q "is not held" "$T/snapshotter.log"; then
  grep "is not held" "$T/snapshotter.log" | sed 's/^/  | /' >&2
  skip_or_fail "the snapshotter holds no FUSE connection here (kernel older than 6.9?)"
fi

# kill_di3fs N: kill -9 of the daemon, wait for its replacement, and for the
# reader to have summed more files after it
kill_di3fs() {
  local old new before
  old=$(cat "$PIDFILE")
  kill -0 "$old" 2>/dev/null || { bad "kill $1: di3fs pid $old is not running"; return; }
  echo 3 >/proc/sys/vm/drop_caches || bad "cannot drop the page cache (the reads would not reach di3fs)"
  before=$(count)
  kill -9 "$old"
  wait_for 20 replaced "$old" || { bad "kill $1: no daemon replaced pid $old"; return; }
  new=$(cat "$PIDFILE")
  echo 3 >/proc/sys/vm/drop_caches
  wait_for 30 at_least $((before + 6)) || bad "kill $1: the reader did not go on after the takeover ($before lines)"
  e2e_log "kill $1: di3fs $old killed, $new took over; reader at $(count) sums"
}

# --- 1, 2: five kills under the reader --------------------------------------
for k in 1 2 3 4 5; do
  sleep 0.$((RANDOM % 9 + 1))
  kill_di3fs "$k"
done
took=$(grep -c "took over its connection at $MP" "$T/snapshotter.log" || true)
[[ $took -ge 5 ]] || bad "the snapshotter logged $took takeovers, want 5"
grep -q "detaching" "$T/snapshotter.log" && bad "the snapshotter detached a mount: $(grep detaching "$T/snapshotter.log")"
[[ $(grep -c "took over (lost requests replayed)" "$SNAP_ROOT/log/di3fs-$HEX.log") -ge 5 ]] ||
  bad "di3fs log: the replacements did not replay lost requests: $(tail -5 "$SNAP_ROOT/log/di3fs-$HEX.log")"

# --- 3. snapshotter restart, then a kill: the adopted connection is held ----
kill -9 "$SNAP_PID"
wait "$SNAP_PID" 2>/dev/null || true
start_snapshotter
wait_for 20 grep -q "adopted live di3fs mount $MP" "$T/snapshotter.log" || bad "the restarted snapshotter did not adopt $MP"
kill_di3fs 6

# --- 4. under --supervise: kill -9 of the snapshotter and di3fs together -----
kill -9 "$SNAP_PID"
wait "$SNAP_PID" 2>/dev/null || true
rm -f "$SNAP_SOCK"
CRI_SOCK=$T/cri.sock
adopted=$(grep -c "adopted live di3fs mount $MP" "$T/snapshotter.log" || true)
"$SNAP" --supervise --root "$SNAP_ROOT" --address "$SNAP_SOCK" --di3fs "$DI3FS" \
  --cri-image-proxy "$CRI_SOCK" --cri-upstream "$T/no-cri.sock" >>"$T/snapshotter.log" 2>&1 &
SNAP_PID=$!
adopted_more() { (($(grep -c "adopted live di3fs mount $MP" "$T/snapshotter.log") > adopted)); }
wait_for 20 adopted_more || bad "the supervised snapshotter did not adopt $MP"
child() { pgrep -P "$SNAP_PID" -x snapshotter | head -1; }
# the supervisor holds a /dev/fuse descriptor: the copy its child stored
stored() { ls -l "/proc/$SNAP_PID/fd" 2>/dev/null | grep -c ' -> /dev/fuse$'; }
wait_for 20 test "$(stored)" -ge 1 || bad "the supervisor holds no /dev/fuse descriptor (FDSTORE not received)"
cri_ino=$(stat -c %i "$CRI_SOCK" 2>/dev/null || true)
[[ -n $cri_ino ]] || bad "the supervisor did not bind --cri-image-proxy $CRI_SOCK"
took_dead() { grep -c "died while no snapshotter ran" "$T/snapshotter.log" || true; }
kill_both() {
  local old c new_child before
  old=$(cat "$PIDFILE")
  c=$(child)
  [[ -n $c ]] && kill -0 "$old" 2>/dev/null || { bad "kill both $1: snapshotter '$c' or di3fs $old not running"; return; }
  echo 3 >/proc/sys/vm/drop_caches
  before=$(count)
  local dead_before
  dead_before=$(took_dead)
  # Stopped first, so the child cannot see the daemon die and replace it:
  # both are gone before any snapshotter could act.
  kill -STOP "$c"
  kill -9 "$old" "$c"
  wait_for 20 replaced "$old" || { bad "kill both $1: no daemon replaced pid $old"; return; }
  new_child=$(child)
  [[ -n $new_child && $new_child != "$c" ]] || bad "kill both $1: the supervisor did not start a new snapshotter"
  (($(took_dead) > dead_before)) ||
    bad "kill both $1: the new snapshotter did not take over from the stored connection: $(tail -5 "$T/snapshotter.log")"
  echo 3 >/proc/sys/vm/drop_caches
  wait_for 30 at_least $((before + 6)) || bad "kill both $1: the reader did not go on after the takeover ($before lines)"
  [[ $(stat -c %i "$CRI_SOCK" 2>/dev/null) == "$cri_ino" ]] || bad "kill both $1: the CRI proxy socket was replaced"
  e2e_log "kill both $1: snapshotter $c and di3fs $old killed; snapshotter $new_child started $(cat "$PIDFILE") on the stored connection; reader at $(count) sums"
}
for k in 1 2 3; do
  sleep 0.$((RANDOM % 9 + 1))
  kill_both "$k"
done
passed_cri=$(grep -c "CRI image proxy on unix:$CRI_SOCK (passed socket)" "$T/snapshotter.log" || true)
((passed_cri >= 4)) || bad "the supervised snapshotters served the CRI proxy on a passed socket $passed_cri times, want 4"
grep -q "detaching" "$T/snapshotter.log" && bad "the snapshotter detached a mount: $(grep detaching "$T/snapshotter.log")"

# --- check every sum ---------------------------------------------------------
sleep 1
sums >"$T/sums.txt"
CTR task kill -s SIGKILL tko-reader >/dev/null 2>&1 || true
n=0
while read -r sum path rest; do
  n=$((n + 1))
  if [[ $sum == READ-ERROR || -z ${WANT[$path]:-} ]]; then
    bad "reader: $sum $path $rest"
  elif [[ $sum != "${WANT[$path]}" ]]; then
    bad "reader: wrong bytes in $path: $sum, want ${WANT[$path]}"
  fi
done <"$T/sums.txt"
((n >= 30)) || bad "only $n sums"
e2e_log "$n sums checked, $took takeovers"

# --- 5. a new container on the image ----------------------------------------
CTR task rm -f tko-reader >/dev/null 2>&1 || true
out=$(timeout 120 ctr --address "$CTRD_SOCK" run --rm --snapshotter=di3fs "$N1" tko-new \
  busybox sha256sum "/$LIB/tsc.js" 2>&1) || true
[[ $out == "${WANT[/$LIB/tsc.js]}"* ]] || bad "a new container after the kills: $out"

((fail == 0)) || { tail -30 "$T/snapshotter.log" >&2; exit 1; }
echo "PASS: a killed di3fs is taken over under a reading container ($n sums right, $took takeovers)"
