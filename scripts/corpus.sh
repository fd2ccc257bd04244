#!/usr/bin/env bash
# corpus.sh -- build (or reuse) the real-image corpus that tests and
# benchmarks measure on. Real third-party software in consecutive versions,
# every download pinned by version and sha256; the result is cached outside
# the repository and never committed.
#
#   sudo bash scripts/corpus.sh [SERIES...]      (default: every series)
#
# Series (docs/corpus.md says why these):
#   typescript  5.4.2 5.4.3 5.4.4 5.4.5  busybox base layer + npm `typescript` (large JS text)
#   biome       1.9.2 1.9.3 1.9.4        busybox base layer + npm `@biomejs/biome` and its
#                                        30 MB Rust binary `@biomejs/cli-linux-x64`
#   debian      v1 v2                    debootstrap minbase bookworm in one layer; v2 is v1
#                                        after `apt-get upgrade` from bookworm-updates/-security
#   debian-python v1 v2                  the same base with python3 installed (bookworm), one
#                                        layer; v2 is v1 after the same `apt-get upgrade`
#   debian-tomcat v1 v2                  the same base with `libtomcat10-java` (Tomcat's 31 jars)
#                                        from bookworm, one layer; v2 is v1 after the same
#                                        `apt-get upgrade` (Tomcat 10.1.55 -> 10.1.60 from -security)
# Built only when named (benchmarks of long update histories; tests do not use them):
#   prettier    3.0.0 ... 3.6.0 (24)     busybox base layer + npm `prettier`, 24 consecutive releases
#   vite        5.4.8 5.4.9 5.4.10 5.4.11  busybox base layer + npm `vite`: every release renames
#                                        its content-hashed chunks (dist/node/chunks/dep-<hash>.js)
#
# Output, in $D4C_CORPUS (default /var/cache/d4c-corpus), per series S and version T:
#   S/oci/                    OCI image layout, one tag per version
#   S/docker/S-T.tar          the same image as a docker-archive (skopeo)
#   S/rootfs/T/rootfs/        the flattened root filesystem (`umoci unpack` of the image):
#                             the reference every fidelity test compares with
#   corpus-stats.tsv          one row per image (columns in write_stats below)
#
# Every step is skipped when its output exists: delete an output to rebuild it.
# Needs root and network access to the npm registry and the Debian mirror.
# A cold build takes a few minutes and about 2 GB.
set -euo pipefail
export LC_ALL=C

