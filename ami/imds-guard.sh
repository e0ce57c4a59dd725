#!/bin/sh
# kicky-agent-imds-guard [BRIDGE]: only the containers of the Docker network whose bridge is BRIDGE
# (default kicky-imds) reach instance metadata, 169.254.169.254, and with it the instance role;
# every other container's packets to it are dropped. Run at boot before Docker by the unit
# kicky-agent-imds-guard.service (the .deb installs both), and again whenever Docker restarts.
#
# The rule lives in DOCKER-USER, the chain Docker keeps for its users: dockerd creates it when it
# is missing, sends every forwarded packet through it before its own rules, and never flushes it
# or changes what is in it, a restart included. Containers' packets to the metadata address are
# forwarded (it is not an address of the host), so this is where they pass. Processes of the host
# (the agent) and containers with `network_mode: host` do not: they are the host's own traffic
# (compose.policy refuses host networking by default).
#
# Safe to run any number of times: the decision is a chain of its own, KICKY-IMDS, replaced whole
# in one step, and DOCKER-USER holds exactly one jump to it, first.
set -eu
bridge=${1:-kicky-imds}
# A Linux interface name: at most 15 characters, none that iptables would read as syntax.
case $bridge in
'' | -* | *[!A-Za-z0-9_.-]*)
    echo "kicky-agent-imds-guard: '$bridge' is not a bridge interface name" >&2
    exit 2
    ;;
esac
if [ ${#bridge} -gt 15 ]; then
    echo "kicky-agent-imds-guard: '$bridge' is longer than an interface name (15)" >&2
    exit 2
fi
imds=169.254.169.254/32
chain=KICKY-IMDS
# Declaring the chain in a restore empties it (or makes it), and the restore commits all of it at
# once: there is no moment with the chain half written.
iptables-restore --wait --noflush <<RULES
*filter
:$chain - [0:0]
-A $chain -i $bridge -j RETURN
-A $chain -j DROP
COMMIT
RULES
iptables --wait -N DOCKER-USER 2>/dev/null || true
while iptables --wait -D DOCKER-USER -d $imds -j $chain 2>/dev/null; do :; done
iptables --wait -I DOCKER-USER 1 -d $imds -j $chain
echo "kicky-agent-imds-guard: containers reach $imds only from the bridge $bridge"
