#!/usr/bin/env bash
# fs_bench.sh -- di3fs performance in one run, as markdown tables on stdout:
#   1. mount time vs number of entries (corpus images + synthetic 10k/50k-entry
#      images made with umoci), and daemon RSS per entry after a full tree walk
#   2. first-read latency and MB/s by recipe (full blob, delta chain of depth 3,
#      base = content from the bottom image), cold FUSE page cache and cache dir;
#      warm = the same file read 20 times in one process
#   3. whole-tree read (tar | wc) of debian: di3fs cold (rebuild everything),
#      di3fs from warm cache files (remount, splice on/off), di3fs warm (page
#      cache), vs the native tree and squashfuse over mksquashfs of the same tree
#   4. warm sequential read of a large file (biome, 28 MB) vs native and squashfuse
# Targets: warm reads >= 0.9 x native; cold tree faster than squashfuse;
# mount < 50 ms for 10k entries.
# Rows are best of several runs: the machine may be shared.
# Usage: fs_bench.sh [BUILD_DIR]   (root, /dev/fuse, corpus; mksquashfs,
#   squashfuse, umoci for the comparisons / synthetic images; the cdimg inputs
#   are cached in ${D4C_WORK:-/var/cache/d4c-work}/fs-bench/)
# The cdimg files stay in the page cache, so "cold" means: nothing rebuilt yet
# and nothing of the mount in the page cache -- not a cold disk. The native
# tree is always warm (no global drop_caches on a shared machine).
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$src/build}
DI3FS=$build/fs/di3fs
CLI=$build/ctr-cli/ctr-cli
ENTRIES=$build/fs/cdimg-entries
corpus=${D4C_CORPUS:-/var/cache/d4c-corpus}
work=${D4C_WORK:-/var/cache/d4c-work}/fs-bench
mkdir -p "$work"
tmp=$(mktemp -d /var/tmp/d4c-bench-fs.XXXXXX)
# content caches live next to the work files (D4C_BENCH_CACHE to choose the
# filesystem): file creation speed is part of the cold numbers
caches=$(mktemp -d "${D4C_BENCH_CACHE:-$work}/caches.XXXXXX")
MOUNTS=()
PIDS=()
cleanup() {
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    mountpoint -q "${MOUNTS[i]}" 2>/dev/null && umount -l "${MOUNTS[i]}" 2>/dev/null
  done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp" "$caches"
}
trap cleanup EXIT
log() { printf '[fs-bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.4f", b-a}'; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN{ if (s > 0) printf "%.0f", b/1e6/s; else print "-" }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a/b; else print "-" }'; }
ms() { awk -v s="$1" 'BEGIN{printf "%.1f", s*1000}'; }
# best of N runs of a command (seconds)
best_of() {
  local n=$1 b="" t0 t
  shift
  for ((k = 0; k < n; k++)); do
    t0=$(now); "$@" >/dev/null; t=$(since "$t0")
    if [[ -z $b ]] || awk -v t="$t" -v b="$b" 'BEGIN{exit !(t < b)}'; then b=$t; fi
  done
  echo "$b"
}
tree_read() { tar -C "$1" -cf - . | wc -c; }
file_read() { dd if="$1" of=/dev/null bs=1M status=none; }
# the file 20 times in one process (exec time would dominate a single warm read)
file_read20() { local a=() k; for ((k = 0; k < 20; k++)); do a+=("$1"); done; cat "${a[@]}" >/dev/null; }

# convert_cached NAME OCIREF : a cdimg under $work/NAME
convert_cached() {
  if [[ ! -f $work/$1/image.cdimg ]]; then
    log "convert $2"
    "$CLI" convert --image "$2" --output "$work/$1" --cdimg >/dev/null
  fi
  echo "$work/$1/image.cdimg"
}

