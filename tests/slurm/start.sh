#!/usr/bin/env bash
# Start a real single-node SLURM test cluster (munged, slurmctld, slurmd) on this machine.
#
# Usage: tests/slurm/start.sh [STATE_DIR]        (default /tmp/onnes-slurm)
#
# - Installs slurm-wlm and munge from the distribution if the daemons are missing (root
#   only; apt output goes to STATE_DIR/apt.log).
# - Writes /etc/slurm/slurm.conf. It must live exactly there: the executor's job step
#   strips SLURM_* variables (SLURM_CONF included), so srun inside a job reads the default
#   path. An existing slurm.conf is overwritten only when its first line is our marker,
#   "# onnes test cluster"; otherwise the script refuses (exit 2).
# - One node (this host, from `slurmd -C`, RealMemory at 90 %), two partitions on it:
#   `debug` (default) and `gpu` (no GPUs, no Gres: it only lets tests check that
#   slurm_partition=... reaches sbatch and that a non-default partition schedules).
# - No accounting (accounting_storage/none): Snakemake must use
#   `--slurm-status-command squeue`; sacct exists but fails. MinJobAge=300 keeps finished
#   jobs visible to squeue for 5 minutes (the plugin falls back to sacct when MinJobAge is
#   below 3 x --slurm-init-seconds-before-status-checks).
# - Daemon state, spool, logs and pid files live in STATE_DIR; munged's pid is copied to
#   STATE_DIR/munged.pid only when this script started munged.
# - ONNES_SLURM_MEMORY_MB=N declares N MB for the node instead (SlurmdParameters=
#   config_overrides keeps slurmd from draining a node declared larger than it is): the
#   rules ask for 8-16 GB each, which on a 24 GB machine lets SLURM run only one 16 GB
#   job at a time where `snakemake --cores 2` runs two. Jobs do not get more real memory.
# - Idempotent: if the daemons recorded in STATE_DIR are alive, it reports and exits 0
#   (settings such as ONNES_SLURM_MEMORY_MB then apply after stop.sh and a new start).
# Stop with tests/slurm/stop.sh [STATE_DIR].
set -euo pipefail

STATE_DIR="${1:-/tmp/onnes-slurm}"
MARKER="# onnes test cluster"
CONF=/etc/slurm/slurm.conf
START=$(date +%s)

die() { # die CODE MESSAGE...
    local code=$1
    shift
    echo "start.sh: $*" >&2
    exit "$code"
}

mkdir -p "$STATE_DIR"
STATE_DIR=$(cd "$STATE_DIR" && pwd)

alive() { # alive PIDFILE NAME: the pid in PIDFILE runs a process called NAME
    local pid
    [[ -s "$1" ]] || return 1
    pid=$(tr -dc 0-9 <"$1")
    [[ -n "$pid" ]] && [[ "$(cat /proc/"$pid"/comm 2>/dev/null)" == "$2" ]]
}

summary() {
    local node
    node=$(sinfo -h -N -o '%N' | head -n 1)
    echo "slurm test cluster up ($STATE_DIR): node $node, state $(sinfo -h -n "$node" -o %t | head -n 1)," \
        "CPUs $(sinfo -h -n "$node" -o %c | head -n 1), memory $(sinfo -h -n "$node" -o %m | head -n 1) MB," \
        "partitions $(sinfo -h -o %P | tr '\n' ' ' | sed 's/ $//'), $(($(date +%s) - START)) s"
}

# -- already running? --------------------------------------------------------------------
if alive "$STATE_DIR/slurmctld.pid" slurmctld && alive "$STATE_DIR/slurmd.pid" slurmd &&
    pgrep -x munged >/dev/null && sinfo -h >/dev/null 2>&1; then
    echo "already running"
    summary
    exit 0
fi

# Daemons that are not ours (another STATE_DIR, a system service): do not touch them.
for daemon in slurmctld slurmd; do
    for pid in $(pgrep -x "$daemon" || true); do
        [[ "$(tr -dc 0-9 2>/dev/null <"$STATE_DIR/$daemon.pid" || true)" == "$pid" ]] ||
            die 2 "$daemon is already running (pid $pid) and was not started with state in" \
                "$STATE_DIR; stop it first (tests/slurm/stop.sh OTHER_STATE_DIR)"
    done
done

