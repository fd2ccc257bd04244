#!/usr/bin/env bash
# snapshotter_bench.sh: time from "image arrives" to the first output of a
# container, di3fs snapshotter vs containerd's own overlayfs, same machine,
# same run, plus the snapshotter's memory with many images loaded.
#
#   sudo D4C_BUILD_DIR=build test/bench/snapshotter_bench.sh [ROUNDS]
#
# Per round (fresh containerd + snapshotter, own temp roots):
#   overlay full   : ctr image import typescript-V1.tar ; ctr run (overlayfs)
#   overlay update : ctr image import typescript-V2.tar ; ctr run (base layer already there)
#   di3fs full     : ctr-cli load V1.cdimg               ; ctr run --snapshotter=di3fs
#   di3fs delta    : ctr-cli load (V1->V2 delta)         ; ctr run --snapshotter=di3fs
# each timed from the start of import/load to the first line the container
# prints (cat package.json | grep version). Conversion and diff happen at the
# build side and are not timed. Then all images of BENCH_SERIES (default:
# typescript biome) are loaded and run once, and the RSS of the snapshotter
# and of its di3fs daemons is reported (BENCH_EXTRA_CDIMGS: more cdimgs to load).
# Output: a table on stdout, TSV rows in $D4C_BENCH_OUT (default
# /var/cache/d4c-work/bench/snapshotter.tsv).
set -euo pipefail
ROUNDS=${1:-3}
: "${D4C_BUILD_DIR:=$(cd "$(dirname "$0")/../.." && pwd)/build}"
: "${D4C_SOURCE_DIR:=$(cd "$(dirname "$0")/../.." && pwd)}"
export D4C_BUILD_DIR D4C_SOURCE_DIR
source "$D4C_SOURCE_DIR/test/e2e/lib.sh"
set +e +o pipefail  # a benchmark reports what it can
set -u
[[ $(id -u) -eq 0 ]] || { echo "snapshotter_bench: run as root" >&2; exit 1; }
SNAP=$D4C_BUILD_DIR/snapshotter/snapshotter
DI3FS=$D4C_BUILD_DIR/fs/di3fs
BENCH_SERIES=${BENCH_SERIES:-typescript biome}
OUT=${D4C_BENCH_OUT:-/var/cache/d4c-work/bench/snapshotter.tsv}
mkdir -p "$(dirname "$OUT")"

mapfile -t TS < <(corpus_tags typescript)
V1=${TS[0]}
V2=${TS[1]}
C1=$(cdimg_for typescript "$V1")
C2=$(cdimg_for typescript "$V2")
WORK=$(mktemp -d /tmp/d4c-sbench.XXXXXX)
DELTA=$WORK/delta.cdimg
"$CTR_CLI" cdimg diff --oldCdimg "$C1" --newCdimg "$C2" --outCdimg "$DELTA" >/dev/null
TAR1=$D4C_CORPUS/typescript/docker/typescript-$V1.tar
TAR2=$D4C_CORPUS/typescript/docker/typescript-$V2.tar
CMD='grep "\"version\"" /app/node_modules/typescript/package.json'

T=
CTRD_PID=
SNAP_PID=
teardown() {
  [[ -n $T ]] || return 0
  local c pid
  for c in $(ctr -a "$T/c.sock" task ls -q 2>/dev/null); do ctr -a "$T/c.sock" task kill -s SIGKILL "$c" >/dev/null 2>&1; done
  [[ -n $CTRD_PID ]] && kill "$CTRD_PID" 2>/dev/null
  [[ -n $SNAP_PID ]] && kill "$SNAP_PID" 2>/dev/null
  sleep 0.5
  for pid in $(our_pids); do kill "$pid" 2>/dev/null; done
  sleep 0.5
  for pid in $(our_pids); do kill -9 "$pid" 2>/dev/null; done
  awk -v t="$T/" 'index($2, t) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
  rm -rf "$T"
  T=
}
trap 'teardown; rm -rf "$WORK"' EXIT

setup() {
  T=$(mktemp -d /tmp/d4c-sb.XXXXXX)
  cat >"$T/config.toml" <<EOF
version = 2
root = "$T/root"
state = "$T/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$T/c.sock"
[ttrpc]
  address = "$T/c.sock.ttrpc"
[proxy_plugins.di3fs]
  type = "snapshot"
  address = "$T/s.sock"
EOF
  "$SNAP" --root "$T/sn" --address "$T/s.sock" --di3fs "$DI3FS" >"$T/snap.log" 2>&1 &
  SNAP_PID=$!
  containerd --config "$T/config.toml" >"$T/ctrd.log" 2>&1 &
  CTRD_PID=$!
  local i
  for ((i = 0; i < 100; i++)); do
    ctr -a "$T/c.sock" version >/dev/null 2>&1 && [[ -S $T/s.sock ]] && return 0
    sleep 0.1
  done
  echo "snapshotter_bench: containerd/snapshotter did not start" >&2
  exit 1
}

# first_output START_EPOCH CMD...: seconds from START to the command's first output line
first_output() {
  local start=$1 line t1
  shift
  exec {fd}< <("$@" 2>&1)
  if read -r -u "$fd" line; then t1=$EPOCHREALTIME; else t1=; fi
  cat <&"$fd" >/dev/null
  exec {fd}<&-
  [[ -n $t1 ]] || { echo "NA"; return; }
  [[ $line == *version* ]] || echo "snapshotter_bench: unexpected output: $line" >&2
  awk -v a="$t1" -v b="$start" 'BEGIN {printf "%.3f", a - b}'
}