# mount_di3fs MP LOG ARGS...: sets LAST_PID and MOUNT_SECS (wall time exec -> mounted)
mount_di3fs() {
  local mp=$1 logf=$2 t0
  shift 2
  mkdir -p "$mp"
  t0=$(now)
  "$DI3FS" "$@" "$mp" 2>"$logf" &
  LAST_PID=$!
  PIDS+=("$LAST_PID")
  MOUNTS+=("$mp")
  until mountpoint -q "$mp"; do
    kill -0 "$LAST_PID" 2>/dev/null || { cat "$logf" >&2; return 1; }
    sleep 0.001
  done
  MOUNT_SECS=$(since "$t0")
}
unmount() { umount "$1"; wait "${2:-}" 2>/dev/null || true; }
rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }

# synthetic image of N entries: N/100 directories of 100 small files
synth() {
  local n=$1 d=$work/synth-$1
  if [[ ! -f $d/c/image.cdimg ]]; then
    log "make a synthetic image of $n entries"
    rm -rf "$d"
    mkdir -p "$d"
    umoci init --layout "$d/oci" >/dev/null
    umoci new --image "$d/oci:t" >/dev/null
    umoci unpack --image "$d/oci:t" "$d/b" >/dev/null
    awk -v n="$n" -v r="$d/b/rootfs" 'BEGIN{
      for (i = 0; i < n / 100; i++) { system("mkdir -p " r "/d" i)
        for (j = 0; j < 99; j++) { f = r "/d" i "/f" j; print "file " i "/" j > f; close(f) } } }'
    umoci repack --image "$d/oci:t" "$d/b" >/dev/null
    "$CLI" convert --image "oci:$d/oci:t" --output "$d/c" --cdimg >/dev/null
    rm -rf "$d/b"
  fi
  echo "$d/c/image.cdimg"
}

echo "# di3fs benchmark — $(date -u +%F), $(nproc) cores, kernel $(uname -r)"
echo

# ---- 1. mount time and RSS ------------------------------------------------------
declare -A IMG
IMG[typescript]=$(convert_cached typescript-5.4.2 "oci:$corpus/typescript/oci:5.4.2")
IMG[biome]=$(convert_cached biome-1.9.2 "oci:$corpus/biome/oci:1.9.2")
IMG[debian]=$(convert_cached debian-v1 "oci:$corpus/debian/oci:v1")
names=(typescript biome debian)
if command -v umoci >/dev/null; then
  IMG[synth-10k]=$(synth 10000)
  IMG[synth-50k]=$(synth 50000)
  names+=(synth-10k synth-50k)
fi
echo "## Mount time and memory"
echo
echo "| image | entries | mount wall ms (exec → mounted) | in-daemon ms (open+mount) | index ms | RSS after mount MiB | RSS after tree walk MiB | RSS / entry (walked) |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for n in "${names[@]}"; do
  best="" line=""
  for k in 1 2 3; do
    mp=$tmp/m-$n
    mount_di3fs "$mp" "$tmp/$n.log" --cdimg "${IMG[$n]}"
    w=$MOUNT_SECS pid=$LAST_PID
    if [[ -z $best ]] || awk -v t="$w" -v b="$best" 'BEGIN{exit !(t < b)}'; then
      best=$w
      line=$(head -1 "$tmp/$n.log")
    fi
    if ((k == 3)); then
      r0=$(rss_kb "$pid")
      find "$mp" -printf '%i %s\n' >/dev/null  # lookup/readdirplus/getattr everything
      r1=$(rss_kb "$pid")
    fi
    unmount "$mp" "$pid"
  done
  entries=$(sed -n 's/.*(\([0-9]*\) entries.*/\1/p' <<<"$line")
  inmount=$(sed -n 's/.* in \([0-9]*\) us (index.*/\1/p' <<<"$line")
  index=$(sed -n 's/.*(index \([0-9]*\) us).*/\1/p' <<<"$line")
  awk -v n="$n" -v e="$entries" -v w="$best" -v m="$inmount" -v i="$index" -v r0="$r0" -v r1="$r1" 'BEGIN{
    printf "| %s | %d | %.1f | %.1f | %.1f | %.1f | %.1f | %.0f B |\n", n, e, w*1000, m/1000, i/1000, r0/1024, r1/1024, r1*1024/e }'
