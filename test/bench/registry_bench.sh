#!/usr/bin/env bash
# registry_bench.sh: an image update through a real OCI registry, containerd's
# own pull (ctr image pull, overlayfs) against ours (ctr-cli pull, di3fs).
#
#   sudo test/bench/registry_bench.sh [SERIES ...]   # default: typescript, and biome if in the corpus
#
# Build side (not timed): Debian's docker-registry on 127.0.0.1 (harness.sh);
# `skopeo copy oci:$D4C_CORPUS/S/oci:TAG docker://REG/S-oci:TAG` for every
# version (the ordinary OCI images, their gzip layers as they are), and
# `ctr-cli push` of the full cdimg of the first version plus every
# consecutive delta (tags S:TAG).
# Client side, per round and series, each client with a fresh private containerd:
#   ctr  : containerd + overlayfs. `ctr image pull --plain-http REG/S-oci:V1`,
#          then for each next version V: `ctr image pull` + `ctr run --rm`
#   ours : containerd + our di3fs snapshotter. `ctr-cli pull --image S:V1`,
#          then for each next version V: `ctr-cli pull` + `ctr run --rm --snapshotter=di3fs`
# so every update row is "the client has the previous version, gets the next".
# The container prints the package's version (typescript, biome; other series
# run `true`), which is checked.
#   bytes : body bytes of every GET the registry answered during the pull (its
#           access log): manifests, config, layers / catalog, cdimg blobs
#   s     : wall seconds from the start of the pull to the end of `ctr run`
#           (median of BENCH_ROUNDS rounds, default 3)
# Loopback has no bandwidth limit, so the seconds show CPU and disk work
# (download, gunzip + unpack vs. load + lazy di3fs reads); the bytes are what
# a slow link would carry.
# Output: markdown on stdout, also written to
# $D4C_WORK/bench/registry-<date>-<time>.md (D4C_BENCH_OUT overrides);
# progress on stderr. Without push/pull in ctr-cli, the "ours" cells are n/a.
set -euo pipefail
: "${D4C_BUILD_DIR:=$(cd "$(dirname "$0")/../.." && pwd)/build}"
: "${D4C_SOURCE_DIR:=$(cd "$(dirname "$0")/../.." && pwd)}"
export D4C_BUILD_DIR D4C_SOURCE_DIR
source "$D4C_SOURCE_DIR/test/e2e/lib.sh"
set +e +o pipefail  # a benchmark reports what it can
set -u
[[ $(id -u) -eq 0 ]] || { echo "registry_bench: run as root" >&2; exit 1; }
for t in docker-registry skopeo containerd ctr runc jq curl ss; do
  command -v "$t" >/dev/null || { echo "registry_bench: $t is not installed" >&2; exit 1; }
