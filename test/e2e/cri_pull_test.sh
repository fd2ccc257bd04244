#!/usr/bin/env bash
# Kubernetes' pull path (kubelet -> CRI ImageService -> containerd) with the
# di3fs snapshotter (docs/operations.md, "Kubernetes"): containerd with its CRI
# plugin, `snapshotter = "di3fs"` and `disable_snapshot_annotations = false`;
# a docker-registry on loopback reached over plain HTTP through hosts.toml in
# a certs.d directory given to both containerd (registry config_path) and the
# snapshotter (--hosts-dir). typescript corpus images v1, v2:
#  1. push tsr:v1 and tsr:v2 with their cdimgs (ctr-cli push --image) and the
#     delta v1->v2; push an image without cdimgs (skopeo copy) as plain:vL
#  2. CRI PullImage tsr:v1 (test/tools/cri_pull): the lower layer is unpacked
#     by containerd, the top layer is served by the full v1 cdimg; the image
#     snapshot has the di3fs labels and its tree equals the corpus rootfs
#  3. CRI PullImage tsr:v2: the registry's access log shows the delta v1->v2
#     downloaded and NOT the v2 top layer blob (nor the full v2 cdimg); tree
#     equals the rootfs of v2; `ctr -n k8s.io run` of it prints v2's version
#  4. CRI PullImage plain:vL (no cdimgs): containerd's ordinary layer pull,
#     the tree (overlay of the unpacked layers) equals the rootfs
# Measured bytes (registry access log) are printed.
source "$(dirname "$0")/lib.sh"
require_root
require_corpus
[[ -c /dev/fuse ]] || skip_or_fail "no /dev/fuse"
for t in containerd ctr runc jq curl skopeo docker-registry ss sha256sum; do
  command -v "$t" >/dev/null ||
    skip_or_fail "$t is not installed (apt-get install containerd runc jq curl skopeo docker-registry iproute2)"
done
CRI_PULL=$D4C_BUILD_DIR/test/cri_pull
for b in "$CRI_PULL" "$TREECMP" "$CTR_CLI" "$D4C_BUILD_DIR/snapshotter/snapshotter" "$D4C_BUILD_DIR/fs/di3fs"; do
  [[ -x $b ]] || skip_or_fail "$b is not built"
done

H_DIR=$(mktemp -d /tmp/d4c-cri.XXXXXX)
T=$H_DIR
source "$(dirname "$0")/harness.sh"
trap h_cleanup EXIT
export DOCKER_CONFIG=$T/docker  # no credentials of this machine's user
fail=0
bad() { echo "FAIL: $*" >&2; fail=1; }