done
echo
echo "RSS / entry is the whole daemon RSS divided by entries (fixed overhead included)."
echo

# ---- 2. first read by recipe ---------------------------------------------------------
echo "## First read by recipe (cold: nothing rebuilt, nothing in the FUSE page cache)"
echo
echo "| image | file | recipe | MB | first read ms | first read MB/s | warm read MB/s |"
echo "|---|---|---|---:|---:|---:|---:|"
first_read_row() {  # IMAGE-LABEL FILE RECIPE MP
  local f=$4$2 size t1 t2
  size=$(stat -c %s "$f")
  t1=$(best_of 1 file_read "$f")
  t2=$(best_of 3 file_read20 "$f")
  printf '| %s | %s | %s | %.1f | %s | %s | %s |\n' "$1" "$2" "$3" "$(awk -v s="$size" 'BEGIN{print s/1e6}')" \
    "$(ms "$t1")" "$(mbps "$size" "$t1")" "$(mbps $((size * 20)) "$t2")"
}
# full blobs
mp=$tmp/m-first
mount_di3fs "$mp" "$tmp/first.log" --cdimg "${IMG[biome]}" --cache-dir "$caches/c-first"
first_read_row biome /app/node_modules/@biomejs/cli-linux-x64/biome full "$mp"
first_read_row biome /bin/busybox full "$mp"
first_read_row biome /etc/passwd full "$mp"
unmount "$mp" "$LAST_PID"
# a delta chain of depth 4: typescript 5.4.2 (full) -> .3 -> .4 -> .5
if "$CLI" cdimg diff --help >/dev/null 2>&1; then
  chain=("${IMG[typescript]}")
  tags=(5.4.2 5.4.3 5.4.4 5.4.5)
  for k in 1 2 3; do
    full=$(convert_cached "typescript-${tags[k]}" "oci:$corpus/typescript/oci:${tags[k]}")
    d=$work/chain/d$k.cdimg
    if [[ ! -f $d ]]; then
      mkdir -p "$work/chain"
      prev=$(convert_cached "typescript-${tags[k - 1]}" "oci:$corpus/typescript/oci:${tags[k - 1]}")
      log "diff ${tags[k - 1]} -> ${tags[k]}"
      "$CLI" cdimg diff --oldCdimg "$prev" --newCdimg "$full" --outCdimg "$d" >/dev/null
    fi
    chain+=("$d")
  done
  mount_di3fs "$mp" "$tmp/chain.log" --cdimg "${chain[3]}" --base "${chain[0]}" --base "${chain[1]}" \
    --base "${chain[2]}" --cache-dir "$caches/c-chain" >/dev/null
  "$ENTRIES" "${chain[3]}" --base "${chain[0]}" --base "${chain[1]}" --base "${chain[2]}" >"$tmp/chain-entries.txt"
  delta_file=$(awk -F'\t' '$1=="delta"' "$tmp/chain-entries.txt" | sort -t$'\t' -k2,2n | tail -n1 | cut -f5)
  base_file=$(awk -F'\t' '$1=="base"' "$tmp/chain-entries.txt" | sort -t$'\t' -k2,2n | tail -n1 | cut -f5)
  first_read_row "typescript chain depth 4" "$delta_file" "delta ×3 on full" "$mp"
  first_read_row "typescript chain depth 4" "$base_file" "base (bottom full)" "$mp"
  unmount "$mp" "$LAST_PID"
  mount_di3fs "$mp" "$tmp/ts.log" --cdimg "${IMG[typescript]}" --cache-dir "$caches/c-ts"
  first_read_row "typescript 5.4.2" "$delta_file" "full (same file)" "$mp"
  unmount "$mp" "$LAST_PID"
fi
echo

