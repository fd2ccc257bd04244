# harness.sh -- a private OCI registry and private containerd "clients" in one
# temp dir, for registry_test.sh and test/bench/registry_bench.sh (sourced
# after lib.sh, never run).
#
# The caller sets H_DIR to a fresh temp dir with a SHORT path (unix socket
# paths are limited to 108 bytes) and calls h_cleanup from its EXIT trap.
#
#   reg_start / reg_stop / reg_kill / reg_gc [ARGS]   Debian's docker-registry
#       on 127.0.0.1:$REG_PORT (data in $H_DIR/registry-data, log in
#       $H_DIR/registry.log); $REG_HOST is "127.0.0.1:$REG_PORT"
#       (REG_HTPASSWD=FILE when reg_config runs: Basic auth, bcrypt htpasswd;
#       REG_TLS_CERT/REG_TLS_KEY: HTTPS with that certificate, REG_TLS_CA the
#       CA reg_up trusts; tls_make_ca DIR makes all three for 127.0.0.1)
#   proxy_start / proxy_kill                          a TCP relay to the
#       registry on 127.0.0.1:$PROXY_PORT with small socket buffers
#       (PROXY_RATE=BYTES: about that many bytes a second through the relay,
#       all connections together: it sleeps after each chunk it forwards)
#   reg_mark / reg_served_since MARK                  body bytes the registry
#       sent for GET requests since MARK (from its access log)
#   client_start NAME [plain]                         containerd with its own
#       root/state/socket; unless "plain", with our di3fs snapshotter as the
#       proxy plugin "di3fs" (root $H_DIR/NAME/sn; extra snapshotter flags in
#       the array H_SNAP_ARGS)
#   client_sock NAME / client_snaproot NAME / client_ctr NAME ARGS...
#   client_stop NAME                                  containers, containerd,
#       snapshotter, shims and di3fs daemons of that client; unmounts
# Everything started here has $H_DIR/ in its command line, which is how
# h_cleanup finds leftovers (containerd shims, detached di3fs daemons).
# shellcheck shell=bash

: "${H_DIR:?set H_DIR to a temp dir before sourcing harness.sh}"
H_SNAP=${H_SNAP:-$D4C_BUILD_DIR/snapshotter/snapshotter}
H_DI3FS=${H_DI3FS:-$D4C_BUILD_DIR/fs/di3fs}
REG_PID=
REG_PORT=
REG_HOST=
declare -gA H_CTRD_PID=() H_SNAP_PID=()
[[ -v H_SNAP_ARGS ]] || H_SNAP_ARGS=()

h_log() { if declare -F e2e_log >/dev/null; then e2e_log "$@"; else echo "$*" >&2; fi; }

