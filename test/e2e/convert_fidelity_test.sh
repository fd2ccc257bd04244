#!/usr/bin/env bash
# extract(convert(image)) must equal `umoci unpack` of the same image, path by
# path, for every corpus image; oci: and docker-archive: inputs must give the
# same image id; convert must be deterministic across thread counts.
source "$(dirname "$0")/lib.sh"
require_root
require_corpus
tmp=$(mktemp -d /var/tmp/d4c-e2e-convert.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail=0
for s in $(corpus_series); do
  for t in $(corpus_tags "$s"); do
    e2e_log "$s:$t"
    img=$(cdimg_for "$s" "$t")
    # the image id depends only on the tree, so the fastest level is enough here
    "$CTR_CLI" convert --image "docker-archive:$D4C_CORPUS/$s/docker/$s-$t.tar" --output "$tmp/da" --cdimg --level 1 >/dev/null
    if [[ $(image_id --cdimg "$img") != $(image_id --cdimg "$tmp/da/image.cdimg") ]]; then
      echo "FAIL $s:$t: oci: and docker-archive: give different image ids" >&2; fail=1
    fi
    rm -rf "$tmp/da" "$tmp/x"
    "$CTR_CLI" cdimg extract --cdimg "$img" --output "$tmp/x" >/dev/null
    if ! "$TREECMP" "$tmp/x" "$D4C_CORPUS/$s/rootfs/$t/rootfs" >"$tmp/cmp.txt"; then
      echo "FAIL $s:$t: extracted tree differs from umoci unpack:" >&2; head -40 "$tmp/cmp.txt" >&2; fail=1
    else
      e2e_log "$s:$t $(cat "$tmp/cmp.txt")"
    fi
    rm -rf "$tmp/x"
  done
done
# determinism: 1 thread vs 2 threads, same bytes
t=$(corpus_tags typescript | head -n1)
"$CTR_CLI" convert --image "oci:$D4C_CORPUS/typescript/oci:$t" --output "$tmp/t1" --cdimg --threadNum 1 >/dev/null
cmp "$tmp/t1/image.cdimg" "$(cdimg_for typescript "$t")" || { echo "FAIL: convert is not deterministic" >&2; fail=1; }
[[ $fail == 0 ]] && echo "convert fidelity: all corpus images identical to umoci unpack"
exit $fail
