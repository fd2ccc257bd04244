#!/usr/bin/env bash
# ctr-cli push / pull through a real OCI registry (Debian's docker-registry on
# loopback), into clients that each run their own containerd + di3fs
# snapshotter (harness.sh), typescript corpus images v1, v2, v3:
#  1. push v1 (full, tag ts:v1), v1->v2 (ts:v2), v2->v3 (ts:v3) and the merged
#     skip delta v1->v3 (--repository only); a second push of the same file
#     says "already present" and leaves the catalog alone; skopeo sees the
#     manifests, their annotations, the d4c-* tags and a 4-entry catalog
#  2. registry garbage-collect (--delete-untagged, registry stopped) keeps
#     everything a pull needs
#  3. client 1 pulls ts:v1 (the full image), then ts:v3: the plan is the
#     cheapest chain (the skip delta), the bytes it reports downloading equal
#     the plan and what the registry served, far below a full image; then
#     ts:v2 under --name; `ctr run --snapshotter=di3fs` prints each version
#  4. a wrong tag fails naming the tag; --dry-run changes nothing
#  5. client 2 (empty) pulls ts:v3 at --max-rate through a small-buffered TCP
#     relay; registry and relay are killed 1.5 s in:
#     non-zero exit naming the download, no image, nothing in the store, a
#     .partial left in ctr-cli's download directory (never in the
#     snapshotter's root); after a registry restart the pull resumes
#     (downloads only what is missing) and the image runs
#  6. a blob changed inside the registry is refused (digest), nothing loaded
#  7. Basic auth (htpasswd): no or wrong credentials fail clearly; --user,
#     $D4C_REGISTRY_PASSWORD and $DOCKER_CONFIG/config.json work; the password
#     is never printed
# The trap stops containers, both containerds, snapshotters, di3fs daemons
# and the registry, and unmounts everything; the script then checks that
# nothing is left.
source "$(dirname "$0")/lib.sh"
# A pulled image is named as asked (--image, else --name), normalized as ctr
# does: ts:v3 is docker.io/library/ts:v3.
LN=docker.io/library/ts
require_root
require_corpus
[[ -c /dev/fuse ]] || skip_or_fail "no /dev/fuse"
for t in containerd ctr runc jq curl skopeo docker-registry ss; do
  command -v "$t" >/dev/null ||
    skip_or_fail "$t is not installed (apt-get install containerd runc jq curl skopeo docker-registry iproute2)"
done
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || skip_or_fail "no overlayfs"
for b in "$D4C_BUILD_DIR/snapshotter/snapshotter" "$D4C_BUILD_DIR/fs/di3fs" "$CTR_CLI"; do
  [[ -x $b ]] || { echo "FAIL: $b is not built" >&2; exit 1; }
done
for c in push pull; do
  "$CTR_CLI" "$c" --help >/dev/null 2>&1 || { echo "FAIL: $CTR_CLI has no '$c' command" >&2; exit 1; }
done