done
[[ -f $D4C_CORPUS/corpus-stats.tsv ]] || { echo "registry_bench: no corpus at $D4C_CORPUS" >&2; exit 1; }
ROUNDS=${BENCH_ROUNDS:-3}
if (($# > 0)); then
  SERIES=("$@")
else
  SERIES=(typescript)
  corpus_series | grep -x biome >/dev/null && SERIES+=(biome)
fi
OURS=1
for c in push pull; do
  "$CTR_CLI" "$c" --help >/dev/null 2>&1 || { OURS=0; NO_OURS_WHY="$CTR_CLI has no '$c' command"; }
done
OUT=${D4C_BENCH_OUT:-$D4C_WORK/bench/registry-$(date +%F-%H%M%S).md}
mkdir -p "$(dirname "$OUT")"
blog() { printf '[registry-bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
fsize() { stat -c %s "$1"; }
now() { echo "$EPOCHREALTIME"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b - a}'; }
median() { tr ' ' '\n' | grep -v '^$' | grep -v NA | sort -n | awk '{a[NR]=$1} END {if (NR == 0) print "NA"; else print a[int((NR + 1) / 2)]}'; }
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

H_DIR=$(mktemp -d /tmp/d4c-rb.XXXXXX)
source "$D4C_SOURCE_DIR/test/e2e/harness.sh"
trap h_cleanup EXIT
reg_start || exit 1
blog "registry on $REG_HOST; series: ${SERIES[*]}; rounds: $ROUNDS; ours: $([[ $OURS == 1 ]] && echo yes || echo "no ($NO_OURS_WHY)")"

version_file() {
  case $1 in
    typescript) echo /app/node_modules/typescript/package.json ;;
    biome) echo /app/node_modules/@biomejs/biome/package.json ;;
  esac
}
# run_cmd SERIES: what the container runs
run_cmd() {
  local f
  f=$(version_file "$1")
  if [[ -n $f ]]; then echo "grep '\"version\"' $f"; else echo true; fi
}
# output_ok SERIES TAG OUTPUT
output_ok() {
  [[ -z $(version_file "$1") ]] && return 0
  [[ $3 == *"\"version\": \"$2\""* ]]
}

# layer_bytes SERIES TAG_A TAG_B: compressed size of B's layers not among A's (manifests)
layer_bytes() {
  local ma mb
  ma=$(skopeo inspect --raw --tls-verify=false "docker://$REG_HOST/$1-oci:$2") || return 1
  mb=$(skopeo inspect --raw --tls-verify=false "docker://$REG_HOST/$1-oci:$3") || return 1
  jq -n --argjson a "$ma" --argjson b "$mb" \
    '($a.layers | map(.digest)) as $old | [$b.layers[] | select(.digest as $d | $old | index($d) | not) | .size] | add // 0'
}

declare -A BYTES_CTR BYTES_OURS BLOB_OURS SECS_CTR SECS_OURS NEWLAYERS PAIRS_OF STORE_OCI STORE_OURS
FAILS=()
fail_note() { FAILS+=("$*"); blog "FAIL: $*"; }

for s in "${SERIES[@]}"; do
  mapfile -t TAGS < <(corpus_tags "$s")
  ((${#TAGS[@]} >= 2)) || { fail_note "$s: fewer than 2 versions in the corpus"; continue; }
  # ---- build side -----------------------------------------------------------
  blog "$s: skopeo copy of ${#TAGS[@]} OCI images"
  for t in "${TAGS[@]}"; do
    skopeo copy -q --dest-tls-verify=false "oci:$D4C_CORPUS/$s/oci:$t" "docker://$REG_HOST/$s-oci:$t" >&2 ||
      fail_note "$s: skopeo copy $t"
  done
  STORE_OCI[$s]=$(for t in "${TAGS[@]}"; do
      skopeo inspect --raw --tls-verify=false "docker://$REG_HOST/$s-oci:$t" | jq -r '.config, .layers[] | "\(.digest) \(.size)"'
    done | sort -u | awk '{n += $2} END {printf "%d\n", n}')
  ROWS=("first pull ${TAGS[0]}")
  for ((i = 1; i < ${#TAGS[@]}; i++)); do ROWS+=("${TAGS[i - 1]} → ${TAGS[i]}"); done
  PAIRS_OF[$s]=$(printf '%s\n' "${ROWS[@]}")
  if [[ $OURS == 1 ]]; then
    files=()
    c=$(cdimg_for "$s" "${TAGS[0]}") && files+=("$c") || fail_note "$s: convert ${TAGS[0]}"
    blog "$s: push ${TAGS[0]} (full, $(fsize "$c") bytes)"
    "$CTR_CLI" push --cdimg "$c" --imageTag "$s:${TAGS[0]}" --serverHost "$REG_HOST" --plain-http >&2 ||
      fail_note "$s: ctr-cli push ${TAGS[0]}"
    for ((i = 1; i < ${#TAGS[@]}; i++)); do
      blog "$s: diff ${TAGS[i - 1]} → ${TAGS[i]} (cached per ctr-cli build)"
      d=$(delta_for "$s" "${TAGS[i - 1]}" "${TAGS[i]}") || { fail_note "$s: cdimg diff ${TAGS[i - 1]} ${TAGS[i]}"; continue; }
      files+=("$d")
      "$CTR_CLI" push --cdimg "$d" --imageTag "$s:${TAGS[i]}" --serverHost "$REG_HOST" --plain-http >&2 ||
        fail_note "$s: ctr-cli push ${TAGS[i - 1]} → ${TAGS[i]}"
    done
    STORE_OURS[$s]=$(cat "${files[@]}" /dev/null | wc -c)
  fi
  for ((i = 1; i < ${#TAGS[@]}; i++)); do
    NEWLAYERS[$s/${ROWS[i]}]=$(layer_bytes "$s" "${TAGS[i - 1]}" "${TAGS[i]}")
  done
  NEWLAYERS[$s/${ROWS[0]}]=$(skopeo inspect --raw --tls-verify=false "docker://$REG_HOST/$s-oci:${TAGS[0]}" | jq '[.layers[].size] | add')
  CMD=$(run_cmd "$s")

  for ((r = 1; r <= ROUNDS; r++)); do
    # ---- ctr image pull + overlayfs --------------------------------------------
    cl=p$r$s
    client_start "$cl" plain || { fail_note "$s: containerd (plain) did not start"; continue; }
    for ((i = 0; i < ${#TAGS[@]}; i++)); do
      ref=$REG_HOST/$s-oci:${TAGS[i]}
      m=$(reg_mark)
      t0=$(now)
      if client_ctr "$cl" image pull --plain-http "$ref" >"$H_DIR/ctr-pull.log" 2>&1; then
        out=$(client_ctr "$cl" run --rm "$ref" "c$i" sh -c "$CMD" 2>&1)
        t1=$(now)
        if output_ok "$s" "${TAGS[i]}" "$out"; then
          SECS_CTR[$s/${ROWS[i]}]+="$(secs "$t0" "$t1") "
        else
          fail_note "$s: ctr run $ref printed: $out"
        fi
      else
        fail_note "$s: ctr image pull $ref: $(tail -3 "$H_DIR/ctr-pull.log")"
      fi
      BYTES_CTR[$s/${ROWS[i]}]=$(reg_served_since "$m")
    done
    client_stop "$cl"
    blog "$s round $r: ctr done: ${SECS_CTR[$s/${ROWS[1]}]:-}..."
    # ---- ctr-cli pull + di3fs ------------------------------------------------
    [[ $OURS == 1 ]] || continue
    cl=d$r$s
    client_start "$cl" || { fail_note "$s: containerd + snapshotter did not start"; continue; }
    for ((i = 0; i < ${#TAGS[@]}; i++)); do
      ref=docker.io/library/$s:${TAGS[i]}  # ctr-cli pull names it as asked, normalized
      m=$(reg_mark)
      t0=$(now)
      if "$CTR_CLI" pull --image "$s:${TAGS[i]}" --host "$REG_HOST" --plain-http --address "$(client_sock "$cl")" \
           --download-dir "$H_DIR/dl-$cl" >"$H_DIR/ours-pull.log" 2>&1; then
        out=$(client_ctr "$cl" run --rm --snapshotter=di3fs "$ref" "d$i" sh -c "$CMD" 2>&1)
        t1=$(now)
        if output_ok "$s" "${TAGS[i]}" "$out"; then
          SECS_OURS[$s/${ROWS[i]}]+="$(secs "$t0" "$t1") "
        else
          fail_note "$s: ctr run --snapshotter=di3fs $ref printed: $out"
        fi
        BLOB_OURS[$s/${ROWS[i]}]=$(sed -n 's/.*downloaded \([0-9][0-9]*\) bytes of blobs.*/\1/p' "$H_DIR/ours-pull.log" | tail -1)
      else
        fail_note "$s: ctr-cli pull $s:${TAGS[i]}: $(tail -3 "$H_DIR/ours-pull.log")"
      fi
      BYTES_OURS[$s/${ROWS[i]}]=$(reg_served_since "$m")
    done
    client_stop "$cl"
    blog "$s round $r: ours done: ${SECS_OURS[$s/${ROWS[1]}]:-}..."
  done
done
reg_stop

# ---- report ------------------------------------------------------------------------
na() { [[ -n ${1:-} ]] && echo "$1" || echo "n/a"; }
commas() { sed ':a;s/\B[0-9]\{3\}\>/,&/;ta' <<<"$1"; }
ratio() { [[ ${1:-} =~ ^[0-9]+$ && ${2:-} =~ ^[1-9][0-9]*$ ]] && awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f×", a / b}' || echo "n/a"; }
{
  echo "# Registry pull: ctr image pull vs ctr-cli pull"
  echo
  echo "$(date -Is) on $(hostname), $(nproc) CPUs, load average $LOAD_START at start, $(cut -d' ' -f1-3 /proc/loadavg) at end;"
  echo "docker-registry $(docker-registry --version | awk '{print $NF}') on loopback, containerd $(containerd --version | awk '{print $3}'), $ROUNDS round(s), seconds are medians."
  echo "ctr-cli: \`$CTR_CLI\`$([[ $OURS == 1 ]] || echo " — ours not measured: $NO_OURS_WHY")."
  echo
  echo "Bytes: everything the registry sent for the pull (access log: manifests, config and layers for ctr;"
  echo "manifests, catalog and cdimg blobs for ours). Seconds: wall clock of the pull plus a \`ctr run --rm\` that"
  echo "prints the package version (e.g. \`$(run_cmd "${SERIES[0]}")\`). Each update row starts from a client"
  echo "holding the previous version; \"first pull\" starts from an empty client."
  echo
  echo "| pair | ctr pull bytes | ours bytes | ratio | ctr pull+run s | ours pull+run s |"
  echo "|---|---:|---:|---:|---:|---:|"
  for s in "${SERIES[@]}"; do
    while IFS= read -r row; do
      [[ -n $row ]] || continue
      k=$s/$row
      printf '| %s %s | %s | %s | %s | %s | %s |\n' "$s" "$row" "$(commas "$(na "${BYTES_CTR[$k]:-}")")" \
        "$(commas "$(na "${BYTES_OURS[$k]:-}")")" "$(ratio "${BYTES_CTR[$k]:-}" "${BYTES_OURS[$k]:-}")" \
        "$(echo "${SECS_CTR[$k]:-}" | median)" "$(echo "${SECS_OURS[$k]:-}" | median)"
    done <<<"${PAIRS_OF[$s]:-}"
  done
  echo
  echo "Details: ctr's new layer bytes from the manifests (gzip layers not in the previous version),"
  echo "ours' cdimg blob bytes as \`ctr-cli pull\` reports them (\`downloaded N bytes of blobs\`), all rounds' seconds."
  echo
  echo "| pair | ctr new layers | ours cdimg blobs | ctr s (all rounds) | ours s (all rounds) |"
  echo "|---|---:|---:|---|---|"
  for s in "${SERIES[@]}"; do
    while IFS= read -r row; do
      [[ -n $row ]] || continue
      k=$s/$row
      printf '| %s %s | %s | %s | %s | %s |\n' "$s" "$row" "$(commas "$(na "${NEWLAYERS[$k]:-}")")" \
        "$(commas "$(na "${BLOB_OURS[$k]:-}")")" "$(na "$(xargs <<<"${SECS_CTR[$k]:-}")")" \
        "$(na "$(xargs <<<"${SECS_OURS[$k]:-}")")"
    done <<<"${PAIRS_OF[$s]:-}"
  done
  echo
  echo "Registry storage for all versions: $(for s in "${SERIES[@]}"; do
      printf '%s OCI %s bytes (unique layers + configs), ours %s bytes (full + deltas); ' "$s" \
        "$(commas "$(na "${STORE_OCI[$s]:-}")")" "$(commas "$(na "${STORE_OURS[$s]:-}")")"
    done)"
  if ((${#FAILS[@]})); then
    echo
    echo "## Failures"
    printf -- '- %s\n' "${FAILS[@]}"
  fi
} | tee "$OUT"
blog "report written to $OUT"
