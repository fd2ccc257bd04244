# Shared helpers for the end-to-end tests (sourced, not run).
# Env from ctest: D4C_BUILD_DIR, D4C_SOURCE_DIR. D4C_REQUIRE_E2E=1 turns every
# "cannot run here" into a failure instead of a skip (exit 77).
set -euo pipefail
: "${D4C_BUILD_DIR:?set by ctest}" "${D4C_SOURCE_DIR:?set by ctest}"
D4C_CORPUS=${D4C_CORPUS:-/var/cache/d4c-corpus}
D4C_WORK=${D4C_WORK:-/var/cache/d4c-work}
CTR_CLI=$D4C_BUILD_DIR/ctr-cli/ctr-cli
TREECMP=$D4C_BUILD_DIR/test/treecmp

e2e_log() { printf '[%s %(%H:%M:%S)T] %s\n' "${0##*/}" -1 "$*" >&2; }

# skip_or_fail REASON: exit 77 (ctest skip) unless D4C_REQUIRE_E2E=1
skip_or_fail() {
  if [[ ${D4C_REQUIRE_E2E:-0} == 1 ]]; then
    echo "FAIL (D4C_REQUIRE_E2E=1): $*" >&2
    exit 1
  fi
  echo "SKIP: $*" >&2
  exit 77
}

require_root() { [[ $(id -u) -eq 0 ]] || skip_or_fail "needs root"; }
require_corpus() {
  [[ -f $D4C_CORPUS/corpus-stats.tsv ]] ||
    skip_or_fail "corpus missing at $D4C_CORPUS (build it: sudo bash scripts/corpus.sh)"
}

# corpus_tags SERIES: versions of a series in order
corpus_tags() { awk -F'\t' -v s="$1" 'NR>1 && $1==s {print $2}' "$D4C_CORPUS/corpus-stats.tsv"; }
corpus_series() { awk -F'\t' 'NR>1 {print $1}' "$D4C_CORPUS/corpus-stats.tsv" | uniq; }

# Converted images are cached per ctr-cli build (keyed by the binary's hash),
# so a changed converter never reuses stale files, and per source image
# (tag_key), so a corpus tag rebuilt with other bytes is converted again.
cli_key() { sha256sum "$CTR_CLI" | cut -c1-16; }

# tag_key SERIES TAG: "TAG@<first 12 hex digits of the tag's manifest digest>"
# in the corpus's OCI layout; fails naming the layout when the tag is absent.
tag_key() {
  local d
  d=$(jq -r --arg t "$2" \
        '[.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest][0] // empty' \
        "$D4C_CORPUS/$1/oci/index.json") || return 1
  [[ $d == sha256:* ]] || {
    echo "tag $2 not found in $D4C_CORPUS/$1/oci/index.json (rebuild the corpus: sudo bash scripts/corpus.sh)" >&2
    return 1
  }
  echo "$2@${d:7:12}"
}

# prune_cdimg_cache: the cache holds one directory per ctr-cli build (~250 MB
# on the corpus); all but the D4C_CDIMG_CACHE_KEEP (default 3) most recently
# used are deleted, so a machine that runs CI for every change does not fill
# its disk. Only directories named by a build key (16 hex digits) are touched.
prune_cdimg_cache() {
  local root=$D4C_WORK/cdimg keep=${D4C_CDIMG_CACHE_KEEP:-3} d
  [[ -d $root ]] || return 0
  local -a keys=()
  while IFS= read -r d; do
    [[ ${d##*/} =~ ^[0-9a-f]{16}$ ]] && keys+=("$d")
  done < <(ls -1dt "$root"/*/ 2>/dev/null | sed 's:/$::')
  local n=0
  for d in "${keys[@]}"; do
    n=$((n + 1))
    ((n > keep)) && rm -rf -- "$d"
  done
  return 0
}

# cdimg_for SERIES TAG: prints the path of the converted full cdimg
cdimg_for() {
  local key build
  key=$(tag_key "$1" "$2") || return 1
  build=$D4C_WORK/cdimg/$(cli_key)  # hashes the 90 MB binary: once
  # This build's entries are the most recently used: the others may go.
  mkdir -p "$build" && touch "$build" && prune_cdimg_cache
  local dir=$build/$1/$key
  if [[ ! -f $dir/image.cdimg ]]; then
    mkdir -p "$dir"
    "$CTR_CLI" convert --image "oci:$D4C_CORPUS/$1/oci:$2" --output "$dir" --cdimg >&2
  fi
  echo "$dir/image.cdimg"
}

image_id() { "$CTR_CLI" cdimg show --json "$@" | jq -r .image_id; }

wait_for() {  # wait_for SECONDS CMD...: until CMD succeeds
  local n=$(($1 * 10))
  shift
  while ((n-- > 0)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

# our_pids: pids of processes whose command line mentions the caller's temp
# dir $T (containerd shims, di3fs daemons): all started by this script
our_pids() {
  local p
  for p in /proc/[0-9]*; do
    [[ ${p#/proc/} == "$$" ]] && continue
    tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -F "$T/" >/dev/null && echo "${p#/proc/}"
  done
  true
}

# delta_for SERIES TAG_A TAG_B: path of the delta cdimg A->B (`cdimg diff`,
# default codec), cached like cdimg_for
delta_for() {
  local dir f tmp
  local ka kb
  ka=$(tag_key "$1" "$2") && kb=$(tag_key "$1" "$3") || return 1
  dir=$D4C_WORK/cdimg/$(cli_key)/$1/delta
  f=$dir/${ka}_$kb.cdimg
  if [[ ! -f $f ]]; then
    mkdir -p "$dir"
    tmp=$dir/.tmp.$$.$2_$3.cdimg
    if "$CTR_CLI" cdimg diff --oldCdimg "$(cdimg_for "$1" "$2")" --newCdimg "$(cdimg_for "$1" "$3")" \
         --outCdimg "$tmp" >&2; then
      mv -f "$tmp" "$f"
    else
      rm -f "$tmp"
      return 1
    fi
  fi
  echo "$f"
}

# merged_for SERIES TAG_A TAG_B TAG_C: path of the skip delta A->C made by
# `cdimg merge` of A->B and B->C, cached like cdimg_for
merged_for() {
  local dir f tmp
  local ka kb kc
  ka=$(tag_key "$1" "$2") && kb=$(tag_key "$1" "$3") && kc=$(tag_key "$1" "$4") || return 1
  dir=$D4C_WORK/cdimg/$(cli_key)/$1/delta
  f=$dir/${ka}_$kc.via-$kb.cdimg
  if [[ ! -f $f ]]; then
    mkdir -p "$dir"
    tmp=$dir/.tmp.$$.$2_$4.cdimg
    if "$CTR_CLI" cdimg merge --lowerCdimg "$(delta_for "$1" "$2" "$3")" --upperCdimg "$(delta_for "$1" "$3" "$4")" \
         --base "$(cdimg_for "$1" "$2")" --outCdimg "$tmp" >&2; then
      mv -f "$tmp" "$f"
    else
      rm -f "$tmp"
      return 1
    fi
  fi
  echo "$f"
}
