#!/usr/bin/env bash
# install_snapshotter.sh: install the di3fs snapshotter next to containerd.
#
#   sudo ./install_snapshotter.sh [--build-dir DIR] [--prefix /usr/local]
#        [--config /etc/containerd/config.toml] [--root /var/lib/di3fs]
#        [--address /run/di3fs/snapshotter.sock] [--no-systemd] [--config-only]
#        [--cri-image-proxy /run/di3fs/cri-image.sock] [--restart-containerd]
#
#  1. copies snapshotter, di3fs and ctr-cli from the build dir to PREFIX/bin
#  2. adds the proxy plugin to containerd's config, idempotently:
#       [proxy_plugins.di3fs]
#         type = "snapshot"
#         address = "<socket>"
#     never twice, keeping the rest of the file; creates a version 2 config
#     when there is none (a backup CONFIG.bak-<time> is kept when it changes)
#  3. installs and starts di3fs-snapshotter.socket and .service: systemd
#     holds the socket, so containerd's connections wait (instead of being
#     refused) while the service restarts; KillMode=process: di3fs mounts of
#     running containers survive a restart of the unit; the service's
#     descriptor store (FileDescriptorStoreMax=) keeps a copy of each di3fs
#     FUSE connection across crashes and restarts of the snapshotter.
#     --cri-image-proxy SOCK: the snapshotter also serves the CRI image proxy
#     there, and di3fs-snapshotter-cri.socket holds that socket too
# containerd reads proxy_plugins at start: restart it once after the first
# install (--restart-containerd does). --no-systemd: no units; run
# `snapshotter --supervise ...` to keep the socket across restarts.
# See docs/operations.md.
set -euo pipefail

BUILD_DIR=${BUILD_DIR:-$(cd "$(dirname "$0")" && pwd)/build}
PREFIX=/usr/local
CONFIG=/etc/containerd/config.toml
ROOT=/var/lib/di3fs
ADDRESS=/run/di3fs/snapshotter.sock
SYSTEMD=1
CONFIG_ONLY=0
RESTART_CONTAINERD=0
UNIT=/etc/systemd/system/di3fs-snapshotter.service
CRI_PROXY=

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while (($#)); do
  case $1 in
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    --prefix) PREFIX=$2; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    --root) ROOT=$2; shift 2 ;;
    --address) ADDRESS=$2; shift 2 ;;
    --cri-image-proxy) CRI_PROXY=$2; shift 2 ;;
    --unit) UNIT=$2; shift 2 ;;  # the .service path; the .socket goes beside it
    --no-systemd) SYSTEMD=0; shift ;;
    --config-only) CONFIG_ONLY=1; SYSTEMD=0; shift ;;
    --restart-containerd) RESTART_CONTAINERD=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "install_snapshotter.sh: unknown argument $1" >&2; usage 2 ;;
  esac
done
log() { echo "install_snapshotter: $*"; }