# h_wait_for SECONDS CMD...: until CMD succeeds
h_wait_for() {
  local n=$(($1 * 10))
  shift
  while ((n-- > 0)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}

# h_pids_under DIR: pids (not ours) whose command line mentions DIR
h_pids_under() {
  local p
  for p in /proc/[0-9]*; do
    [[ ${p#/proc/} == "$$" || ${p#/proc/} == "$BASHPID" ]] && continue
    tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -F "$1" >/dev/null && echo "${p#/proc/}"
  done
  true
}

# h_umount_under DIR: unmount everything below DIR, deepest first
h_umount_under() {
  awk -v t="$1" 'index($2, t) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  true
}

# h_free_port: a TCP port in 5000..5999 with no listener on this machine
h_free_port() {
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((5000 + RANDOM % 1000))
    [[ -z $(ss -Htln "sport = :$p" 2>/dev/null) ]] && { echo "$p"; return 0; }
  done
  return 1
}

# ------------------------------------------------------------------ registry
reg_config() {
  [[ -n $REG_PORT ]] || REG_PORT=$(h_free_port) || return 1
  REG_HOST=127.0.0.1:$REG_PORT
  cat >"$H_DIR/registry.yml" <<EOF
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: $H_DIR/registry-data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$REG_PORT
EOF
  if [[ -n ${REG_TLS_CERT:-} ]]; then
    cat >>"$H_DIR/registry.yml" <<EOF
  tls:
    certificate: $REG_TLS_CERT
    key: $REG_TLS_KEY
EOF
  fi
  if [[ -n ${REG_HTPASSWD:-} ]]; then
    cat >>"$H_DIR/registry.yml" <<EOF
auth:
  htpasswd:
    realm: d4c-test
    path: $REG_HTPASSWD
EOF
  fi
}

# tls_make_ca DIR: DIR/ca.crt (a CA made here) and DIR/server.crt +
# DIR/server.key (127.0.0.1 and localhost, signed by it); sets REG_TLS_CA,
# REG_TLS_CERT and REG_TLS_KEY for reg_config
tls_make_ca() {
  local d=$1
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=d4c test CA" -keyout "$d/ca.key" -out "$d/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" >/dev/null 2>&1 || return 1
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$d/server.key" -out "$d/server.csr" >/dev/null 2>&1 ||
    return 1
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >"$d/server.ext"
  openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
    -extfile "$d/server.ext" -out "$d/server.crt" >/dev/null 2>&1 || return 1
  REG_TLS_CA=$d/ca.crt REG_TLS_CERT=$d/server.crt REG_TLS_KEY=$d/server.key
}

# reg_url: the registry's base URL (https:// when it has a certificate)
reg_url() { if [[ -n ${REG_TLS_CERT:-} ]]; then echo "https://$REG_HOST"; else echo "http://$REG_HOST"; fi; }

# reg_up: the registry answers /v2/ (200, or 401 when it wants credentials)
reg_up() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 ${REG_TLS_CA:+--cacert "$REG_TLS_CA"} "$(reg_url)/v2/") ||
    return 1
  [[ $code == 200 || $code == 401 ]]
}

# reg_start: start (or restart, same port and data) the registry
reg_start() {
  [[ -f $H_DIR/registry.yml ]] || reg_config || return 1
  if [[ -n $REG_PID ]] && kill -0 "$REG_PID" 2>/dev/null; then return 0; fi
  docker-registry serve "$H_DIR/registry.yml" >>"$H_DIR/registry.log" 2>&1 &
  REG_PID=$!
  disown "$REG_PID"  # no "Killed" job notice when reg_kill kills it
  if ! h_wait_for 20 reg_up; then
    tail -20 "$H_DIR/registry.log" >&2
    echo "harness: docker-registry did not start on $REG_HOST" >&2
    return 1
  fi
}

# reg_stop [SIGNAL]: stop the registry and wait until it is gone
reg_stop() {
  [[ -n $REG_PID ]] || return 0
  kill -"${1:-TERM}" "$REG_PID" 2>/dev/null || true
  h_wait_for 10 sh -c "! kill -0 $REG_PID" || kill -9 "$REG_PID" 2>/dev/null || true
  h_wait_for 5 sh -c "! kill -0 $REG_PID" || true
  REG_PID=
}
reg_kill() { reg_stop KILL; }
# proxy_start: a TCP relay on 127.0.0.1:$PROXY_PORT to the registry, with
# 16 KiB socket buffers on both of its sockets. A killed server's kernel still
# delivers what sits in its socket buffers (megabytes on loopback); behind the
# relay, a client that reads slowly (pull --max-rate) holds at most its own
# receive buffer plus 16 KiB when the relay dies: proxy_kill cuts a download
# where it is. (perl-base only: no extra package.)
proxy_start() {
  [[ -n ${PROXY_PORT:-} ]] || PROXY_PORT=$(h_free_port) || return 1
  cat >"$H_DIR/relay.pl" <<'EOF'
use strict; use warnings;
use IO::Socket::INET; use IO::Select; use Socket qw(SOL_SOCKET SO_SNDBUF);
my ($lport, $tport, $rate) = @ARGV;
$rate ||= 0;  # bytes a second per direction of a connection; 0: no limit
use Time::HiRes qw(sleep);
my $chunk = $rate ? ($rate < 163840 ? (int($rate / 10) || 1) : 16384) : 16384;
my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $lport, Listen => 16, ReuseAddr => 1)
  or die "relay: listen on $lport: $!\n";
my (%peer, %sock);
my $sel = IO::Select->new($l);
sub drop { for my $h (@_) { next unless $h; $sel->remove($h); delete $peer{$h}; close $h; } }
while (1) {
  for my $h ($sel->can_read) {
    if ($h == $l) {
      my $c = $l->accept or next;
      my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $tport) or do { close $c; next };
      setsockopt($c, SOL_SOCKET, SO_SNDBUF, 16384);
      $peer{$c} = $s; $peer{$s} = $c;
      $sel->add($c, $s);
      next;
    }
    my $o = $peer{$h} or next;
    my $n = sysread($h, my $buf, $chunk);
    if (!$n) { drop($h, $o); next; }
    my $off = 0;
    while ($off < $n) {
      my $w = syswrite($o, $buf, $n - $off, $off);
      if (!defined $w) { drop($h, $o); last; }
      $off += $w;
    }
    sleep($n / $rate) if $rate && $n;
  }
}
EOF
  perl "$H_DIR/relay.pl" "$PROXY_PORT" "$REG_PORT" "${PROXY_RATE:-0}" >>"$H_DIR/relay.log" 2>&1 &
  PROXY_PID=$!
  disown "$PROXY_PID"
  h_wait_for 10 sh -c "ss -Htln 'sport = :$PROXY_PORT' | grep -q ." || { cat "$H_DIR/relay.log" >&2; return 1; }
}
proxy_kill() {
  [[ -n ${PROXY_PID:-} ]] || return 0
  kill -9 "$PROXY_PID" 2>/dev/null || true
  h_wait_for 5 sh -c "! kill -0 $PROXY_PID" || true
  PROXY_PID=
}

