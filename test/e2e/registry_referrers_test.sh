#!/usr/bin/env bash
# The referrers layout through a real registry without the referrers API
# (Debian's docker-registry 2.8: the OCI referrers tag schema), typescript
# corpus images v1, v2, v3 (docs/registry.md):
#  1. push each full cdimg with --image (the OCI layout it was converted from)
#     under tsr:vN, then the deltas v1->v2, v2->v3 and the merged v1->v3 with
#     --repository only: each is attached to the image it leads to; a cdimg
#     with another image's --image is refused and changes nothing
#  2. what a plain client sees: skopeo inspects tsr:v3 as an ordinary OCI
#     image and copies it; the referrers tag sha256-<hex> lists exactly the
#     cdimgs leading to v3; there is no catalog
#  3. registry garbage-collect --delete-untagged keeps everything a pull needs
#  4. containerd pulls tsr:v3 like any image and runs it (native snapshotter, no d4c)
#  5. ctr-cli pull into a di3fs client: tsr:v1 (the full cdimg), then tsr:v3:
#     the plan is the merged delta, planned from v3's referrers (< 2 KiB
#     read), and the image runs
source "$(dirname "$0")/lib.sh"
require_root
require_corpus
[[ -c /dev/fuse ]] || skip_or_fail "no /dev/fuse"
for t in containerd ctr runc jq curl skopeo docker-registry ss; do
  command -v "$t" >/dev/null ||
    skip_or_fail "$t is not installed (apt-get install containerd runc jq curl skopeo docker-registry iproute2)"
done

H_DIR=$(mktemp -d /tmp/d4c-ref.XXXXXX)
T=$H_DIR
source "$(dirname "$0")/harness.sh"
trap h_cleanup EXIT
export DOCKER_CONFIG=$T/docker
fail=0
bad() { echo "FAIL: $*" >&2; fail=1; }
fsize() { stat -c %s "$1"; }
MT=application/vnd.d4c.cdimg.v1
VERSION_CMD='grep "\"version\"" /app/node_modules/typescript/package.json'