# ---- 3. whole tree, 4. large file -------------------------------------------------------
echo "## Whole-tree read (debian v1: tar -cf - . | wc -c; tar skips reading files when writing to /dev/null itself) and large-file read (biome binary)"
echo
native=$corpus/debian/rootfs/v1/rootfs
bytes=$(tree_read "$native")
have_sq=0
if command -v mksquashfs >/dev/null && command -v squashfuse >/dev/null; then
  have_sq=1
  [[ -f $work/debian-v1.sqfs ]] || mksquashfs "$native" "$work/debian-v1.sqfs" -comp zstd -quiet -no-progress >/dev/null
  [[ -f $work/biome-1.9.2.sqfs ]] ||
    mksquashfs "$corpus/biome/rootfs/1.9.2/rootfs" "$work/biome-1.9.2.sqfs" -comp zstd -quiet -no-progress >/dev/null
fi
t_native=$(best_of 3 tree_read "$native")
mp=$tmp/m-tree
# min of two durations
min2() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a == "" || b + 0 < a + 0) print b; else print a }'; }
# di3fs cold: fresh cache dir $1/c1..c3, fresh mount; best of 3. Also measures
# the warm (page cache) read on the first. Caches are deleted only at the end:
# on ext4 without a journal (this VM's disk), creating files within ~30 s of
# mass deletions is an order of magnitude slower (the inode allocator skips
# recently deleted inodes), which would measure the previous run's cleanup.
cold_tree() {
  local best="" t k
  for k in 1 2 3; do
    mount_di3fs "$mp" "$tmp/tree.log" --cdimg "${IMG[debian]}" --cache-dir "$1/c$k"
    t=$(best_of 1 tree_read "$mp")
    best=$(min2 "$best" "$t")
    if [[ $k == 1 && -z ${t_warm:-} ]]; then t_warm=$(best_of 3 tree_read "$mp"); fi
    unmount "$mp" "$LAST_PID"
  done
  echo "$best" >"$tmp/cold"
}
# remount on a filled cache: bytes come from the cache files (splice or copy); best of 3
cachefile_tree() {
  local best="" t k
  for k in 1 2 3; do
    mount_di3fs "$mp" "$tmp/tree2.log" --cdimg "${IMG[debian]}" --cache-dir "$1/c3"
    t=$(best_of 1 tree_read "$mp")
    best=$(min2 "$best" "$t")
    unmount "$mp" "$LAST_PID"
  done
  echo "$best" >"$tmp/cachefile"
}
t_warm=""
mkdir -p "$caches/disk"
cold_tree "$caches/disk"
cold=$(cat "$tmp/cold")
cachefile_tree "$caches/disk"
t_cachefile=$(cat "$tmp/cachefile")
export DI3FS_NO_SPLICE=1
cachefile_tree "$caches/disk"
t_nosplice=$(cat "$tmp/cachefile")
unset DI3FS_NO_SPLICE
rm -rf "$caches/disk"
have_shm=0
if [[ -d /dev/shm ]]; then
  have_shm=1
  shm=$(mktemp -d /dev/shm/d4c-bench-fs.XXXXXX)
  cold_tree "$shm"
  cold_shm=$(cat "$tmp/cold")
  rm -rf "$shm"
fi
if ((have_sq)); then
  sq=$tmp/sq-tree
  mkdir -p "$sq"
  t_sq_cold=""
  for k in 1 2 3; do
    squashfuse "$work/debian-v1.sqfs" "$sq"
    MOUNTS+=("$sq")
    t_sq_cold=$(min2 "$t_sq_cold" "$(best_of 1 tree_read "$sq")")
    if ((k < 3)); then umount "$sq"; fi
  done
  t_sq_warm=$(best_of 3 tree_read "$sq")
  umount "$sq"
fi
echo "| tree read (${bytes} bytes tar) | seconds | MB/s | ratio to native warm | ratio to squashfuse (same state) |"
echo "|---|---:|---:|---:|---:|"
row() { printf '| %s | %.3f | %s | %s | %s |\n' "$1" "$2" "$(mbps "$bytes" "$2")" "$(ratio "$t_native" "$2")" "${3:--}"; }
row "native ext4 (warm)" "$t_native"
if ((have_sq)); then
  row "squashfuse, cold (fresh mount)" "$t_sq_cold"
  row "squashfuse, warm" "$t_sq_warm"