# -- install -----------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null ||
    ! command -v sbatch >/dev/null || [[ ! -x /usr/sbin/munged ]]; then
    [[ $(id -u) -eq 0 ]] || die 2 "slurm-wlm/munge are not installed and this is not root;" \
        "install them (apt-get install slurm-wlm munge) or run as root"
    echo "installing slurm-wlm and munge (log: $STATE_DIR/apt.log)"
    export DEBIAN_FRONTEND=noninteractive
    {
        apt-get update || true
        apt-get install -y --no-install-recommends slurm-wlm munge
    } >"$STATE_DIR/apt.log" 2>&1 || die 1 "apt-get install failed; see $STATE_DIR/apt.log"
fi
[[ $(id -u) -eq 0 ]] || die 2 "must run as root (writes $CONF, starts slurmd as root)"

# -- refuse to clobber a real configuration ----------------------------------------------
if [[ -e "$CONF" ]] && [[ "$(head -n 1 "$CONF")" != "$MARKER"* ]]; then
    die 2 "$CONF exists and was not written by this script (first line is not '$MARKER');" \
        "refusing to overwrite it. Move it away or use that cluster directly."
fi

# -- munge -------------------------------------------------------------------------------
if [[ ! -s /etc/munge/munge.key ]]; then
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then
        mungekey --create --keyfile=/etc/munge/munge.key
    elif command -v create-munge-key >/dev/null; then
        create-munge-key -f
    else
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge
if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do [[ -s /run/munge/munged.pid ]] && break; sleep 0.1; done
    cp /run/munge/munged.pid "$STATE_DIR/munged.pid"
fi
munge -n | unmunge >/dev/null || die 1 "munge does not work (munge -n | unmunge failed)"

# -- slurm.conf --------------------------------------------------------------------------
HOST=$(hostname -s)
# First line of `slurmd -C`: NodeName=... CPUs=... Boards=... RealMemory=...
NODE_LINE=$(slurmd -C | head -n 1)
REAL=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$NODE_LINE")
[[ -n "$REAL" ]] || die 1 "cannot parse RealMemory from: $NODE_LINE"
MEM=${ONNES_SLURM_MEMORY_MB:-$((REAL * 9 / 10))}
[[ "$MEM" =~ ^[0-9]+$ ]] || die 2 "ONNES_SLURM_MEMORY_MB must be a number of MB, not '$MEM'"
NODE_LINE=${NODE_LINE/RealMemory=$REAL/RealMemory=$MEM}
mkdir -p /etc/slurm "$STATE_DIR/ctld" "$STATE_DIR/spool" "$STATE_DIR/log"
cat >"$CONF" <<EOF
$MARKER (tests/slurm/start.sh, state in $STATE_DIR); safe to delete.
ClusterName=onnes
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
# finished jobs stay visible to squeue for 5 minutes (status checks with squeue)
MinJobAge=300
ReturnToService=2
# jobs without --mem get 1 GB per CPU, not the whole node
DefMemPerCPU=1000
KillWait=5
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# trust the NodeName line below (needed when ONNES_SLURM_MEMORY_MB exceeds the real memory)
SlurmdParameters=config_overrides
$NODE_LINE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=ALL Default=NO MaxTime=INFINITE State=UP
EOF

# -- daemons -----------------------------------------------------------------------------
NODE=$(sed -n 's/^NodeName=\([^ ]*\).*/\1/p' <<<"$NODE_LINE")
if ! alive "$STATE_DIR/slurmctld.pid" slurmctld; then
    slurmctld -c # -c: start from a clean state, no jobs from an earlier cluster
fi
for _ in $(seq 100); do alive "$STATE_DIR/slurmctld.pid" slurmctld && break; sleep 0.1; done
alive "$STATE_DIR/slurmctld.pid" slurmctld || die 1 "slurmctld did not start; see $STATE_DIR/log/slurmctld.log"
if ! alive "$STATE_DIR/slurmd.pid" slurmd; then
    slurmd
fi
for _ in $(seq 100); do alive "$STATE_DIR/slurmd.pid" slurmd && break; sleep 0.1; done
alive "$STATE_DIR/slurmd.pid" slurmd || die 1 "slurmd did not start; see $STATE_DIR/log/slurmd.log"

state=""
for _ in $(seq 120); do # 60 s
    state=$(sinfo -h -n "$NODE" -o %t 2>/dev/null | head -n 1 || true)
    case "$state" in
    idle | mix | alloc) break ;;
    down* | drain* | drng* | fail*)
        scontrol update nodename="$NODE" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.5
done
case "$state" in
idle | mix | alloc) summary ;;
*) die 1 "node $NODE is '$state' after 60 s; see $STATE_DIR/log/slurmd.log and slurmctld.log" ;;
esac
