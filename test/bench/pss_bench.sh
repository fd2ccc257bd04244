#!/usr/bin/env bash
# pss_bench.sh -- memory of di3fs daemons per mounted image: PSS (from
# /proc/PID/smaps_rollup; shared pages of the binary and libraries are split
# between the daemons, so the sum is what the node pays) with 1, 5 and 10
# images mounted, idle (just mounted) and after reading every file of every
# image. All daemons share one cache root and budget, as under the snapshotter.
# Markdown on stdout.
#
# Usage: pss_bench.sh [BUILD_DIR]   (root, /dev/fuse)
# Environment:
#   IMAGES   the images, one "TOP [BASE...]" chain per line (at least 10 lines
#            for the 10-image row); default: the corpus images converted with
#            BUILD_DIR's ctr-cli, cached in ${D4C_WORK:-/var/cache/d4c-work}/pss-bench
#   BUDGET   cache budget, bytes (default 2G)
#   COUNTS   default "1 5 10"
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$src/build}
DI3FS=${DI3FS:-$build/fs/di3fs}
CLI=$build/ctr-cli/ctr-cli
BUDGET=${BUDGET:-2G}
COUNTS=${COUNTS:-1 5 10}
corpus=${D4C_CORPUS:-/var/cache/d4c-corpus}
work=${D4C_WORK:-/var/cache/d4c-work}/pss-bench
tmp=$(mktemp -d /var/tmp/d4c-bench-pss.XXXXXX)
MOUNTS=()
PIDS=()
cleanup() {
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    mountpoint -q "${MOUNTS[i]}" 2>/dev/null && umount -l "${MOUNTS[i]}" 2>/dev/null
  done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
log() { printf '[pss-bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

if [[ -n ${IMAGES:-} ]]; then
  mapfile -t images <<<"$IMAGES"
else
  mkdir -p "$work"
  images=()
  while IFS=$'\t' read -r series tag _; do
    [[ $series == series ]] && continue
    d=$work/$series-$tag
    [[ -f $d/image.cdimg ]] || "$CLI" convert --image "oci:$corpus/$series/oci:$tag" --output "$d" --cdimg >/dev/null
    images+=("$d/image.cdimg")
  done <"$corpus/corpus-stats.tsv"
fi
log "${#images[@]} images"

pss_kb() {  # pss_kb FIELD PID...: sum of a smaps_rollup field (Pss, Pss_Anon, Pss_File), KiB
  local f=$1 p s=0
  shift
  for p in "$@"; do s=$((s + $(awk -v f="$f:" '$1==f{print $2}' "/proc/$p/smaps_rollup"))); done
  echo "$s"
}
mib() { awk -v k="$1" -v n="${2:-1}" 'BEGIN{printf "%.1f", k/1024/n}'; }

echo "## di3fs memory per mounted image ($(date -u +%F), $(nproc) cores, $(uname -r), budget $BUDGET)"
echo
echo "PSS in MiB, all daemons together; anon = heap and stacks, file = the binary's and libraries' pages (shared ones split between the daemons)."
echo
echo "| images | entries | idle PSS | idle per image | idle anon / file | after reading every file: PSS | per image | anon / file | cache bytes |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for n in $COUNTS; do
  ((n <= ${#images[@]})) || { log "only ${#images[@]} images: no row for $n"; continue; }
  root=$tmp/cache-$n
  pids=() mps=() entries=0
  for ((k = 0; k < n; k++)); do
    read -r -a chain <<<"${images[k]}"
    args=(--cdimg "${chain[0]}")
    for b in "${chain[@]:1}"; do args+=(--base "$b"); done
    mp=$tmp/m$n-$k
    mkdir -p "$mp"
    "$DI3FS" "${args[@]}" --cache-dir "$root/i$k" --cache-root "$root" --cache-size "$BUDGET" "$mp" 2>"$tmp/m$n-$k.log" &
    pids+=($!)
    PIDS+=($!)
    MOUNTS+=("$mp")
    mps+=("$mp")
    until mountpoint -q "$mp"; do
      kill -0 "${pids[-1]}" 2>/dev/null || { cat "$tmp/m$n-$k.log" >&2; exit 1; }
      sleep 0.01
    done
    entries=$((entries + $(sed -n 's/.*(\([0-9]*\) entries.*/\1/p' "$tmp/m$n-$k.log")))
  done
  sleep 1
  idle=$(pss_kb Pss "${pids[@]}") idle_a=$(pss_kb Pss_Anon "${pids[@]}") idle_f=$(pss_kb Pss_File "${pids[@]}")
  for mp in "${mps[@]}"; do tar -C "$mp" -cf - . | wc -c >/dev/null; done
  sleep 3
  read_kb=$(pss_kb Pss "${pids[@]}") read_a=$(pss_kb Pss_Anon "${pids[@]}") read_f=$(pss_kb Pss_File "${pids[@]}")
  cache=$(find "$root" -type f ! -name '.*' -printf '%s\n' | awk '{s+=$1} END{printf "%d", s}')
  echo "| $n | $entries | $(mib "$idle") | $(mib "$idle" "$n") | $(mib "$idle_a") / $(mib "$idle_f") | $(mib "$read_kb") | $(mib "$read_kb" "$n") | $(mib "$read_a") / $(mib "$read_f") | $cache |"
  for ((k = 0; k < n; k++)); do umount "${mps[k]}"; wait "${pids[k]}" 2>/dev/null || true; done
done