# reg_gc [ARGS]: garbage-collect with the registry stopped, then restart it
reg_gc() {
  local rc=0
  reg_stop
  docker-registry garbage-collect "$@" "$H_DIR/registry.yml" >>"$H_DIR/gc.log" 2>&1 || rc=$?
  reg_start || return 1
  return "$rc"
}

# reg_mark: a position in the access log; reg_served_since MARK: body bytes of
# all GET responses logged after it (combined log format: "GET uri ..." status bytes)
reg_mark() { wc -l <"$H_DIR/registry.log"; }
reg_served_since() {
  tail -n +"$(($1 + 1))" "$H_DIR/registry.log" |
    awk '/^[0-9.]+ - .*"GET \/v2\// { for (i = 1; i <= NF; i++) if ($i ~ /^HTTP\//) { s += $(i + 2); break } }
         END { printf "%d\n", s }'
}

# ------------------------------------------------------------------ clients
client_dir() { echo "$H_DIR/$1"; }
client_sock() { echo "$H_DIR/$1/c.sock"; }
client_snaproot() { echo "$H_DIR/$1/sn"; }
client_ctr() { local n=$1; shift; ctr --address "$H_DIR/$n/c.sock" "$@"; }

# client_start NAME [plain]
client_start() {
  local n=$1 mode=${2:-di3fs} d=$H_DIR/$1
  mkdir -p "$d"
  {
    cat <<EOF
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$d/c.sock"
[ttrpc]
  address = "$d/c.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
EOF
    if [[ $mode != plain ]]; then
      cat <<EOF
[proxy_plugins]
  [proxy_plugins.di3fs]
    type = "snapshot"
    address = "$d/s.sock"
EOF
    fi
  } >"$d/config.toml"
  if [[ $mode != plain ]]; then
    rm -f "$d/s.sock"
    "$H_SNAP" --root "$d/sn" --address "$d/s.sock" --di3fs "$H_DI3FS" "${H_SNAP_ARGS[@]}" >>"$d/snapshotter.log" 2>&1 &
    H_SNAP_PID[$n]=$!
    if ! h_wait_for 20 test -S "$d/s.sock"; then
      tail -20 "$d/snapshotter.log" >&2
      echo "harness: snapshotter of client $n did not start" >&2
      return 1
    fi
  fi
  containerd --config "$d/config.toml" >>"$d/containerd.log" 2>&1 &
  H_CTRD_PID[$n]=$!
  if ! h_wait_for 30 ctr --address "$d/c.sock" version; then
    tail -20 "$d/containerd.log" >&2
    echo "harness: containerd of client $n did not start" >&2
    return 1
  fi
  h_log "client $n: containerd ${H_CTRD_PID[$n]} on $d/c.sock${H_SNAP_PID[$n]:+, snapshotter ${H_SNAP_PID[$n]} root $d/sn}"
}

client_stop() {
  local n=$1 d=$H_DIR/$1 c pid cp=${H_CTRD_PID[$1]:-} sp=${H_SNAP_PID[$1]:-} i
  if [[ -n $cp ]] && kill -0 "$cp" 2>/dev/null; then
    for c in $(client_ctr "$n" task ls -q 2>/dev/null); do client_ctr "$n" task kill -s SIGKILL "$c" >/dev/null 2>&1 || true; done
    sleep 0.3
    for c in $(client_ctr "$n" task ls -q 2>/dev/null); do client_ctr "$n" task rm -f "$c" >/dev/null 2>&1 || true; done
    for c in $(client_ctr "$n" container ls -q 2>/dev/null); do client_ctr "$n" container rm "$c" >/dev/null 2>&1 || true; done
  fi
  [[ -n $cp ]] && { kill "$cp" 2>/dev/null || true; }
  [[ -n $sp ]] && { kill "$sp" 2>/dev/null || true; }
  for ((i = 0; i < 50; i++)); do
    { [[ -n $cp ]] && kill -0 "$cp" 2>/dev/null; } || { [[ -n $sp ]] && kill -0 "$sp" 2>/dev/null; } || break
    sleep 0.1
  done
  [[ -n $cp ]] && { wait "$cp" 2>/dev/null || true; }
  [[ -n $sp ]] && { wait "$sp" 2>/dev/null || true; }
  # containerd's shims and the detached di3fs daemons (SIGTERM unmounts)
  for pid in $(h_pids_under "$d/"); do kill "$pid" 2>/dev/null || true; done
  for ((i = 0; i < 20; i++)); do [[ -z $(h_pids_under "$d/") ]] && break; sleep 0.1; done
  for pid in $(h_pids_under "$d/"); do kill -9 "$pid" 2>/dev/null || true; done
  h_umount_under "$d/"
  unset "H_CTRD_PID[$n]" "H_SNAP_PID[$n]"
  true
}

