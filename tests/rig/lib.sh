# Shared shell functions for the test rig's scripts (install.sh, up.sh, down.sh); sourced, not run.
# shellcheck shell=bash

RIG_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$RIG_SRC/../.." && pwd)
# The venv lives outside the clone so every fresh clone (CI's included) reuses it.
RIG_CACHE=${KICKY_RIG_CACHE:-$HOME/.cache/kicky-rig}
# shellcheck disable=SC2034 # used by the scripts that source this
RIG_VENV=$RIG_CACHE/venv
RIG_DIR=${KICKY_RIG_DIR:-$REPO_ROOT/target/rig}

die() {
    echo "rig: $*" >&2
    exit 1
}

# A port the kernel says is free now. Another process could take it before the server binds it; the
# servers that can (imds.py) bind port 0 themselves and report the port instead.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# http_code URL [curl args...]: the status code, or 000 when nothing answers.
http_code() {
    local url=$1
    shift
    curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" "$url" || true
}

# running PID: true while PID is a live process. A zombie counts as gone: whoever reaps our orphans
# (PID 1, or a container's init) may take a while to do it, and a zombie holds no port.
running() {
    local stat state
    # read, not $(<...): under set -e bash exits outright when $(<...) cannot open its file.
    { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
    # The state follows the command name, which is in parentheses and may itself hold spaces.
    state=${stat##*) }
    [[ ${state%% *} != Z ]]
}

# pid_alive PIDFILE: true when the file names a live process that is still the one we started: its
# command line must contain the program named in the pid file's name (moto.pid -> moto_server.py...),
# so a pid reused by an unrelated process after a reboot is never taken for ours, nor killed.
pid_alive() {
    local pid cmd
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ ]] && running "$pid" || return 1
    cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
    [[ $cmd == *"$(program_of "$1")"* ]]
}

# The program each pid file's process runs (see pid_alive).
program_of() {
    case $(basename "$1" .pid) in
    moto) echo moto_server.py ;;
    imds) echo imds.py ;;
    registry) echo docker-registry ;;
    dockerd) echo dockerd ;;
    *) basename "$1" .pid ;;
    esac
}

# start_bg NAME CMD...: runs CMD detached (own session, so it outlives this shell and a Ctrl-C here),
# logging to $RIG_DIR/NAME.log and recording its pid in $RIG_DIR/NAME.pid.
start_bg() {
    local name=$1
    shift
    setsid "$@" </dev/null >>"$RIG_DIR/$name.log" 2>&1 &
    echo $! >"$RIG_DIR/$name.pid"
}

# wait_for NAME SECONDS CHECK...: polls CHECK until it succeeds; on timeout, or when NAME's process died,
# prints NAME's log tail and fails.
wait_for() {
    local name=$1 seconds=$2
    shift 2
    local deadline=$((SECONDS + seconds))
    until "$@"; do
        # running, not pid_alive: just after the fork the child has not yet exec'd its program.
        if [[ -s $RIG_DIR/$name.pid ]] && ! running "$(<"$RIG_DIR/$name.pid")"; then
            echo "rig: $name exited; last lines of $RIG_DIR/$name.log:" >&2
            tail -n 30 "$RIG_DIR/$name.log" >&2 || true
            return 1
        fi
        if ((SECONDS >= deadline)); then
            echo "rig: $name did not come up within ${seconds}s; last lines of $RIG_DIR/$name.log:" >&2
            tail -n 30 "$RIG_DIR/$name.log" >&2 || true
            return 1
        fi
        sleep 0.2
    done
}

# stop_pidfile PIDFILE: TERM, then KILL after 10 s, the process the file names; removes the file.
stop_pidfile() {
    local file=$1 pid i
    [[ -e $file ]] || return 0
    pid=$(<"$file")
    if pid_alive "$file"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            running "$pid" || break
            sleep 0.1
        done
        if running "$pid"; then
            echo "rig: pid $pid ($file) ignored TERM for 10s; killing" >&2
            kill -KILL "$pid" 2>/dev/null || true
            for ((i = 0; i < 50; i++)); do
                running "$pid" || break
                sleep 0.1
            done
        fi
    fi
    rm -f "$file"
}