image_name() {  # the name `ctr image import` gave the tar's image
  ctr -a "$T/c.sock" image ls -q | grep -F ":$1" | grep -v '^ts' | head -1
}

declare -A R
row() { R[$1]+="$2 "; }
n=0
for ((r = 1; r <= ROUNDS; r++)); do
  setup
  C=(ctr -a "$T/c.sock")
  t0=$EPOCHREALTIME
  "${C[@]}" image import "$TAR1" >/dev/null
  row overlay_full "$(first_output "$t0" "${C[@]}" run --rm "$(image_name "$V1")" o1 sh -c "$CMD")"
  t0=$EPOCHREALTIME
  "${C[@]}" image import "$TAR2" >/dev/null
  row overlay_update "$(first_output "$t0" "${C[@]}" run --rm "$(image_name "$V2")" o2 sh -c "$CMD")"
  LOAD=("$CTR_CLI" load --address "$T/c.sock" --snapshotter-root "$T/sn")
  t0=$EPOCHREALTIME
  "${LOAD[@]}" --image "d4c.test/ts:$V1" --cdimg "$C1" >/dev/null
  row di3fs_full "$(first_output "$t0" "${C[@]}" run --rm --snapshotter=di3fs "d4c.test/ts:$V1" d1 sh -c "$CMD")"
  t0=$EPOCHREALTIME
  "${LOAD[@]}" --image "d4c.test/ts:$V2" --cdimg "$DELTA" >/dev/null
  row di3fs_delta "$(first_output "$t0" "${C[@]}" run --rm --snapshotter=di3fs "d4c.test/ts:$V2" d2 sh -c "$CMD")"
  ((r < ROUNDS)) && teardown
  n=$r
done

median() { tr ' ' '\n' | grep -v '^$' | grep -v NA | sort -n | awk '{a[NR]=$1} END {if (NR == 0) print "NA"; else print a[int((NR + 1) / 2)]}'; }
declare -A M
for k in overlay_full overlay_update di3fs_full di3fs_delta; do M[$k]=$(echo "${R[$k]}" | median); done
ratio() { [[ $1 == NA || $2 == NA ]] && echo NA || awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
bytes_full=$(stat -c %s "$C1")
bytes_delta=$(stat -c %s "$DELTA")
bytes_tar1=$(stat -c %s "$TAR1")
bytes_tar2=$(stat -c %s "$TAR2")
echo "== time to first output (median of $n rounds; all rounds: see TSV)"
printf '%-16s %8s %14s  %s\n' scenario seconds bytes_shipped rounds
printf '%-16s %8s %14s  %s\n' overlay_full "${M[overlay_full]}" "$bytes_tar1" "${R[overlay_full]}"
printf '%-16s %8s %14s  %s\n' overlay_update "${M[overlay_update]}" "$bytes_tar2" "${R[overlay_update]}"
printf '%-16s %8s %14s  %s\n' di3fs_full "${M[di3fs_full]}" "$bytes_full" "${R[di3fs_full]}"
printf '%-16s %8s %14s  %s\n' di3fs_delta "${M[di3fs_delta]}" "$bytes_delta" "${R[di3fs_delta]}"
echo "ratio di3fs_full/overlay_full   = $(ratio "${M[di3fs_full]}" "${M[overlay_full]}")"
echo "ratio di3fs_delta/overlay_update = $(ratio "${M[di3fs_delta]}" "${M[overlay_update]}")"

# --- memory with many images loaded ---------------------------------------------------
C=(ctr -a "$T/c.sock")
LOAD=("$CTR_CLI" load --address "$T/c.sock" --snapshotter-root "$T/sn")
loaded=0
for s in $BENCH_SERIES; do
  for tag in $(corpus_tags "$s"); do
    cd_=$(cdimg_for "$s" "$tag") || continue
    "${LOAD[@]}" --image "mem/$s:$tag" --cdimg "$cd_" >/dev/null || continue
    "${C[@]}" run --rm --snapshotter=di3fs "mem/$s:$tag" "m$loaded" true >/dev/null 2>&1
    loaded=$((loaded + 1))
  done
done
# BENCH_EXTRA_CDIMGS: more full cdimgs (e.g. fs_bench's synthetic images) to
# reach a given image count; a failing `true` still mounts the image
for cd_ in ${BENCH_EXTRA_CDIMGS:-}; do
  "${LOAD[@]}" --image "mem/extra:$loaded" --cdimg "$cd_" >/dev/null || continue
  "${C[@]}" run --rm --snapshotter=di3fs "mem/extra:$loaded" "m$loaded" true >/dev/null 2>&1 || true
  loaded=$((loaded + 1))
done
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
snap_kb=$(rss "$SNAP_PID")
di3fs_kb=0
ndi3fs=0
for f in "$T"/sn/run/*.pid; do
  [[ -f $f ]] || continue
  kb=$(rss "$(cat "$f")")
  di3fs_kb=$((di3fs_kb + ${kb:-0}))
  ndi3fs=$((ndi3fs + 1))
done
echo "== memory with $loaded images loaded and run once ($BENCH_SERIES)"
echo "snapshotter RSS: ${snap_kb} KiB; di3fs daemons: $ndi3fs, total RSS ${di3fs_kb} KiB"
{
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' date rounds overlay_full overlay_update di3fs_full di3fs_delta \
    images snapshotter_rss_kib di3fs_count di3fs_rss_kib
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -Is)" "$n" "${R[overlay_full]}" "${R[overlay_update]}" \
    "${R[di3fs_full]}" "${R[di3fs_delta]}" "$loaded" "$snap_kb" "$ndi3fs" "$di3fs_kb"
} >>"$OUT"
