#!/usr/bin/env bash
# cri_edge_bench.sh: a Kubernetes node updating an image v1 -> v2 over an
# edge-like link, through containerd's CRI (PullImage as kubelet sends it,
# test/tools/cri_pull), our di3fs snapshotter (deltas attached by
# `ctr-cli push`) against a stock containerd with overlayfs, in the same run.
#
#   sudo test/bench/cri_edge_bench.sh [SERIES ...]   # default: typescript debian
#
# The link: Debian's docker-registry runs in a network namespace this script
# makes, reached over a veth pair. Links, in this order:
#   lo     the veth without shaping, no relay (loopback speed)
#   10m    tbf 10 Mbit/s on both veth ends + 50 ms RTT
#   1m     tbf 1 Mbit/s on both veth ends + 50 ms RTT
# The kernel has no netem: the RTT comes from test/tools/delay_relay (25 ms
# each way, order kept, one extra round trip for a new connection's
# handshake) on 127.0.0.1 in front of the registry. Each shaped link is
# verified first: a TCP connect over the veth alone (base RTT), curl of /v2/ on a new and on
# a kept-alive connection (the RTT a client sees), and the download of a
# random blob (5 MB at 10 Mbit/s, 2 MB at 1 Mbit/s) for the rate.
#
# Build side (not timed, unshaped): for each series, `ctr-cli push` of v1 and
# v2 (the OCI image with its full cdimg attached) and of the delta v1->v2.
# Per link, series and round, each side (di3fs, overlayfs) gets a FRESH
# containerd (CRI plugin; di3fs: `snapshotter = "di3fs"`,
# `disable_snapshot_annotations = false`), back to back:
#   1. CRI PullImage S:v1 with the link unshaped and no delay (state, not timed
#      on the link; its bytes are reported)
#   2. shape the link; CRI PullImage S:v2, timed; bytes = body bytes of the
#      registry's GET responses during it (access log)
#   3. `ctr -n k8s.io run --rm` of v2 (di3fs: --snapshotter di3fs): seconds
#      to the container's first line of output, which is checked
# Sides alternate which goes first from round to round. At 1 Mbit/s a side
# whose v2 would move more than BENCH_1M_MAX_MB (default 12) MB — taken from
# its 10 Mbit/s bytes — is not run; its row gives those bytes and the time
# the transfer alone needs at 1 Mbit/s (marked "computed").
# BENCH_ROUNDS (default 3) rounds on lo, BENCH_LINK_ROUNDS (default 1) on the
# shaped links; medians are reported. BENCH_LINKS="lo 10m 1m" picks links.
# Output: markdown on stdout, also written to
# $D4C_WORK/bench/cri-edge-<date>-<time>.md; progress on stderr.
set -uo pipefail
: "${D4C_BUILD_DIR:=$(cd "$(dirname "$0")/../.." && pwd)/build}"
: "${D4C_SOURCE_DIR:=$(cd "$(dirname "$0")/../.." && pwd)}"
export D4C_BUILD_DIR D4C_SOURCE_DIR
source "$D4C_SOURCE_DIR/test/e2e/lib.sh"
source "$D4C_SOURCE_DIR/test/bench/lib.sh"  # new_layers
set +e
[[ $(id -u) -eq 0 ]] || { echo "cri_edge_bench: run as root" >&2; exit 1; }
for t in containerd ctr runc jq curl docker-registry ip tc ss sha256sum; do
  command -v "$t" >/dev/null || { echo "cri_edge_bench: $t is not installed" >&2; exit 1; }
done
CRI_PULL=$D4C_BUILD_DIR/test/cri_pull
RELAY=$D4C_BUILD_DIR/test/delay_relay
for b in "$CRI_PULL" "$RELAY" "$CTR_CLI" "$D4C_BUILD_DIR/snapshotter/snapshotter" "$D4C_BUILD_DIR/fs/di3fs"; do
  [[ -x $b ]] || { echo "cri_edge_bench: $b is not built (ninja -C build ctr-cli snapshotter di3fs cri_pull delay_relay)" >&2; exit 1; }
