#!/usr/bin/env bash
# di3fs_ab_bench.sh -- two di3fs binaries on the same image, side by side:
# the wall time of N parallel readers that read every regular file of the
# image once (each reader a disjoint share of the files), cold (a new mount
# and an empty content cache: every file rebuilt) and warm (the same mount
# again after dropping the kernel's page cache: files come from the content
# cache through FUSE). A and B alternate in every repetition; the median is
# reported. Used to weigh a change to di3fs's request loop (e.g. one
# /dev/fuse descriptor for all workers instead of one clone per worker).
#
# Usage: di3fs_ab_bench.sh A_DI3FS B_DI3FS CDIMG [--base P]... [--readers N] [--reps R]
# Needs root and /dev/fuse. Drops the page cache (echo 3 > drop_caches).
set -euo pipefail

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
(($# >= 3)) || usage 2
A=$1 B=$2 CDIMG=$3
shift 3
BASES=() READERS=4 REPS=3
while (($#)); do
  case $1 in
    --base) BASES+=(--base "$2"); shift 2 ;;
    --readers) READERS=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    -h|--help) usage 0 ;;
    *) echo "di3fs_ab_bench: unknown argument $1" >&2; usage 2 ;;
  esac
done
for f in "$A" "$B" "$CDIMG"; do [[ -e $f ]] || { echo "di3fs_ab_bench: $f does not exist" >&2; exit 2; }; done

T=$(mktemp -d /var/tmp/di3fs-ab.XXXXXX)
MNT=$T/mnt
mkdir -p "$MNT"
cleanup() { umount -l "$MNT" 2>/dev/null || true; rm -rf "$T"; }
trap cleanup EXIT

now() { date +%s.%N; }
mount_with() {  # mount_with BIN CACHE_DIR
  "$1" --cdimg "$CDIMG" "${BASES[@]}" --cache-dir "$2" --cache-size 4G "$MNT" >>"$T/di3fs.log" 2>&1 &
  for _ in $(seq 200); do mountpoint -q "$MNT" && return 0; sleep 0.05; done
  echo "di3fs_ab_bench: $1 did not mount (log: $T/di3fs.log)" >&2; exit 1
}
read_all() {  # N readers over disjoint shares of the file list; prints seconds
  local t0 t1 i pids=()
  t0=$(now)
  for ((i = 0; i < READERS; i++)); do
    awk -v n="$READERS" -v k="$i" 'NR % n == k' "$T/files" | (cd "$MNT" && xargs -d '\n' cat -- >/dev/null) &
    pids+=($!)
  done
  wait "${pids[@]}"  # not the daemon, also a child of this shell
  t1=$(now)
  awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f\n", b - a}'
}
one() {  # one LABEL BIN: cold and warm seconds, appended to $T/LABEL.{cold,warm}
  local cache=$T/cache-$1
  rm -rf "$cache"; mkdir -p "$cache"
  sync; echo 3 >/proc/sys/vm/drop_caches
  mount_with "$2" "$cache"
  [[ -s $T/files ]] || (cd "$MNT" && find . -type f -print) >"$T/files"
  [[ -s $T/bytes ]] || (cd "$MNT" && xargs -d '\n' stat -c %s -- <"$T/files" | awk '{s += $1} END {print s}') >"$T/bytes"
  read_all >>"$T/$1.cold"
  sync; echo 3 >/proc/sys/vm/drop_caches
  read_all >>"$T/$1.warm"
  umount "$MNT"
  wait 2>/dev/null || true  # the daemon exits after the unmount
}
median() { sort -n "$1" | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }

for ((r = 1; r <= REPS; r++)); do
  if ((r % 2)); then one a "$A"; one b "$B"; else one b "$B"; one a "$A"; fi
  echo "rep $r: a cold $(tail -1 "$T/a.cold") warm $(tail -1 "$T/a.warm"); b cold $(tail -1 "$T/b.cold") warm $(tail -1 "$T/b.warm")" >&2
done
files=$(wc -l <"$T/files")
bytes=$(cat "$T/bytes")
echo "| di3fs | readers | files | MB | cold s (median of $REPS) | warm s | cold MB/s | warm MB/s |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for l in a b; do
  bin=$A; [[ $l == b ]] && bin=$B
  c=$(median "$T/$l.cold") w=$(median "$T/$l.warm")
  awk -v n="$bin" -v r="$READERS" -v f="$files" -v by="$bytes" -v c="$c" -v w="$w" \
    'BEGIN {printf "| %s | %d | %d | %.1f | %.3f | %.3f | %.0f | %.0f |\n", n, r, f, by / 1e6, c, w, by / 1e6 / c, by / 1e6 / w}'
done