# --- images --------------------------------------------------------------------
mapfile -t TAGS < <(corpus_tags typescript | head -3)
((${#TAGS[@]} == 3)) || skip_or_fail "typescript series needs 3 versions in the corpus"
V1=${TAGS[0]} V2=${TAGS[1]} VL=${TAGS[2]}
OCI=$D4C_CORPUS/typescript/oci
CD1=$(cdimg_for typescript "$V1")
CD2=$(cdimg_for typescript "$V2")
ID1=$(image_id --cdimg "$CD1") ID2=$(image_id --cdimg "$CD2")
D12=$(delta_for typescript "$V1" "$V2") || { echo "FAIL: cdimg diff $V1 $V2" >&2; exit 1; }
blob_of() { echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }
B_CD1=$(blob_of "$CD1") B_CD2=$(blob_of "$CD2") B_D12=$(blob_of "$D12")
# manifest of TAG in the OCI layout; its layers; the chainID of all its layers
manifest_of() {
  local d
  d=$(jq -r --arg t "$1" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' \
    "$OCI/index.json")
  cat "$OCI/blobs/sha256/${d#sha256:}"
}
top_layer() { manifest_of "$1" | jq -r '.layers[-1].digest'; }
chain_id() {
  local cfg c d
  cfg=$(manifest_of "$1" | jq -r .config.digest)
  c=
  for d in $(jq -r '.rootfs.diff_ids[]' "$OCI/blobs/sha256/${cfg#sha256:}"); do
    if [[ -z $c ]]; then c=$d; else c="sha256:$(printf '%s %s' "$c" "$d" | sha256sum | cut -d' ' -f1)"; fi
  done
  echo "$c"
}

# --- 1. registry and pushes ------------------------------------------------------
reg_start || { echo "FAIL: registry did not start" >&2; exit 1; }
mkdir -p "$T/certs.d/$REG_HOST"
# containerd 1.6 ignores a hosts.toml without a [host] section ("invalid
# `host` tree"): the section makes it valid for both readers.
cat >"$T/certs.d/$REG_HOST/hosts.toml" <<EOF
server = "http://$REG_HOST"
[host."http://$REG_HOST"]
  capabilities = ["pull", "resolve"]
EOF
push() {  # push LABEL ARGS...
  local label=$1 out
  shift
  out=$(timeout 300 "$CTR_CLI" push --serverHost "$REG_HOST" --plain-http "$@" 2>&1) || bad "push $label: $out"
  e2e_log "push $label: $out"
}
push "v1" --cdimg "$CD1" --image "oci:$OCI:$V1" --imageTag tsr:v1
push "v2" --cdimg "$CD2" --image "oci:$OCI:$V2" --imageTag tsr:v2
push "v1->v2" --cdimg "$D12" --repository tsr
skopeo copy --quiet --dest-tls-verify=false "oci:$OCI:$VL" "docker://$REG_HOST/plain:vL" >/dev/null 2>&1 ||
  bad "skopeo copy of $VL as plain:vL"
((fail == 0)) || exit 1

# --- containerd with CRI and the di3fs snapshotter ----------------------------------
d=$T/c1
cri_client_start c1 di3fs "$T/certs.d" || { echo "FAIL: containerd with CRI and the di3fs snapshotter did not start" >&2; exit 1; }
SOCK=$d/c.sock
cri_up() {  # ImageStatus answers (exit 3: no such image, as expected)
  local rc=0
  "$CRI_PULL" "$SOCK" status "$REG_HOST/none:x" >/dev/null 2>&1 || rc=$?
  ((rc == 0 || rc == 3))
}
h_wait_for 30 cri_up ||
  { tail -20 "$d/containerd.log" >&2; echo "FAIL: containerd's CRI ImageService does not answer" >&2; exit 1; }
K8S() { ctr --address "$SOCK" -n k8s.io "$@"; }

# GET requests for blob DIGEST after MARK that succeeded (200/206): their body bytes
blob_gets() {
  tail -n +"$(($1 + 1))" "$T/registry.log" |
    awk -v b="/blobs/$2" '/^[0-9.]+ - .*"GET \/v2\// && index($0, b) { for (i = 1; i <= NF; i++) if ($i ~ /^HTTP\//) { if ($(i + 1) ~ /^20/) s += $(i + 2); break } }
         END { printf "%d\n", s }'
}
# tree_of CHAINID DIR: mounts a view of the committed snapshot at DIR
tree_of() {
  local line typ src opts
  mkdir -p "$2"
  line=$(K8S snapshots --snapshotter di3fs view --target "$2" "view-$RANDOM" "$1") || return 1
  read -r _ _ typ src _ _ opts <<<"$line"
  case $typ in
    bind) mount --rbind -o ro "$src" "$2" ;;
    overlay) mount -t overlay overlay -o "$opts" "$2" ;;
    *) echo "unexpected mount: $line" >&2; return 1 ;;
  esac
}
check_tree() {  # check_tree LABEL CHAINID TAG [layers]
  local mp=$T/view-$3 rootfs=$D4C_CORPUS/typescript/rootfs/$3/rootfs l p diffs ignored=0
  if tree_of "$2" "$mp"; then
    if "$TREECMP" "$mp" "$rootfs" >"$T/cmp-$3.txt" 2>&1; then
      e2e_log "$1: $(tail -1 "$T/cmp-$3.txt")"
    elif [[ ${4:-} == layers ]]; then
      # containerd's own unpack (as with overlayfs) gives the directories a
      # layer's tar does not list (/, parents of its files) the time of the
      # unpack: only those mtimes may differ.
      diffs=
      while IFS= read -r l; do
        p=${l%%: mtime *}
        if [[ $l == *": mtime "* && $p == /* && -d $rootfs$p && ! -L $rootfs$p ]]; then
          ignored=$((ignored + 1))
        else
          diffs+="$l"$'\n'
        fi
      done <"$T/cmp-$3.txt"
      [[ -z $diffs ]] || bad "$1: the tree of snapshot $2 differs from the rootfs of $3: $(head -5 <<<"$diffs")"
      e2e_log "$1: equal to the rootfs but the mtime of $ignored directories made by containerd's unpack"
    else
      bad "$1: the tree of snapshot $2 differs from the rootfs of $3: $(head -5 "$T/cmp-$3.txt")"
    fi
    umount -l "$mp" || true
  else
    bad "$1: cannot view snapshot $2"
  fi
}
cri_pull() {  # cri_pull LABEL IMAGE: PullImage, prints the registry bytes served
  local mark out
  mark=$(reg_mark)
  if out=$(timeout 600 "$CRI_PULL" "$SOCK" pull "$2" 2>&1); then
    e2e_log "$1: CRI PullImage $2 -> $out; registry sent $(reg_served_since "$mark") bytes"
  else
    bad "$1: CRI PullImage $2: $out"
  fi
  "$CRI_PULL" "$SOCK" status "$2" >/dev/null || bad "$1: CRI ImageStatus $2 does not find the pulled image"
  echo "$mark" >"$T/mark-$1"
}
snap_label() { K8S snapshots --snapshotter di3fs info "$1" | jq -r --arg k "$2" '.Labels[$k] // ""'; }

# --- 2. first pull: v1 ------------------------------------------------------------
cri_pull v1 "$REG_HOST/tsr:v1"
M=$(cat "$T/mark-v1")
C1=$(chain_id "$V1")
[[ $(snap_label "$C1" containerd.io/snapshot/di3fs.image-id) == "$ID1" ]] ||
  bad "v1: snapshot $C1 is not di3fs image $ID1: $(K8S snapshots --snapshotter di3fs info "$C1" 2>&1)"
n=$(blob_gets "$M" "$B_CD1")
((n > 0)) || bad "v1: the full v1 cdimg ($B_CD1) was not downloaded"
e2e_log "v1: full cdimg $n bytes; layers: $(for l in $(manifest_of "$V1" | jq -r '.layers[].digest'); do printf '%s=%s ' "${l:7:12}" "$(blob_gets "$M" "$l")"; done)"
check_tree v1 "$C1" "$V1"

# --- 3. the update: v2 --------------------------------------------------------------
cri_pull v2 "$REG_HOST/tsr:v2"
M=$(cat "$T/mark-v2")
C2=$(chain_id "$V2")
TOP2=$(top_layer "$V2")
[[ $(snap_label "$C2" containerd.io/snapshot/di3fs.image-id) == "$ID2" ]] ||
  bad "v2: snapshot $C2 is not di3fs image $ID2: $(K8S snapshots --snapshotter di3fs info "$C2" 2>&1)"
nd=$(blob_gets "$M" "$B_D12") nt=$(blob_gets "$M" "$TOP2") nf=$(blob_gets "$M" "$B_CD2") all=$(reg_served_since "$M")
((nd == $(stat -c %s "$D12"))) || bad "v2: the delta v1->v2 ($B_D12, $(stat -c %s "$D12") bytes) was downloaded with $nd bytes"
((nt == 0)) || bad "v2: containerd downloaded the v2 top layer $TOP2 ($nt bytes)"
((nf == 0)) || bad "v2: the full v2 cdimg was downloaded ($nf bytes)"
TOP2_SIZE=$(manifest_of "$V2" | jq -r '.layers[-1].size')
e2e_log "v2 update through CRI: $all bytes from the registry (delta $nd); an ordinary pull fetches the top layer, $TOP2_SIZE bytes"
grep -q "served by image $ID2" "$d/snapshotter.log" || bad "v2: the snapshotter log does not say it served $ID2"
check_tree v2 "$C2" "$V2"
VERSION_CMD='grep "\"version\"" /app/node_modules/typescript/package.json'
out=$(timeout 120 ctr --address "$SOCK" -n k8s.io run --rm --snapshotter di3fs "$REG_HOST/tsr:v2" "run-$RANDOM" \
  sh -c "$VERSION_CMD" 2>&1) || true
[[ $out == *"\"version\": \"$V2\""* ]] || bad "v2: ctr -n k8s.io run of the CRI-pulled image printed: $out"
e2e_log "v2: a container on the CRI-pulled image prints $out"

# --- 4. an image without cdimgs: ordinary pull ------------------------------------
cri_pull plain "$REG_HOST/plain:vL"
M=$(cat "$T/mark-plain")
CL=$(chain_id "$VL")
TOPL=$(top_layer "$VL")
[[ -z $(snap_label "$CL" containerd.io/snapshot/di3fs.image-id) ]] || bad "plain: snapshot $CL is a di3fs image"
nt=$(blob_gets "$M" "$TOPL")
((nt > 0)) || bad "plain: containerd did not download the top layer $TOPL of an image without cdimgs"
grep -q "plain:vL .*is fetched by containerd" "$d/snapshotter.log" || bad "plain: the snapshotter log does not say why it fell back"
check_tree plain "$CL" "$VL" layers

# --- cleanup leaves nothing ----------------------------------------------------------
KEEP_TMP=1 h_cleanup
set -e
leftover=$(awk -v t="$T/" 'index($2, t) == 1' /proc/mounts)
[[ -z $leftover ]] || bad "mounts left behind: $leftover"
left_pids=$(h_pids_under "$T/")
[[ -z $left_pids ]] || bad "processes left behind: $left_pids"
if ((fail)); then
  echo "--- snapshotter log (tail)" >&2; tail -15 "$d/snapshotter.log" >&2
  echo "--- containerd log (tail)" >&2; tail -10 "$d/containerd.log" >&2
  echo "--- registry access log (tail)" >&2
  grep -E '^[0-9.]+ - ' "$T/registry.log" | tail -8 >&2
  [[ -n ${D4C_KEEP_E2E:-} ]] || rm -rf "$T"
  echo "cri_pull_test: FAILED" >&2
  exit 1
fi
[[ -n ${D4C_KEEP_E2E:-} ]] || rm -rf "$T"
echo "cri_pull_test: OK"