# --- images --------------------------------------------------------------------
mapfile -t TAGS < <(corpus_tags typescript | head -3)
((${#TAGS[@]} == 3)) || skip_or_fail "typescript series needs 3 versions in the corpus"
V1=${TAGS[0]} V2=${TAGS[1]} V3=${TAGS[2]}
OCI=$D4C_CORPUS/typescript/oci
declare -A CD ID
for v in 1 2 3; do
  tag=${TAGS[$((v - 1))]}
  CD[v$v]=$(cdimg_for typescript "$tag")
  ID[v$v]=$(image_id --cdimg "${CD[v$v]}")
done
D12=$(delta_for typescript "$V1" "$V2") || { echo "FAIL: cdimg diff $V1 $V2" >&2; exit 1; }
D23=$(delta_for typescript "$V2" "$V3") || { echo "FAIL: cdimg diff $V2 $V3" >&2; exit 1; }
D13=$(merged_for typescript "$V1" "$V2" "$V3") || { echo "FAIL: cdimg merge $V1 $V2 $V3" >&2; exit 1; }
S_V1=$(fsize "${CD[v1]}") S_V3=$(fsize "${CD[v3]}") S13=$(fsize "$D13")

# --- 1. push -------------------------------------------------------------------
reg_start || { echo "FAIL: registry did not start" >&2; exit 1; }
REF=docker://$REG_HOST/tsr
SKOPEO_RAW() { skopeo inspect --raw --tls-verify=false "$REF:$1"; }
push() {  # push LABEL WANT ARGS...
  local label=$1 want=$2 out
  shift 2
  if out=$(timeout 300 "$CTR_CLI" push --serverHost "$REG_HOST" --plain-http "$@" 2>&1); then
    e2e_log "push $label: $out"
    [[ $out == *"$want"* ]] || bad "push $label: output does not say '$want': $out"
  else
    bad "push $label failed: $out"
  fi
}
push "v1 full" "image published" --cdimg "${CD[v1]}" --image "oci:$OCI:$V1" --imageTag tsr:v1
push "v2 full" "image published" --cdimg "${CD[v2]}" --image "oci:$OCI:$V2" --imageTag tsr:v2
push "v3 full" "image published" --cdimg "${CD[v3]}" --image "oci:$OCI:$V3" --imageTag tsr:v3
push "v1->v2" "attached to image" --cdimg "$D12" --repository tsr
push "v2->v3" "attached to image" --cdimg "$D23" --repository tsr
push "v1->v3 (merged)" "attached to image" --cdimg "$D13" --repository tsr
push "v1->v3 again" "unchanged, 3 cdimgs" --cdimg "$D13" --repository tsr
if out=$("$CTR_CLI" push --serverHost "$REG_HOST" --plain-http --cdimg "${CD[v1]}" --image "oci:$OCI:$V2" \
           --imageTag tsr:wrong 2>&1); then
  bad "push of v1's cdimg with v2's image succeeded: $out"
else
  [[ $out == *"was not converted from"* ]] || bad "refused push does not say why: $out"
  SKOPEO_RAW wrong >/dev/null 2>&1 && bad "a refused push created tag tsr:wrong"
fi

# --- 2. what a plain client sees -----------------------------------------------------
m=$(SKOPEO_RAW v3) || bad "skopeo inspect --raw tsr:v3"
jq -e '.mediaType == "application/vnd.oci.image.manifest.v1+json" and (has("artifactType") | not)
       and .config.mediaType == "application/vnd.oci.image.config.v1+json" and (.layers | length) == 2' \
  <<<"$m" >/dev/null || bad "tsr:v3 is not a plain 2-layer OCI image: $m"
want_layers=$(skopeo inspect --tls-verify=false "oci:$OCI:$V3" | jq -c .Layers)
got_layers=$(skopeo inspect --tls-verify=false "$REF:v3" | jq -c .Layers) || bad "skopeo inspect tsr:v3"
[[ $got_layers == "$want_layers" ]] || bad "tsr:v3 layers $got_layers, the OCI layout has $want_layers"
skopeo copy --quiet --src-tls-verify=false "$REF:v3" "oci:$T/copy:v3" >/dev/null 2>&1 || bad "skopeo copy tsr:v3"
DIG3=$(skopeo inspect --tls-verify=false "$REF:v3" | jq -r .Digest)
code=$(curl -s -o /dev/null -w '%{http_code}' "http://$REG_HOST/v2/tsr/referrers/$DIG3")
e2e_log "referrers API answers $code (404: none, the tag schema is used)"
want=$(printf '%s\n' "full ${ID[v3]} -" "delta ${ID[v3]} ${ID[v2]}" "delta ${ID[v3]} ${ID[v1]}" | sort)
# (the index names the image id once; a parent id makes a delta: docs/registry.md)
got=$(SKOPEO_RAW "sha256-${DIG3#sha256:}" | jq -r --arg mt "$MT" '(.annotations["org.d4c.image.id"] // "") as $id |
  .manifests[] | select(.artifactType == $mt) | .annotations |
  "\(if .["org.d4c.parent.id"] then "delta" else "full" end) \(.["org.d4c.image.id"] // $id) \(.["org.d4c.parent.id"] // "-")"' |
  sort) || true
[[ $got == "$want" ]] || bad "referrers of tsr:v3:"$'\n'"$got"$'\n'"want:"$'\n'"$want"
tags=$(skopeo list-tags --tls-verify=false "$REF" | jq -r '.Tags[]' | tr '\n' ' ')
[[ " $tags" == *" d4c-catalog "* ]] && bad "a catalog was written in the referrers layout: $tags"

# --- 3. garbage collection -----------------------------------------------------
reg_gc --delete-untagged || { tail -5 "$T/gc.log" >&2; bad "docker-registry garbage-collect"; }
reg_up || { echo "FAIL: registry did not come back after GC" >&2; exit 1; }

# --- 4. a stock containerd runs the image ---------------------------------------
client_start c1 || { echo "FAIL: client c1" >&2; exit 1; }
SN1=$(client_snaproot c1)
if client_ctr c1 image pull --plain-http --snapshotter native "$REG_HOST/tsr:v3" >"$T/plain-pull.log" 2>&1; then
  out=$(timeout 120 ctr --address "$(client_sock c1)" run --rm --snapshotter=native "$REG_HOST/tsr:v3" "plain-$RANDOM" sh -c "$VERSION_CMD" 2>&1) || true
  if [[ $out == *"\"version\": \"$V3\""* ]]; then
    e2e_log "stock containerd runs tsr:v3: $out"
  else
    bad "stock containerd: ctr run tsr:v3 printed: $out"
  fi
else
  bad "stock containerd cannot pull tsr:v3: $(tail -5 "$T/plain-pull.log")"
fi

# --- 5. ctr-cli pull plans from the image's referrers -------------------------------
pull() {  # pull LOG ARGS...
  local log=$1
  shift
  timeout 300 "$CTR_CLI" pull --host "$REG_HOST" --plain-http --address "$(client_sock c1)" \
    --download-dir "$T/dl" --snapshotter di3fs "$@" >"$log" 2>&1
}
downloaded() { sed -n 's/.*downloaded \([0-9][0-9]*\) bytes of blobs (plan \([0-9][0-9]*\) bytes).*/\1 \2/p' "$1" | tail -1; }
read_bytes() { sed -n 's/.*planned from the referrers of .* (\([0-9][0-9]*\) bytes read).*/\1/p' "$1" | tail -1; }
if pull "$T/pull-v1.log" --image tsr:v1 --name local/tsr:v1; then
  read -r n p <<<"$(downloaded "$T/pull-v1.log")" || true
  [[ ${n:-} == "$S_V1" ]] || bad "pull tsr:v1 into an empty store: downloaded '$n', want the full cdimg, $S_V1: $(cat "$T/pull-v1.log")"
else
  bad "pull tsr:v1: $(cat "$T/pull-v1.log")"
fi
if pull "$T/pull-v3.log" --image tsr:v3 --name local/tsr:v3; then
  sed -n 's/^/    /; /plan/p' "$T/pull-v3.log" >&2
  read -r n p <<<"$(downloaded "$T/pull-v3.log")" || true
  r=$(read_bytes "$T/pull-v3.log")
  [[ ${n:-} == "$S13" ]] || bad "pull tsr:v3 with v1 held: downloaded '$n', want the merged delta, $S13 (full v3 is $S_V3)"
  [[ -n $r ]] && ((r < 2048)) || bad "pull tsr:v3 read '$r' bytes to plan, want < 2048 (one referrers index)"
  out=$(timeout 120 ctr --address "$(client_sock c1)" run --rm --snapshotter=di3fs docker.io/local/tsr:v3 "run-$RANDOM" sh -c "$VERSION_CMD" 2>&1) || true
  [[ $out == *"\"version\": \"$V3\""* ]] || bad "ctr run local/tsr:v3 (di3fs) printed: $out"
else
  bad "pull tsr:v3: $(cat "$T/pull-v3.log")"
fi

# --- cleanup leaves nothing ----------------------------------------------------------
KEEP_TMP=1 h_cleanup
set -e
leftover=$(awk -v t="$T/" 'index($2, t) == 1' /proc/mounts)
[[ -z $leftover ]] || bad "mounts left behind: $leftover"
left_pids=$(h_pids_under "$T/")
[[ -z $left_pids ]] || bad "processes left behind: $left_pids"
if ((fail)); then
  [[ -f $T/c1/snapshotter.log ]] && { echo "--- snapshotter log (tail)" >&2; tail -15 "$T/c1/snapshotter.log" >&2; }
  echo "--- registry access log (tail)" >&2
  grep -E '^[0-9.]+ - ' "$T/registry.log" | tail -8 >&2
  [[ -n ${D4C_KEEP_E2E:-} ]] || rm -rf "$T"
  echo "registry_referrers_test: FAILED" >&2
  exit 1
fi
[[ -n ${D4C_KEEP_E2E:-} ]] || rm -rf "$T"
echo "registry_referrers_test: OK"
