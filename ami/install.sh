#!/usr/bin/env bash
# Installs kicky-agent into an image's root file system, for an AMI build (Packer's or EC2 Image
# Builder's shell step, or by hand on a builder instance):
#   ami/install.sh [DESTDIR]          # DESTDIR defaults to / (the running builder instance)
# Puts the release binary in /usr/bin (where the .deb puts it too), the units in /etc/systemd/system
# (enabled: the agent's, and kicky-agent-imds-guard's, which runs before Docker with
# /usr/lib/kicky-agent/imds-guard), and the sample config in /etc/kicky-agent/agent.yaml unless one
# is already there. Launch templates then override it per application (agent.d fragments baked
# in, or user data).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-/}
# KICKY_AGENT_BIN: a binary built elsewhere (the tests pass their debug build).
bin=${KICKY_AGENT_BIN:-target/release/kicky-agent}
[ -x "$bin" ] || cargo build --release --locked
install -D -m 0755 "$bin" "$dest/usr/bin/kicky-agent"
install -D -m 0644 systemd/kicky-agent.service "$dest/etc/systemd/system/kicky-agent.service"
install -D -m 0644 systemd/kicky-agent-imds-guard.service "$dest/etc/systemd/system/kicky-agent-imds-guard.service"
install -D -m 0755 ami/imds-guard.sh "$dest/usr/lib/kicky-agent/imds-guard"
install -D -m 0644 README.md "$dest/usr/share/doc/kicky-agent/README.md"
install -D -m 0644 CHANGELOG.md "$dest/usr/share/doc/kicky-agent/CHANGELOG.md"
for doc in docs/*.md; do
  install -D -m 0644 "$doc" "$dest/usr/share/doc/kicky-agent/$doc"
done
install -d -m 0755 "$dest/etc/kicky-agent/agent.d"
# The default workdirs' parent: the unit makes it writable (ReadWritePaths=), the rest read-only.
install -d -m 0755 "$dest/srv"
if [ ! -e "$dest/etc/kicky-agent/agent.yaml" ]; then
  install -m 0644 config/agent.yaml "$dest/etc/kicky-agent/agent.yaml"
fi
# Enable at boot without a running systemd (the image is not booted here).
install -d -m 0755 "$dest/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/kicky-agent.service "$dest/etc/systemd/system/multi-user.target.wants/kicky-agent.service"
# The guard's RequiredBy=docker.service, as `systemctl enable` would link it.
install -d -m 0755 "$dest/etc/systemd/system/docker.service.requires"
ln -sf /etc/systemd/system/kicky-agent-imds-guard.service \
  "$dest/etc/systemd/system/docker.service.requires/kicky-agent-imds-guard.service"
echo "installed kicky-agent into $dest"
