#!/usr/bin/env bash
# Installs what the integration-test rig needs and is missing: Debian's registry, a static busybox for
# the test images, htpasswd, iptables and iproute2, a Docker Engine when there is none, packer and
# dpkg-dev, cargo-deb, and a venv with moto, awscli, python-dotenv, parliament and cfn-lint
# (tests/rig/requirements.txt). Quiet when all is there; safe to run any number of times.
set -euo pipefail
# shellcheck source=tests/rig/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

deb_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

apt_updated=
apt_install() {
    ((EUID == 0)) || die "missing Debian packages: $*; run this script as root or install them"
    export DEBIAN_FRONTEND=noninteractive
    local log
    log=$(mktemp)
    # The package lists may be stale or absent on a fresh machine; refresh them once, only when needed.
    if [[ -z $apt_updated ]]; then
        apt-get update -q >"$log" 2>&1 || { cat "$log" >&2; die "apt-get update failed"; }
        apt_updated=1
    fi
    apt-get install -y -q "$@" >"$log" 2>&1 || { cat "$log" >&2; die "apt-get install $* failed"; }
    rm -f "$log"
}

missing=()
# busybox-static, not busybox: the test images are FROM scratch, with no libc to link against.
# docker-compose (1.29): the baseline, and what tests/compose_render.rs compares `render` with.
for pkg in docker-registry busybox-static apache2-utils docker-compose; do
    deb_installed "$pkg" || missing+=("$pkg")
done
command -v curl >/dev/null || missing+=(curl)
# GNU time reports the agent's peak memory in the benchmarks; systemd-analyze verifies the unit.
[[ -x /usr/bin/time ]] || missing+=(time)
command -v systemd-analyze >/dev/null || missing+=(systemd)
# strace shows the system calls, socket families and mappings the agent needs (tests/secrets.rs
# checks them against the unit's SystemCallFilter=, RestrictAddressFamilies= and
# MemoryDenyWriteExecute=).
command -v strace >/dev/null || missing+=(strace)
command -v python3 >/dev/null || missing+=(python3 python3-venv)
# The AMI template is checked with `packer validate` (Debian's 1.6, whose amazon-ebs builder is built
# in: no plugin to fetch); `cargo deb` runs dpkg-shlibdeps (dpkg-dev) for the package's Depends.
command -v packer >/dev/null || missing+=(packer)
command -v dpkg-shlibdeps >/dev/null || missing+=(dpkg-dev)
# kicky-agent-imds-guard is tried with a real iptables, in network namespaces the test makes
# (tests/packaging.rs); never on the host's own tables.
command -v iptables >/dev/null || missing+=(iptables)
command -v ip >/dev/null || missing+=(iproute2)
command -v setpriv >/dev/null || missing+=(util-linux)
# The simulated instance's root file system (tests/sim/image.sh).
command -v debootstrap >/dev/null || missing+=(debootstrap)
# A machine that already has an engine (or only a client pointed at one by DOCKER_HOST) keeps it.
if ! command -v docker >/dev/null || { ! command -v dockerd >/dev/null && ! docker info >/dev/null 2>&1; }; then
    missing+=(docker.io)
fi

if ((${#missing[@]})); then
    # Debian's docker-registry starts a registry on :5000 on every interface when installed under
    # systemd; the rig runs its own on 127.0.0.1 only, so keep the packaged one from ever starting.
    if [[ " ${missing[*]} " == *" docker-registry "* && -d /run/systemd/system ]]; then
        systemctl mask docker-registry.service >/dev/null 2>&1 || true
    fi
    apt_install "${missing[@]}"
fi

# The venv. A stamp holding the requirements it was built from makes the no-op case one file compare.
requirements=$RIG_SRC/requirements.txt
stamp=$RIG_VENV/kicky-rig-requirements.txt
# A venv whose interpreter went away (python upgraded, pyenv version removed) is rebuilt from scratch.
if [[ -d $RIG_VENV ]] && ! "$RIG_VENV/bin/python" -c '' >/dev/null 2>&1; then
    rm -rf "$RIG_VENV"
fi
if [[ ! -x $RIG_VENV/bin/python ]]; then
    mkdir -p "$RIG_CACHE"
    if ! python3 -m venv "$RIG_VENV" >/dev/null 2>&1; then
        # Debian's own python3 ships venv (ensurepip) in a separate package.
        rm -rf "$RIG_VENV"
        apt_install python3-venv
        python3 -m venv "$RIG_VENV" || die "python3 -m venv $RIG_VENV failed"
    fi
fi
if ! cmp -s "$requirements" "$stamp"; then
    "$RIG_VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements" ||
        die "pip install -r $requirements into $RIG_VENV failed"
    cp "$requirements" "$stamp"
fi

# cargo-deb builds the .deb (tests/packaging.rs builds one over the test binary). Pinned, so a
# release cannot change the maintainer scripts it generates under the tests.
CARGO_DEB_VERSION=3.8.0
if [[ "$(cargo deb --version 2>/dev/null)" != *"$CARGO_DEB_VERSION"* ]]; then
    cargo install --quiet --locked cargo-deb --version "$CARGO_DEB_VERSION" ||
        die "cargo install cargo-deb $CARGO_DEB_VERSION failed"
fi
