#!/usr/bin/env bash
# A one-node SLURM cluster on this machine for tests: `scripts/ci/slurm.sh start|stop|status|env`.
#
# start  installs slurm-wlm and munge (Debian, once), writes a minimal slurm.conf under $LDB_HPC_SLURM_DIR
#        (default build/slurm of the repo), creates a munge key there when it is missing, starts munged,
#        slurmctld and slurmd (each with a PID file) and waits until `sinfo` shows the node idle.
#        Nothing outside that folder is touched: munged uses its own key and socket, SLURM its own ports.
# stop   ends exactly the daemons that `start` started (by their PID files) and waits for them to exit.
# env    prints `export SLURM_CONF=...`: eval it before srun/sbatch/sinfo.
#
# The config is for a container without systemd or cgroups: proctrack/linuxproc, task/none, SlurmUser=root,
# select/cons_tres (cores), MpiDefault=pmi2, no accounting. The node is `hostname -s` with the CPUs and memory
# that `slurmd -C` reports, reached on 127.0.0.1.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
D=${LDB_HPC_SLURM_DIR:-$ROOT/build/slurm}
CTLD_PORT=${LDB_HPC_SLURMCTLD_PORT:-6817}
SLURMD_PORT=${LDB_HPC_SLURMD_PORT:-6818}
export SLURM_CONF=$D/slurm.conf

log() { echo "slurm.sh: $*" >&2; }

alive() {  # alive NAME: the daemon whose PID file is $D/NAME.pid is running (and is NAME, not a reused PID)
    local pid
    [ -s "$D/$1.pid" ] || return 1
    pid=$(cat "$D/$1.pid")
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]
}

node_state() { sinfo -h -N -o '%t' 2>/dev/null | head -n1; }

write_conf() {
    local node cpus
    node=$(hostname -s)
    # `slurmd -C` prints this machine as a NodeName line (CPUs, sockets, cores, threads, RealMemory).
    cpus=$(slurmd -C | head -n1 | sed -e 's/^NodeName=[^ ]* //')
    mkdir -p "$D/state" "$D/spool"
    cat > "$D/slurm.conf.tmp" <<EOF
# Written by scripts/ci/slurm.sh: a one-node test cluster (no cgroups, no accounting).
ClusterName=ldbhpc
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$D/munge/munge.socket
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/slurmctld.log
SlurmdLogFile=$D/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmi2
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=60
NodeName=$node NodeAddr=127.0.0.1 $cpus State=UNKNOWN
PartitionName=ci Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$D/slurm.conf.tmp" "$D/slurm.conf"
}

start_munge() {
    mkdir -p "$D/munge"
    chmod 700 "$D/munge"
    if [ ! -s "$D/munge/munge.key" ]; then
        # The key of this test cluster only (the system's /etc/munge key, if any, is left alone).
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$D/munge/munge.key"
        else
            dd if=/dev/urandom of="$D/munge/munge.key" bs=1024 count=1 status=none
        fi
        chmod 400 "$D/munge/munge.key"
    fi
    alive munged && return 0
    munged --force --socket="$D/munge/munge.socket" --key-file="$D/munge/munge.key" \
        --pid-file="$D/munged.pid" --log-file="$D/munged.log" --seed-file="$D/munge/munged.seed"
}

start() {
    bash "$ROOT/scripts/ci/apt.sh" slurm-wlm munge
    mkdir -p "$D"
    chmod 700 "$D"
    alive slurmctld || alive slurmd || write_conf
    start_munge
    alive slurmctld || slurmctld -c -f "$SLURM_CONF"  # -c: no jobs left over from an earlier run
    alive slurmd || slurmd -f "$SLURM_CONF"
    local state="" i
    for i in $(seq 1 60); do
        state=$(node_state || true)
        case "$state" in
            idle|mix|alloc) log "node $(hostname -s) is $state (SLURM_CONF=$SLURM_CONF)"; return 0 ;;
            down*|drain*|unk*) scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 1
    done
    log "the node did not become idle (state '${state:-none}'); logs in $D"
    tail -n 20 "$D/slurmctld.log" "$D/slurmd.log" >&2 2>/dev/null || true
    return 1
}

stop() {
    local name pid i
    for name in slurmd slurmctld munged; do
        alive "$name" || { rm -f "$D/$name.pid"; continue; }
        pid=$(cat "$D/$name.pid")
        kill "$pid" 2>/dev/null || true
        for i in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name ($pid) did not stop; killing it"
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$D/$name.pid"
    done
    log "stopped"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) alive slurmctld && alive slurmd && echo "up: node $(node_state)" || { echo down; exit 1; } ;;
    env) echo "export SLURM_CONF=$SLURM_CONF" ;;
    *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
