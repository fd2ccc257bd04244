#!/usr/bin/env bash
# Host mounts with the fewest rights: di3fs mounts are nosuid,nodev on the host
# (docs/operations.md "Mount options"), yet containers still get setuid and
# device nodes through their own overlay. A synthetic image (static busybox, a
# setuid-root program that prints its effective uid, character devices null
# and zero outside /dev, which runc covers with a tmpfs), converted and loaded
# with ctr-cli, own containerd (ctrd_env.sh):
#  1. `ctr run` of a shell dropped to uid/gid 65534 (this ctr has no --user;
#     a small static helper drops): the setuid program prints 0, the devices
#     read zeros and take writes inside the container;
#  2. on the host the same files through the di3fs mount: mountinfo shows
#     nosuid,nodev, the setuid program run as 65534 prints 65534, the device
#     node cannot be opened.
source "$(dirname "$0")/lib.sh"
require_root
source "$(dirname "$0")/ctrd_env.sh" rights
for t in umoci gcc setpriv; do
  command -v "$t" >/dev/null || skip_or_fail "$t is not installed (apt-get install umoci gcc util-linux)"
done
BUSYBOX=$(command -v busybox || true)
[[ -n $BUSYBOX ]] && file -L "$BUSYBOX" 2>/dev/null | grep 'statically linked' >/dev/null ||
  skip_or_fail "no static busybox (apt-get install busybox-static)"

# --- the synthetic image ------------------------------------------------------------
syn=$T/syn
mkdir -p "$syn"
printf '#include <stdio.h>\n#include <unistd.h>\nint main(void) { printf("%%d\\n", (int)geteuid()); return 0; }\n' >"$syn/euid.c"
# runas65534 CMD...: drops to uid/gid 65534 and runs CMD (this ctr has no --user)
cat >"$syn/runas.c" <<'CEOF'
#include <grp.h>
#include <stdio.h>
#include <unistd.h>
int main(int argc, char** argv) {
  if (argc < 2 || setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0) { perror("runas65534"); return 125; }
  execv(argv[1], argv + 1);
  perror(argv[1]);
  return 127;
}
CEOF
for p in euid runas; do
  gcc -static -O2 -o "$syn/$p" "$syn/$p.c" || { echo "FAIL: gcc -static $p.c (libc6-dev)" >&2; exit 1; }
done
umoci init --layout "$syn/oci" && umoci new --image "$syn/oci:t" && umoci unpack --image "$syn/oci:t" "$syn/b" >/dev/null
r=$syn/b/rootfs
mkdir -p "$r/bin" "$r/devs" "$r/tmp"
chmod 1777 "$r/tmp"
cp "$BUSYBOX" "$r/bin/busybox"
for a in sh od head cat echo tr id; do ln -s busybox "$r/bin/$a"; done
install -m 4755 -o 0 -g 0 "$syn/euid" "$r/bin/euid"
install -m 0755 "$syn/runas" "$r/bin/runas65534"
mknod -m 0666 "$r/devs/null" c 1 3
mknod -m 0666 "$r/devs/zero" c 1 5
umoci repack --image "$syn/oci:t" "$syn/b"
"$CTR_CLI" convert --image "oci:$syn/oci:t" --output "$syn/c" --cdimg >"$T/convert.log" 2>&1 ||
  { cat "$T/convert.log" >&2; echo "FAIL: convert of the synthetic image" >&2; exit 1; }
ID=$(image_id --cdimg "$syn/c/image.cdimg")

start_snapshotter
containerd --config "$T/config.toml" >"$T/containerd.log" 2>&1 &
CTRD_PID=$!
wait_for 30 CTR version || { tail -20 "$T/containerd.log" >&2; echo "FAIL: containerd did not start" >&2; exit 1; }
IMG=d4c.test/rights:1
"$CTR_CLI" load --address "$CTRD_SOCK" --image "$IMG" --cdimg "$syn/c/image.cdimg" >/dev/null || { echo "FAIL: load $IMG" >&2; exit 1; }

# --- 1. inside the container ---------------------------------------------------------
# --allow-new-privs: ctr sets no_new_privs by default, which disables setuid
# (Kubernetes' default, allowPrivilegeEscalation: true, does not)
out=$(timeout 120 ctr --address "$CTRD_SOCK" run --rm --snapshotter di3fs --allow-new-privs "$IMG" rights \
  /bin/runas65534 /bin/sh -c 'echo "uid $(/bin/busybox id -u)"; echo "euid $(/bin/euid)";
    echo "zero $(head -c 4 /devs/zero | od -An -tx1 | tr -d " ")";
    echo hello >/devs/null && echo "null ok"; echo "null reads $(head -c 4 /devs/null | od -An -c | tr -d " ")."' 2>&1) || true
printf '%s\n' "$out" | sed 's/^/  | /' >&2
[[ $out == *"uid 65534"* ]] || bad "the container does not run as 65534: $out"
[[ $out == *"euid 0"* ]] || bad "setuid-root program inside the container: euid is not 0: $out"
[[ $out == *"zero 00000000"* ]] || bad "character device zero (c 1 5) does not read zeros inside the container: $out"
[[ $out == *"null ok"* && $out == *"null reads ."* ]] || bad "character device null (c 1 3) does not work inside the container: $out"

# --- 2. the host mount -----------------------------------------------------------------
MNT=$SNAP_ROOT/mnt/${ID#sha256:}
opts=$(awk -v m="$MNT" '$5 == m {print $6}' /proc/self/mountinfo)
[[ -n $opts ]] || bad "no di3fs mount of the image at $MNT in /proc/self/mountinfo"
e2e_log "host mount $MNT: per-mount options $opts"
[[ ,$opts, == *,nosuid,* ]] || bad "host di3fs mount is not nosuid: $opts"
[[ ,$opts, == *,nodev,* ]] || bad "host di3fs mount is not nodev: $opts"
[[ $(stat -c '%a %u' "$MNT/bin/euid") == "4755 0" ]] || bad "setuid bit not shown on the host mount: $(stat -c '%a %u' "$MNT/bin/euid")"
[[ $(stat -c '%F %t %T' "$MNT/devs/zero") == "character special file 1 5" ]] || bad "device node not shown: $(stat -c '%F %t %T' "$MNT/devs/zero")"
host=$(setpriv --reuid 65534 --regid 65534 --clear-groups "$MNT/bin/euid" 2>&1) || true
[[ $host == 65534 ]] || bad "setuid program on the host mount run as 65534 printed '$host', want 65534 (nosuid)"
head -c 1 "$MNT/devs/zero" >/dev/null 2>&1 && bad "device node on the host mount could be opened (nodev)"

((fail == 0)) && e2e_log "rights: setuid (euid 0 as user 65534) and devices null/zero work in the container; host mount $opts: setuid ignored, device refused"
exit $fail