fi
row "di3fs cold (fresh cache dir: rebuild + verify + write every file)" "$cold" "$( ((have_sq)) && ratio "$t_sq_cold" "$cold")"
((have_shm)) && row "di3fs cold (fresh cache on tmpfs)" "$cold_shm" "$( ((have_sq)) && ratio "$t_sq_cold" "$cold_shm")"
row "di3fs, cache files warm, splice" "$t_cachefile" "$( ((have_sq)) && ratio "$t_sq_cold" "$t_cachefile")"
row "di3fs, cache files warm, no splice" "$t_nosplice" "$( ((have_sq)) && ratio "$t_sq_cold" "$t_nosplice")"
row "di3fs warm (page cache)" "$t_warm" "$( ((have_sq)) && ratio "$t_sq_warm" "$t_warm")"
echo
echo "Ratios are speed ratios (> 1 = faster than the reference). Cold and cache-file rows: best of 3"
echo "fresh mounts. Cache directory: $(df --output=fstype "$caches" | tail -1) at ${caches%/*}; file creation speed"
echo "is part of the cold rows (compare the tmpfs row)."
echo

big=/app/node_modules/@biomejs/cli-linux-x64/biome
nbig=$corpus/biome/rootfs/1.9.2/rootfs$big
size=$(stat -c %s "$nbig")
t_nat=$(best_of 3 file_read20 "$nbig")
mount_di3fs "$mp" "$tmp/big.log" --cdimg "${IMG[biome]}" --cache-dir "$caches/c-big"
t_cold=$(best_of 1 file_read "$mp$big")
t_w=$(best_of 3 file_read20 "$mp$big")
folios_fuse=$(python3 "$src/test/bench/page_folios.py" "$mp$big" 2>&1 || true)
folios_native=$(python3 "$src/test/bench/page_folios.py" "$nbig" 2>&1 || true)
unmount "$mp" "$LAST_PID"
echo "| large file (${size} bytes; warm rows: 20 reads in one cat) | seconds per read | MB/s | ratio to native warm |"
echo "|---|---:|---:|---:|"
t_nat=$(awk -v t="$t_nat" 'BEGIN{print t/20}')
t_w=$(awk -v t="$t_w" 'BEGIN{print t/20}')
printf '| %s | %.4f | %s | %s |\n' "native ext4 (warm)" "$t_nat" "$(mbps "$size" "$t_nat")" "1.00"
if ((have_sq)); then
  sq=$tmp/sq-big
  mkdir -p "$sq"
  squashfuse "$work/biome-1.9.2.sqfs" "$sq"
  MOUNTS+=("$sq")
  t_sqc=$(best_of 1 file_read "$sq$big")
  t_sqw=$(best_of 3 file_read20 "$sq$big")
  t_sqw=$(awk -v t="$t_sqw" 'BEGIN{print t/20}')
  umount "$sq"
  printf '| %s | %.4f | %s | %s |\n' "squashfuse cold" "$t_sqc" "$(mbps "$size" "$t_sqc")" "$(ratio "$t_nat" "$t_sqc")"
  printf '| %s | %.4f | %s | %s |\n' "squashfuse warm" "$t_sqw" "$(mbps "$size" "$t_sqw")" "$(ratio "$t_nat" "$t_sqw")"
fi
printf '| %s | %.4f | %s | %s |\n' "di3fs cold (rebuild)" "$t_cold" "$(mbps "$size" "$t_cold")" "$(ratio "$t_nat" "$t_cold")"
printf '| %s | %.4f | %s | %s |\n' "di3fs warm" "$t_w" "$(mbps "$size" "$t_w")" "$(ratio "$t_nat" "$t_w")"
echo
echo "Page cache of the large file after the warm reads (test/bench/page_folios.py):"
echo "di3fs: $folios_fuse; native: $folios_native."
