#!/usr/bin/env bash
# di3fs end to end, real FUSE on the real corpus:
#  1. every corpus image mounted is identical to `umoci unpack` (treecmp:
#     bytes, metadata, hardlinks by inode, xattrs, devices), and mounting
#     rebuilds nothing (lazy); a second mount on the same cache rebuilds
#     nothing either (reuse across restarts); SIGTERM unmounts cleanly
#  2. a synthetic image with security.capability, user xattrs, setuid,
#     hardlinks, devices, a fifo, a sticky dir and ns mtimes (umoci-made)
#  3. a delta chain of depth 4 (typescript 5.4.2 -> .3 -> .4 -> .5); a missing
#     base fails the mount with a message naming --base; deltas merged by
#     merge --compose (once, and a composed one again) mount as the same trees
#  4. overlayfs with the mount as lowerdir takes writes into upperdir only
#  5. 16 parallel readers of random files on a cold cache get the right bytes
#  6. corrupt blobs give EIO on their files only; the mount keeps serving
#  7. the cache stays under --cache-size while a whole tree is read
# No mount is left behind (trap), and the script checks that at the end.
source "$(dirname "$0")/lib.sh"
require_root
[[ -c /dev/fuse ]] || skip_or_fail "no /dev/fuse"
require_corpus
DI3FS=$D4C_BUILD_DIR/fs/di3fs
ENTRIES=$D4C_BUILD_DIR/fs/cdimg-entries
for b in "$DI3FS" "$ENTRIES" "$CTR_CLI" "$TREECMP"; do
  [[ -x $b ]] || { echo "FAIL: $b is not built" >&2; exit 1; }
done