done
[[ -f $D4C_CORPUS/corpus-stats.tsv ]] || { echo "cri_edge_bench: no corpus at $D4C_CORPUS" >&2; exit 1; }
if (($# > 0)); then SERIES=("$@"); else SERIES=(typescript debian); fi
read -r -a LINKS <<<"${BENCH_LINKS:-lo 10m 1m}"
ROUNDS_LO=${BENCH_ROUNDS:-3}
ROUNDS_LINK=${BENCH_LINK_ROUNDS:-1}
MAX_1M=$((${BENCH_1M_MAX_MB:-12} * 1000000))
ONE_WAY_MS=25
OUT=${D4C_BENCH_OUT:-$D4C_WORK/bench/cri-edge-$(date +%F-%H%M%S).md}
mkdir -p "$(dirname "$OUT")"
blog() { printf '[cri-edge %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b - a}'; }
median() { tr ' ' '\n' | grep -E '^[0-9.]+$' | sort -n | awk '{a[NR]=$1} END {if (NR == 0) print "n/a"; else print a[int((NR + 1) / 2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.3g", a / b; else print "n/a"}'; }
mb() { awk -v b="$1" 'BEGIN {if (b ~ /^[0-9]+$/) printf "%.2f", b / 1e6; else print b}'; }
T0=$EPOCHREALTIME
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# --- scratch dir, namespace, veth ------------------------------------------------
H_DIR=$(mktemp -d /tmp/d4c-edge.XXXXXX)
source "$D4C_SOURCE_DIR/test/e2e/harness.sh"
TAG=$$
NS=d4cb$TAG VH=d4cbh$TAG VN=d4cbn$TAG
NET=10.213.$((TAG % 250)).
cleanup() {
  set +e
  [[ -f $H_DIR/relay.pid ]] && kill "$(cat "$H_DIR/relay.pid")" 2>/dev/null
  reg_stop
  # the link first: removing the clients' unpacked trees below takes a while
  tc qdisc del dev "$VH" root 2>/dev/null
  ip link del "$VH" 2>/dev/null  # removes its peer too
  ip netns del "$NS" 2>/dev/null
  h_cleanup  # clients, leftovers (command lines naming $H_DIR), mounts, $H_DIR
}
trap cleanup EXIT
trap 'exit 130' INT TERM
ip netns add "$NS" || exit 1
ip link add "$VH" type veth peer name "$VN" || exit 1
ip link set "$VN" netns "$NS"
ip addr add "${NET}1/30" dev "$VH"
ip link set "$VH" up
ip -n "$NS" addr add "${NET}2/30" dev "$VN"
ip -n "$NS" link set "$VN" up
ip -n "$NS" link set lo up
DIRECT=${NET}2:5000

REG_HOST=$DIRECT
cat >"$H_DIR/registry.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: $H_DIR/registry-data
http:
  addr: $DIRECT
EOF
ip netns exec "$NS" docker-registry serve "$H_DIR/registry.yml" >>"$H_DIR/registry.log" 2>&1 &
REG_PID=$!
disown "$REG_PID"
h_wait_for 20 reg_up || { tail -20 "$H_DIR/registry.log" >&2; echo "cri_edge_bench: registry did not start in $NS" >&2; exit 1; }
RPORT=$(h_free_port)
RELAYED=127.0.0.1:$RPORT
CERTS=$H_DIR/certs.d
h_hosts_toml "$CERTS" "$DIRECT"
h_hosts_toml "$CERTS" "$RELAYED"
blog "registry $DIRECT in netns $NS (veth $VH/$VN); relay $RELAYED; series ${SERIES[*]}; links ${LINKS[*]}"

# relay MS: (re)start the delay relay with MS milliseconds each way. Its pid
# lives in a file: side_run runs in a $(...) subshell.
relay() {
  local pid
  pid=$(cat "$H_DIR/relay.pid" 2>/dev/null)
  if [[ -n $pid ]]; then
    kill "$pid" 2>/dev/null
    h_wait_for 10 sh -c "! ss -Htln 'sport = :$RPORT' | grep -q ."
  fi
  "$RELAY" "$RPORT" "${NET}2" 5000 "$1" >>"$H_DIR/relay.log" 2>&1 &
  pid=$!
  disown "$pid"
  echo "$pid" >"$H_DIR/relay.pid"
  h_wait_for 10 sh -c "ss -Htlnp 'sport = :$RPORT' | grep -q 'pid=$pid,'" ||
    { tail -3 "$H_DIR/relay.log" >&2; echo "cri_edge_bench: the relay ($1 ms) does not listen on $RELAYED" >&2; return 1; }
}
# shape RATE | shape off: tbf on both ends of the veth
shape() {
  if [[ $1 == off ]]; then
    tc qdisc del dev "$VH" root 2>/dev/null
    ip netns exec "$NS" tc qdisc del dev "$VN" root 2>/dev/null
    return 0
  fi
  tc qdisc replace dev "$VH" root tbf rate "$1" burst 15kb latency 200ms &&
    ip netns exec "$NS" tc qdisc replace dev "$VN" root tbf rate "$1" burst 15kb latency 200ms
}
link_rate() { case $1 in 10m) echo 10mbit ;; 1m) echo 1mbit ;; *) echo "" ;; esac; }
link_bps() { case $1 in 10m) echo 10000000 ;; 1m) echo 1000000 ;; *) echo "" ;; esac; }
link_name() { case $1 in lo) echo "loopback (veth, unshaped)" ;; 10m) echo "10 Mbit/s, 50 ms RTT" ;; 1m) echo "1 Mbit/s, 50 ms RTT" ;; esac; }
link_host() { if [[ $1 == lo ]]; then echo "$DIRECT"; else echo "$RELAYED"; fi; }
# link_up L: the link in its measured state; link_down: unshaped, no delay
link_up() { [[ $1 == lo ]] && return 0; shape "$(link_rate "$1")" && relay "$ONE_WAY_MS"; }
link_down() { shape off; relay 0; }