# --- containerd config --------------------------------------------------------
# Prints 0 if CONFIG already names the plugin (any quoting), 1 otherwise.
has_plugin() {
  [[ -f $CONFIG ]] && grep -Eq '^[[:space:]]*\[[[:space:]]*proxy_plugins[[:space:]]*\.[[:space:]]*("di3fs"|di3fs|'"'"'di3fs'"'"')[[:space:]]*\]' "$CONFIG"
}
plugin_block() {
  cat <<EOF

# di3fs snapshotter (added by install_snapshotter.sh): ctr run --snapshotter=di3fs
[proxy_plugins.di3fs]
  type = "snapshot"
  address = "$ADDRESS"
EOF
}
configure_containerd() {
  mkdir -p "$(dirname "$CONFIG")"
  if [[ ! -f $CONFIG ]]; then
    { echo "version = 2"; plugin_block; } >"$CONFIG.tmp.$$"
    mv "$CONFIG.tmp.$$" "$CONFIG"
    log "created $CONFIG (version 2) with [proxy_plugins.di3fs]"
    return
  fi
  if has_plugin; then
    local addr
    addr=$(awk '/^[[:space:]]*\[/ {inblk = ($0 ~ /proxy_plugins[[:space:]]*\.[[:space:]]*"?di3fs"?[[:space:]]*\]/)}
                inblk && /^[[:space:]]*address[[:space:]]*=/ {sub(/^[^=]*=[[:space:]]*/, ""); gsub(/"/, ""); print}' "$CONFIG")
    if [[ $addr != "$ADDRESS" ]]; then
      log "WARNING: $CONFIG already has [proxy_plugins.di3fs] with address '$addr', not '$ADDRESS'; left unchanged"
    else
      log "$CONFIG already has [proxy_plugins.di3fs]; unchanged"
    fi
    return
  fi
  cp -p "$CONFIG" "$CONFIG.bak-$(date +%Y%m%d%H%M%S)"
  { cat "$CONFIG"; [[ -z $(tail -c1 "$CONFIG") ]] || echo; plugin_block; } >"$CONFIG.tmp.$$"
  chmod --reference="$CONFIG" "$CONFIG.tmp.$$"
  mv "$CONFIG.tmp.$$" "$CONFIG"
  log "added [proxy_plugins.di3fs] (address $ADDRESS) to $CONFIG"
}

if ((CONFIG_ONLY)); then
  configure_containerd
  exit 0
fi

[[ $(id -u) -eq 0 ]] || { echo "install_snapshotter.sh: run as root" >&2; exit 1; }

# --- binaries -------------------------------------------------------------------
declare -A SRC=([snapshotter]=snapshotter/snapshotter [di3fs]=fs/di3fs [ctr-cli]=ctr-cli/ctr-cli)
for b in "${!SRC[@]}"; do
  [[ -x $BUILD_DIR/${SRC[$b]} ]] || { echo "install_snapshotter.sh: $BUILD_DIR/${SRC[$b]} not built (--build-dir?)" >&2; exit 1; }
done
install -d "$PREFIX/bin"
for b in "${!SRC[@]}"; do
  # install writes a new file and renames it: a running di3fs keeps its old binary
  install -m 0755 "$BUILD_DIR/${SRC[$b]}" "$PREFIX/bin/$b"
done
log "installed snapshotter, di3fs, ctr-cli to $PREFIX/bin"
install -d -m 0700 "$ROOT"
configure_containerd

# --- systemd ---------------------------------------------------------------------
CRI_ARGS=
[[ -n $CRI_PROXY ]] && CRI_ARGS=" --cri-image-proxy $CRI_PROXY"
if ((SYSTEMD)); then
  SOCKET_UNIT=${UNIT%.service}.socket
  CRI_SOCKET_UNIT=${UNIT%.service}-cri.socket
  mkdir -p "$(dirname "$UNIT")"
  SOCKET_NAME=$(basename "$SOCKET_UNIT")
  CRI_SOCKET_NAME=$(basename "$CRI_SOCKET_UNIT")
  SERVICE_NAME=$(basename "$UNIT")
  SOCKETS=$SOCKET_NAME
  [[ -n $CRI_PROXY ]] && SOCKETS="$SOCKET_NAME $CRI_SOCKET_NAME"
  # A socket unit: FILE DESCRIPTION ADDRESS FDNAME [a line for [Unit]].
  socket_unit() {
    local extra=${5:-}
    [[ -z $extra ]] || extra+=$'\n'
    cat >"$1" <<EOF
[Unit]
Description=$2
Documentation=file://$(cd "$(dirname "$0")" && pwd)/docs/operations.md
${extra}
[Socket]
ListenStream=$3
# The snapshotter finds this socket by name among the descriptors it is passed.
FileDescriptorName=$4
SocketMode=0600
DirectoryMode=0755
Accept=no
Service=$SERVICE_NAME

[Install]
WantedBy=sockets.target
EOF
  }
  # systemd binds the socket and passes it (LISTEN_FDS): it stays while the
  # service restarts or crashes, connections wait in its backlog.
  socket_unit "$SOCKET_UNIT.tmp" "di3fs snapshotter socket (containerd's proxy plugin di3fs connects here)" \
    "$ADDRESS" snapshotter "Before=containerd.service"
  # The CRI image proxy's socket (kubelet's --image-service-endpoint): kept
  # by systemd across restarts of the service, like the Snapshots socket.
  [[ -z $CRI_PROXY ]] || socket_unit "$CRI_SOCKET_UNIT.tmp" \
    "di3fs snapshotter CRI image proxy socket (kubelet's image service endpoint)" "$CRI_PROXY" cri-image-proxy
  cat >"$UNIT.tmp" <<EOF
[Unit]
Description=di3fs snapshotter (containerd proxy snapshotter for cdimg delta images)
Documentation=file://$(cd "$(dirname "$0")" && pwd)/docs/operations.md
Requires=$SOCKETS
After=$SOCKETS local-fs.target
Before=containerd.service

[Service]
Type=simple
ExecStart=$PREFIX/bin/snapshotter --root $ROOT --address $ADDRESS --di3fs $PREFIX/bin/di3fs$CRI_ARGS
Restart=always
RestartSec=100ms
# Only the snapshotter is stopped on stop/restart: the di3fs daemons it
# started serve the lower dirs of running containers and must live on.
KillMode=process
LimitNOFILE=1048576
# Descriptor store: the snapshotter stores a copy of each di3fs daemon's
# /dev/fuse descriptor (FDSTORE=1 to NOTIFY_SOCKET, hence NotifyAccess=main)
# and gets them back on its next start, so a kill -9 of the snapshotter and
# a daemon at once does not end that FUSE connection. One per mounted image.
# systemd 252 keeps the store across crashes and restarts, not across
# systemctl stop (FileDescriptorStorePreserve= needs systemd 254).
FileDescriptorStoreMax=4096
NotifyAccess=main

[Install]
WantedBy=multi-user.target
EOF
  socket_changed=1
  cmp -s "$SOCKET_UNIT.tmp" "$SOCKET_UNIT" && socket_changed=0
  if [[ -n $CRI_PROXY ]]; then
    cmp -s "$CRI_SOCKET_UNIT.tmp" "$CRI_SOCKET_UNIT" || socket_changed=1
  fi
  if command -v systemd-analyze >/dev/null; then
    # checked under their final names (the unit type comes from the name)
    vdir=$(mktemp -d)
    cp "$SOCKET_UNIT.tmp" "$vdir/$SOCKET_NAME"
    cp "$UNIT.tmp" "$vdir/$SERVICE_NAME"
    verify=("$vdir/$SOCKET_NAME" "$vdir/$SERVICE_NAME")
    if [[ -n $CRI_PROXY ]]; then
      cp "$CRI_SOCKET_UNIT.tmp" "$vdir/$CRI_SOCKET_NAME"
      verify+=("$vdir/$CRI_SOCKET_NAME")
    fi
    if ! out=$(systemd-analyze verify --man=no "${verify[@]}" 2>&1); then
      log "WARNING: systemd-analyze verify: $out"
    fi
    rm -rf "$vdir"
  fi
  mv "$SOCKET_UNIT.tmp" "$SOCKET_UNIT"
  if [[ -n $CRI_PROXY ]]; then mv "$CRI_SOCKET_UNIT.tmp" "$CRI_SOCKET_UNIT"; fi
  mv "$UNIT.tmp" "$UNIT"
  log "installed $SOCKETS and $UNIT"
  if [[ -d /run/systemd/system ]]; then
    systemctl daemon-reload
    # shellcheck disable=SC2086 # SOCKETS: one or two unit names
    systemctl enable $SOCKETS "$SERVICE_NAME"
    if ((socket_changed)); then
      # First install with the socket units, or a new address: the running
      # snapshotter (which may have bound the sockets itself) stops first.
      systemctl stop "$SERVICE_NAME"
      # shellcheck disable=SC2086
      systemctl restart $SOCKETS
      systemctl start "$SERVICE_NAME"
    else
      systemctl restart "$SERVICE_NAME"  # the socket stays: no refused connection
    fi
    log "$SOCKETS and $SERVICE_NAME started"
    if ((RESTART_CONTAINERD)); then
      systemctl restart containerd.service
      log "containerd restarted"
    else
      log "restart containerd once so it loads the proxy plugin: systemctl restart containerd"
    fi
  else
    log "systemd is not running here: start $PREFIX/bin/snapshotter --supervise --root $ROOT --address $ADDRESS$CRI_ARGS yourself"
  fi
else
  log "no systemd unit: start $PREFIX/bin/snapshotter --supervise --root $ROOT --address $ADDRESS --di3fs $PREFIX/bin/di3fs$CRI_ARGS"
  log "  (--supervise keeps the sockets and the FUSE connections across restarts and crashes of the snapshotter; see docs/operations.md)"
fi