# Short path: unix socket paths are limited to 108 bytes.
H_DIR=$(mktemp -d /tmp/d4c-reg.XXXXXX)
T=$H_DIR
source "$(dirname "$0")/harness.sh"
trap h_cleanup EXIT
# credentials only from what this test writes (section 7)
export DOCKER_CONFIG=$T/docker
fail=0
bad() { echo "FAIL: $*" >&2; fail=1; }
fsize() { stat -c %s "$1"; }
hex32() { local h=${1#sha256:}; echo "${h:0:32}"; }
MT=application/vnd.d4c.cdimg.v1
VERSION_CMD='grep "\"version\"" /app/node_modules/typescript/package.json'

# --- images --------------------------------------------------------------------
mapfile -t TAGS < <(corpus_tags typescript | head -3)
((${#TAGS[@]} == 3)) || skip_or_fail "typescript series needs 3 versions in the corpus"
V1=${TAGS[0]} V2=${TAGS[1]} V3=${TAGS[2]}
declare -A CD ID
CD[v1]=$(cdimg_for typescript "$V1")
CD[v3full]=$(cdimg_for typescript "$V3")
D12=$(delta_for typescript "$V1" "$V2") || { echo "FAIL: cdimg diff $V1 $V2" >&2; exit 1; }
D23=$(delta_for typescript "$V2" "$V3") || { echo "FAIL: cdimg diff $V2 $V3" >&2; exit 1; }
D13=$(merged_for typescript "$V1" "$V2" "$V3") || { echo "FAIL: cdimg merge $V1 $V2 $V3" >&2; exit 1; }
ID[v1]=$(image_id --cdimg "${CD[v1]}")
ID[v2]=$(image_id --cdimg "$(cdimg_for typescript "$V2")")
ID[v3]=$(image_id --cdimg "${CD[v3full]}")
[[ $(image_id --cdimg "$D13") == "${ID[v3]}" ]] || bad "merged delta does not have v3's image id"
S_V1=$(fsize "${CD[v1]}") S_V3FULL=$(fsize "${CD[v3full]}")
S12=$(fsize "$D12") S23=$(fsize "$D23") S13=$(fsize "$D13")
e2e_log "v1 $V1 full $S_V1 bytes; deltas v1->v2 $S12, v2->v3 $S23, merged v1->v3 $S13; v3 full $S_V3FULL"

# --- 1. push -------------------------------------------------------------------
reg_start || { echo "FAIL: registry did not start" >&2; exit 1; }
e2e_log "registry $REG_PID on $REG_HOST (data $T/registry-data)"
REF=docker://$REG_HOST/ts
PUSH() { "$CTR_CLI" push --serverHost "$REG_HOST" --plain-http "$@"; }
SKOPEO_RAW() { skopeo inspect --raw --tls-verify=false "$REF:$1"; }
catalog_count() { SKOPEO_RAW d4c-catalog | jq '.manifests | length'; }

# push LABEL KIND WANT(uploaded|already present) ARGS...
push() {
  local label=$1 kind=$2 want=$3 out
  shift 3
  if out=$(timeout 120 "$CTR_CLI" push --serverHost "$REG_HOST" --plain-http "$@" 2>&1); then
    e2e_log "push $label: $out"
    [[ $out == *pushed*" $kind "*"$REG_HOST"* ]] || bad "push $label: output does not say '$kind' and the registry: $out"
    [[ $out == *"$want"* ]] || bad "push $label: output does not say '$want': $out"
  else
    bad "push $label failed: $out"
  fi
}
push "v1 full" full uploaded --cdimg "${CD[v1]}" --imageTag ts:v1
push "v1->v2" delta uploaded --cdimg "$D12" --imageTag ts:v2
push "v2->v3" delta uploaded --cdimg "$D23" --imageTag ts:v3
push "v1->v3 (merged)" delta uploaded --cdimg "$D13" --repository ts
n=$(catalog_count) || bad "skopeo inspect ts:d4c-catalog"
[[ $n == 4 ]] || bad "catalog lists $n manifests after 4 pushes, want 4"
push "v2->v3 again" delta "already present" --cdimg "$D23" --imageTag ts:v3
n=$(catalog_count) || bad "skopeo inspect ts:d4c-catalog"
[[ $n == 4 ]] || bad "catalog lists $n manifests after pushing a file again, want 4"
# two pushes racing: the later catalog write lacks the earlier push's entry
# (no compare-and-swap for tags). Simulated by writing back a stale catalog;
# the next push must list the dropped artifacts again (they are tagged).
SKOPEO_RAW d4c-catalog | jq -c '.manifests |= .[:1]' |
  curl -fsS -X PUT -H "Content-Type: application/vnd.oci.image.index.v1+json" --data-binary @- \
    "http://$REG_HOST/v2/ts/manifests/d4c-catalog" >/dev/null || bad "could not write a stale catalog"
n=$(catalog_count) || bad "skopeo inspect ts:d4c-catalog"
[[ $n == 1 ]] || bad "stale catalog lists $n manifests, want 1"
if out=$(timeout 120 "$CTR_CLI" push --serverHost "$REG_HOST" --plain-http --cdimg "$D23" --imageTag ts:v3 2>&1); then
  e2e_log "push after a lost catalog update: $out"
  [[ $out == *"re-listed 2 pushed"* ]] || bad "push after a lost catalog update does not say it re-listed 2: $out"
else
  bad "push after a lost catalog update failed: $out"
fi
n=$(catalog_count) || bad "skopeo inspect ts:d4c-catalog"
[[ $n == 4 ]] || bad "catalog lists $n manifests after the repairing push, want 4"
out=$(PUSH --cdimg "$T/no-such.cdimg" --repository ts 2>&1) && bad "push of a missing file succeeded"
[[ $out == *no-such.cdimg* ]] || bad "push of a missing file: message does not name it: $out"

# the manifests as any OCI client sees them
check_manifest() {  # check_manifest TAG KIND ID PARENT_ID SIZE
  local m
  m=$(SKOPEO_RAW "$1") || { bad "skopeo inspect ts:$1"; return; }
  jq -e --arg mt "$MT" --arg kind "$2" --arg id "$3" --arg parent "$4" --argjson size "$5" '
      (.artifactType == $mt or .config.mediaType == $mt)
      and (.layers | length) == 1 and .layers[0].mediaType == $mt and .layers[0].size == $size
      and .annotations["org.d4c.image.id"] == $id
      and .annotations["org.d4c.kind"] == $kind
      and ((.annotations["org.d4c.parent.id"] // "") == $parent)' <<<"$m" >/dev/null ||
    bad "manifest of ts:$1 (want $2, id $3, parent '${4:-none}', layer $5 bytes of $MT): $m"
}
check_manifest v1 full "${ID[v1]}" "" "$S_V1"
check_manifest v2 delta "${ID[v2]}" "${ID[v1]}" "$S12"
check_manifest v3 delta "${ID[v3]}" "${ID[v2]}" "$S23"
got=$(SKOPEO_RAW v3 | jq -r '.annotations["org.d4c.image.id"]') || true
[[ $got == "${ID[v3]}" ]] || bad "ts:v3 image id annotation '$got', want ${ID[v3]}"
check_manifest "d4c-$(hex32 "${ID[v3]}")-from-$(hex32 "${ID[v1]}")" delta "${ID[v3]}" "${ID[v1]}" "$S13"
tags=$(skopeo list-tags --tls-verify=false "$REF" | jq -r '.Tags[]' | sort | tr '\n' ' ') || bad "skopeo list-tags"
for t in v1 v2 v3 d4c-catalog "d4c-$(hex32 "${ID[v1]}")" "d4c-$(hex32 "${ID[v2]}")-from-$(hex32 "${ID[v1]}")" \
         "d4c-$(hex32 "${ID[v3]}")-from-$(hex32 "${ID[v2]}")" "d4c-$(hex32 "${ID[v3]}")-from-$(hex32 "${ID[v1]}")"; do
  [[ " $tags" == *" $t "* ]] || bad "tag $t missing; tags: $tags"
done
# the catalog: one entry per cdimg, with the annotations a planner needs
want=$(printf '%s\n' "full ${ID[v1]} -" "delta ${ID[v2]} ${ID[v1]}" "delta ${ID[v3]} ${ID[v2]}" \
  "delta ${ID[v3]} ${ID[v1]}" | sort)
got=$(SKOPEO_RAW d4c-catalog | jq -r '.manifests[] | .annotations // {} |
  "\(.["org.d4c.kind"]) \(.["org.d4c.image.id"]) \(.["org.d4c.parent.id"] // "-" | if . == "" then "-" else . end)"' | sort) || true
[[ $got == "$want" ]] || bad "catalog entries:"$'\n'"$got"$'\n'"want:"$'\n'"$want"

# --- 2. garbage collection -----------------------------------------------------
reg_gc --delete-untagged || { tail -5 "$T/gc.log" >&2; bad "docker-registry garbage-collect"; }
reg_up || { echo "FAIL: registry did not come back after GC" >&2; exit 1; }
e2e_log "gc: $(grep -c 'eligible for deletion\|deleting' "$T/gc.log" || true) deletions; registry back as $REG_PID"
n=$(catalog_count) || bad "skopeo inspect ts:d4c-catalog after GC"
[[ $n == 4 ]] || bad "catalog lists $n manifests after GC, want 4"

# --- 3. client 1: v1 full, then the cheapest update to v3 ------------------------
client_start c1 || { echo "FAIL: client c1" >&2; exit 1; }
SN1=$(client_snaproot c1)
# pull CLIENT LOG ARGS...: ctr-cli pull into CLIENT; output in LOG
pull() {
  local c=$1 log=$2
  shift 2
  timeout 300 "$CTR_CLI" pull --host "${PULL_HOST:-$REG_HOST}" --plain-http --address "$(client_sock "$c")" \
    --download-dir "$T/dl-$c" --snapshotter di3fs "$@" >"$log" 2>&1
}
# downloaded LOG: "N P" from `downloaded N bytes of blobs (plan P bytes)`
downloaded() { sed -n 's/.*downloaded \([0-9][0-9]*\) bytes of blobs (plan \([0-9][0-9]*\) bytes).*/\1 \2/p' "$1" | tail -1; }
plan_total() { sed -n 's/.*plan total \([0-9][0-9]*\) bytes.*/\1/p' "$1" | tail -1; }
in_store() { [[ -f $1/store/${2#sha256:}.cdimg ]]; }
# runs CLIENT NAME WANT_VERSION
runs() {
  local out
  out=$(timeout 120 ctr --address "$(client_sock "$1")" run --rm --snapshotter=di3fs "$2" "run-$RANDOM" sh -c "$VERSION_CMD" 2>&1) || true
  if [[ -z $out ]]; then
    # once seen on a loaded machine: no output and no error at all (the
    # container ran and was removed); wrong bytes would print something else
    e2e_log "$1: ctr run $2 printed nothing; once more"
    out=$(timeout 120 ctr --address "$(client_sock "$1")" run --rm --snapshotter=di3fs "$2" "run-$RANDOM" sh -c "$VERSION_CMD" 2>&1) || true
  fi
  if [[ $out == *"\"version\": \"$3\""* ]]; then
    e2e_log "$1: $2 prints $out"
  else
    bad "$1: ctr run $2 printed: $out"
  fi
}
# served_ok LABEL MARK N: the registry served N blob bytes plus at most 256 KiB
# of manifests and catalog since MARK
served_ok() {
  local s
  s=$(reg_served_since "$2")
  ((s >= $3 && s <= $3 + 262144)) || bad "$1: registry served $s bytes, the pull reports $3 bytes of blobs"
}
# blob_gets_since MARK: GET requests for any of our cdimg blobs since MARK
CDIMG_DIGESTS=$(sha256sum "${CD[v1]}" "$D12" "$D23" "$D13" | cut -d' ' -f1 | paste -sd'|')
blob_gets_since() {
  tail -n +"$(($1 + 1))" "$T/registry.log" | grep -Ec "\"GET /v2/ts/blobs/sha256:($CDIMG_DIGESTS)" || true
}

m=$(reg_mark)
if pull c1 "$T/pull-v1.log" --image ts:v1; then
  read -r n p <<<"$(downloaded "$T/pull-v1.log")" || true
  e2e_log "c1 pull ts:v1: $(grep -c '^plan' "$T/pull-v1.log" || true) plan line(s), downloaded ${n:-?} (plan ${p:-?})"
  [[ ${n:-} == "$S_V1" && ${p:-} == "$S_V1" ]] || bad "pull ts:v1 into an empty client: downloaded '$n' (plan '$p'), want the full image, $S_V1: $(cat "$T/pull-v1.log")"
  served_ok "pull ts:v1" "$m" "${n:-0}"
  in_store "$SN1" "${ID[v1]}" || bad "after pull ts:v1, the store has no ${ID[v1]#sha256:}.cdimg: $(ls "$SN1/store")"
else
  bad "pull ts:v1: $(cat "$T/pull-v1.log")"
fi

# cheapest way from v1 to v3 among what was pushed
best=$((S12 + S23))
((S13 < best)) && best=$S13
m=$(reg_mark)
if pull c1 "$T/plan-v3.log" --image ts:v3 --dry-run; then
  p=$(plan_total "$T/plan-v3.log")
  sed -n 's/^/    /; /plan/p' "$T/plan-v3.log" >&2
  [[ $p == "$best" ]] || bad "dry run of ts:v3 with v1 local: plan total '$p', want $best (min of merged $S13, chain $S12+$S23): $(cat "$T/plan-v3.log")"
  imgs=$(client_ctr c1 image ls -q)
  grep -qF "$LN:v3" <<<"$imgs" && bad "--dry-run created an image record"
  in_store "$SN1" "${ID[v3]}" && bad "--dry-run added v3 to the store"
  s=$(blob_gets_since "$m")
  ((s == 0)) || bad "--dry-run fetched $s cdimg blob(s)"
else
  bad "pull --dry-run ts:v3: $(cat "$T/plan-v3.log")"
fi
m=$(reg_mark)
if pull c1 "$T/pull-v3.log" --image ts:v3; then
  read -r n p <<<"$(downloaded "$T/pull-v3.log")" || true
  e2e_log "c1 pull ts:v3: downloaded ${n:-?} (plan ${p:-?}); cheapest $best; full v3 $S_V3FULL"
  sed -n 's/^/    /; /plan/p' "$T/pull-v3.log" >&2
  [[ -n ${n:-} && $n == "$p" ]] || bad "pull ts:v3: downloaded '$n' != plan '$p': $(cat "$T/pull-v3.log")"
  [[ ${p:-} == "$best" ]] || bad "pull ts:v3 with v1 local: plan '$p' bytes, want the cheapest chain, $best bytes"
  ((${n:-0} > 0 && ${n:-0} * 20 < S_V3FULL)) || bad "pull ts:v3 downloaded ${n:-?} bytes: not far below the full image ($S_V3FULL)"
  served_ok "pull ts:v3" "$m" "${n:-0}"
  in_store "$SN1" "${ID[v3]}" || bad "after pull ts:v3, the store has no ${ID[v3]#sha256:}.cdimg: $(ls "$SN1/store")"
  runs c1 "$LN:v3" "$V3"
else
  bad "pull ts:v3: $(cat "$T/pull-v3.log")"
fi
# v2 under a local name: only the v1->v2 delta is new
if pull c1 "$T/pull-v2.log" --image ts:v2 --name local/ts:v2; then
  read -r n p <<<"$(downloaded "$T/pull-v2.log")" || true
  [[ ${n:-} == "$S12" ]] || bad "pull ts:v2 with v1 and v3 local: downloaded '$n', want the v1->v2 delta, $S12: $(cat "$T/pull-v2.log")"
  imgs=$(client_ctr c1 image ls -q)
  grep -qx "docker.io/local/ts:v2" <<<"$imgs" || bad "--name local/ts:v2: image record docker.io/local/ts:v2 missing: $(client_ctr c1 image ls -q)"
  runs c1 docker.io/local/ts:v2 "$V2"
else
  bad "pull ts:v2 --name local/ts:v2: $(cat "$T/pull-v2.log")"
fi
runs c1 "$LN:v1" "$V1"
# pulling an image that is already there downloads nothing
if pull c1 "$T/pull-v3b.log" --image ts:v3; then
  read -r n p <<<"$(downloaded "$T/pull-v3b.log")" || true
  [[ ${n:-} == 0 ]] || bad "second pull of ts:v3 downloaded '$n' bytes, want 0: $(cat "$T/pull-v3b.log")"
else
  bad "second pull of ts:v3: $(cat "$T/pull-v3b.log")"
fi

# --- 4. errors -------------------------------------------------------------------
if pull c1 "$T/pull-nope.log" --image ts:nope; then
  bad "pull of a missing tag succeeded: $(cat "$T/pull-nope.log")"
else
  grep -q nope "$T/pull-nope.log" || bad "pull of a missing tag: message does not name it: $(cat "$T/pull-nope.log")"
  e2e_log "pull ts:nope: $(tail -1 "$T/pull-nope.log")"
fi
client_stop c1

# --- 5. client 2: interrupted download, then resume ---------------------------------
client_start c2 || { echo "FAIL: client c2" >&2; exit 1; }
SN2=$(client_snaproot c2)
P2=
if pull c2 "$T/plan2.log" --image ts:v3 --dry-run; then
  P2=$(plan_total "$T/plan2.log")
  [[ $P2 == $((S_V1 + best)) ]] || bad "dry run of ts:v3 into an empty client: plan total '$P2', want v1 full + cheapest delta = $((S_V1 + best))"
else
  bad "pull --dry-run ts:v3 (empty client): $(cat "$T/plan2.log")"
fi
: "${P2:=$((S_V1 + best))}"
# The pull goes through a relay (harness.sh: proxy_start) with a 16 KiB send
# buffer: a registry killed mid-blob would otherwise still deliver megabytes
# from its loopback socket buffers, and the "cut" could land after the blob.
proxy_start || { echo "FAIL: relay did not start" >&2; exit 1; }
start=$EPOCHREALTIME
PULL_HOST=127.0.0.1:$PROXY_PORT pull c2 "$T/pull-cut.log" --image ts:v3 --name "$REG_HOST/ts:v3" \
  --max-rate 200000 --retries 2 &
pull_pid=$!
# cut once the first blob is arriving (a loaded machine may take seconds to
# start the pull; at 200 kB/s the first blob then takes ~25 s)
for ((i = 0; i < 300; i++)); do
  [[ -n $(find "$T/dl-c2" -name '*.partial' -size +0 2>/dev/null) ]] && break
  kill -0 "$pull_pid" 2>/dev/null || break
  sleep 0.1
done
reg_kill
proxy_kill
e2e_log "registry and relay killed (-9) $(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}') s into the pull"
rc=0
wait "$pull_pid" || rc=$?
e2e_log "interrupted pull: exit $rc after $(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}') s: $(grep -v '^plan' "$T/pull-cut.log" | tail -1)"
if ((rc == 0)); then
  bad "pull survived the registry's death (exit 0): $(cat "$T/pull-cut.log")"
else
  ((rc == 124)) && bad "interrupted pull hung until the timeout"
  grep -Eqi "download|127.0.0.1:$PROXY_PORT" "$T/pull-cut.log" || bad "interrupted pull: message names neither the download nor the registry: $(cat "$T/pull-cut.log")"
fi
imgs=$(client_ctr c2 image ls -q)
grep -qF "ts:v3" <<<"$imgs" && bad "interrupted pull created an image record: $imgs"
in_store "$SN2" "${ID[v3]}" && bad "interrupted pull left v3 in the store"
DL2=$T/dl-c2
partials=$(find "$DL2" -name '*.partial' -type f 2>/dev/null | wc -l)
ondisk=$(find "$DL2" -type f -printf '%s\n' 2>/dev/null | awk '{s += $1} END {printf "%d\n", s}')
e2e_log "after the cut: $partials .partial file(s), $ondisk bytes under $DL2"
((partials >= 1)) || bad "no .partial file under $DL2: $(ls -la "$DL2" 2>&1)"
[[ -n $(find "$DL2" -name '*.partial' -type f -size +0 2>/dev/null) ]] ||
  bad "the cut did not land inside a blob (no non-empty .partial): $(ls -la "$DL2" 2>&1)"
[[ -z $(ls -A "$SN2/store" 2>/dev/null) ]] || bad "interrupted pull left files in the snapshotter's store: $(ls -A "$SN2/store")"
((ondisk > 0 && ondisk < P2)) || bad "after the cut, $ondisk bytes under downloads/ (plan $P2)"

reg_start || { echo "FAIL: registry did not restart" >&2; exit 1; }
m=$(reg_mark)
if pull c2 "$T/pull-resume.log" --image ts:v3 --retries 3; then
  read -r n p <<<"$(downloaded "$T/pull-resume.log")" || true
  e2e_log "resumed pull: downloaded ${n:-?} (plan ${p:-?}), $ondisk bytes were already there"
  [[ -n ${n:-} ]] || bad "resumed pull: no 'downloaded N bytes' line: $(cat "$T/pull-resume.log")"
  ((${n:-P2} < P2)) || bad "resumed pull downloaded ${n:-?} bytes, not less than the plan ($P2): it did not resume"
  ((${n:-0} + ondisk == P2)) || bad "resumed pull downloaded ${n:-?} bytes + $ondisk already on disk != plan $P2"
  served_ok "resumed pull" "$m" "${n:-0}"
  in_store "$SN2" "${ID[v3]}" || bad "after the resumed pull, the store has no ${ID[v3]#sha256:}.cdimg: $(ls "$SN2/store")"
  left=$(find "$DL2" -type f 2>/dev/null | wc -l)
  ((left == 0)) || bad "$left file(s) left in the download directory after a successful pull: $(ls -A "$DL2")"
  runs c2 "$LN:v3" "$V3"
else
  bad "resumed pull: $(cat "$T/pull-resume.log")"
fi

# --- 6. a blob whose bytes changed in the registry is refused --------------------------
# (the registry serves its files as they are; same size, one byte flipped)
d12=$(sha256sum "$D12" | cut -d' ' -f1)
blob=$T/registry-data/docker/registry/v2/blobs/sha256/${d12:0:2}/$d12/data
flip() {  # flip FILE OFFSET: invert one byte in place
  local o
  o=$(dd if="$1" bs=1 skip="$2" count=1 status=none | od -An -tu1 | tr -d ' ')
  printf '%b' "\\x$(printf %02x $((o ^ 255)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
if [[ -f $blob ]]; then
  flip "$blob" $((S12 - 100))
  if pull c2 "$T/pull-corrupt.log" --image ts:v2 --retries 1; then
    bad "pull of a corrupted blob succeeded: $(cat "$T/pull-corrupt.log")"
  else
    e2e_log "corrupted blob: $(grep -v '^plan' "$T/pull-corrupt.log" | tail -1)"
    grep -Eqi "$d12|sha256|digest|checksum|mismatch|verif" "$T/pull-corrupt.log" ||
      bad "pull of a corrupted blob: message does not say what failed: $(cat "$T/pull-corrupt.log")"
  fi
  imgs=$(client_ctr c2 image ls -q)
  grep -qF "$LN:v2" <<<"$imgs" && bad "pull of a corrupted blob created an image record"
  in_store "$SN2" "${ID[v2]}" && bad "pull of a corrupted blob put v2 into the store"
  flip "$blob" $((S12 - 100))
  [[ $(sha256sum <"$blob" | cut -d' ' -f1) == "$d12" ]] || bad "could not restore the blob in the registry"
else
  bad "blob of the v1->v2 delta not found at $blob"
fi

# --- 7. Basic auth (htpasswd) ----------------------------------------------------------
if command -v htpasswd >/dev/null; then
  PW=d4c-s3cret-$RANDOM
  htpasswd -Bbn d4c "$PW" >"$T/htpasswd"
  reg_stop
  REG_HTPASSWD=$T/htpasswd reg_config
  reg_start || { echo "FAIL: registry with auth did not start" >&2; exit 1; }
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://$REG_HOST/v2/ts/tags/list")
  [[ $code == 401 ]] || bad "registry with htpasswd auth answers $code without credentials"
  e2e_log "registry restarted with Basic auth (htpasswd)"
  if pull c2 "$T/auth-none.log" --image ts:v2 --retries 1; then
    bad "pull without credentials from a registry that wants them succeeded"
  else
    grep -Eqi '401|unauthori|credential|password|auth' "$T/auth-none.log" ||
      bad "pull without credentials: message does not say so: $(cat "$T/auth-none.log")"
    e2e_log "no credentials: $(grep -i ctr-cli "$T/auth-none.log" | head -1)"
  fi
  if pull c2 "$T/auth-wrong.log" --image ts:v2 --retries 1 --user "d4c:wrong-$PW"; then
    bad "pull with a wrong password succeeded"
  else
    grep -Eqi '401|unauthori|credential|auth' "$T/auth-wrong.log" ||
      bad "pull with a wrong password: message does not say so: $(cat "$T/auth-wrong.log")"
  fi
  out=$(PUSH --cdimg "$D12" --imageTag ts:v2 --user "d4c:$PW" 2>&1) || bad "push with --user: $out"
  [[ $out == *"already present"* ]] || bad "push with --user of a blob the registry has: $out"
  if D4C_REGISTRY_PASSWORD=$PW pull c2 "$T/auth-env.log" --image ts:v2 --user d4c; then
    read -r n p <<<"$(downloaded "$T/auth-env.log")" || true
    [[ ${n:-} == "$S12" ]] || bad "pull ts:v2 with auth: downloaded '$n', want $S12: $(cat "$T/auth-env.log")"
    runs c2 "$LN:v2" "$V2"
  else
    bad "pull with --user d4c and \$D4C_REGISTRY_PASSWORD: $(cat "$T/auth-env.log")"
  fi
  mkdir -p "$DOCKER_CONFIG"
  printf '{"auths": {"%s": {"auth": "%s"}}}\n' "$REG_HOST" "$(printf 'd4c:%s' "$PW" | base64 -w0)" >"$DOCKER_CONFIG/config.json"
  pull c2 "$T/auth-cfg.log" --image ts:v2 --name auth/ts:v2 ||
    bad "pull with credentials from \$DOCKER_CONFIG/config.json: $(cat "$T/auth-cfg.log")"
  rm -f "$DOCKER_CONFIG/config.json"
  grep -lF "$PW" "$T"/auth-*.log >/dev/null && bad "the password appears in the output: $(grep -lF "$PW" "$T"/auth-*.log)"
elif [[ ${D4C_REQUIRE_E2E:-0} == 1 ]]; then
  bad "htpasswd is not installed (apt-get install apache2-utils): auth not tested"
else
  e2e_log "SKIP auth part: htpasswd is not installed (apt-get install apache2-utils)"
fi

# --- cleanup leaves nothing ----------------------------------------------------------
KEEP_TMP=1 h_cleanup
set -e
leftover=$(awk -v t="$T/" 'index($2, t) == 1' /proc/mounts)
[[ -z $leftover ]] || bad "mounts left behind: $leftover"
left_pids=$(h_pids_under "$T/")
[[ -z $left_pids ]] || bad "processes left behind: $left_pids"
if ((fail)); then
  for f in "$T"/c1/snapshotter.log "$T"/c2/snapshotter.log; do
    [[ -f $f ]] && { echo "--- $f (tail)" >&2; tail -15 "$f" >&2; }
  done
  echo "--- registry access log (tail)" >&2
  grep -E '^[0-9.]+ - ' "$T/registry.log" | tail -8 >&2
  [[ -n ${D4C_KEEP_E2E:-} ]] || rm -rf "$T"
  echo "registry_test: FAILED" >&2
  exit 1
fi
[[ -n ${D4C_KEEP_E2E:-} ]] || rm -rf "$T"
echo "registry_test: OK"