# --- images and pushes (unshaped, not timed) ------------------------------------------
declare -A V1 V2 CMD WANT DELTA_BYTES LAYERS_NEW
new_layers_bytes() { new_layers "$D4C_CORPUS/$1/oci" "$2" "$3" | awk '{s += $2} END {printf "%d\n", s}'; }
for s in "${SERIES[@]}"; do
  mapfile -t tags < <(corpus_tags "$s" | head -2)
  ((${#tags[@]} == 2)) || { echo "cri_edge_bench: series $s needs 2 versions in the corpus" >&2; exit 1; }
  V1[$s]=${tags[0]} V2[$s]=${tags[1]}
  case $s in
    typescript) CMD[$s]='grep "\"version\"" /app/node_modules/typescript/package.json'; WANT[$s]="\"version\": \"${tags[1]}\"" ;;
    biome) CMD[$s]='grep "\"version\"" /app/node_modules/@biomejs/biome/package.json'; WANT[$s]="\"version\": \"${tags[1]}\"" ;;
    *) CMD[$s]='cat /etc/debian_version; ls /usr/bin | wc -l'; WANT[$s]="" ;;
  esac
  blog "$s: cdimgs of ${tags[0]}, ${tags[1]} and their delta (cached in $D4C_WORK)"
  if ! { c1=$(cdimg_for "$s" "${tags[0]}") && c2=$(cdimg_for "$s" "${tags[1]}") &&
    d12=$(delta_for "$s" "${tags[0]}" "${tags[1]}"); }; then
    echo "cri_edge_bench: cdimgs of $s failed" >&2
    exit 1
  fi
  DELTA_BYTES[$s]=$(stat -c %s "$d12")
  for args in "--cdimg $c1 --image oci:$D4C_CORPUS/$s/oci:${tags[0]} --imageTag $s:v1" \
    "--cdimg $c2 --image oci:$D4C_CORPUS/$s/oci:${tags[1]} --imageTag $s:v2" \
    "--cdimg $d12 --repository $s"; do
    # shellcheck disable=SC2086
    out=$(timeout 600 "$CTR_CLI" push --serverHost "$DIRECT" --plain-http $args 2>&1) ||
      { echo "cri_edge_bench: push $args: $out" >&2; exit 1; }
  done
  # what an ordinary pull of v2 fetches after v1: v2's layers not in v1
  LAYERS_NEW[$s]=$(new_layers_bytes "$s" "${tags[0]}" "${tags[1]}")
  blog "$s: pushed v1 ${tags[0]}, v2 ${tags[1]}, delta ${DELTA_BYTES[$s]} bytes; v2's new layers ${LAYERS_NEW[$s]} bytes"