CORPUS=${D4C_CORPUS:-/var/cache/d4c-corpus}
DEBIAN_MIRROR=${D4C_DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY=${D4C_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
SUITE=bookworm
# Every file this script writes itself, and every date in the image configs,
# is this time, so that the npm images are the same bytes on every machine.
EPOCH=1700000000
export SOURCE_DATE_EPOCH=$EPOCH
CREATED=$(date -u -d "@$EPOCH" +%FT%TZ)

say() { printf '[corpus %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { say "error: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (debootstrap, chroot, file ownership in the images)"
for tool in umoci skopeo debootstrap jq pigz zstd rsync npm; do
  command -v "$tool" >/dev/null || die "$tool is missing: run scripts/setup.sh first"
done
[[ -x /bin/busybox ]] || die "/bin/busybox is missing (Debian package busybox-static): run scripts/setup.sh"

# --------------------------------------------------------------------- pins
# npm tarballs: file name in the download cache, package@version, sha256.
PINS=$(cat <<'EOF'
typescript-5.4.2.tgz             typescript@5.4.2                b4b5b42332259a8eae3e8262ab60e4b8f441b761cdd8f3c61c5bc6c1926bd08b
typescript-5.4.3.tgz             typescript@5.4.3                c1fe425dd986563370ea040a173022216ac93dc4d5e977e6f6d47539302f1090
typescript-5.4.4.tgz             typescript@5.4.4                0a5b3b80f055936eef797431778bbb3c39c1a4d3fcdbea16f9ac9dc343454c48
typescript-5.4.5.tgz             typescript@5.4.5                154fae77169f04155ac52d521ac59abb07c9be29ea3744732adbf9f14abb2440
biomejs-biome-1.9.2.tgz          @biomejs/biome@1.9.2            f7353429b4937ecdbf6db1c4232fdcfcecfd7282937b0f5e00a295390058ce35
biomejs-biome-1.9.3.tgz          @biomejs/biome@1.9.3            0e0ecbac1632fb096adb4a8a1f1e448276a2c48691862b838a090720c69322e8
biomejs-biome-1.9.4.tgz          @biomejs/biome@1.9.4            f997e954675c5c2c10906bbbcfb383b1a1267c6e07d601ebb29003a45dad1ff5
biomejs-cli-linux-x64-1.9.2.tgz  @biomejs/cli-linux-x64@1.9.2    59592dd1b46bcd55c981e9cfb35cd879f6c53280b06847bce11128a8b115968e
biomejs-cli-linux-x64-1.9.3.tgz  @biomejs/cli-linux-x64@1.9.3    6f2bdfc3d62979ba2b5b0a052f9a807d4be3feb457932c49154f2091f51be34b
biomejs-cli-linux-x64-1.9.4.tgz  @biomejs/cli-linux-x64@1.9.4    3e38f0368640ac9d25cca30199a4070ee6179f330d9f0f432aac6e21020269d7
prettier-3.0.0.tgz               prettier@3.0.0                  dda3aa3beec7c9cefa2a0716628d6440f31e5e10acb1a5eb64ea4337ad358030
prettier-3.0.1.tgz               prettier@3.0.1                  5b75344a01d2728ddf269ccf70c37c823aec01440b30a28e33d17068eec87eaa
prettier-3.0.2.tgz               prettier@3.0.2                  1bb4aeae5300640dd6aa09f1d4787a0ee3e9a0e923bee5f24b0a209de402d642
prettier-3.0.3.tgz               prettier@3.0.3                  2a9f3c47d99b4fa4167793a70b291abc051092659e7c2fa32c6c95cf231a2eca
prettier-3.1.0.tgz               prettier@3.1.0                  9f0e0d855654470f15dc68a78ebe6861e921eb326c0522ffec54d06e71009274
prettier-3.1.1.tgz               prettier@3.1.1                  fb6213d29bcc213b8a996c612be41d5891f18545edb73589ea6d6fce2055d4b6
prettier-3.2.0.tgz               prettier@3.2.0                  df08ffd4726107dd610e76d45548f9a76e2f9d85c85a2d64ea86e6bebfeef2a2
prettier-3.2.1.tgz               prettier@3.2.1                  f630ade698d30aea7862c6ae9804c1ffb93b1de51480f0965f0aa459dd576f91
prettier-3.2.2.tgz               prettier@3.2.2                  e9e60cdd9a0777eada39ea5c147788cae93f19740641822f7f5c73aa93697d42
prettier-3.2.3.tgz               prettier@3.2.3                  63412efa1404bde24898ddb6bdeea3720e4144d73fe245cb695685ec67d7f134
prettier-3.2.4.tgz               prettier@3.2.4                  753dffcd98f5b1e384bde219f710edb554e43d05ccfb8fe14ed3938d99adac4b
prettier-3.2.5.tgz               prettier@3.2.5                  a9d68ae56e5b0fea5c9d8e68b67104dae8445db21e1d24fb3522f3f4c0fb271d
prettier-3.3.0.tgz               prettier@3.3.0                  4b2b347100ba4f9fbf35df3295ba3cf3438d9f967b267c1aa8e2c943f8ee1c0d
prettier-3.3.1.tgz               prettier@3.3.1                  af1a4838577a569b1e67b1b2788645ab7974ee82a443e9524b3c0fc1536c2093
prettier-3.3.2.tgz               prettier@3.3.2                  612c21a86f7bdbcdd57ce0d1b3f6f205705f5e673310513ebf3f587d63c34cec
prettier-3.3.3.tgz               prettier@3.3.3                  2f1ecb0ab57a588e0d4d40d3d45239e71ebd8f0190199d0d3f87fe2283639f46
prettier-3.4.0.tgz               prettier@3.4.0                  dab512634a0514d7319821f60edbbb8dd1fe37fe51121267dcdc5a931ee8f7da
prettier-3.4.1.tgz               prettier@3.4.1                  a557639eb38d13b308a9a42c0ceffbb6041a3618036026a52cea328075ac3942
prettier-3.4.2.tgz               prettier@3.4.2                  dbf7e35264a81347c9aa91989042201dd6371fb20465bcc7d138de635a828403
prettier-3.5.0.tgz               prettier@3.5.0                  c77a994f9119074b8d6de9e9459ae80b49b4b2198a42416a10fe397cbfaf318a
prettier-3.5.1.tgz               prettier@3.5.1                  6045af17c434fdfb0354fc4c0d1f9714adc379f6c9595729290c6bd1b51e33f3
prettier-3.5.2.tgz               prettier@3.5.2                  8ea719551d8c0e5f75ee41a411cbf543523d2157db0d1ea83323fb5506812851
prettier-3.5.3.tgz               prettier@3.5.3                  14841de7b71a93123d22997db22d088debb13976778d869e3622199108e85b4b
prettier-3.6.0.tgz               prettier@3.6.0                  beef60291daec2fb569e300117ae380d3dba81cd248496ac66e50042b8686c31
vite-5.4.8.tgz                   vite@5.4.8                      0ea4fafa19783ea955192478cd7ef2b5b305a4f08752018c38eb1bdade3af888
vite-5.4.9.tgz                   vite@5.4.9                      45898720cbe624d415ab5a55e242ea37ad447d0562d173ef66e49fac0887fccb
vite-5.4.10.tgz                  vite@5.4.10                     2ef8583733cc62afbe9beb48e0a4cfe08518e02883b6120065ae0c81877dc7ec
vite-5.4.11.tgz                  vite@5.4.11                     e970ff612f455681c5e56ea699ec0828c68ffa89e05aa135ae4d7d0326b5198a
EOF
)

# fetch_npm FILE: prints the path of the verified tarball, downloading it once.
fetch_npm() {
  local file=$1 spec sha dl=$CORPUS/dl
  read -r _ spec sha < <(awk -v f="$file" '$1 == f' <<<"$PINS")
  [[ -n ${sha:-} ]] || die "no pin for $file"
  mkdir -p "$dl"
  if ! sha256sum --status -c <<<"$sha  $dl/$file" 2>/dev/null; then
    say "npm pack $spec"
    rm -f "$dl/$file"
    (cd "$dl" && timeout 300 npm pack --silent "$spec" >/dev/null) || die "npm pack $spec failed"
    sha256sum --status -c <<<"$sha  $dl/$file" ||
      die "$dl/$file does not have the pinned sha256 $sha (the registry served other bytes)"
  fi
  echo "$dl/$file"
}

# unpack_npm FILE DIR: the package's files into DIR (npm's `package/` prefix dropped).
unpack_npm() {
  local tgz; tgz=$(fetch_npm "$1")
  mkdir -p "$2"
  tar -xzf "$tgz" -C "$2" --strip-components=1 --no-same-owner
}

stamp() { find "$@" -exec touch -h -d "@$EPOCH" {} +; }
# grep reads all of umoci's output: `grep -q` would exit at the match, umoci
# could die of SIGPIPE writing the next tag, and pipefail would then call an
# existing tag missing and rebuild it (new mtimes: the corpus no longer
# matches its exports; seen in a CI rehearsal).
tag_exists() { [[ -d $1 ]] && umoci ls --layout "$1" 2>/dev/null | grep -x -- "$2" >/dev/null; }

# ------------------------------------------------------------- base layer
# A small busybox userland shared by the npm series: one layer, fixed mtimes.
BASE=$CORPUS/base/oci
make_base() {
  tag_exists "$BASE" base && return
  say "base layer (busybox-static $(dpkg-query -W -f='${Version}' busybox-static))"
  rm -rf "$CORPUS/base"
  mkdir -p "$CORPUS/base"
  umoci init --layout "$BASE"
  umoci new --image "$BASE:empty"
  local bundle=$CORPUS/base/bundle
  umoci unpack --image "$BASE:empty" "$bundle"
  local root=$bundle/rootfs
  mkdir -p "$root"/{bin,etc,root,tmp,usr/local/bin,app}
  chmod 1777 "$root/tmp"
  chmod 0700 "$root/root"
  install -m 0755 /bin/busybox "$root/bin/busybox"
  local applet
  for applet in sh ash ls cat cp mv rm mkdir ln echo env grep sed tar gzip ps id wc head tail; do
    ln -s busybox "$root/bin/$applet"
  done
  printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$root/etc/passwd"
  printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$root/etc/group"
  stamp "$root"
  umoci repack --history.created "$CREATED" --image "$BASE:base" "$bundle"
  umoci config --history.created "$CREATED" --image "$BASE:base" --config.env PATH=/usr/local/bin:/bin --config.cmd /bin/sh \
    --author d4c-bench --created "$CREATED"
  umoci rm --image "$BASE:empty"
  umoci gc --layout "$BASE"
  rm -rf "$bundle"
}

# ------------------------------------------------------------ app layers
# app_typescript VERSION DIR / app_biome VERSION DIR: what the app layer adds.
app_typescript() {
  local mods=$2/app/node_modules
  unpack_npm "typescript-$1.tgz" "$mods/typescript"
  mkdir -p "$mods/.bin" "$2/usr/local/bin"
  ln -s ../typescript/bin/tsc "$mods/.bin/tsc"
  ln -s ../typescript/bin/tsserver "$mods/.bin/tsserver"
  ln -s /app/node_modules/typescript/bin/tsc "$2/usr/local/bin/tsc"
}
app_biome() {
  local mods=$2/app/node_modules
  unpack_npm "biomejs-biome-$1.tgz" "$mods/@biomejs/biome"
  unpack_npm "biomejs-cli-linux-x64-$1.tgz" "$mods/@biomejs/cli-linux-x64"
  mkdir -p "$mods/.bin" "$2/usr/local/bin"
  ln -s ../@biomejs/biome/bin/biome "$mods/.bin/biome"
  ln -s /app/node_modules/@biomejs/cli-linux-x64/biome "$2/usr/local/bin/biome"
}

app_prettier() {
  local mods=$2/app/node_modules
  unpack_npm "prettier-$1.tgz" "$mods/prettier"
  mkdir -p "$mods/.bin" "$2/usr/local/bin"
  ln -s ../prettier/bin/prettier.cjs "$mods/.bin/prettier"
  ln -s /app/node_modules/prettier/bin/prettier.cjs "$2/usr/local/bin/prettier"
}

app_vite() {
  local mods=$2/app/node_modules
  unpack_npm "vite-$1.tgz" "$mods/vite"
  mkdir -p "$mods/.bin" "$2/usr/local/bin"
  ln -s ../vite/bin/vite.js "$mods/.bin/vite"
  ln -s /app/node_modules/vite/bin/vite.js "$2/usr/local/bin/vite"
}

# app_image SERIES VERSION: the base layer plus one app layer, tagged VERSION.
app_image() {
  local series=$1 version=$2 layout=$CORPUS/$1/oci work=$CORPUS/$1/work
  make_base
  [[ -d $layout ]] || { mkdir -p "$CORPUS/$series"; cp -a "$BASE" "$layout"; }
  if ! tag_exists "$layout" "$version"; then
    say "$series:$version app layer"
    rm -rf "$work/bundle-$version" "$work/stage-$version"
    mkdir -p "$work/stage-$version"
    umoci unpack --image "$layout:base" "$work/bundle-$version"
    "app_$series" "$version" "$work/stage-$version"
    stamp "$work/stage-$version"
    cp -a "$work/stage-$version/." "$work/bundle-$version/rootfs/"
    umoci repack --history.created "$CREATED" --image "$layout:$version" "$work/bundle-$version"
    umoci config --history.created "$CREATED" --image "$layout:$version" \
      --config.label "org.opencontainers.image.version=$version" \
      --config.label "org.opencontainers.image.title=$series" \
      --config.workingdir /app --created "$CREATED"
    rm -rf "$work/bundle-$version" "$work/stage-$version"
  fi
  exports "$series" "$version"
}

# --------------------------------------------------------------- debian
# A chroot command with /proc mounted and the host's resolver only while it runs.
chrooted() {
  local root=$1; shift
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  mount -t proc proc "$root/proc"
  local rc=0
  chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@" || rc=$?
  umount "$root/proc"
  : >"$root/etc/resolv.conf"
  return $rc
}
apt_tidy() {
  chrooted "$1" apt-get clean
  rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin
}

# upgraded DIR: apt-get upgrade of the root DIR from $SUITE-updates and -security.
upgraded() {
  printf '%s\n' "deb $DEBIAN_MIRROR $SUITE main" "deb $DEBIAN_MIRROR $SUITE-updates main" \
    "deb $DEBIAN_SECURITY $SUITE-security main" >"$1/etc/apt/sources.list"
  chrooted "$1" sh -c 'apt-get update && apt-get -y upgrade'
}

# debian_root NAME: a finished root filesystem in $CORPUS/debian-stage/NAME.
STAGE=$CORPUS/debian-stage
debian_root() {
  local name=$1 dir=$STAGE/$1
  [[ -f $dir/.complete ]] && return
  mkdir -p "$STAGE"
  rm -rf "$dir.tmp"
  case $name in
    debian-v1)
      say "debootstrap --variant=minbase $SUITE"
      debootstrap --variant=minbase "$SUITE" "$dir.tmp" "$DEBIAN_MIRROR" >"$STAGE/$name.log" 2>&1 ||
        die "debootstrap failed: see $STAGE/$name.log"
      echo "deb $DEBIAN_MIRROR $SUITE main" >"$dir.tmp/etc/apt/sources.list"
      apt_tidy "$dir.tmp" ;;
    debian-v2)
      debian_root debian-v1
      cp -a "$STAGE/debian-v1" "$dir.tmp"
      rm -f "$dir.tmp/.complete"
      say "debian-v2: apt-get upgrade from $SUITE-updates and $SUITE-security"
      upgraded "$dir.tmp" >"$STAGE/$name.log" 2>&1 || die "apt-get upgrade failed: see $STAGE/$name.log"
      apt_tidy "$dir.tmp" ;;
    debian-python-v1)
      # an application from the release itself (main only, as debian-v1's sources.list says)
      debian_root debian-v1
      cp -a "$STAGE/debian-v1" "$dir.tmp"
      rm -f "$dir.tmp/.complete"
      say "debian-python-v1: apt-get install python3 from $SUITE"
      chrooted "$dir.tmp" sh -c 'apt-get update && apt-get -y install --no-install-recommends python3' \
        >"$STAGE/$name.log" 2>&1 || die "apt-get install python3 failed: see $STAGE/$name.log"
      apt_tidy "$dir.tmp" ;;
    debian-python-v2)
      debian_root debian-python-v1
      cp -a "$STAGE/debian-python-v1" "$dir.tmp"
      rm -f "$dir.tmp/.complete"
      say "debian-python-v2: apt-get upgrade from $SUITE-updates and $SUITE-security"
      upgraded "$dir.tmp" >"$STAGE/$name.log" 2>&1 || die "apt-get upgrade failed: see $STAGE/$name.log"
      apt_tidy "$dir.tmp" ;;
    debian-tomcat-v1)
      # a Java library: zip archives whose members are deflated (jar), from the release itself
      debian_root debian-v1
      cp -a "$STAGE/debian-v1" "$dir.tmp"
      rm -f "$dir.tmp/.complete"
      say "debian-tomcat-v1: apt-get install libtomcat10-java from $SUITE"
      chrooted "$dir.tmp" sh -c 'apt-get update && apt-get -y install --no-install-recommends libtomcat10-java' \
        >"$STAGE/$name.log" 2>&1 || die "apt-get install libtomcat10-java failed: see $STAGE/$name.log"
      apt_tidy "$dir.tmp" ;;
    debian-tomcat-v2)
      debian_root debian-tomcat-v1
      cp -a "$STAGE/debian-tomcat-v1" "$dir.tmp"
      rm -f "$dir.tmp/.complete"
      say "debian-tomcat-v2: apt-get upgrade from $SUITE-updates and $SUITE-security"
      upgraded "$dir.tmp" >"$STAGE/$name.log" 2>&1 || die "apt-get upgrade failed: see $STAGE/$name.log"
      apt_tidy "$dir.tmp" ;;
    *) die "unknown debian stage $name" ;;
  esac
  chrooted "$dir.tmp" dpkg-query -W -f='${Package}\t${Version}\n' >"$STAGE/$name.packages"
  touch "$dir.tmp/.complete"
  mv "$dir.tmp" "$dir"
}

