#!/usr/bin/env bash
# diff / patch / merge on the real corpus:
#  - every consecutive pair of every series: diff A B, patch A D -> the very
#    bytes (and image id) convert writes for B;
#  - a delta chain of depth 3 (typescript 5.4.2 -> .3 -> .4 -> .5, each delta
#    diffed against the previous *delta*) extracts to umoci's rootfs of 5.4.5;
#  - merge(.2->.3, .3->.4), with 5.4.2 found next to the deltas by image id,
#    patches to 5.4.4 exactly and is not larger than both inputs;
#  - prints a size table. Converted images are cached (lib.sh cdimg_for);
#    diff / patch / merge always run.
source "$(dirname "$0")/lib.sh"
require_corpus
THREADS=${D4C_E2E_THREADS:-2}
tmp=$(mktemp -d /var/tmp/d4c-e2e-delta.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail=0
table=$tmp/table.tsv

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
fsize() { stat -c %s "$1"; }
index_bytes() { "$CTR_CLI" cdimg show --json "$@" | jq -r .meta_bytes; }  # config + index, stored
bad() { echo "FAIL: $*" >&2; fail=1; }

# diff_pair SERIES OLD NEW -> $tmp/SERIES-OLD-NEW.cdimg, checked by patch
diff_pair() {
  local s=$1 ta=$2 tb=$3
  local a b d t0 t1 t2
  a=$(cdimg_for "$s" "$ta")
  b=$(cdimg_for "$s" "$tb")
  d=$tmp/$s-$ta-$tb.cdimg
  e2e_log "diff $s $ta -> $tb"
  t0=$(now)
  "$CTR_CLI" cdimg diff --oldCdimg "$a" --newCdimg "$b" --outCdimg "$d" --threadNum "$THREADS" >"$d.log" ||
    { bad "$s $ta->$tb: diff failed"; return; }
  t1=$(now)
  # the fast default: B's image id (patch checks every file's sha256)
  "$CTR_CLI" cdimg patch --baseCdimg "$a" --diffCdimg "$d" --outCdimg "$tmp/patched.cdimg" --threadNum "$THREADS" \
    >/dev/null || { bad "$s $ta->$tb: patch failed"; return; }
  t2=$(now)
  [[ $(image_id --cdimg "$tmp/patched.cdimg") == $(image_id --cdimg "$b") ]] ||
    bad "$s $ta->$tb: patched image id differs from convert's"
  # at convert's level: convert's very bytes (docs/design.md)
  "$CTR_CLI" cdimg patch --baseCdimg "$a" --diffCdimg "$d" --outCdimg "$tmp/patched.cdimg" --threadNum "$THREADS" \
    --level 19 >/dev/null || { bad "$s $ta->$tb: patch --level 19 failed"; return; }
  cmp -s "$tmp/patched.cdimg" "$b" || bad "$s $ta->$tb: patched file (--level 19) differs from convert's bytes"
  rm -f "$tmp/patched.cdimg"
  # show --entries: the standalone files' blobs and the stored packs are the whole blob section
  "$CTR_CLI" cdimg show --cdimg "$d" --base "$a" --entries --json >"$tmp/show.json" ||
    { bad "$s $ta->$tb: show --entries failed"; return; }
  [[ $(jq '([.files[] | select(.packed | not) | .blob_bytes] | add // 0) + (.recipe_blob_bytes.packs // 0)
           == .blob_bytes' "$tmp/show.json") == true ]] ||
    bad "$s $ta->$tb: show --entries does not account for every blob byte"
  printf '%s\t%s\t%s\t%s\t-\t%s\t%s\n' "$s $ta->$tb" "$(fsize "$b")" "$(fsize "$d")" \
    "$(index_bytes --cdimg "$d" --base "$a")" "$(secs "$t0" "$t1")" "$(secs "$t1" "$t2")" >>"$table"
}

for s in $(corpus_series); do
  mapfile -t tags < <(corpus_tags "$s")
  for ((i = 1; i < ${#tags[@]}; i++)); do diff_pair "$s" "${tags[i - 1]}" "${tags[i]}"; done
done

# ---- delta chain of depth 3: each delta is made against the previous delta
mapfile -t ts < <(corpus_tags typescript)
if ((${#ts[@]} >= 4)); then
  e2e_log "chain typescript ${ts[*]:0:4}"
  chain=(); bases=(--base "$(cdimg_for typescript "${ts[0]}")")
  old=$(cdimg_for typescript "${ts[0]}")
  for ((i = 1; i < 4; i++)); do
    d=$tmp/chain-$i.cdimg
    "$CTR_CLI" cdimg diff --oldCdimg "$old" "${bases[@]}" --newCdimg "$(cdimg_for typescript "${ts[i]}")" \
      --outCdimg "$d" --threadNum "$THREADS" >/dev/null || bad "chain: diff ${ts[i - 1]}->${ts[i]} failed"
    bases+=(--base "$d"); old=$d
  done
  [[ $(image_id --cdimg "$old") == $(image_id --cdimg "$(cdimg_for typescript "${ts[3]}")") ]] ||
    bad "chain: top delta has the wrong image id"
  if [[ $(id -u) -eq 0 ]]; then
    "$CTR_CLI" cdimg extract --cdimg "$old" "${bases[@]}" --output "$tmp/x" --threadNum "$THREADS" >/dev/null &&
      "$TREECMP" "$tmp/x" "$D4C_CORPUS/typescript/rootfs/${ts[3]}/rootfs" >"$tmp/cmp.txt" ||
      { bad "chain: extract of the depth-3 chain differs from umoci's ${ts[3]}:"; head -40 "$tmp/cmp.txt" >&2; }
    rm -rf "$tmp/x"
  elif [[ ${D4C_REQUIRE_E2E:-0} == 1 ]]; then
    bad "chain: extract needs root"
  else
    e2e_log "chain: extract step needs root, not run"
  fi
  # patch through the chain: base = the depth-2 delta
  "$CTR_CLI" cdimg patch --baseCdimg "$tmp/chain-2.cdimg" --base "$(cdimg_for typescript "${ts[0]}")" \
    --base "$tmp/chain-1.cdimg" --diffCdimg "$old" --outCdimg "$tmp/p.cdimg" --threadNum "$THREADS" --level 19 \
    >/dev/null &&
    cmp -s "$tmp/p.cdimg" "$(cdimg_for typescript "${ts[3]}")" || bad "chain: patch of the depth-3 chain differs"
  rm -f "$tmp/p.cdimg"

  # ---- merge .2->.3 + .3->.4 (D4C spelling: the base is found next to the deltas)
  e2e_log "merge typescript ${ts[0]}->${ts[1]} + ${ts[1]}->${ts[2]}"
  m=$tmp/merge; mkdir -p "$m"
  d1=$tmp/typescript-${ts[0]}-${ts[1]}.cdimg d2=$tmp/typescript-${ts[1]}-${ts[2]}.cdimg
  ln -s "$d1" "$m/d1.cdimg"; ln -s "$d2" "$m/d2.cdimg"
  if "$CTR_CLI" cdimg merge --lowerCdimg "$m/d1.cdimg" --upperCdimg "$m/d2.cdimg" --outCdimg "$m/x.cdimg" \
    >/dev/null 2>"$tmp/err.txt" || ! grep -q "needs its parent image" "$tmp/err.txt"; then
    bad "merge without its base image must fail saying what is missing"; cat "$tmp/err.txt" >&2
  fi
  ln -s "$(cdimg_for typescript "${ts[0]}")" "$m/a.cdimg"
  t0=$(now)
  "$CTR_CLI" cdimg merge --lowerCdimg "$m/d1.cdimg" --upperCdimg "$m/d2.cdimg" --outCdimg "$m/d.cdimg" \
    --threadNum "$THREADS" >/dev/null || bad "merge failed"
  t1=$(now)
  c=$(cdimg_for typescript "${ts[2]}")
  "$CTR_CLI" cdimg patch --baseCdimg "$m/a.cdimg" --diffCdimg "$m/d.cdimg" --outCdimg "$tmp/pm.cdimg" \
    --threadNum "$THREADS" --level 19 >/dev/null || bad "patch of the merged delta failed"
  [[ $(image_id --cdimg "$tmp/pm.cdimg") == $(image_id --cdimg "$c") ]] || bad "merged delta: wrong image id"
  cmp -s "$tmp/pm.cdimg" "$c" || bad "merged delta: patched bytes differ from convert's"
  sum=$(($(fsize "$d1") + $(fsize "$d2")))
  (($(fsize "$m/d.cdimg") <= sum)) || bad "merged delta ($(fsize "$m/d.cdimg")) larger than its inputs ($sum)"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t-\n' "typescript ${ts[0]}->${ts[2]} (merge)" "$(fsize "$c")" "$sum" \
    "$(index_bytes --cdimg "$m/d.cdimg" --base "$m/a.cdimg")" "$(fsize "$m/d.cdimg")" "$(secs "$t0" "$t1")" >>"$table"
fi

{
  printf 'pair\tfull_cdimg_B\tdelta\tdelta_config_index\tmerged\tdiff_or_merge_s\tpatch_s\n'
  cat "$table"
} | column -t -s $'\t' >&2
[[ $fail == 0 ]] && echo "delta round trip: every pair patches to convert's exact bytes"
exit $fail