done

# --- link verification ------------------------------------------------------------------
# a random probe blob in the registry (5 MB; the 1 Mbit/s link reads its first 2 MB)
head -c 5000000 /dev/urandom >"$H_DIR/probe.bin"
PROBE=sha256:$(sha256sum "$H_DIR/probe.bin" | cut -d' ' -f1)
loc=$(curl -sS -o /dev/null -D - -X POST "http://$DIRECT/v2/linkprobe/blobs/uploads/" | tr -d '\r' | awk 'tolower($1) == "location:" {print $2}')
[[ $loc == http* ]] || loc=http://$DIRECT$loc
[[ $loc == *\?* ]] && sep='&' || sep='?'
curl -sS -f -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$H_DIR/probe.bin" "$loc${sep}digest=$PROBE" ||
  { echo "cri_edge_bench: upload of the probe blob failed" >&2; exit 1; }
declare -A VERIFY
verify_link() {  # verify_link L: one markdown table row
  local l=$1 host p rtt rng=() dl
  host=$(link_host "$l")
  [[ $l == 1m ]] && rng=(-r 0-1999999)
  link_up "$l" || return 1
  # the veth itself, without the relay: TCP handshake time (one round trip), best of 5
  p=$(for _ in 1 2 3 4 5; do curl -s -o /dev/null -w '%{time_connect}\n' "http://$DIRECT/v2/"; done | sort -n | head -1)
  # two requests on one connection: the first pays the handshake
  rtt=$(curl -sS -o /dev/null -o /dev/null -w '%{time_starttransfer} ' "http://$host/v2/" "http://$host/v2/")
  dl=$(curl -sS -o /dev/null "${rng[@]}" -w '%{size_download} %{time_total}' "http://$host/v2/linkprobe/blobs/$PROBE")
  VERIFY[$l]=$(awk -v l="$(link_name "$l")" -v p="$(awk -v x="$p" 'BEGIN {print x * 1000}')" -v r="$rtt" -v d="$dl" 'BEGIN {
      split(r, a, " "); split(d, b, " ")
      printf "| %s | %.2f | %.1f | %.1f | %.2f MB in %.2f s | %.2f |", l, p, a[1] * 1000, a[2] * 1000, b[1] / 1e6, b[2], b[1] * 8 / b[2] / 1e6 }')
  blog "link $l: ${VERIFY[$l]}"
  link_down
}