# h_cleanup: stop every client and the registry, kill leftovers, unmount;
# removes H_DIR unless KEEP_TMP or D4C_KEEP_E2E is set
h_cleanup() {
  set +e
  local n pid
  for n in "${!H_CTRD_PID[@]}" "${!H_SNAP_PID[@]}"; do client_stop "$n"; done
  proxy_kill
  reg_stop
  for pid in $(h_pids_under "$H_DIR/"); do kill "$pid" 2>/dev/null; done
  sleep 0.5
  for pid in $(h_pids_under "$H_DIR/"); do kill -9 "$pid" 2>/dev/null; done
  h_umount_under "$H_DIR/"
  if [[ -z ${KEEP_TMP:-} && -z ${D4C_KEEP_E2E:-} ]]; then rm -rf "$H_DIR"; fi
}

# ------------------------------------------------------------------ CRI clients
# cri_client_start NAME di3fs|overlayfs CERTS_DIR: containerd with its CRI
# plugin (socket $H_DIR/NAME/c.sock, registries from CERTS_DIR/HOST/hosts.toml);
# "di3fs": our snapshotter as proxy plugin "di3fs" (--hosts-dir CERTS_DIR) and
# CRI's `snapshotter = "di3fs"`, `disable_snapshot_annotations = false`, as
# docs/operations.md sets up Kubernetes; "overlayfs": a stock containerd.
# Stopped by client_stop / h_cleanup like client_start's clients.
cri_client_start() {
  local n=$1 mode=$2 certs=$3 d=$H_DIR/$1
  mkdir -p "$d/cni/bin" "$d/cni/conf"
  {
    cat <<EOF2
version = 2
root = "$d/root"
state = "$d/state"
[grpc]
  address = "$d/c.sock"
[ttrpc]
  address = "$d/c.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
EOF2
    if [[ $mode == di3fs ]]; then
      cat <<EOF2
[proxy_plugins]
  [proxy_plugins.di3fs]
    type = "snapshot"
    address = "$d/s.sock"
EOF2
    fi
    cat <<EOF2
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "$mode"
    disable_snapshot_annotations = $([[ $mode == di3fs ]] && echo false || echo true)
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$d/cni/bin"
    conf_dir = "$d/cni/conf"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$certs"
EOF2
  } >"$d/config.toml"
  if [[ $mode == di3fs ]]; then
    rm -f "$d/s.sock"
    "$H_SNAP" --root "$d/sn" --address "$d/s.sock" --di3fs "$H_DI3FS" --hosts-dir "$certs" \
      "${H_SNAP_ARGS[@]}" >>"$d/snapshotter.log" 2>&1 &
    H_SNAP_PID[$n]=$!
    if ! h_wait_for 20 test -S "$d/s.sock"; then
      tail -20 "$d/snapshotter.log" >&2
      echo "harness: snapshotter of CRI client $n did not start" >&2
      return 1
    fi
  fi
  containerd --config "$d/config.toml" >>"$d/containerd.log" 2>&1 &
  H_CTRD_PID[$n]=$!
  if ! h_wait_for 30 ctr --address "$d/c.sock" version; then
    tail -20 "$d/containerd.log" >&2
    echo "harness: containerd of CRI client $n did not start" >&2
    return 1
  fi
  h_log "CRI client $n ($mode): containerd ${H_CTRD_PID[$n]} on $d/c.sock"
}

# h_hosts_toml CERTS_DIR HOST: HOST is a plain-HTTP registry (containerd 1.6
# ignores a hosts.toml without a [host] section)
h_hosts_toml() {
  mkdir -p "$1/$2"
  cat >"$1/$2/hosts.toml" <<EOF2
server = "http://$2"
[host."http://$2"]
  capabilities = ["pull", "resolve"]
EOF2
}
