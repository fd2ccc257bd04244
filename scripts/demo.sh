#!/usr/bin/env bash
# demo.sh -- the main job on a real image, from a fresh machine: install,
# build, make the corpus, convert two versions of a real image to cdimg,
# diff them, and rebuild the new version from old + delta, checking the result
# against `umoci unpack` of the original image. Then the edge-site flow: push
# both images to a local OCI registry (normal OCI images, cdimgs attached as
# referrers), and let a containerd with the di3fs snapshotter pull the old
# version, then the update (only the delta moves), and run it.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
log() { printf '\n[demo %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
[[ $(id -u) -eq 0 ]] || { echo "demo.sh: run as root (extract sets ownership, FUSE, containerd)" >&2; exit 1; }

bash "$src/scripts/setup.sh"
log "building the real-image corpus (cached in ${D4C_CORPUS:-/var/cache/d4c-corpus})"
bash "$src/scripts/corpus.sh" typescript >/dev/null
log "building"
bash "$src/scripts/build.sh" "$src/build"
cli=$src/build/ctr-cli/ctr-cli
corpus=${D4C_CORPUS:-/var/cache/d4c-corpus}
work=$(mktemp -d /var/tmp/d4c-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
old=5.4.4 new=5.4.5

log "convert typescript:$old and typescript:$new (OCI layout) to cdimg"
"$cli" convert --image "oci:$corpus/typescript/oci:$old" --output "$work/old" --cdimg
"$cli" convert --image "oci:$corpus/typescript/oci:$new" --output "$work/new" --cdimg
"$cli" cdimg show --cdimg "$work/new/image.cdimg"

log "diff: the update from $old to $new"
"$cli" cdimg diff --oldCdimg "$work/old/image.cdimg" --newCdimg "$work/new/image.cdimg" --outCdimg "$work/delta.cdimg"
log "patch: rebuild $new from $old + delta (--level 19: convert's level, so convert's very bytes)"
"$cli" cdimg patch --baseCdimg "$work/old/image.cdimg" --diffCdimg "$work/delta.cdimg" --outCdimg "$work/rebuilt.cdimg" \
  --level 19
cmp "$work/rebuilt.cdimg" "$work/new/image.cdimg" && echo "rebuilt cdimg is byte-identical to converting $new directly"
log "extract the delta chain ($old + delta) and compare with umoci unpack of $new"
"$cli" cdimg extract --cdimg "$work/delta.cdimg" --base "$work/old/image.cdimg" --output "$work/rootfs"
"$src/build/test/treecmp" "$work/rootfs" "$corpus/typescript/rootfs/$new/rootfs"

gz=$(jq -r '.layers[].size' "$corpus/typescript/oci/blobs/sha256/$(jq -r --arg t "$new" \
  '.manifests[]|select(.annotations["org.opencontainers.image.ref.name"]==$t)|.digest' \
  "$corpus/typescript/oci/index.json" | cut -d: -f2)" | paste -sd+ | bc)
printf '\n%-40s %12s bytes\n' "gzip layers of $new (docker pull):" "$gz"
printf '%-40s %12s bytes\n' "full cdimg of $new:" "$(stat -c %s "$work/new/image.cdimg")"
printf '%-40s %12s bytes\n' "delta cdimg $old -> $new:" "$(stat -c %s "$work/delta.cdimg")"

log "registry flow: push $old (full) and the delta to a local registry; an edge containerd pulls both and runs $new"
export D4C_BUILD_DIR=$src/build
H_DIR=$(mktemp -d /tmp/d4c-demo.XXXXXX)  # short: unix socket paths
# shellcheck source=../test/e2e/harness.sh
source "$src/test/e2e/harness.sh"
trap 'h_cleanup; rm -rf "$work"' EXIT
reg_start
# Each tag is a normal OCI image (any client pulls and runs it) with its cdimgs
# attached as OCI referrers; the delta is attached to the image it leads to.
for v in old new; do
  "$cli" push --cdimg "$work/$v/image.cdimg" --image "oci:$corpus/typescript/oci:${!v}" \
    --imageTag "demo/typescript:${!v}" --serverHost "$REG_HOST" --plain-http
done
"$cli" push --cdimg "$work/delta.cdimg" --repository demo/typescript --serverHost "$REG_HOST" --plain-http
client_start edge
pull() {
  "$cli" pull --image "demo/typescript:$1" --host "$REG_HOST" --plain-http \
    --address "$(client_sock edge)" --download-dir "$work/downloads"
}
pull "$old"
out=$(pull "$new")
echo "$out"
moved=$(sed -n 's/^downloaded \([0-9]*\) bytes.*/\1/p' <<<"$out")
client_ctr edge run --rm --snapshotter=di3fs "docker.io/demo/typescript:$new" demo \
  sh -c 'grep "\"version\"" /app/node_modules/typescript/package.json'
printf '%-40s %12s bytes\n' "pulled for the update $old -> $new:" "$moved"
log "demo finished"
