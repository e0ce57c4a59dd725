#!/usr/bin/env bash
# Stops what tests/rig/up.sh started, by the pids in the rig directory's pid files only (a process
# whose pid file is gone, or whose pid now belongs to another program, is left alone). Keeps the data
# (registry storage, passwords, image stamps) so the next up.sh is fast. Safe to run at any time.
set -euo pipefail
# shellcheck source=tests/rig/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ -d $RIG_DIR ]] || exit 0
# The layer before moto, which it forwards to; the engine last, after anything that might use it.
for name in imds moto registry dockerd; do
    if [[ -e $RIG_DIR/$name.pid ]]; then
        pid=$(<"$RIG_DIR/$name.pid")
        if pid_alive "$RIG_DIR/$name.pid"; then
            stop_pidfile "$RIG_DIR/$name.pid"
            echo "stopped $name (pid $pid)"
        else
            rm -f "$RIG_DIR/$name.pid"
        fi
    fi
    rm -f "$RIG_DIR/$name.port"
done
# It describes services that are gone.
rm -f "$RIG_DIR/env"
