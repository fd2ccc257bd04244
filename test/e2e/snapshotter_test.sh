#!/usr/bin/env bash
# di3fs snapshotter end to end: its own containerd (Debian's, own root, state,
# socket and config with the proxy plugin), real runc, real di3fs FUSE mounts,
# typescript corpus images:
#  1. convert three versions, diff them (v1 full, v1->v2, v2->v3 deltas);
#     `convert --image NAME` from containerd's store gives the same image id
#  2. a delta whose parent is not loaded fails clearly and changes nothing;
#     a --snapshotter-root the snapshotter does not use is refused; load v1 (twice: harmless, once
#     naming the right root), then v2 and v3 as deltas: the snapshotter imports them into its store;
#     loads killed (-9) at several moments leave no lease and no stray file once the next load ran
#  3. `ctr run --rm --snapshotter=di3fs` of each prints its own version
#  4. writes inside a container land in its upper dir only
#  5. kill -9 of the snapshotter: a running container keeps reading its files
#     (di3fs runs detached); after a restart (its --root now given through a
#     symlink and "..") it adopts the live mounts and every image runs again; a dead
#     di3fs (kill -9) is taken over (Linux 6.9+) or remounted on demand
#  6. `ctr snapshots --snapshotter di3fs ls/info/usage/prepare/mounts/rm`
#     behave as with overlayfs; image rm + GC unmounts an unused image and
#     deletes it from the store; once every image is removed the store is empty
# The trap stops containers, containerd, the snapshotter and di3fs, and
# unmounts everything; the script then checks /proc/mounts.
source "$(dirname "$0")/lib.sh"
require_root
require_corpus
source "$(dirname "$0")/ctrd_env.sh" snap