# rootfs_image SERIES VERSION STAGE: a single-layer image of a staged root filesystem.
rootfs_image() {
  local series=$1 version=$2 stage=$3 layout=$CORPUS/$1/oci work=$CORPUS/$1/work
  debian_root "$stage"
  if [[ ! -d $layout ]]; then
    mkdir -p "$CORPUS/$series"
    umoci init --layout "$layout"
    umoci new --image "$layout:empty"
  fi
  if ! tag_exists "$layout" "$version"; then
    say "$series:$version single layer from $stage"
    rm -rf "$work/bundle-$version"
    mkdir -p "$work"
    umoci unpack --image "$layout:empty" "$work/bundle-$version"
    rsync -aHAX --exclude=/.complete "$STAGE/$stage/" "$work/bundle-$version/rootfs/"
    umoci repack --history.created "$CREATED" --image "$layout:$version" "$work/bundle-$version"
    umoci config --history.created "$CREATED" --image "$layout:$version" \
      --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --config.cmd bash \
      --config.label "org.opencontainers.image.version=$version" \
      --config.label "org.opencontainers.image.title=$series" --created "$CREATED"
    rm -rf "$work/bundle-$version"
  fi
  exports "$series" "$version"
}

# ------------------------------------------------ docker-archive + rootfs
exports() {
  local series=$1 version=$2 layout=$CORPUS/$1/oci
  local tar=$CORPUS/$series/docker/$series-$version.tar ref=$CORPUS/$series/rootfs/$version
  mkdir -p "${tar%/*}" "${ref%/*}"
  if [[ ! -s $tar ]]; then
    say "$series:$version docker-archive"
    rm -f "$tar.part"
    skopeo copy --quiet "oci:$layout:$version" "docker-archive:$tar.part:d4c/$series:$version"
    mv "$tar.part" "$tar"
  fi
  if [[ ! -d $ref/rootfs ]]; then
    say "$series:$version reference root filesystem (umoci unpack)"
    rm -rf "$ref.part"
    umoci unpack --image "$layout:$version" "$ref.part"
    mv "$ref.part" "$ref"
  fi
}

