#!/usr/bin/env bash
# convert_bench.sh -- convert every corpus image and compare with plain
# `tar | zstd -T2` of the same rootfs, in the same run. Prints a markdown table.
#   rootfs   = bytes of regular files (corpus-stats.tsv)
#   gzip     = the image's gzip layers as stored (docker pull)
#   zstd-L3  = the layers recompressed with zstd -3 (corpus-stats.tsv)
#   cdimg    = our full image (file-level zstd -19 blobs + index)
#   tar|zstd = rootfs as one tar stream, zstd -19 -T2 (size and time)
# Usage: convert_bench.sh [BUILD_DIR]   (root; corpus in $D4C_CORPUS)
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$src/build}
cli=$build/ctr-cli/ctr-cli
corpus=${D4C_CORPUS:-/var/cache/d4c-corpus}
tmp=$(mktemp -d /var/tmp/d4c-bench-convert.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
now() { date +%s.%N; }
mb() { awk -v b="$1" 'BEGIN{printf "%.1f", b/1e6}'; }

echo "# convert benchmark — $(date -u +%F), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo
echo "| image | entries | rootfs MB | gzip layers MB | zstd-3 layers MB | cdimg MB | cdimg/gzip | convert s | convert MB/s | tar\|zstd-19 -T2 MB | tar\|zstd s |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
tail -n +2 "$corpus/corpus-stats.tsv" | while IFS=$'\t' read -r s t _ rootfs _ nent gz _ zs _; do
  gzsum=$(tr ',' '\n' <<<"$gz" | paste -sd+ | bc)
  zssum=$(tr ',' '\n' <<<"$zs" | paste -sd+ | bc)
  rm -rf "$tmp/out"
  t0=$(now)
  "$cli" convert --image "oci:$corpus/$s/oci:$t" --output "$tmp/out" --cdimg --threadNum 2 >/dev/null
  t1=$(now)
  cd_bytes=$(stat -c %s "$tmp/out/image.cdimg")
  t2=$(now)
  tz=$(tar --sort=name --numeric-owner --xattrs -C "$corpus/$s/rootfs/$t/rootfs" -cf - . | zstd -19 -T2 -q -c | wc -c)
  t3=$(now)
  awk -v s="$s:$t" -v n="$nent" -v r="$rootfs" -v g="$gzsum" -v z="$zssum" -v c="$cd_bytes" \
      -v ct="$(echo "$t1 - $t0" | bc)" -v tz="$tz" -v tt="$(echo "$t3 - $t2" | bc)" 'BEGIN{
    printf "| %s | %d | %.1f | %.1f | %.1f | %.1f | %.2f | %.1f | %.1f | %.1f | %.1f |\n",
      s, n, r/1e6, g/1e6, z/1e6, c/1e6, c/g, ct, r/1e6/ct, tz/1e6, tt }'
done
