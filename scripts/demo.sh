#!/usr/bin/env bash
# demo.sh -- the main job on a real image, from a fresh machine: install,
# build, make the corpus, convert two versions of a real image to cdimg,
# diff them, and rebuild the new version from old + delta, checking the result
# against `umoci unpack` of the original image.
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

if "$cli" cdimg diff --help >/dev/null 2>&1; then
  log "diff: the update from $old to $new"
  "$cli" cdimg diff --oldCdimg "$work/old/image.cdimg" --newCdimg "$work/new/image.cdimg" --outCdimg "$work/delta.cdimg"
  log "patch: rebuild $new from $old + delta"
  "$cli" cdimg patch --baseCdimg "$work/old/image.cdimg" --diffCdimg "$work/delta.cdimg" --outCdimg "$work/rebuilt.cdimg"
  cmp "$work/rebuilt.cdimg" "$work/new/image.cdimg" && echo "rebuilt cdimg is byte-identical to converting $new directly"
  log "extract the delta chain ($old + delta) and compare with umoci unpack of $new"
  "$cli" cdimg extract --cdimg "$work/delta.cdimg" --base "$work/old/image.cdimg" --output "$work/rootfs"
else
  log "extract $new and compare with umoci unpack"
  "$cli" cdimg extract --cdimg "$work/new/image.cdimg" --output "$work/rootfs"
fi
"$src/build/test/treecmp" "$work/rootfs" "$corpus/typescript/rootfs/$new/rootfs"

gz=$(jq -r '.layers[].size' "$corpus/typescript/oci/blobs/sha256/$(jq -r --arg t "$new" \
  '.manifests[]|select(.annotations["org.opencontainers.image.ref.name"]==$t)|.digest' \
  "$corpus/typescript/oci/index.json" | cut -d: -f2)" | paste -sd+ | bc)
printf '\n%-40s %12s bytes\n' "gzip layers of $new (docker pull):" "$gz"
printf '%-40s %12s bytes\n' "full cdimg of $new:" "$(stat -c %s "$work/new/image.cdimg")"
[[ -f $work/delta.cdimg ]] && printf '%-40s %12s bytes\n' "delta cdimg $old -> $new:" "$(stat -c %s "$work/delta.cdimg")"
log "demo finished"