# ---------------------------------------------------------------- stats
# corpus-stats.tsv, one row per image, in release order:
#   series tag n_layers rootfs_reg_bytes n_regular n_entries
#   umoci_gz_layer_sizes pigz6_layer_sizes zstd3_layer_sizes layer_diff_ids
ALL_SERIES=(typescript biome debian debian-python debian-tomcat)
PRETTIER_VERSIONS=(3.0.0 3.0.1 3.0.2 3.0.3 3.1.0 3.1.1 3.2.0 3.2.1 3.2.2 3.2.3 3.2.4 3.2.5
                   3.3.0 3.3.1 3.3.2 3.3.3 3.4.0 3.4.1 3.4.2 3.5.0 3.5.1 3.5.2 3.5.3 3.6.0)
write_stats() {
  local out=$CORPUS/corpus-stats.tsv series version
  {
    printf '%s\t' series tag n_layers rootfs_reg_bytes n_regular n_entries \
      umoci_gz_layer_sizes pigz6_layer_sizes zstd3_layer_sizes
    printf 'layer_diff_ids\n'
    for series in "${ALL_SERIES[@]}"; do
      [[ -d $CORPUS/$series/oci ]] || continue
      for version in $(umoci ls --layout "$CORPUS/$series/oci" | grep -vx -e base -e empty | sort -V); do
        stats_row "$series" "$version"
      done
    done
  } >"$out.part"
  mv "$out.part" "$out"
  say "wrote $out"
}
stats_row() {
  local series=$1 version=$2 layout=$CORPUS/$1/oci
  local root=$CORPUS/$series/rootfs/$version/rootfs manifest config
  manifest=$(jq -r --arg t "$version" \
    '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $t) | .digest' "$layout/index.json")
  manifest=$layout/blobs/sha256/${manifest#sha256:}
  config=$(jq -r .config.digest "$manifest")
  local gz=() p6=() z3=() digest blob sizes
  mkdir -p "$CORPUS/layer-cache"
  for digest in $(jq -r '.layers[].digest' "$manifest"); do
    blob=$layout/blobs/sha256/${digest#sha256:}
    sizes=$CORPUS/layer-cache/${digest#sha256:}.sizes
    [[ -f $sizes ]] || echo "$(stat -c %s "$blob") $(pigz -dc "$blob" | pigz -6 -c | wc -c) $(pigz -dc "$blob" | zstd -3 -q -c | wc -c)" >"$sizes"
    read -r a b c <"$sizes"
    gz+=("$a"); p6+=("$b"); z3+=("$c")
  done
  local IFS=,
  printf '%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$series" "$version" "${#gz[@]}" \
    "$(find "$root" -type f -printf '%s\n' | awk '{n += $1} END {print n + 0}')" \
    "$(find "$root" -type f | wc -l)" "$(find "$root" -mindepth 1 | wc -l)" \
    "${gz[*]}" "${p6[*]}" "${z3[*]}" \
    "$(jq -r '[.rootfs.diff_ids[] | .[7:19]] | join(",")' "$layout/blobs/sha256/${config#sha256:}")"
}

# ----------------------------------------------------------------- main
series_list=("$@")
((${#series_list[@]})) || series_list=("${ALL_SERIES[@]}")
for series in "${series_list[@]}"; do
  case $series in
    typescript) for v in 5.4.2 5.4.3 5.4.4 5.4.5; do app_image typescript "$v"; done ;;
    biome)      for v in 1.9.2 1.9.3 1.9.4; do app_image biome "$v"; done ;;
    debian)     rootfs_image debian v1 debian-v1; rootfs_image debian v2 debian-v2 ;;
    debian-python)
      rootfs_image debian-python v1 debian-python-v1; rootfs_image debian-python v2 debian-python-v2 ;;
    prettier)   for v in "${PRETTIER_VERSIONS[@]}"; do app_image prettier "$v"; done ;;
    vite)       for v in 5.4.8 5.4.9 5.4.10 5.4.11; do app_image vite "$v"; done ;;
    debian-tomcat)
      rootfs_image debian-tomcat v1 debian-tomcat-v1; rootfs_image debian-tomcat v2 debian-tomcat-v2 ;;
    *) die "unknown series '$series' (known: ${ALL_SERIES[*]} prettier vite)" ;;
  esac
  rmdir "$CORPUS/$series/work" 2>/dev/null || true
done
write_stats
say "corpus ready in $CORPUS"
