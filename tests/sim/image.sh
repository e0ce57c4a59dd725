#!/usr/bin/env bash
# The simulated instance's image: a Debian 12 root file system with systemd (debootstrap from
# Debian's archive), imported into the Docker engine as kicky-sim:<hash>, where <hash> is this
# script's: an unchanged script reuses the image (and the cached root file system tarball), so the
# suite pays the ~1 min debootstrap once per machine. Prints the image's name.
#   tests/sim/image.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
hash=$(sha256sum "$0" | cut -c1-12)
image=kicky-sim:$hash
if docker image inspect "$image" >/dev/null 2>&1; then
    echo "$image"
    exit 0
fi
cache=${KICKY_SIM_CACHE:-$HOME/.cache/kicky-sim}
tarball=$cache/rootfs-$hash.tar
mkdir -p "$cache"
# Tests run in parallel: the first builds, the others wait for it and reuse its image.
exec 9>"$cache/lock"
flock 9
if docker image inspect "$image" >/dev/null 2>&1; then
    echo "$image"
    exit 0
fi
if [[ ! -s $tarball ]]; then
    command -v debootstrap >/dev/null || {
        apt-get install -y -q debootstrap >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q debootstrap >/dev/null; }
    }
    root=$(mktemp -d "$cache/rootfs.XXXXXX")
    trap 'rm -rf "$root"' EXIT
    # An EC2 image's essentials for the agent: systemd as PID 1, D-Bus for systemctl, CA
    # certificates, curl (Debian's AMI has it; ami/install-ssm-agent.sh downloads with it; gpgv
    # comes with apt); the agent's .deb is installed by the test with dpkg, as an AMI build would.
    debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,ca-certificates,procps,curl \
        bookworm "$root" http://deb.debian.org/debian >"$cache/debootstrap.log" 2>&1 ||
        { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
    # No getty, no udev trigger noise; a machine id per boot, as a fresh instance has.
    rm -f "$root/etc/machine-id" "$root/var/lib/dbus/machine-id"
    : >"$root/etc/machine-id"
    chroot "$root" systemctl mask getty@tty1.service console-getty.service systemd-udevd.service \
        systemd-udev-trigger.service systemd-resolved.service >/dev/null 2>&1 || true
    # Older images' tarballs go: one root file system per machine.
    find "$cache" -maxdepth 1 -name 'rootfs-*.tar' ! -name "rootfs-$hash.tar" -delete
    tar -C "$root" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
fi
docker import -c 'CMD ["/sbin/init"]' "$tarball" "$image" >/dev/null
echo "$image"