# --- one measurement ------------------------------------------------------------------------
# side_run L S SIDE ROUND: prints "v1bytes v1secs v2bytes pullsecs runsecs" or "FAIL why"
side_run() {
  local l=$1 s=$2 side=$3 r=$4 host n sock m t0 t1 t2 out first v1b v1s v2b
  host=$(link_host "$l")
  n=$side-$l-$s-$r
  sock=$H_DIR/$n/c.sock
  link_down
  cri_client_start "$n" "$side" "$CERTS" >&2 || { echo "FAIL containerd did not start"; return; }
  m=$(reg_mark)
  t0=$EPOCHREALTIME
  out=$(timeout 900 "$CRI_PULL" "$sock" pull "$host/$s:v1" 2>&1) || { client_stop "$n"; echo "FAIL pull v1: $out"; return; }
  t1=$EPOCHREALTIME
  v1b=$(reg_served_since "$m") v1s=$(secs "$t0" "$t1")
  link_up "$l" || { client_stop "$n"; echo "FAIL link $l"; return; }
  m=$(reg_mark)
  t0=$EPOCHREALTIME
  out=$(timeout 1800 "$CRI_PULL" "$sock" pull "$host/$s:v2" 2>&1) || { client_stop "$n"; link_down; echo "FAIL pull v2: $out"; return; }
  t1=$EPOCHREALTIME
  sleep 0.3  # the access log line of the last response
  v2b=$(reg_served_since "$m")
  local snap=()
  [[ $side == di3fs ]] && snap=(--snapshotter di3fs)
  t2=$EPOCHREALTIME
  first=$({
    timeout 300 ctr --address "$sock" -n k8s.io run --rm "${snap[@]}" "$host/$s:v2" "run-$n" sh -c "${CMD[$s]}" 2>&1
    echo "exit $?" >"$H_DIR/run-rc"
  } | { IFS= read -r line; echo "$EPOCHREALTIME $line"; cat >/dev/null; })
  link_down
  client_stop "$n"
  local tf=${first%% *} line=${first#* }
  if [[ $(cat "$H_DIR/run-rc") != "exit 0" || -z $line || $line != *"${WANT[$s]}"* ]]; then
    echo "FAIL run ($(cat "$H_DIR/run-rc")) printed: $line"
    return
  fi
  echo "$v1b $v1s $v2b $(secs "$t0" "$t1") $(secs "$t2" "$tf")"
}

declare -A R  # R[l,s,side,field] = space-separated values over rounds
for l in "${LINKS[@]}"; do
  verify_link "$l" || { echo "cri_edge_bench: link $l cannot be set up" >&2; exit 1; }
  rounds=$ROUNDS_LO
  [[ $l == lo ]] || rounds=$ROUNDS_LINK
  for s in "${SERIES[@]}"; do
    for ((r = 1; r <= rounds; r++)); do
      if ((r % 2)); then order=(di3fs overlayfs); else order=(overlayfs di3fs); fi
      for side in "${order[@]}"; do
        if [[ $l == 1m ]]; then
          prev=$(echo "${R[10m,$s,$side,v2b]:-${R[lo,$s,$side,v2b]:-}}" | median)
          if [[ $prev =~ ^[0-9]+$ ]] && ((prev > MAX_1M)); then
            blog "1m $s $side: skipped, it would move $prev bytes (> BENCH_1M_MAX_MB)"
            R[$l,$s,$side,skip]=$prev
            continue
          fi
        fi
        blog "$l $s $side round $r ..."
        res=$(side_run "$l" "$s" "$side" "$r")
        blog "$l $s $side round $r: $res (v1 bytes, v1 s unshaped, v2 bytes, v2 pull s, run to first output s)"
        if [[ $res == FAIL* ]]; then
          R[$l,$s,$side,fail]=${res#FAIL }
          continue
        fi
        read -r a b c d e <<<"$res"
        R[$l,$s,$side,v1b]+=" $a" R[$l,$s,$side,v1s]+=" $b" R[$l,$s,$side,v2b]+=" $c"
        R[$l,$s,$side,pull]+=" $d" R[$l,$s,$side,run]+=" $e"
        R[$l,$s,$side,tot]+=" $(awk -v a="$d" -v b="$e" 'BEGIN {printf "%.2f", a + b}')"
      done
    done
  done
done

# --- report -----------------------------------------------------------------------------------
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
{
  echo "### CRI pull v1 → v2 over an edge link (\`test/bench/cri_edge_bench.sh\`)"
  echo
  echo "- date: $(date -u '+%F %H:%M UTC'); host: $(uname -srm), $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo) RAM; containerd $(containerd --version | awk '{print $3}')"
  echo "- command: \`sudo test/bench/cri_edge_bench.sh ${SERIES[*]}\` (BENCH_ROUNDS=$ROUNDS_LO on loopback, BENCH_LINK_ROUNDS=$ROUNDS_LINK on the shaped links, BENCH_1M_MAX_MB=$((MAX_1M / 1000000)))"
  echo "- load average at start: $LOAD_START; at end: $LOAD_END; wall time $(secs "$T0" "$EPOCHREALTIME") s"
  echo
  echo "Link verification (veth TCP connect: one handshake over the veth without the relay, best of 5; GET /v2/: what a client sees, first request on a new connection, then on the same connection; download: the probe blob through relay and tbf):"
  echo
  echo "| link | veth TCP connect ms | GET /v2/ new conn ms | GET /v2/ kept-alive ms | download | Mbit/s |"
  echo "|---|---:|---:|---:|---|---:|"
  for l in "${LINKS[@]}"; do [[ -n ${VERIFY[$l]:-} ]] && echo "${VERIFY[$l]}"; done
  echo
  echo "Per series: v2's new layers (what an ordinary pull of v2 fetches after v1) and the delta v1→v2:"
  echo
  echo "| series | v1 → v2 | new layers bytes | delta bytes |"
  echo "|---|---|---:|---:|"
  for s in "${SERIES[@]}"; do echo "| $s | ${V1[$s]} → ${V2[$s]} | ${LAYERS_NEW[$s]} | ${DELTA_BYTES[$s]} |"; done
  echo
  echo "Update v2 (the node holds v1): registry bytes during the CRI PullImage of v2, seconds of the pull, of \`ctr -n k8s.io run\` to the container's first output line, and their sum; medians over the rounds; ratio = di3fs / overlayfs."
  echo
  echo "| link | series | side | v2 bytes | pull s | run to 1st output s | pull + output s | v1 bytes (unshaped) |"
  echo "|---|---|---|---:|---:|---:|---:|---:|"
  for l in "${LINKS[@]}"; do
    for s in "${SERIES[@]}"; do
      for side in di3fs overlayfs; do
        if [[ -n ${R[$l,$s,$side,skip]:-} ]]; then
          b=${R[$l,$s,$side,skip]}
          echo "| $(link_name "$l") | $s | $side | $b (from 10 Mbit/s) | ≥ $(awk -v b="$b" -v r="$(link_bps "$l")" 'BEGIN {printf "%.0f", b * 8 / r}') (computed: transfer alone, not run) | | | |"
          continue
        fi
        if [[ -z ${R[$l,$s,$side,v2b]:-} ]]; then
          echo "| $(link_name "$l") | $s | $side | failed: ${R[$l,$s,$side,fail]:-not run} | | | | |"
          continue
        fi
        echo "| $(link_name "$l") | $s | $side | $(echo "${R[$l,$s,$side,v2b]}" | median) | $(echo "${R[$l,$s,$side,pull]}" | median) | $(echo "${R[$l,$s,$side,run]}" | median) | $(echo "${R[$l,$s,$side,tot]}" | median) | $(echo "${R[$l,$s,$side,v1b]}" | median) |"
      done
      if [[ -n ${R[$l,$s,di3fs,v2b]:-} && -n ${R[$l,$s,overlayfs,v2b]:-} ]]; then
        echo "| | | **ratio** | $(ratio "$(echo "${R[$l,$s,di3fs,v2b]}" | median)" "$(echo "${R[$l,$s,overlayfs,v2b]}" | median)") | $(ratio "$(echo "${R[$l,$s,di3fs,pull]}" | median)" "$(echo "${R[$l,$s,overlayfs,pull]}" | median)") | $(ratio "$(echo "${R[$l,$s,di3fs,run]}" | median)" "$(echo "${R[$l,$s,overlayfs,run]}" | median)") | $(ratio "$(echo "${R[$l,$s,di3fs,tot]}" | median)" "$(echo "${R[$l,$s,overlayfs,tot]}" | median)") | |"
      fi
    done
  done
  echo
  echo "All values per round (pull s / run s):"
  echo
  for l in "${LINKS[@]}"; do
    for s in "${SERIES[@]}"; do
      for side in di3fs overlayfs; do
        [[ -n ${R[$l,$s,$side,pull]:-} ]] && echo "- $l $s $side: pull${R[$l,$s,$side,pull]}; run${R[$l,$s,$side,run]}; v2 bytes${R[$l,$s,$side,v2b]}"
      done
    done
  done
} | tee "$OUT"
blog "report written to $OUT"
