#!/usr/bin/env bash
# setup.sh -- install every build, test and benchmark dependency of d4c from
# Debian's packages. Idempotent: safe to run again; each step is skipped when
# its result is already there. Needs root (apt, /usr/local).
#
# Also builds libxdelta3 (static) from Debian's xdelta3 *source* package:
# Debian ships only the xdelta3 binary, not the library, so we enable a deb-src
# entry for the configured mirror and compile xdelta3.c ourselves.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
log() { printf '[setup %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

[[ $(id -u) -eq 0 ]] || { echo "setup.sh: must run as root (apt-get, /usr/local)" >&2; exit 1; }

PKGS=(
  # build
  build-essential cmake ninja-build ccache pkg-config clang lld libclang-rt-14-dev libfuzzer-14-dev
  dpkg-dev
  # libraries
  libfuse3-dev fuse3 libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libzstd-dev zstd zlib1g-dev liblzma-dev libbz2-dev libarchive-dev liblz4-dev nlohmann-json3-dev libabsl-dev catch2
  libcurl4-openssl-dev libssl-dev nettle-dev libsqlite3-dev libspdlog-dev libcli11-dev libdivsufsort-dev libtomlplusplus-dev
  # runtime peers for end-to-end tests (real containerd, runc, registry)
  containerd runc docker-registry golang-github-containerd-containerd-dev
  # corpus + comparison tools for tests and benchmarks
  umoci skopeo apache2-utils debootstrap jq pigz rsync busybox-static xdelta3 casync squashfuse squashfs-tools
  hyperfine attr acl util-linux procps psmisc curl bc bsdiff time
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep 'install ok installed' >/dev/null || missing+=("$p")
done
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "all Debian packages present"
fi

# Node.js/npm is needed by the corpus builder (npm pack); the machine image has it.
command -v npm >/dev/null || { apt-get install -y -qq --no-install-recommends npm >/dev/null; }

# ---------------------------------------------------------------- libxdelta3
XD_PREFIX=/usr/local
XD_STAMP=$XD_PREFIX/lib/libxdelta3.a
if [[ ! -f $XD_STAMP || ! -f $XD_PREFIX/include/xdelta3/xdelta3.h ]]; then
  # enable deb-src for the configured mirror if there is none
  if ! grep -rqs '^Types:.*deb-src\|^deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "enabling deb-src entries"
    if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
      sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
        >/etc/apt/sources.list.d/d4c-debian-src.sources
    else
      grep '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' >/etc/apt/sources.list.d/d4c-src.list
    fi
    apt-get update -qq
  fi
  work=$(mktemp -d)
  log "apt-get source xdelta3 (in $work)"
  ( cd "$work" && apt-get source -qq xdelta3 >/dev/null 2>&1 )
  src=$(find "$work" -maxdepth 2 -name xdelta3.c -printf '%h\n' | head -n1)
  [[ -n $src ]] || { echo "setup.sh: xdelta3.c not found in Debian's xdelta3 source" >&2; exit 1; }
  log "building libxdelta3.a from $src"
  # Flags follow the upstream library build: no main(), secondary compressors on,
  # 64-bit offsets. -fPIC so it can link into shared objects too.
  cc -O2 -fPIC -c "$src/xdelta3.c" -o "$work/xdelta3.o" -I"$src" \
     -DXD3_MAIN=0 -DXD3_DEBUG=0 -DXD3_USE_LARGEFILE64=1 -DSECONDARY_DJW=1 -DSECONDARY_FGK=1 \
     -DSECONDARY_LZMA=0 -DEXTERNAL_COMPRESSION=0 -DSIZEOF_SIZE_T=8 -DSIZEOF_UNSIGNED_LONG_LONG=8 \
     -Wno-all
  ar rcs "$work/libxdelta3.a" "$work/xdelta3.o"
  install -d "$XD_PREFIX/include/xdelta3" "$XD_PREFIX/lib"
  install -m644 "$src"/xdelta3*.h "$XD_PREFIX/include/xdelta3/"
  install -m644 "$work/libxdelta3.a" "$XD_STAMP"
  rm -rf "$work"
else
  log "libxdelta3 present ($XD_STAMP)"
fi

# FUSE: allow_other for the snapshotter's mounts
if [[ -f /etc/fuse.conf ]] && ! grep -q '^user_allow_other' /etc/fuse.conf; then
  echo user_allow_other >>/etc/fuse.conf
fi
log "setup complete"
