#!/usr/bin/env bash
# Operator commands end to end (ctr-cli images / rm / prune) against the di3fs
# snapshotter under its own containerd (same set-up as snapshotter_test.sh),
# typescript corpus images:
#  1. load v1 (full) and v2 (delta from v1): `ctr-cli images` lists both with
#     depth 0/1, their names, the bytes of their cdimgs and of their chains
#  2. `ctr-cli rm` of an image no di3fs load made is refused, naming why;
#     a container on v2 shows as a user; prune --all keeps what it uses
#  3. `ctr-cli rm --sync` of v1 frees nothing (v2's chain needs its cdimg);
#     rm of v2 frees both; the store is empty
#  4. prune --all removes a named image no container uses; prune bounds the
#     download directory (old files go, a fresh one stays)
source "$(dirname "$0")/lib.sh"
require_root
require_corpus
source "$(dirname "$0")/ctrd_env.sh" ops


# --- 1. images and listing ----------------------------------------------------
mapfile -t TAGS < <(corpus_tags typescript | head -2)
((${#TAGS[@]} == 2)) || skip_or_fail "typescript series needs 2 versions in the corpus"
v1=${TAGS[0]}
v2=${TAGS[1]}
CD1=$(cdimg_for typescript "$v1")
ID1=$(image_id --cdimg "$CD1")
D12=$T/d12.cdimg
"$CTR_CLI" cdimg diff --oldCdimg "$CD1" --newCdimg "$(cdimg_for typescript "$v2")" --outCdimg "$D12" >"$T/diff.log" 2>&1 ||
  { cat "$T/diff.log" >&2; echo "FAIL: cdimg diff" >&2; exit 1; }
ID2=$(image_id --cdimg "$D12")
S1=$(stat -c %s "$CD1")
S12=$(stat -c %s "$D12")
e2e_log "v1 $v1 ${ID1:0:19} ($S1 bytes), v2 $v2 ${ID2:0:19} (delta $S12 bytes)"

start_snapshotter
containerd --config "$T/config.toml" >"$T/containerd.log" 2>&1 &
CTRD_PID=$!
wait_for 30 CTR version || { tail -20 "$T/containerd.log" >&2; echo "FAIL: containerd did not start" >&2; exit 1; }
CLI() { "$CTR_CLI" "$1" --address "$CTRD_SOCK" "${@:2}"; }
N1=d4c.test/ts:$v1
N2=d4c.test/ts:$v2

# An empty store lists nothing.
CLI images --json >"$T/images0.json" || bad "images on an empty store"
[[ $(jq '.images | length' "$T/images0.json") == 0 ]] || bad "empty store lists: $(cat "$T/images0.json")"
CLI load --image "$N1" --cdimg "$CD1" >/dev/null || bad "load $N1"
CLI load --image "$N2" --cdimg "$D12" >/dev/null || bad "load $N2"
CLI images | tee "$T/images1.txt" | sed 's/^/  | /' || bad "ctr-cli images"
CLI images --json >"$T/images1.json" || bad "ctr-cli images --json"
img() { jq -r --arg id "$2" ".images[] | select(.id == \$id) | $3" "$1"; }
[[ $(jq '.images | length' "$T/images1.json") == 2 ]] || bad "images lists $(jq '.images | length' "$T/images1.json") images, want 2"
[[ $(img "$T/images1.json" "$ID1" .kind) == full && $(img "$T/images1.json" "$ID1" .depth) == 0 ]] || bad "v1 not full/depth 0"
[[ $(img "$T/images1.json" "$ID2" .kind) == delta && $(img "$T/images1.json" "$ID2" .depth) == 1 ]] || bad "v2 not delta/depth 1"
[[ $(img "$T/images1.json" "$ID2" .parent) == "$ID1" ]] || bad "v2's parent is not v1"
[[ $(img "$T/images1.json" "$ID1" .bytes) == "$S1" ]] || bad "v1 bytes $(img "$T/images1.json" "$ID1" .bytes), want $S1"
[[ $(img "$T/images1.json" "$ID2" .bytes) == "$S12" ]] || bad "v2 bytes $(img "$T/images1.json" "$ID2" .bytes), want $S12"
[[ $(img "$T/images1.json" "$ID2" .chain_bytes) == $((S1 + S12)) ]] || bad "v2 chain bytes, want $((S1 + S12))"
[[ $(img "$T/images1.json" "$ID1" '.names | join(",")') == "docker.io/$N1" || $(img "$T/images1.json" "$ID1" '.names | join(",")') == "$N1" ]] ||
  bad "v1 names: $(img "$T/images1.json" "$ID1" '.names | join(",")')"
[[ $(img "$T/images1.json" "$ID1" '.children | join(",")') == "$ID2" ]] || bad "v1 is not listed as v2's base"
grep -q "^${ID2:7:12} .*delta .* 1 .*$N2" "$T/images1.txt" || bad "images table: no row for v2 with depth 1 and its name"

# --- 2. refusals and users ---------------------------------------------------
CTR image import --no-unpack --index-name "import/ts:$v1" "$D4C_CORPUS/typescript/docker/typescript-$v1.tar" >/dev/null ||
  bad "ctr image import"
if CLI rm "import/ts:$v1" >"$T/rm-plain.log" 2>&1; then
  bad "rm of an image no di3fs load made succeeded"
else
  sed 's/^/  | /' "$T/rm-plain.log"
  grep -q "is not a di3fs image" "$T/rm-plain.log" || bad "rm of a plain image: unclear: $(cat "$T/rm-plain.log")"
  CTR image ls -q | grep "import/ts:$v1" >/dev/null || bad "refused rm removed the image anyway"
fi
CLI rm "no/such:image" >"$T/rm-none.log" 2>&1 && bad "rm of a missing image succeeded"
grep -q "no image docker.io/no/such:image" "$T/rm-none.log" || bad "rm of a missing image: unclear: $(cat "$T/rm-none.log")"
CTR image rm "import/ts:$v1" >/dev/null

CTR container create --snapshotter di3fs "$N2" ops-c1 true >/dev/null || bad "ctr container create on $N2"
CLI images | sed 's/^/  | /' || bad "images with a container"
CLI images --json >"$T/images2.json"
[[ $(img "$T/images2.json" "$ID2" '.containers | length') == 1 ]] || bad "v2's container is not listed: $(cat "$T/images2.json")"
DL=$T/downloads
mkdir -p "$DL"
CLI prune --all --dry-run --download-dir "$DL" | tee "$T/prune-dry.txt" | sed 's/^/  | /' || bad "prune --all --dry-run"
grep -q "would remove image .*$N1" "$T/prune-dry.txt" || bad "prune --all --dry-run does not offer $N1"
grep -q "would remove image .*$N2" "$T/prune-dry.txt" && bad "prune --all --dry-run offers $N2, which a container uses"
grep -q "^store: would free 0 images" "$T/prune-dry.txt" || bad "prune --dry-run: v1's cdimg is needed by v2's chain"

# --- 3. rm ------------------------------------------------------------------
CLI rm --sync "$N1" | tee "$T/rm1.txt" | sed 's/^/  | /' || bad "rm $N1"
grep -q "^store: freed 0 images" "$T/rm1.txt" || bad "rm of v1 freed something: $(cat "$T/rm1.txt")"
[[ -f $SNAP_ROOT/store/${ID1#sha256:}.cdimg ]] || bad "rm of v1 removed its cdimg, which v2 needs"
CTR image ls -q | grep "ts:$v1" >/dev/null && bad "rm left the record of $N1"
CLI images | sed 's/^/  | /' || bad "images after rm of v1"
CLI images --json >"$T/images3.json"
[[ $(img "$T/images3.json" "$ID1" '.names | length') == 0 ]] || bad "v1 still has names after rm"
CTR container rm ops-c1 >/dev/null || bad "ctr container rm"
CLI rm --sync "$N2" | tee "$T/rm2.txt" | sed 's/^/  | /' || bad "rm $N2"
grep -q "^store: freed 2 images, .* ($((S1 + S12)) bytes)" "$T/rm2.txt" || bad "rm of v2 did not free both: $(cat "$T/rm2.txt")"
[[ -z $(ls -A "$SNAP_ROOT/store") ]] || bad "store not empty after rm of every image: $(ls "$SNAP_ROOT/store")"

# --- 4. prune ---------------------------------------------------------------
CLI load --image "$N1" --cdimg "$CD1" >/dev/null || bad "load $N1 again"
OLD=$(printf '1%.0s' {1..64}).cdimg
FRESH=$(printf '2%.0s' {1..64}).cdimg.partial
head -c 1000 /dev/zero >"$DL/$OLD"
head -c 500 /dev/zero >"$DL/$FRESH"
touch -d '9 days ago' "$DL/$OLD"
echo keep >"$DL/notes.txt"
CLI prune --download-dir "$DL" | tee "$T/prune1.txt" | sed 's/^/  | /' || bad "prune"
grep -q "^store: freed 0 images" "$T/prune1.txt" || bad "prune (dangling only) freed a named image"
[[ -f $SNAP_ROOT/store/${ID1#sha256:}.cdimg ]] || bad "prune removed the named image"
[[ ! -e $DL/$OLD && -e $DL/$FRESH && -e $DL/notes.txt ]] || bad "prune: download dir now $(ls "$DL")"
grep -q "deleted 1 files, .* (1000 bytes)" "$T/prune1.txt" || bad "prune: download bytes not reported"
CLI prune --all --download-dir "$DL" | tee "$T/prune2.txt" | sed 's/^/  | /' || bad "prune --all"
grep -q "^store: freed 1 images, .* ($S1 bytes)" "$T/prune2.txt" || bad "prune --all did not free v1"
[[ -z $(ls -A "$SNAP_ROOT/store") ]] || bad "store not empty after prune --all: $(ls "$SNAP_ROOT/store")"
[[ -e $DL/$FRESH ]] || bad "prune --all deleted a download written in the last 10 minutes"
CLI images | sed 's/^/  | /' || bad "images at the end"

((fail == 0)) || exit 1
echo "PASS: operator commands"