tmp=$(mktemp -d /var/tmp/d4c-e2e-di3fs.XXXXXX)
declare -A DAEMON  # mountpoint -> di3fs pid
MOUNTS=()          # every mountpoint (di3fs and overlay), in mount order
cleanup() {
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    mountpoint -q "${MOUNTS[i]}" 2>/dev/null && umount -l "${MOUNTS[i]}" 2>/dev/null
  done
  for pid in "${DAEMON[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fail=0
bad() { echo "FAIL: $*" >&2; fail=1; }

# mount_di3fs MOUNTPOINT LOG DI3FS-ARGS...: background daemon, waits for the mount
mount_di3fs() {
  local mp=$1 log=$2 i
  shift 2
  mkdir -p "$mp"
  "$DI3FS" "$@" "$mp" 2>"$log" &
  DAEMON[$mp]=$!
  MOUNTS+=("$mp")
  for ((i = 0; i < 200; i++)); do
    mountpoint -q "$mp" && return 0
    kill -0 "${DAEMON[$mp]}" 2>/dev/null || break
    sleep 0.05
  done
  echo "FAIL: di3fs did not mount at $mp:" >&2
  cat "$log" >&2
  return 1
}

# unmount_di3fs MOUNTPOINT [umount|TERM|INT]: the daemon must exit 0, the mount be gone
unmount_di3fs() {
  local mp=$1 how=${2:-umount} pid=${DAEMON[$1]} rc=0
  if [[ $how == umount ]]; then umount "$mp"; else kill -"$how" "$pid"; fi
  wait "$pid" || rc=$?
  unset "DAEMON[$mp]"
  [[ $rc == 0 ]] || bad "di3fs at $mp exited with status $rc after $how"
  ! mountpoint -q "$mp" || bad "$mp still mounted after $how"
}

# "N rebuilt" from the daemon's exit line
rebuilt() { sed -n 's/.*cache: \([0-9]*\) rebuilt.*/\1/p' "$1"; }
# content files (and temporary ones) of a cache directory, not its root's
# .budget, .ledger and .lock
nfiles() { find "$1" -maxdepth 1 -type f \( -name '.tmp.*' -o ! -name '.*' \) | wc -l; }
# bytes of the files in a cache directory
cache_bytes() { find "$1" -maxdepth 1 -type f \( -name '.tmp.*' -o ! -name '.*' \) -printf '%s\n' | awk '{s += $1} END {print s + 0}'; }

# flip_byte FILE OFFSET
flip_byte() {
  local b
  b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
  printf "$(printf '\\%03o' $((b ^ 0xff)))" | dd of="$1" bs=1 seek="$2" count=1 conv=notrunc status=none
}

# ---- 1. fidelity of every corpus image, laziness, restart reuse ------------------
for s in $(corpus_series); do
  for t in $(corpus_tags "$s"); do
    img=$(cdimg_for "$s" "$t")
    mp=$tmp/mnt/$s-$t cache=$tmp/cache/$s-$t
    mount_di3fs "$mp" "$tmp/$s-$t.log" --cdimg "$img" --cache-dir "$cache" || { fail=1; continue; }
    [[ $(nfiles "$cache") == 0 ]] || bad "$s:$t: mounting rebuilt files (not lazy)"
    if "$TREECMP" "$mp" "$D4C_CORPUS/$s/rootfs/$t/rootfs" >"$tmp/cmp.txt"; then
      e2e_log "$s:$t mounted: $(cat "$tmp/cmp.txt")"
    else
      bad "$s:$t: mounted tree differs from umoci unpack:"; head -40 "$tmp/cmp.txt" >&2
    fi
    unmount_di3fs "$mp" TERM
    # same cache, new daemon: everything is served from the cache files
    mount_di3fs "$mp" "$tmp/$s-$t.2.log" --cdimg "$img" --cache-dir "$cache" || { fail=1; continue; }
    "$TREECMP" "$mp" "$D4C_CORPUS/$s/rootfs/$t/rootfs" >/dev/null || bad "$s:$t: remount on a warm cache differs"
    unmount_di3fs "$mp"
    [[ $(rebuilt "$tmp/$s-$t.2.log") == 0 ]] || bad "$s:$t: remount rebuilt $(rebuilt "$tmp/$s-$t.2.log") files instead of reusing the cache"
    rm -rf "$cache"
  done
done

# ---- 2. xattrs (security.capability), setuid, devices: a synthetic image --------
if command -v umoci >/dev/null && command -v setcap >/dev/null && command -v setfattr >/dev/null; then
  syn=$tmp/syn
  mkdir -p "$syn"
  umoci init --layout "$syn/oci" && umoci new --image "$syn/oci:t" && umoci unpack --image "$syn/oci:t" "$syn/b" >/dev/null
  r=$syn/b/rootfs
  mkdir -p "$r/bin" "$r/dev" "$r/tmp/deep/er"
  chmod 1777 "$r/tmp"
  head -c 300000 /dev/urandom >"$r/bin/ping"
  chmod 4755 "$r/bin/ping"
  setcap cap_net_raw+ep "$r/bin/ping"
  setfattr -n user.note -v hello "$r/bin/ping"
  setfattr -n user.dir -v "on a directory" "$r/tmp"
  ln "$r/bin/ping" "$r/bin/ping6"
  ln "$r/bin/ping" "$r/tmp/deep/ping-too"
  cp "$r/bin/ping" "$r/bin/same-bytes"  # same content, another inode
  mknod "$r/dev/null" c 1 3
  mknod "$r/dev/sda" b 8 0
  mkfifo "$r/dev/fifo"
  ln -s ../bin/ping "$r/tmp/link"
  : >"$r/empty"
  chown 1000:100 "$r/empty"
  chmod 2640 "$r/empty"
  umoci repack --image "$syn/oci:t" "$syn/b"
  umoci unpack --image "$syn/oci:t" "$syn/truth" >/dev/null  # ground truth, as for the corpus
  "$CTR_CLI" convert --image "oci:$syn/oci:t" --output "$syn/c" --cdimg >/dev/null
  mount_di3fs "$tmp/mnt/syn" "$tmp/syn.log" --cdimg "$syn/c/image.cdimg" || fail=1
  if "$TREECMP" "$tmp/mnt/syn" "$syn/truth/rootfs" >"$tmp/cmp.txt"; then
    e2e_log "synthetic image (caps, xattrs, setuid, devices, hardlinks): $(cat "$tmp/cmp.txt")"
  else
    bad "synthetic image differs:"; head -40 "$tmp/cmp.txt" >&2
  fi
  [[ $(getfattr --absolute-names --only-values -n security.capability "$tmp/mnt/syn/tmp/deep/ping-too" | od -An -tx1 | tr -d ' \n') == \
     $(getfattr --absolute-names --only-values -n security.capability "$r/bin/ping" | od -An -tx1 | tr -d ' \n') ]] ||
    bad "security.capability does not come through a hardlink"
  [[ $(stat -c %h:%i "$tmp/mnt/syn/bin/ping") == $(stat -c %h:%i "$tmp/mnt/syn/tmp/deep/ping-too") ]] ||
    bad "hardlinks do not share inode and link count"
  [[ $(stat -c %h "$tmp/mnt/syn/bin/ping") == 3 ]] || bad "hardlink group of 3 has nlink $(stat -c %h "$tmp/mnt/syn/bin/ping")"
  [[ $(stat -c %h "$tmp/mnt/syn/tmp") == 3 ]] || bad "directory nlink is not 2 + subdirectories"
  unmount_di3fs "$tmp/mnt/syn" INT
elif [[ ${D4C_REQUIRE_E2E:-0} == 1 ]]; then
  bad "umoci, setcap or setfattr missing: the xattr/capability check cannot run"
fi

# mount_compare NAME TRUTH LABEL DI3FS_ARGS...: mounts at $tmp/mnt/NAME,
# compares the tree with TRUTH (a rootfs), unmounts.
mount_compare() {
  local name=$1 truth=$2 label=$3
  shift 3
  if ! mount_di3fs "$tmp/mnt/$name" "$tmp/$name.log" "$@"; then
    fail=1
    return
  fi
  if "$TREECMP" "$tmp/mnt/$name" "$truth" >"$tmp/cmp.txt"; then
    e2e_log "$label: $(cat "$tmp/cmp.txt")"
  else
    bad "$label: mounted tree differs from $truth:"; head -40 "$tmp/cmp.txt" >&2
  fi
  unmount_di3fs "$tmp/mnt/$name"
}

# ---- 3. a delta chain of depth 4 ---------------------------------------------------
tags=($(corpus_tags typescript))
if "$CTR_CLI" cdimg diff --help >/dev/null 2>&1 && ((${#tags[@]} >= 4)); then
  chain=("$(cdimg_for typescript "${tags[0]}")")
  for ((k = 1; k < 4; k++)); do
    d=$tmp/chain/d$k.cdimg
    mkdir -p "$tmp/chain"
    "$CTR_CLI" cdimg diff --oldCdimg "$(cdimg_for typescript "${tags[k - 1]}")" \
      --newCdimg "$(cdimg_for typescript "${tags[k]}")" --outCdimg "$d" >/dev/null || bad "diff ${tags[k - 1]} -> ${tags[k]} failed"
    chain+=("$d")
  done
  top=${chain[3]}
  bases=(--base "${chain[2]}" --base "${chain[0]}" --base "${chain[1]}")  # any order
  mount_compare chain "$D4C_CORPUS/typescript/rootfs/${tags[3]}/rootfs" \
    "delta chain ${tags[0]}->${tags[1]}->${tags[2]}->${tags[3]} (depth 4)" --cdimg "$top" "${bases[@]}"
  # merge --compose of the first two deltas, then of that and the third: placed
  # packs, chained patches whose steps lie in the copied packs
  "$CTR_CLI" cdimg merge --compose --lowerCdimg "${chain[1]}" --upperCdimg "${chain[2]}" \
    --outCdimg "$tmp/chain/m13.cdimg" --base "${chain[0]}" >/dev/null || bad "merge --compose d1 d2 failed"
  "$CTR_CLI" cdimg merge --compose --lowerCdimg "$tmp/chain/m13.cdimg" --upperCdimg "${chain[3]}" \
    --outCdimg "$tmp/chain/m14.cdimg" --base "${chain[0]}" --base "${chain[2]}" >/dev/null ||
    bad "merge --compose of a composed delta failed"
  mount_compare composed "$D4C_CORPUS/typescript/rootfs/${tags[2]}/rootfs" \
    "composed delta ${tags[0]}->${tags[2]}" --cdimg "$tmp/chain/m13.cdimg" --base "${chain[0]}"
  mount_compare composed2 "$D4C_CORPUS/typescript/rootfs/${tags[3]}/rootfs" \
    "composed delta ${tags[0]}->${tags[3]} (composed twice)" --cdimg "$tmp/chain/m14.cdimg" --base "${chain[0]}"
  # a missing base: no mount, a message naming the missing parent and --base
  mkdir -p "$tmp/mnt/nobase"
  if "$DI3FS" --cdimg "$top" --base "${chain[2]}" "$tmp/mnt/nobase" 2>"$tmp/nobase.log"; then
    bad "di3fs mounted a delta chain with a missing base"
    umount "$tmp/mnt/nobase"
  fi
  grep -q -- "--base" "$tmp/nobase.log" || { bad "missing base: unclear message:"; cat "$tmp/nobase.log" >&2; }
  e2e_log "missing base: $(head -1 "$tmp/nobase.log")"
elif [[ ${D4C_REQUIRE_E2E:-0} == 1 ]]; then
  bad "ctr-cli cdimg diff is not available: the delta chain check cannot run"
fi

# ---- 3b. a big changed executable: biome's 28.6 MB binary, a bsdiff patch in the
# adjusted x86 form, rebuilt on first read with the daemon's helper threads (the
# base read beside the patch's streams, the target in parts) ---------------------------
btags=($(corpus_tags biome))
if ((${#btags[@]} >= 2)); then
  mkdir -p "$tmp/big"
  if "$CTR_CLI" cdimg diff --oldCdimg "$(cdimg_for biome "${btags[0]}")" --newCdimg "$(cdimg_for biome "${btags[1]}")" \
    --outCdimg "$tmp/big/d.cdimg" >/dev/null; then
    mount_compare big "$D4C_CORPUS/biome/rootfs/${btags[1]}/rootfs" "biome delta ${btags[0]}->${btags[1]}" \
      --cdimg "$tmp/big/d.cdimg" --base "$(cdimg_for biome "${btags[0]}")"
  else
    bad "diff biome ${btags[0]} -> ${btags[1]} failed"
  fi
elif [[ ${D4C_REQUIRE_E2E:-0} == 1 ]]; then
  bad "the corpus has no biome pair: the big-executable check cannot run"
fi

# ---- 4. overlayfs over the mount -----------------------------------------------------
t=$(corpus_tags typescript | head -n1)
rootfs=$D4C_CORPUS/typescript/rootfs/$t/rootfs
low=$tmp/mnt/lower ovl=$tmp/ovl
mount_di3fs "$low" "$tmp/lower.log" --cdimg "$(cdimg_for typescript "$t")" || fail=1
mkdir -p "$ovl/upper" "$ovl/work" "$ovl/merged"
if mount -t overlay overlay -o "lowerdir=$low,upperdir=$ovl/upper,workdir=$ovl/work" "$ovl/merged"; then
  MOUNTS+=("$ovl/merged")
  echo "new file" >"$ovl/merged/new.txt"
  echo "appended" >>"$ovl/merged/etc/passwd"  # copy-up
  rm "$ovl/merged/bin/busybox"                # whiteout
  mkdir "$ovl/merged/app/newdir"
  [[ $(cat "$ovl/upper/new.txt") == "new file" ]] || bad "overlay: new file not in upperdir"
  [[ $(tail -n1 "$ovl/upper/etc/passwd") == appended ]] || bad "overlay: copied-up file not in upperdir"
  [[ $(head -c -9 "$ovl/upper/etc/passwd" | sha256sum) == $(sha256sum <"$rootfs/etc/passwd") ]] ||
    bad "overlay: copy-up did not start from the lower bytes"
  [[ -c $ovl/upper/bin/busybox ]] || bad "overlay: no whiteout for a deleted lower file"
  [[ ! -e $ovl/merged/bin/busybox ]] || bad "overlay: deleted file still visible"
  cmp -s "$ovl/merged/app/node_modules/typescript/lib/tsc.js" "$rootfs/app/node_modules/typescript/lib/tsc.js" ||
    bad "overlay: lower file reads wrong through the overlay"
  umount "$ovl/merged"
  "$TREECMP" "$low" "$rootfs" >/dev/null || bad "overlay: the di3fs lower changed"
  e2e_log "overlay: writes landed in upperdir ($(find "$ovl/upper" -mindepth 1 | wc -l) paths), lower unchanged"
else
  bad "mount -t overlay with the di3fs mount as lowerdir failed"
fi
unmount_di3fs "$low"

# ---- 5. 16 parallel readers on a cold cache ----------------------------------------
rootfs=$D4C_CORPUS/debian/rootfs/$(corpus_tags debian | head -n1)/rootfs
mp=$tmp/mnt/parallel
mount_di3fs "$mp" "$tmp/parallel.log" --cdimg "$(cdimg_for debian "$(corpus_tags debian | head -n1)")" \
  --cache-dir "$tmp/cache/parallel" || fail=1
(cd "$rootfs" && find . -type f -size +0) >"$tmp/files.txt"
# every file 3 times, shuffled: the same file is often opened by several readers at once
for k in 1 2 3; do cat "$tmp/files.txt"; done | shuf --random-source=<(yes) >"$tmp/work.txt"
MP=$mp ROOT=$rootfs xargs -P16 -n 40 -d '\n' -a "$tmp/work.txt" bash -c \
  'for f; do cmp -s "$MP/$f" "$ROOT/$f" || echo "MISMATCH $f"; done' _ >"$tmp/mismatch.txt" 2>&1
if [[ -s $tmp/mismatch.txt ]]; then
  bad "parallel readers got wrong bytes:"; head "$tmp/mismatch.txt" >&2
fi
unmount_di3fs "$mp"
files=$(wc -l <"$tmp/files.txt") built=$(rebuilt "$tmp/parallel.log")
distinct=$(cd "$rootfs" && find . -type f -size +0 -print0 | xargs -0 sha256sum | cut -c1-64 | sort -u | wc -l)
[[ $built == "$distinct" ]] || bad "parallel readers: $built rebuilds for $distinct distinct contents"
e2e_log "16 parallel readers: $((files * 3)) reads of $files files correct; $built rebuilds for $distinct distinct contents"

# ---- 6. corrupt blobs -------------------------------------------------------------
t=$(corpus_tags typescript | head -n1)
rootfs=$D4C_CORPUS/typescript/rootfs/$t/rootfs
cp "$(cdimg_for typescript "$t")" "$tmp/corrupt.cdimg"
# the largest full blob: a byte in its middle; the smallest: its zstd frame header
"$ENTRIES" "$tmp/corrupt.cdimg" | awk -F'\t' '$1=="full"' | sort -t$'\t' -k4,4n >"$tmp/full.txt"
IFS=$'\t' read -r _ _ off1 len1 path1 < <(tail -n1 "$tmp/full.txt")
IFS=$'\t' read -r _ _ off2 _ path2 < <(head -n1 "$tmp/full.txt")
flip_byte "$tmp/corrupt.cdimg" $((off1 + len1 / 2))
flip_byte "$tmp/corrupt.cdimg" $((off2 + 5))
mp=$tmp/mnt/corrupt
mount_di3fs "$mp" "$tmp/corrupt.log" --cdimg "$tmp/corrupt.cdimg" --cache-dir "$tmp/cache/corrupt" || fail=1
for p in "$path1" "$path2"; do
  if out=$(cat "$mp$p" 2>&1 >/dev/null); then
    bad "corrupt $p read without error"
  else
    [[ $out == *"Input/output error"* ]] || bad "corrupt $p: expected EIO, got: $out"
  fi
  grep -qF "$p" "$tmp/corrupt.log" || bad "corrupt $p: not named in the log"
done
# files with the same content as a corrupted one share its blob: skip those too
bad_sums=$(sha256sum "$rootfs$path1" "$rootfs$path2" | cut -c1-64)
others=0
while IFS= read -r f; do
  grep -qF "$(sha256sum "$rootfs/$f" | cut -c1-64)" <<<"$bad_sums" && continue
  cmp -s "$mp/$f" "$rootfs/$f" || bad "corrupt image: intact file $f reads wrong"
  others=$((others + 1))
done < <(cd "$rootfs" && find . -type f)
[[ $(stat -c %s "$mp$path1") == $(stat -c %s "$rootfs$path1") ]] || bad "corrupt file: metadata no longer served"
if cat "$mp$path1" >/dev/null 2>&1; then bad "corrupt $path1 readable on retry"; fi
e2e_log "corrupt blobs: $path1, $path2 give EIO; $others other files intact; log: $(grep -c EIO "$tmp/corrupt.log") EIO lines"
unmount_di3fs "$mp"

# ---- 7. cache bound ------------------------------------------------------------------
rootfs=$D4C_CORPUS/debian/rootfs/$(corpus_tags debian | head -n1)/rootfs
limit=$((16 << 20))
mp=$tmp/mnt/bounded
mount_di3fs "$mp" "$tmp/bounded.log" --cdimg "$(cdimg_for debian "$(corpus_tags debian | head -n1)")" \
  --cache-dir "$tmp/cache/bounded" --cache-size $limit || fail=1
max=0
while IFS= read -r -d '' f; do
  cat "$f" >/dev/null || bad "bounded cache: cannot read $f"
  used=$(cache_bytes "$tmp/cache/bounded")
  if ((used > max)); then max=$used; fi
done < <(find "$mp" -type f -size +1M -print0)
"$TREECMP" "$mp" "$rootfs" >/dev/null || bad "bounded cache: tree differs"
used=$(cache_bytes "$tmp/cache/bounded")
if ((used > max)); then max=$used; fi
unmount_di3fs "$mp"
((max <= limit)) || bad "cache grew to $max bytes, limit $limit"
e2e_log "bounded cache: peak $max bytes for limit $limit; $(sed -n 's/.*, \([0-9]*\) evicted.*/\1/p' "$tmp/bounded.log") evictions"

# ---- no mount left behind ---------------------------------------------------------------
if grep -q "$tmp" /proc/mounts; then
  bad "mounts left behind:"; grep "$tmp" /proc/mounts >&2
fi
[[ $fail == 0 ]] && echo "di3fs: all checks passed"
exit $fail
