#!/usr/bin/env bash
# lifecycle_bench.sh: a node that follows every release of a package for a
# long time, unattended (issue 13). Every release is published to a real
# registry (Debian's docker-registry on loopback) as `ctr-cli push` does it:
# the runnable OCI image with its full cdimg and the delta from the release
# before attached as referrers. A client (its own containerd + our
# snapshotter) pulls each release with `ctr-cli pull`, in one of three modes:
#   rm        : after each update the previous image is removed
#               (`ctr image rm --sync`, as kubelet's image GC would), the
#               snapshotter compacts as it does by default
#   rm-nocomp : the same with compaction off (--compact-depth 0 --compact-waste 0)
#   keep      : every image kept, compaction on
# and a fourth client loads the last release's full cdimg directly (the
# reference for reads).
#
#   sudo test/bench/lifecycle_bench.sh [SERIES]   # default: prettier (24 releases,
#                                                 # `sudo bash scripts/corpus.sh prettier`)
#
# Per update (mode rm): delta = bytes of the delta cdimg the build side made;
# pulled = body bytes of every GET the registry answered during the pull (its
# access log); overhead = pulled - the blob bytes ctr-cli reports it
# downloaded (what planning cost: the referrers index, manifests). At the end,
# per mode: store bytes (sum of ROOT/store files) against the full cdimg of
# the last release; the last image's chain depth; container start + first read
# of the application's biggest file, and, apart from runc's start, a read of
# every file of /app through a fresh di3fs mount of the client's store: each a
# median of BENCH_ROUNDS (default 5) rounds that take the clients in turn, from
# a fresh mount, an empty content cache and a dropped page cache; both against
# the same from the full image; PSS of the image's di3fs daemon after the run.
# Targets (issue 13): overhead <= 1 KB at every update; rm: store <= 1.3x one
# full image, start + first read <= 1.2x the full image's; keep: store <= one
# full image + the deltas.
# Output: markdown on stdout, also in $D4C_WORK/bench/lifecycle-<date>.md.
set -euo pipefail
: "${D4C_BUILD_DIR:=$(cd "$(dirname "$0")/../.." && pwd)/build}"
: "${D4C_SOURCE_DIR:=$(cd "$(dirname "$0")/../.." && pwd)}"
export D4C_BUILD_DIR D4C_SOURCE_DIR
source "$D4C_SOURCE_DIR/test/e2e/lib.sh"
set +e +o pipefail  # a benchmark reports what it can
set -u
[[ $(id -u) -eq 0 ]] || { echo "lifecycle_bench: run as root" >&2; exit 1; }
for t in docker-registry containerd ctr runc jq umoci; do
  command -v "$t" >/dev/null || { echo "lifecycle_bench: $t is not installed" >&2; exit 1; }