# --- 1. images -------------------------------------------------------------
mapfile -t TAGS < <(corpus_tags typescript | head -3)
((${#TAGS[@]} == 3)) || skip_or_fail "typescript series needs 3 versions in the corpus"
declare -A CD ID
for t in "${TAGS[@]}"; do
  CD[$t]=$(cdimg_for typescript "$t")
  ID[$t]=$(image_id --cdimg "${CD[$t]}")
done
e2e_log "images: ${TAGS[*]} -> ${ID[${TAGS[0]}]:0:19} ${ID[${TAGS[1]}]:0:19} ${ID[${TAGS[2]}]:0:19}"
D12=$T/d12.cdimg
D23=$T/d23.cdimg
"$CTR_CLI" cdimg diff --oldCdimg "${CD[${TAGS[0]}]}" --newCdimg "${CD[${TAGS[1]}]}" --outCdimg "$D12" >"$T/diff.log" 2>&1 ||
  { cat "$T/diff.log" >&2; echo "FAIL: cdimg diff" >&2; exit 1; }
"$CTR_CLI" cdimg diff --oldCdimg "${CD[${TAGS[1]}]}" --newCdimg "${CD[${TAGS[2]}]}" --outCdimg "$D23" >>"$T/diff.log" 2>&1 ||
  { cat "$T/diff.log" >&2; echo "FAIL: cdimg diff" >&2; exit 1; }
e2e_log "deltas: $(stat -c %s "$D12") and $(stat -c %s "$D23") bytes (full: $(stat -c %s "${CD[${TAGS[1]}]}"))"

start_snapshotter
[[ $(stat -c %a "$SNAP_SOCK") == 600 ]] || bad "snapshotter socket mode is $(stat -c %a "$SNAP_SOCK"), want 600"
containerd --config "$T/config.toml" >"$T/containerd.log" 2>&1 &
CTRD_PID=$!
wait_for 30 CTR version || { tail -20 "$T/containerd.log" >&2; echo "FAIL: containerd did not start" >&2; exit 1; }
e2e_log "containerd $CTRD_PID on $CTRD_SOCK, snapshotter $SNAP_PID on $SNAP_SOCK"

# convert from containerd's own store (ctr image import, then a plain name)
v1=${TAGS[0]}
CTR image import --no-unpack --index-name "import/ts:$v1" "$D4C_CORPUS/typescript/docker/typescript-$v1.tar" >/dev/null ||
  bad "ctr image import"
if "$CTR_CLI" convert --image "import/ts:$v1" --address "$CTRD_SOCK" --output "$T/from-ctrd" --cdimg >"$T/convert.log" 2>&1; then
  got=$(image_id --cdimg "$T/from-ctrd/image.cdimg")
  [[ $got == "${ID[$v1]}" ]] || bad "convert from containerd: image id $got, want ${ID[$v1]}"
else
  cat "$T/convert.log" >&2
  bad "ctr-cli convert --image import/ts:$v1 (containerd store)"
fi
"$CTR_CLI" convert --image "no/such:image" --address "$CTRD_SOCK" --output "$T/none" --cdimg >"$T/convert-bad.log" 2>&1 &&
  bad "convert of a missing containerd image succeeded"
grep -q "not found" "$T/convert-bad.log" || bad "convert of a missing image: unclear message: $(cat "$T/convert-bad.log")"

# --- 2. load -----------------------------------------------------------------
# No --snapshotter-root: the snapshotter reports its root through containerd.
LOAD() { "$CTR_CLI" load --address "$CTRD_SOCK" "$@"; }
if LOAD --image "d4c.test/ts:${TAGS[1]}" --cdimg "$D12" >"$T/load-bad.log" 2>&1; then
  bad "load of a delta whose parent is not loaded succeeded"
else
  grep -q "${ID[$v1]#sha256:}" "$T/load-bad.log" || bad "load without parent: message does not name the parent: $(cat "$T/load-bad.log")"
  [[ -z $(ls -A "$SNAP_ROOT/store") ]] || bad "failed load left files in the store: $(ls "$SNAP_ROOT/store")"
  CTR image ls -q | grep "d4c.test/ts:${TAGS[1]}" >/dev/null && bad "failed load created an image record"
fi
# A --snapshotter-root that is not the running snapshotter's is refused,
# naming the right one, and nothing is written there (operations.md).
mkdir -p "$T/not-the-root"
if "$CTR_CLI" load --address "$CTRD_SOCK" --snapshotter-root "$T/not-the-root" --image "d4c.test/ts:wrong-root" \
  --cdimg "${CD[$v1]}" >"$T/load-wrong-root.log" 2>&1; then
  bad "load into a --snapshotter-root the snapshotter does not use succeeded"
else
  grep -qF -- "pass --snapshotter-root $SNAP_ROOT" "$T/load-wrong-root.log" ||
    bad "load with a wrong root: message does not name $SNAP_ROOT: $(cat "$T/load-wrong-root.log")"
  [[ -z $(ls -A "$T/not-the-root") ]] || bad "load with a wrong root wrote $(ls -A "$T/not-the-root")"
fi
LOAD --image "d4c.test/ts:$v1" --cdimg "${CD[$v1]}" || bad "load ts:$v1"
LOAD --image "d4c.test/ts:$v1" --cdimg "${CD[$v1]}" --snapshotter-root "$SNAP_ROOT" >/dev/null || bad "second load of ts:$v1"
LOAD --image "d4c.test/ts:${TAGS[1]}" --cdimg "$D12" || bad "load delta ts:${TAGS[1]}"
LOAD --image "d4c.test/ts:${TAGS[2]}" --cdimg "$D23" || bad "load delta ts:${TAGS[2]}"
[[ $(ls "$SNAP_ROOT/store" | wc -l) == 3 ]] || bad "store holds $(ls "$SNAP_ROOT/store" | wc -l) files, want 3"
CTR image check 2>&1 | grep "d4c.test/ts:" | grep -v complete >/dev/null && bad "ctr image check: $(CTR image check)"
# kill -9 of a load at several moments: the next load ends the dead loads'
# leases, and nothing of them stays (no stray file in the store)
for d in 0.02 0.1 0.3; do
  "$CTR_CLI" load --address "$CTRD_SOCK" --image "d4c.test/ts:killed" --cdimg "${CD[$v1]}" >/dev/null 2>&1 &
  lp=$!
  sleep "$d"
  kill -9 "$lp" 2>/dev/null || true
  wait "$lp" 2>/dev/null || true
done
LOAD --image "d4c.test/ts:$v1" --cdimg "${CD[$v1]}" >/dev/null || bad "load after killed loads"
CTR image rm "d4c.test/ts:killed" >/dev/null 2>&1 || true
stale=$(CTR leases ls 2>/dev/null | grep -c 'org.d4c.lease.owner') || true
((stale == 0)) || bad "leases of killed loads left after the next load: $(CTR leases ls)"
strays=$(ls "$SNAP_ROOT/store" | grep -v '^[0-9a-f]\{64\}\.cdimg$') || true
[[ -z $strays ]] || bad "stray files in the store after killed loads: $strays"

# --- 3. run each -------------------------------------------------------------
VERSION_CMD='grep "\"version\"" /app/node_modules/typescript/package.json'
check_runs() {  # check_runs LABEL: every image prints its version
  local t out
  for t in "${TAGS[@]}"; do
    out=$(timeout 120 ctr --address "$CTRD_SOCK" run --rm --snapshotter=di3fs "d4c.test/ts:$t" "run-$1-${t//./-}" sh -c "$VERSION_CMD" 2>&1) || true
    if [[ $out == *"\"version\": \"$t\""* ]]; then
      e2e_log "$1: ts:$t prints $out"
    else
      bad "$1: ts:$t printed: $out"
    fi
  done
}
check_runs first
# ctr run must not have unpacked anything: only our image snapshots exist
CTR snapshots --snapshotter di3fs ls >"$T/snap-ls.txt"
for t in "${TAGS[@]}"; do
  grep -q "^${ID[$t]} .*Committed" "$T/snap-ls.txt" || bad "snapshot ${ID[$t]} missing from ctr snapshots ls: $(cat "$T/snap-ls.txt")"
done

# --- 4. writes go to the upper dir only --------------------------------------
CTR run -d --snapshotter=di3fs "d4c.test/ts:$v1" long busybox sleep 3600 >/dev/null || bad "ctr run -d long"
wait_for 30 sh -c "ctr --address $CTRD_SOCK task ls | grep -q 'long.*RUNNING'" || bad "container long is not running"
CTR task exec --exec-id w1 long sh -c 'echo written-inside > /app/new-file && echo more >> /app/node_modules/typescript/package.json' ||
  bad "write inside container"
MNT_V1=$SNAP_ROOT/mnt/${ID[$v1]#sha256:}
mountpoint -q "$MNT_V1" || bad "di3fs of ts:$v1 is not mounted at $MNT_V1"
opts=$(awk -v m="$MNT_V1" '$2 == m {print $4}' /proc/mounts)
[[ ,$opts, == *,nosuid,* && ,$opts, == *,nodev,* && ,$opts, == *,ro,* ]] ||
  bad "di3fs mount options on the host are '$opts', want ro,nosuid,nodev (docs/operations.md)"
[[ -e $MNT_V1/app/new-file ]] && bad "a write inside the container reached the di3fs mount"
tail -c 20 "$MNT_V1/app/node_modules/typescript/package.json" | grep more >/dev/null && bad "an append inside reached the lower file"
upper=$(grep -l written-inside "$SNAP_ROOT"/snapshots/*/fs/app/new-file 2>/dev/null | head -1) || true
[[ -n $upper ]] || bad "the written file is not in an upper dir under $SNAP_ROOT/snapshots"
CTR snapshots --snapshotter di3fs info long >"$T/info.json" || bad "ctr snapshots info long"
[[ $(jq -r .Kind "$T/info.json") == Active && $(jq -r .Parent "$T/info.json") == "${ID[$v1]}" ]] ||
  bad "info long: $(cat "$T/info.json")"
CTR snapshots --snapshotter di3fs info "${ID[$v1]}" | jq -e '.Kind == "Committed" and
  .Labels["containerd.io/snapshot/di3fs.image-id"] != null' >/dev/null || bad "info of the image snapshot"
CTR snapshots --snapshotter di3fs usage long | grep long >/dev/null || bad "ctr snapshots usage long"

# --- 5. crash and restart ----------------------------------------------------
di3fs_pids_before=$(cat "$SNAP_ROOT"/run/*.pid 2>/dev/null | sort | tr '\n' ' ') || true
kill -9 "$SNAP_PID"
wait "$SNAP_PID" 2>/dev/null || true
e2e_log "snapshotter killed (-9); di3fs pids: $di3fs_pids_before"
for p in $di3fs_pids_before; do kill -0 "$p" 2>/dev/null || bad "di3fs $p died with the snapshotter"; done
out=$(CTR task exec --exec-id r1 long sh -c "cat /app/new-file; $VERSION_CMD" 2>&1) || true
[[ $out == *written-inside*"\"version\": \"$v1\""* ]] || bad "running container while the snapshotter is down: $out"
# Restart with the same root given through a symlink and "..": the mount
# table names mounts by resolved paths, so the root is resolved first.
mkdir -p "$T/x" && ln -sfn "$SNAP_ROOT" "$T/sn-link"
ROOT_ARG=$T/x/../sn-link
start_snapshotter
# containerd's connection to the proxy plugin is in reconnect backoff
wait_for 60 CTR snapshots --snapshotter di3fs ls || bad "containerd did not reconnect to the restarted snapshotter"
grep -q "adopted live di3fs mount" "$T/snapshotter.log" || bad "restarted snapshotter did not adopt the live mount"
out=$(CTR task exec --exec-id r2 long sh -c "cat /app/new-file; $VERSION_CMD" 2>&1) || true
[[ $out == *written-inside*"\"version\": \"$v1\""* ]] || bad "running container after the restart: $out"
check_runs restart
# a di3fs that died is replaced (or, before Linux 6.9, mounted again) when an image needs it
v3=${TAGS[2]}
MNT_V3=$SNAP_ROOT/mnt/${ID[$v3]#sha256:}
pid3=$(cat "$SNAP_ROOT/run/${ID[$v3]#sha256:}.pid" 2>/dev/null) || true
if [[ -n $pid3 ]] && kill -0 "$pid3" 2>/dev/null; then
  kill -9 "$pid3"
  sleep 0.3
  out=$(timeout 120 ctr --address "$CTRD_SOCK" run --rm --snapshotter=di3fs "d4c.test/ts:$v3" after-di3fs-kill sh -c "$VERSION_CMD" 2>&1) || true
  [[ $out == *"\"version\": \"$v3\""* ]] || bad "d4c.test/ts:$v3 after its di3fs was killed: $out"
  # Linux 6.9+: a replacement took over the held connection; older: detached and remounted
  grep -q -e "is dead" -e "took over its connection" "$T/snapshotter.log" ||
    bad "snapshotter did not notice the dead di3fs mount"
else
  bad "no live di3fs for ts:$v3 at $MNT_V3"
fi

# --- 6. ctr snapshots behaves as with overlayfs --------------------------------
CTR snapshots --snapshotter di3fs prepare scratch "${ID[$v1]}" >/dev/null || bad "ctr snapshots prepare"
CTR snapshots --snapshotter di3fs mounts /mnt scratch | grep "lowerdir=$MNT_V1" >/dev/null || bad "mounts of scratch: $(CTR snapshots --snapshotter di3fs mounts /mnt scratch)"
# the mounts come from the View reply itself: the view has no gc.root label,
# so containerd may collect it before a second `ctr snapshots mounts` call
out=$(CTR snapshots --snapshotter di3fs view --target /mnt scratch-view "${ID[$v1]}" 2>&1) || bad "ctr snapshots view: $out"
grep -q "bind $MNT_V1" <<<"$out" || bad "a view of an image is not a bind mount of its di3fs mount: $out"
CTR snapshots --snapshotter di3fs prepare scratch "${ID[$v1]}" >/dev/null 2>&1 && bad "prepare of an existing key succeeded"
CTR snapshots --snapshotter di3fs commit scratch-c scratch || bad "ctr snapshots commit"
out=$(CTR snapshots --snapshotter di3fs rm "${ID[$v1]}" 2>&1) && bad "rm of an image snapshot with children succeeded"
[[ $out == *child* ]] || bad "rm of an image snapshot with children: $out"
out=$(CTR snapshots --snapshotter di3fs rm scratch-c 2>&1) || bad "ctr snapshots rm: $out"
# `ctr snapshots view` sets no gc.root label, so containerd's garbage
# collector may already have dropped the view (as it would with overlayfs)
out=$(CTR snapshots --snapshotter di3fs rm scratch-view 2>&1) || [[ $out == *"not found"* ]] || bad "ctr snapshots rm scratch-view: $out"
out=$(CTR snapshots --snapshotter di3fs ls)
grep -q scratch <<<"$out" && bad "removed snapshots still listed: $out"
out=$(CTR snapshots --snapshotter di3fs info nonexistent 2>&1) && bad "info of a missing key succeeded"
[[ $out == *"not found"* ]] || bad "info of a missing key: $out"

# removing an unused image lets containerd's GC remove its snapshot; we unmount it
CTR image rm --sync "d4c.test/ts:$v3" >/dev/null || bad "ctr image rm ts:$v3"
wait_for 20 sh -c "! grep -q ' $MNT_V3 ' /proc/mounts" || bad "di3fs of removed image ts:$v3 is still mounted"
CTR snapshots --snapshotter di3fs ls | grep "^${ID[$v3]} " >/dev/null && bad "snapshot of removed image ts:$v3 still listed"
in_store() { [[ -f $SNAP_ROOT/store/${1#sha256:}.cdimg ]]; }
in_store "${ID[$v3]}" && bad "removed image ts:$v3 is still in the store: $(ls "$SNAP_ROOT/store")"
in_store "${ID[$v1]}" && in_store "${ID[${TAGS[1]}]}" || bad "images still in use left the store: $(ls "$SNAP_ROOT/store")"

CTR task kill -s SIGKILL long >/dev/null 2>&1 || bad "task kill long"
wait_for 20 sh -c "ctr --address $CTRD_SOCK task ls | grep -q 'long.*STOPPED'" || bad "task long did not stop"
CTR task rm long >/dev/null || bad "task rm long"
CTR container rm long >/dev/null || bad "container rm long"
# --- compaction ----------------------------------------------------------------
# v1 is the parent of v2. While a container reads v2, v1's image is removed:
# v1's file is then kept only for v2's chain, so the snapshotter makes v2 full
# in the background (same image id) and v1 leaves the store. The snapshotter
# is killed (-9) as the compaction starts and restarted: the store opens,
# the compaction is done again, and the running container and a new one read
# the same bytes throughout.
v2=${TAGS[1]}
big=app/node_modules/typescript/lib/typescript.js
want=$(sha256sum "$D4C_CORPUS/typescript/rootfs/$v2/rootfs/$big" | cut -d' ' -f1)
CTR run -d --snapshotter=di3fs "d4c.test/ts:$v2" reader busybox sleep 3600 >/dev/null || bad "ctr run -d reader"
sum_in_reader() { CTR task exec --exec-id "r$RANDOM" reader busybox sha256sum "/$big" 2>&1 | cut -d' ' -f1; }
[[ $(sum_in_reader) == "$want" ]] || bad "reader: /$big differs before compaction"
kind_of() { "$CTR_CLI" cdimg show --cdimg "$SNAP_ROOT/store/${1#sha256:}.cdimg" --json 2>/dev/null | jq -r .kind; }
[[ $(kind_of "${ID[$v2]}") == delta ]] || bad "ts:$v2 should be a delta before compaction: $(kind_of "${ID[$v2]}")"
log_lines=$(wc -l <"$T/snapshotter.log")
CTR image rm --sync "d4c.test/ts:$v1" >/dev/null || bad "ctr image rm ts:$v1"
# kill -9 as soon as the compaction announces itself (it is then building its files)
wait_for 30 sh -c "tail -n +$((log_lines + 1)) '$T/snapshotter.log' | grep -q 'compaction: image sha256:${ID[$v2]#sha256:} becomes full'" ||
  bad "removing ts:$v1 did not start a compaction of ts:$v2"
kill -9 "$SNAP_PID"
wait "$SNAP_PID" 2>/dev/null || true
e2e_log "snapshotter killed (-9) during the compaction of ts:$v2; store: $(ls "$SNAP_ROOT/store" | tr '\n' ' ')"
[[ $(sum_in_reader) == "$want" ]] || bad "reader: /$big differs while the snapshotter is down"
start_snapshotter
wait_for 60 CTR snapshots --snapshotter di3fs ls || bad "containerd did not reconnect to the restarted snapshotter"
wait_for 60 sh -c "! ctr --address $CTRD_SOCK snapshots --snapshotter di3fs ls | grep -q '^${ID[$v1]} '" ||
  bad "snapshot of removed image ts:$v1 still listed"
# (it recompresses typescript's changed files, ~20 MB, at zstd -19: tens of
# seconds, more on a loaded machine)
wait_for 240 sh -c "[ ! -e '$SNAP_ROOT/store/${ID[$v1]#sha256:}.cdimg' ]" ||
  bad "image ts:$v1 is still in the store: the compaction of ts:$v2 did not finish after the restart"
[[ $(kind_of "${ID[$v2]}") == full ]] || bad "ts:$v2 is not full after the compaction: $(kind_of "${ID[$v2]}")"
# at the default --compact-level 19 the compacted file is the full cdimg convert writes
cmp -s "$SNAP_ROOT/store/${ID[$v2]#sha256:}.cdimg" "${CD[$v2]}" ||
  bad "compacted ts:$v2 differs from the full cdimg convert wrote (${CD[$v2]})"
[[ -z $(ls -A "$SNAP_ROOT/compact") ]] || bad "compaction work files left: $(ls -A "$SNAP_ROOT/compact")"
[[ $(sum_in_reader) == "$want" ]] || bad "reader: /$big differs after the compaction (running container)"
out=$(CTR run --rm --snapshotter=di3fs "d4c.test/ts:$v2" after busybox sha256sum "/$big" 2>&1)
[[ ${out%% *} == "$want" ]] || bad "a new container of ts:$v2 after the compaction: $out"
e2e_log "compaction: ts:$v2 full ($(stat -c %s "$SNAP_ROOT/store/${ID[$v2]#sha256:}.cdimg") bytes), ts:$v1 gone; readers agree"
CTR task kill -s SIGKILL reader >/dev/null 2>&1 || bad "task kill reader"
wait_for 20 sh -c "ctr --address $CTRD_SOCK task ls | grep -q 'reader.*STOPPED'" || bad "task reader did not stop"
CTR task rm reader >/dev/null || bad "task rm reader"
CTR container rm reader >/dev/null || bad "container rm reader"
# Then v2 goes and the store is empty (Remove and Cleanup, driven by containerd's GC).
CTR image rm --sync "d4c.test/ts:$v2" >/dev/null || bad "ctr image rm ts:$v2"
wait_for 20 sh -c "[ -z \"\$(ls -A $SNAP_ROOT/store)\" ]" || bad "store not empty after every image was removed: $(ls -A "$SNAP_ROOT/store")"
left_cache=$(find "$SNAP_ROOT/cache" -mindepth 1 -maxdepth 1 ! -name '.*' 2>/dev/null)
[[ -z $left_cache ]] || bad "content cache not empty after every image was removed: $left_cache"
e2e_log "every image removed: store empty, $(awk -v t="$SNAP_ROOT/mnt/" 'index($2, t) == 1' /proc/mounts | wc -l) di3fs mount(s) left"
grep -q 'rpc=Prepare' "$T/snapshotter.log" || bad "no structured RPC log lines"

# --- cleanup leaves nothing ---------------------------------------------------
KEEP_TMP=1 cleanup
leftover=$(awk -v t="$T/" 'index($2, t) == 1' /proc/mounts)
[[ -z $leftover ]] || bad "mounts left behind: $leftover"
left_pids=$(our_pids)
[[ -z $left_pids ]] || bad "processes left behind: $left_pids"
if ((fail)); then
  echo "--- snapshotter log (tail)" >&2
  tail -40 "$T/snapshotter.log" >&2
  [[ -n ${D4C_KEEP_E2E:-} ]] || rm -rf "$T"
  echo "snapshotter_test: FAILED" >&2
  exit 1
fi
rm -rf "$T"
echo "snapshotter_test: OK"
