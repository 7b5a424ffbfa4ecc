#!/usr/bin/env bash
# Stop the single-node SLURM test cluster started by tests/slurm/start.sh.
#
# Usage: tests/slurm/stop.sh [STATE_DIR]         (default /tmp/onnes-slurm)
#
# Cancels all jobs, then stops slurmd, slurmctld and munged by the PIDs recorded in
# STATE_DIR (SIGTERM, up to 10 s, then SIGKILL). munged is stopped only if start.sh
# started it (STATE_DIR/munged.pid). /etc/slurm/slurm.conf is left in place: it carries
# the "# onnes test cluster" marker, so the next start.sh rewrites it, and the slurm
# client tools keep a readable config. STATE_DIR (state, spool, logs) is kept too, for
# post-mortems; delete it by hand. Safe to run when nothing is running.
set -euo pipefail

STATE_DIR="${1:-/tmp/onnes-slurm}"

stop_pid() { # stop_pid PIDFILE NAME
    local pid
    [[ -s "$1" ]] || return 0
    pid=$(tr -dc 0-9 <"$1")
    if [[ -z "$pid" ]] || [[ "$(cat /proc/"$pid"/comm 2>/dev/null)" != "$2" ]]; then
        rm -f "$1"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "stop.sh: $2 ($pid) ignored SIGTERM; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$1"
    echo "stopped $2 ($pid)"
}

if [[ -s "$STATE_DIR/slurmctld.pid" ]] && command -v scancel >/dev/null; then
    scancel --full --quiet --user="$(id -un)" 2>/dev/null || true
    scancel --full --quiet --state=PENDING 2>/dev/null || true
    # give slurmd a moment to kill the job steps before it goes away
    for _ in $(seq 20); do
        [[ -z "$(squeue -h -t R,CG -o %i 2>/dev/null)" ]] && break
        sleep 0.5
    done
fi
stop_pid "$STATE_DIR/slurmd.pid" slurmd
stop_pid "$STATE_DIR/slurmctld.pid" slurmctld
stop_pid "$STATE_DIR/munged.pid" munged