done
S=${1:-prettier}
LAYOUT=$D4C_CORPUS/$S/oci
[[ -d $LAYOUT ]] || { echo "lifecycle_bench: no series $S in $D4C_CORPUS (sudo bash scripts/corpus.sh $S)" >&2; exit 1; }
mapfile -t TAGS < <(umoci ls --layout "$LAYOUT" | grep -vx -e base -e empty | sort -V)
((${#TAGS[@]} >= 2)) || { echo "lifecycle_bench: $S has fewer than 2 releases" >&2; exit 1; }
N=${#TAGS[@]}
LAST=${TAGS[N - 1]}
OUT=${D4C_BENCH_OUT:-$D4C_WORK/bench/lifecycle-$(date +%F-%H%M%S).md}
mkdir -p "$(dirname "$OUT")"
blog() { printf '[lifecycle-bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
fsize() { stat -c %s "$1"; }
now() { echo "$EPOCHREALTIME"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b - a}'; }
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

H_DIR=$(mktemp -d /tmp/d4c-lb.XXXXXX)
source "$D4C_SOURCE_DIR/test/e2e/harness.sh"
trap h_cleanup EXIT
reg_start || exit 1

# ---- build side (not timed) ------------------------------------------------------
declare -a FULL DELTA
for ((i = 0; i < N; i++)); do
  t=${TAGS[i]}
  FULL[i]=$(cdimg_for "$S" "$t") || { blog "convert $t failed"; exit 1; }
  "$CTR_CLI" push --cdimg "${FULL[i]}" --image "oci:$LAYOUT:$t" --imageTag "$S:$t" --serverHost "$REG_HOST" \
    --plain-http >"$H_DIR/push.log" 2>&1 || { blog "push $t: $(tail -2 "$H_DIR/push.log")"; exit 1; }
  if ((i > 0)); then
    DELTA[i]=$(delta_for "$S" "${TAGS[i - 1]}" "$t") || { blog "diff ${TAGS[i - 1]} $t failed"; exit 1; }
    "$CTR_CLI" push --cdimg "${DELTA[i]}" --repository "$S" --serverHost "$REG_HOST" --plain-http \
      >"$H_DIR/push.log" 2>&1 || { blog "push delta → $t: $(tail -2 "$H_DIR/push.log")"; exit 1; }
  fi
  blog "published $S:$t (full $(fsize "${FULL[i]}") B${DELTA[i]:+, delta $(fsize "${DELTA[i]}") B})"
done
DELTA_SUM=0
for ((i = 1; i < N; i++)); do DELTA_SUM=$((DELTA_SUM + $(fsize "${DELTA[i]}"))); done
FULL_LAST=$(fsize "${FULL[N - 1]}")
# the application's biggest file (the base layer's busybox never changes)
BIG=$(cd "$D4C_CORPUS/$S/rootfs/$LAST/rootfs" && find app -type f -printf '%s %p\n' | sort -n | tail -1 | cut -d' ' -f2-)
BIG_SIZE=$(stat -c %s "$D4C_CORPUS/$S/rootfs/$LAST/rootfs/$BIG")
blog "biggest file of $LAST: /$BIG ($BIG_SIZE B)"

# ---- clients ---------------------------------------------------------------------------
# settle CLIENT: wait until every compaction the snapshotter started has ended
settle() {
  local log=$H_DIR/$1/snapshotter.log k started ended
  sleep 0.3
  for ((k = 0; k < 3000; k++)); do
    started=$(grep -c 'becomes full' "$log")
    ended=$(grep -c -e 'compaction: image sha256:[0-9a-f]* is full' -e 'compaction of image sha256:.*store unchanged' "$log")
    ((started == ended)) && return 0
    sleep 0.1
  done
  blog "$1: compaction still running after 300 s"
}
store_bytes() { find "$(client_snaproot "$1")/store" -type f -printf '%s\n' | awk '{n += $1} END {printf "%d\n", n}'; }
# depth CLIENT ID: deltas in the chain of image ID in the client's store
depth() {
  local dir d=0 id=${2#sha256:} p
  dir=$(client_snaproot "$1")/store
  while :; do
    p=$("$CTR_CLI" cdimg show --json --cdimg "$dir/$id.cdimg" 2>/dev/null | jq -r '.parent_id // empty')
    [[ -z $p ]] && break
    d=$((d + 1)); id=${p#sha256:}
  done
  echo "$d"
}
cdimg_id() { "$1" cdimg show --json --cdimg "$2" | jq -r '.image_id'; }

declare -A STORE DEPTH READ PSS
ROWS=()
follow() {
  local mode=$1 cl=$1 i m b pulled blob over prev
  H_SNAP_ARGS=()
  [[ $mode == rm-nocomp ]] && H_SNAP_ARGS=(--compact-depth 0 --compact-waste 0)
  client_start "$cl" || { blog "$cl: client did not start"; return 1; }
  for ((i = 0; i < N; i++)); do
    m=$(reg_mark)
    if ! "$CTR_CLI" pull --image "$S:${TAGS[i]}" --host "$REG_HOST" --plain-http --address "$(client_sock "$cl")" \
        --download-dir "$H_DIR/dl-$cl" >"$H_DIR/pull.log" 2>&1; then
      blog "$cl: pull ${TAGS[i]} failed: $(tail -2 "$H_DIR/pull.log")"
      return 1
    fi
    pulled=$(reg_served_since "$m")
    blob=$(sed -n 's/.*downloaded \([0-9][0-9]*\) bytes of blobs.*/\1/p' "$H_DIR/pull.log" | tail -1)
    over=$((pulled - ${blob:-0}))
    if [[ $mode != keep && $i -gt 0 ]]; then
      prev=$(registry_name "${TAGS[i - 1]}")
      client_ctr "$cl" image rm --sync "$prev" >/dev/null 2>&1 || blog "$cl: image rm $prev failed"
    fi
    settle "$cl"
    if [[ $mode == rm ]]; then
      if ((i == 0)); then d=$(fsize "${FULL[0]}"); else d=$(fsize "${DELTA[i]}"); fi
      ROWS+=("| ${i} | ${TAGS[i]} | $d | $pulled | $blob | $over | $(store_bytes "$cl") |")
    fi
    blog "$cl: ${TAGS[i]} pulled $pulled B (blobs ${blob:-?}, overhead $over), store $(store_bytes "$cl") B"
  done
  STORE[$mode]=$(store_bytes "$cl")
  DEPTH[$mode]=$(depth "$cl" "$(cdimg_id "$CTR_CLI" "${FULL[N - 1]}")")
  client_stop "$cl"
}
registry_name() { echo "docker.io/library/$S:$1"; }  # how ctr-cli pull names it (normalized --image)

for mode in rm rm-nocomp keep; do
  blog "client $mode: following ${N} releases"
  follow "$mode"
done
# the reference: the last release's full cdimg loaded as it is
H_SNAP_ARGS=()
client_start full || exit 1
"$CTR_CLI" load --image "$(registry_name "$LAST")" --cdimg "${FULL[N - 1]}" --address "$(client_sock full)" >/dev/null 2>&1 ||
  blog "full: load failed"
client_stop full
reg_stop

# ctr run + first read: each round restarts the client (its di3fs mount is
# made afresh, its content cache emptied, the page cache dropped); rounds take
# the clients in turn
ROUNDS=${BENCH_ROUNDS:-5}
secs3() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", b - a}'; }
LAST_ID=$(cdimg_id "$CTR_CLI" "${FULL[N - 1]}")
run_round() {
  local cl=$1 t0 t1 pid
  rm -rf "$H_DIR/$cl/sn/cache/"[0-9a-f]*
  H_SNAP_ARGS=()
  [[ $cl == rm-nocomp ]] && H_SNAP_ARGS=(--compact-depth 0 --compact-waste 0)
  client_start "$cl" >/dev/null 2>&1 || { echo "NA NA"; return; }
  sync; echo 3 >/proc/sys/vm/drop_caches
  t0=$(now)
  if client_ctr "$cl" run --rm --snapshotter=di3fs "$(registry_name "$LAST")" "r$RANDOM" sh -c "cat '/$BIG' >/dev/null" \
       >/dev/null 2>&1; then
    t1=$(now)
    pid=$(cat "$H_DIR/$cl/sn/run/${LAST_ID#sha256:}.pid" 2>/dev/null)
    echo "$(secs3 "$t0" "$t1") $(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || echo NA)"
  else
    echo "NA NA"
  fi
  client_stop "$cl" >/dev/null 2>&1
}
declare -A RUNS PSSES
for ((r = 1; r <= ROUNDS; r++)); do
  for mode in rm rm-nocomp keep full; do
    read -r a b < <(run_round "$mode")
    RUNS[$mode]+="$a "; PSSES[$mode]+="$b "
  done
  blog "round $r: ctr run + first read (s): rm ${RUNS[rm]} full ${RUNS[full]}"
done

# first read alone, without runc: every file of /app through a fresh di3fs
# mount of each client's store, page cache dropped, rounds interleaved
declare -A RREAD
read_once() {  # read_once CLIENT: seconds to read /app through a fresh di3fs mount
  local store=$H_DIR/$1/sn/store mp=$H_DIR/m-$1 pid t0 t1 f bases=()
  for f in "$store"/*.cdimg; do [[ $f == */${LAST_ID#sha256:}.cdimg ]] || bases+=(--base "$f"); done
  mkdir -p "$mp"
  sync; echo 3 >/proc/sys/vm/drop_caches
  "$H_DI3FS" --cdimg "$store/${LAST_ID#sha256:}.cdimg" "${bases[@]}" "$mp" 2>"$H_DIR/di3fs-$1.log" &
  pid=$!
  for ((k = 0; k < 200; k++)); do mountpoint -q "$mp" && break; sleep 0.05; done
  t0=$(now)
  tar -C "$mp/app" -cf - . 2>/dev/null | wc -c >/dev/null && t1=$(now) || t1=
  umount "$mp"; wait "$pid" 2>/dev/null
  [[ -n $t1 ]] && secs3 "$t0" "$t1" || echo NA
}
for ((r = 1; r <= ROUNDS; r++)); do
  for mode in rm rm-nocomp keep full; do RREAD[$mode]+="$(read_once "$mode") "; done
done
median() { tr ' ' '\n' | grep -v -e '^$' -e NA | sort -n | awk '{a[NR]=$1} END {if (NR == 0) print "NA"; else print a[int((NR + 1) / 2)]}'; }
for mode in rm rm-nocomp keep full; do
  RREAD[$mode]=$(median <<<"${RREAD[$mode]}")
  READ[$mode]=$(median <<<"${RUNS[$mode]}")
  PSS[$mode]=$(median <<<"${PSSES[$mode]}")
done

# ---- report --------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0 && a != "NA") printf "%.2f×", a / b; else print "n/a"}'; }
max_over=$(printf '%s\n' "${ROWS[@]}" | awk -F'|' 'NR > 1 {gsub(/ /, "", $7); if ($7 + 0 > m) m = $7 + 0} END {print m + 0}')
{
  echo "# Following $N releases of $S (${TAGS[0]} … $LAST)"
  echo
  echo "$(date -Is) on $(hostname), $(nproc) CPUs, load average $LOAD_START at start, $(cut -d' ' -f1-3 /proc/loadavg) at end;"
  echo "docker-registry on loopback, containerd $(containerd --version | awk '{print $3}'), ctr-cli \`$CTR_CLI\`."
  echo
  echo "## Per update (client \`rm\`: the previous image removed after each pull, compaction on)"
  echo
  echo "| # | release | delta cdimg B | pulled B | blobs B | overhead B | store B after |"
  echo "|---:|---|---:|---:|---:|---:|---:|"
  printf '%s\n' "${ROWS[@]}"
  echo
  echo "Largest overhead after the first pull: $max_over B (target ≤ 1,024 B)."
  echo
  echo "## At the end"
  echo
  echo "Full cdimg of $LAST: $FULL_LAST B; the $((N - 1)) deltas: $DELTA_SUM B. Biggest file: \`/$BIG\` ($BIG_SIZE B)."
  echo
  echo "| client | store B | store ÷ one full | chain depth of $LAST | ctr run + read of /$BIG s | ÷ full's | di3fs read of all /app s | ÷ full's | di3fs PSS KiB |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  for mode in rm rm-nocomp keep; do
    echo "| $mode | ${STORE[$mode]} | $(ratio "${STORE[$mode]}" "$FULL_LAST") | ${DEPTH[$mode]} | ${READ[$mode]} | $(ratio "${READ[$mode]}" "${READ[full]}") | ${RREAD[$mode]} | $(ratio "${RREAD[$mode]}" "${RREAD[full]}") | ${PSS[$mode]} |"
  done
  echo "| full cdimg loaded | $FULL_LAST | 1.00× | 0 | ${READ[full]} | 1.00× | ${RREAD[full]} | 1.00× | ${PSS[full]} |"
  echo
  echo "keep: store ÷ (one full + the deltas) = $(ratio "${STORE[keep]}" $((FULL_LAST + DELTA_SUM)))."
  echo
  echo "Times are medians of $ROUNDS rounds that take the clients in turn; each round starts from a fresh di3fs"
  echo "mount, an empty content cache and a dropped page cache. PSS: the image's di3fs daemon after the ctr run."
} | tee "$OUT"
blog "written to $OUT"
