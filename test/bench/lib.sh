# lib.sh -- helpers and peer methods for delta_bench.sh, and the scratch
# directory and timing helpers of the other bench scripts (sourced, never run).
# shellcheck shell=bash
#
# Every peer_* function is run by delta_bench.sh in a FRESH `bash -c` process
# with `set -euo pipefail` (so errexit really applies inside it, which it would
# not in a function called from an `if`/`||` context). A peer prints its
# results on stdout as `key=value` lines (bytes=, secs=, kb=, note=, ...) and
# its diagnostics on stderr; a non-zero exit marks its table cell "n/a".
#
# Environment set by delta_bench.sh: BENCH_TMP (scratch dir of this run),
# BENCH_JOBS (parallel jobs for untimed per-file work), BENCH_LIB (this file).

export LC_ALL=C

blog() { printf '[delta-bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

# bench_scratch NAME : makes BENCH_TMP (a fresh dir under $D4C_BENCH_TMP,
# default /var/tmp, named d4c-NAME.XXXXXX), removed at exit unless KEEP=1;
# messages name "$BENCH_SCRIPT". For the scripts that run benchmarks.
bench_cleanup() {
  local rc=$?
  if ((${KEEP:-0})); then echo "$BENCH_SCRIPT: scratch kept in $BENCH_TMP" >&2; else rm -rf "$BENCH_TMP"; fi
  exit "$rc"
}
bench_scratch() {
  local parent=${D4C_BENCH_TMP:-/var/tmp}
  mkdir -p "$parent"
  BENCH_TMP=$(mktemp -d "$parent/d4c-$1.XXXXXX")
  trap bench_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

# timed KEY CMD... : one run under GNU time; appends "wall cpu kb" to
# $BENCH_TMP/t/KEY (the command's output is dropped, its stderr kept in
# $BENCH_TMP/err.KEY and shown on failure).
timed() {
  local key=$1; shift
  local tf=$BENCH_TMP/time.out
  /usr/bin/time -f '%e %U %S %M' -o "$tf" "$@" >/dev/null 2>"$BENCH_TMP/err.$key" \
    || { echo "$BENCH_SCRIPT: $key failed: $(tail -n2 "$BENCH_TMP/err.$key")" >&2; return 1; }
  awk '/^[0-9.]+ [0-9.]+ [0-9.]+ [0-9]+$/ { printf "%s %.2f %s\n", $1, $2 + $3, $4 }' "$tf" | tail -n1 \
    >>"$BENCH_TMP/t/$key"
}
# median FILE C : median of column C of FILE
median() { awk -v c="$2" '{ print $c }' "$1" | sort -g | awk '{ v[NR] = $1 } END { if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

fsize() { stat -c %s -- "$1"; }

# sum of apparent sizes of the regular files under DIR
dir_bytes() { find "$1" -type f -printf '%s\n' | awk '{s+=$1} END{printf "%d\n", s}'; }

# pow2_at_least N MIN : smallest power of two >= max(N, MIN)
pow2_at_least() {
  local n=$1 p=$2
  while ((p < n)); do p=$((p * 2)); done
  echo "$p"
}

# zstd -M value (MiB) big enough for --patch-from with a reference of N bytes
zstd_mem_mb() { echo $(( ($1 + ($1 >> 2)) / 1048576 + 256 )); }

# tmeasure PREFIX CMD... : run CMD (its stdout goes to stderr), print
# PREFIXsecs= and PREFIXkb= (elapsed wall seconds, peak RSS in KiB) on stdout;
# returns CMD's exit status.
tmeasure() {
  local prefix=$1; shift
  local tf rc=0 e m t0 t1; tf=$(mktemp "$BENCH_TMP/time.XXXXXX")
  if [[ -x /usr/bin/time ]]; then
    /usr/bin/time -f '%e %M' -o "$tf" "$@" >&2 || rc=$?
    # on failure GNU time writes "Command exited with non-zero status N" first
    read -r e m < <(grep -E '^[0-9.]+ [0-9]+$' "$tf" | tail -n1) || true
    echo "${prefix}secs=${e:-}"
    echo "${prefix}kb=${m:-}"
  else
    t0=$(date +%s.%N); "$@" >&2 || rc=$?; t1=$(date +%s.%N)
    echo "${prefix}secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')"
  fi
  rm -f "$tf"
  return "$rc"
}

# deterministic tar of a rootfs: sorted names, numeric ids, xattrs, no
# atime/ctime and no PID in pax header names.
det_tar() {   # det_tar ROOTFS OUT.tar
  tar --sort=name --numeric-owner --xattrs --xattrs-include='*' --acls \
      --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
      -C "$1" -cf "$2" .
}

# manifest_blob OCIDIR TAG : path of the image manifest blob for TAG
# (an image index is followed to its first linux/amd64 or first manifest)
manifest_blob() {
  local oci=$1 tag=$2 d f mt
  d=$(jq -r --arg t "$tag" \
      '[.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]==$t)][0].digest // empty' \
      "$oci/index.json")
  [[ -n $d ]] || { echo "tag $tag not in $oci/index.json" >&2; return 1; }
  f=$oci/blobs/${d%%:*}/${d#*:}
  mt=$(jq -r '.mediaType // empty' "$f")
  if [[ $mt == *image.index* || $mt == *manifest.list* ]]; then
    d=$(jq -r '([.manifests[] | select(.platform.os=="linux" and .platform.architecture=="amd64")] + .manifests)[0].digest' "$f")
    f=$oci/blobs/${d%%:*}/${d#*:}
  fi
  echo "$f"
}

# new_layers OCIDIR TAG_A TAG_B : "digest size mediaType" of B's layers whose
# digest is not among A's layers
new_layers() {
  local ma mb
  ma=$(manifest_blob "$1" "$2"); mb=$(manifest_blob "$1" "$3")
  jq -r --slurpfile a "$ma" '
      ($a[0].layers | map(.digest)) as $old
      | .layers[] | select(.digest as $d | $old | index($d) | not)
      | "\(.digest) \(.size) \(.mediaType)"' "$mb"
}

# ---------------------------------------------------------------- peers
# Arguments common to all peers: SERIES_DIR TAG_A TAG_B PAIR_TMP

# docker pull: compressed sizes of B's layers not in A (as in the manifest)
peer_docker() {
  local sdir=$1 a=$2 b=$3 sum=0 n=0 d s mt list
  list=$(new_layers "$sdir/oci" "$a" "$b")
  while read -r d s mt; do
    [[ -n $d ]] || continue
    sum=$((sum + s)); n=$((n + 1))
  done <<<"$list"
  echo "bytes=$sum"
  echo "note=$n new layer(s)"
}

# the changed layers recompressed with zstd -19 (uncompressed tar | zstd -19)
peer_zstd_layers() {
  local sdir=$1 a=$2 b=$3 sum=0 d s mt blob dec t0 t1 list
  list=$(new_layers "$sdir/oci" "$a" "$b")
  t0=$(date +%s.%N)
  while read -r d s mt; do
    [[ -n $d ]] || continue
    blob=$sdir/oci/blobs/${d%%:*}/${d#*:}
    case $mt in
      *+gzip|*.gzip) if command -v pigz >/dev/null; then dec=(pigz -dc); else dec=(gzip -dc); fi ;;
      *+zstd|*.zstd) dec=(zstd -dc) ;;
      *.tar|*tar) dec=(cat) ;;
      *) echo "unknown layer media type $mt" >&2; return 1 ;;
    esac
    # -T: zstd's multi-threaded mode gives the same bytes for any worker count
    s=$("${dec[@]}" "$blob" | zstd -19 -T"${BENCH_JOBS:-2}" -q -c | wc -c)
    sum=$((sum + s))
  done <<<"$list"
  t1=$(date +%s.%N)
  echo "bytes=$sum"
  echo "secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')"
}

# rsync batch (what rsync would send), zstd -19 compressed
peer_rsync() {
  local sdir=$1 a=$2 b=$3 w=$4/rsync
  rm -rf "$w"; mkdir -p "$w"
  cp -a "$sdir/rootfs/$a/rootfs" "$w/dst"
  tmeasure "" rsync -a -c -H -A -X --delete --only-write-batch="$w/batch" \
    "$sdir/rootfs/$b/rootfs/" "$w/dst/"
  echo "raw=$(fsize "$w/batch")"
  echo "bytes=$(zstd -19 -T"${BENCH_JOBS:-2}" -q -c "$w/batch" | wc -c)"
  rm -rf "$w"
}

# casync: chunks B adds to a store that already holds A's chunks, plus B's index
peer_casync() {
  local sdir=$1 a=$2 b=$3 w=$4/casync before after
  rm -rf "$w"; mkdir -p "$w/store"
  casync make --store="$w/store" "$w/a.caidx" "$sdir/rootfs/$a/rootfs" >/dev/null
  before=$(dir_bytes "$w/store")
  tmeasure "" casync make --store="$w/store" "$w/b.caidx" "$sdir/rootfs/$b/rootfs"
  after=$(dir_bytes "$w/store")
  echo "chunks=$((after - before))"
  echo "index=$(fsize "$w/b.caidx")"
  echo "bytes=$((after - before + $(fsize "$w/b.caidx")))"
  rm -rf "$w"
}

# xdelta3 on the whole deterministic tar (source window >= A.tar), verified
peer_xdelta3_tar() {
  local at=$1 bt=$2 w=$3/xd win
  rm -rf "$w"; mkdir -p "$w"
  win=$(pow2_at_least "$(fsize "$at")" 67108864)
  tmeasure "" xdelta3 -9 -S djw -D -R -B "$win" -e -f -s "$at" "$bt" "$w/p.vcdiff"
  xdelta3 -d -D -R -B "$win" -c -s "$at" "$w/p.vcdiff" | cmp -s - "$bt" \
    || { echo "xdelta3 patch does not reproduce B.tar" >&2; return 1; }
  echo "bytes=$(fsize "$w/p.vcdiff")"
  rm -rf "$w"
}

# zstd --patch-from on the whole tar, verified
peer_zstd_tar() {
  local at=$1 bt=$2 w=$3/zpf mem
  rm -rf "$w"; mkdir -p "$w"
  mem=$(zstd_mem_mb "$(fsize "$at")")
  tmeasure "" zstd -q -f -19 --long=31 -M"${mem}MB" --patch-from="$at" "$bt" -o "$w/p.zst" 2>/dev/null
  zstd -q -d -c --long=31 -M"${mem}MB" --patch-from="$at" "$w/p.zst" | cmp -s - "$bt" \
    || { echo "zstd patch does not reproduce B.tar" >&2; return 1; }
  echo "bytes=$(fsize "$w/p.zst")"
  rm -rf "$w"
}

# perfile_one INODE/PATH : one regular file of B (relative path, prefixed with
# its inode number in B), compared with the same path in A.
# Prints: kind<TAB>bsdiff<TAB>xdelta3<TAB>zstd<TAB>inode<TAB>path
#   kind = same (0 bytes) | new (zstd -19 of the file) | chg (three patches)
#   a size of "-" means the tool failed or was skipped.
# Env: PF_A, PF_B (rootfs dirs), PF_W (scratch), PF_NO_BSDIFF=1 to skip bsdiff.
perfile_one() {
  local ino=${1%%/*} p=${1#*/} fa fb w bs=- xd=- zs=- win mem sz
  fa=$PF_A/$p fb=$PF_B/$p
  if [[ -f $fa && ! -L $fa ]]; then
    if cmp -s -- "$fa" "$fb"; then printf 'same\t0\t0\t0\t%s\t%s\n' "$ino" "$p"; return 0; fi
    w=$(mktemp -d "$PF_W/f.XXXXXX")
    if [[ ${PF_NO_BSDIFF:-0} != 1 ]] && bsdiff "$fa" "$fb" "$w/bs" 2>/dev/null; then
      bs=$(fsize "$w/bs")
    fi
    sz=$(fsize "$fa")
    win=$(pow2_at_least "$sz" 16777216)
    if xdelta3 -9 -S djw -D -R -B "$win" -e -f -s "$fa" "$fb" "$w/xd" 2>/dev/null; then
      xd=$(fsize "$w/xd")
    fi
    mem=$(zstd_mem_mb "$sz")
    if zstd -q -f -19 --long=31 -M"${mem}MB" --patch-from="$fa" "$fb" -o "$w/zs" 2>/dev/null; then
      zs=$(fsize "$w/zs")
    fi
    rm -rf "$w"
    printf 'chg\t%s\t%s\t%s\t%s\t%s\n' "$bs" "$xd" "$zs" "$ino" "$p"
  else
    if [[ -s $fb ]]; then zs=$(zstd -19 -q -c -- "$fb" | wc -c); else zs=0; fi
    printf 'new\t%s\t%s\t%s\t%s\t%s\n' "$zs" "$zs" "$zs" "$ino" "$p"
  fi
}

# per-file at the same path (D4C's method): bsdiff sum and best-of sum.
# Every path counts, hardlinked ones too (as D4C and the reference numbers);
# best_once= is the best-of sum with each inode of B counted once.
peer_perfile() {
  local sdir=$1 a=$2 b=$3 w=$4/perfile t0 t1
  rm -rf "$w"; mkdir -p "$w/s"
  export PF_A=$sdir/rootfs/$a/rootfs PF_B=$sdir/rootfs/$b/rootfs PF_W=$w/s
  export -f perfile_one fsize pow2_at_least zstd_mem_mb
  t0=$(date +%s.%N)
  (cd "$PF_B" && find . -type f -printf '%i/%P\0') \
    | sort -z \
    | xargs -0 -r -n 16 -P "${BENCH_JOBS:-2}" \
        bash -c 'set -uo pipefail; for p; do perfile_one "$p"; done' _ >"$w/files.tsv"
  t1=$(date +%s.%N)
  awk -F'\t' -v secs="$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b-a}')" '
    function min3(x, y, z,   m) { m = -1
      if (x != "-") m = x
      if (y != "-" && (m < 0 || y+0 < m)) m = y
      if (z != "-" && (m < 0 || z+0 < m)) m = z
      return m }
    { n[$1]++ }
    $1 == "new" { newb += $4; if (!($5 in seen)) once += $4 }
    $1 == "chg" {
      if ($2 == "-") bsmiss++; else bs += $2
      if ($3 == "-") xdmiss++; else xd += $3
      if ($4 == "-") zsmiss++; else zs += $4
      m = min3($2, $3, $4); if (m < 0) allmiss++; else { best += m; if (!($5 in seen)) once += m }
      if (m == $2 && $2 != "-") wb++; else if (m == $3 && $3 != "-") wx++; else wz++
    }
    { seen[$5] = 1 }
    END {
      printf "files=%d\nchanged=%d\nnew=%d\nnewbytes=%d\n", NR, n["chg"], n["new"], newb
      printf "bytes=%d\nbsmiss=%d\n", bs + newb, bsmiss
      printf "xdelta3=%d\nxdmiss=%d\nzstd=%d\nzsmiss=%d\n", xd + newb, xdmiss, zs + newb, zsmiss
      printf "best=%d\nbestmiss=%d\nbest_once=%d\n", best + newb, allmiss, once
      printf "wins=bsdiff %d, xdelta3 %d, zstd %d\nsecs=%s\n", wb, wx, wz, secs
    }' "$w/files.tsv"
  # largest changed files, for the log
  # (sed, not head: an early-closing reader would kill sort with SIGPIPE under pipefail)
  awk -F'\t' '$1=="chg"' "$w/files.tsv" | sort -t$'\t' -k2,2nr | sed -n '1,5s/^/  /p' >&2
  rm -rf "$w"
}

# ---------------------------------------------------------------- ours
# cdimg_id CLI FILE : image id of a cdimg (from `cdimg show --json`)
cdimg_id() { "$1" cdimg show --json --cdimg "$2" | jq -r '.image_id'; }

# ours_convert CLI OCIDIR TAG OUTDIR : full cdimg OUTDIR/image.cdimg, cached:
# reused when the current ctr-cli can read it (`cdimg show`), unless
# BENCH_RECONVERT=1.
ours_convert() {
  local cli=$1 oci=$2 tag=$3 out=$4 tmpd
  if [[ ${BENCH_RECONVERT:-0} != 1 && -f $out/image.cdimg ]] \
     && "$cli" cdimg show --json --cdimg "$out/image.cdimg" >/dev/null 2>&1; then
    echo "cached=1"; echo "bytes=$(fsize "$out/image.cdimg")"; return 0
  fi
  mkdir -p "$(dirname "$out")"
  tmpd=$(mktemp -d "$(dirname "$out")/.convert.XXXXXX")
  tmeasure "" "$cli" convert --image "oci:$oci:$tag" --output "$tmpd" --cdimg --threadNum 2
  [[ -f $tmpd/image.cdimg ]] || { echo "convert wrote no $tmpd/image.cdimg" >&2; return 1; }
  mkdir -p "$out"
  mv -f "$tmpd/image.cdimg" "$out/image.cdimg"
  rm -rf "$tmpd"
  echo "cached=0"; echo "bytes=$(fsize "$out/image.cdimg")"
}

# ours_codec CLI A.cdimg B.cdimg CODEC PAIR_TMP : delta size (whole file),
# diff time/memory, patch time/memory; the patched image must have B's id.
ours_codec() {
  local cli=$1 ca=$2 cb=$3 codec=$4 w=$5/ours-$4 idb idp
  rm -rf "$w"; mkdir -p "$w"
  tmeasure "" "$cli" cdimg diff --oldCdimg "$ca" --newCdimg "$cb" --outCdimg "$w/d.cdimg" \
    --codec "$codec" --threadNum 2
  echo "bytes=$(fsize "$w/d.cdimg")"
  # a failing patch or a wrong result still reports the delta size, marked
  if tmeasure "patch_" "$cli" cdimg patch --baseCdimg "$ca" --diffCdimg "$w/d.cdimg" \
       --outCdimg "$w/b2.cdimg"; then
    idb=$(cdimg_id "$cli" "$cb") || true
    idp=$(cdimg_id "$cli" "$w/b2.cdimg") || true
    if [[ -n $idb && $idb == "$idp" ]]; then
      echo "verified=1"
    else
      echo "patched image id '$idp' != '$idb'" >&2
      echo "verified=0"; echo "note=patched image != B"
    fi
  else
    echo "verified=0"; echo "note=patch failed"
  fi
  rm -rf "$w"
}
