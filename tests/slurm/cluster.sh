#!/usr/bin/env bash
# A single-node SLURM cluster on localhost, for the workflow's cluster test (make test-slurm).
#
#   bash tests/slurm/cluster.sh start   install slurm-wlm + munge (apt, as root) if missing, write
#                                       /etc/slurm/slurm.conf, start munged, slurmctld and slurmd
#   bash tests/slurm/cluster.sh stop    stop the three daemons by their pid files and remove the
#                                       slurm.conf/gres.conf it wrote
#
# The node advertises one "gpu" (Gres=gpu:1 backed by /dev/null), so GPU rules submitted with --gpus=1
# schedule exactly as on a real GPU partition; the jobs themselves run on the CPU. Accounting is off, so the profile's status command must be squeue (see profiles/slurm).
# slurm.conf must sit at /etc/slurm/slurm.conf: with SLURM_CONF alone job steps (srun) cannot find it.
# An existing slurm.conf that this script did not write is never touched: the script stops instead.
set -euo pipefail

STATE=${HISTEXPR_SLURM_STATE:-/tmp/histexpr-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by histexpr tests/slurm/cluster.sh"

log() { echo "[slurm-cluster] $*" >&2; }

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v sbatch >/dev/null; then
        return
    fi
    if [ "$(id -u)" != 0 ]; then
        log "slurm-wlm and munge are not installed and this is not root: install them (apt-get install slurm-wlm munge)"
        exit 1
    fi
    log "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurm-wlm munge >"$STATE/apt.log" 2>&1 \
        || { apt-get update -q >>"$STATE/apt.log" 2>&1 && apt-get install -y -q slurm-wlm munge >>"$STATE/apt.log" 2>&1; } \
        || { tail -20 "$STATE/apt.log" >&2; log "apt-get install slurm-wlm munge failed"; exit 1; }
}

write_conf() {
    local cpus mem host
    # The node advertises the shape of a GPU node of profiles/slurm (16 CPUs, 128 GB, one GPU) whatever this
    # machine has (SlurmdParameters=config_overrides), so the profile's requests are submitted unchanged.
    cpus=$(( $(nproc) > 16 ? $(nproc) : 16 ))
    mem=128000
    host=$(hostname -s)
    if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
        log "$CONF exists and was not written by this script; refusing to replace a real cluster's config"
        exit 1
    fi
    mkdir -p /etc/slurm "$STATE/spool" "$STATE/ctld"
    cat >"$CONF" <<EOF
$MARK
ClusterName=histexpr-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
MinJobAge=3600
SlurmdParameters=config_overrides
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPort=6817
SlurmdPort=6818
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    cat >/etc/slurm/gres.conf <<EOF
$MARK
NodeName=$host Name=gpu File=/dev/null
EOF
}

stop_pid() {  # stop_pid NAME PIDFILE: TERM, wait up to 10 s, then KILL
    local name=$1 file=$2 pid
    [ -s "$file" ] || return 0
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$pid" 2>/dev/null || true
        log "stopped $name (pid $pid)"
    fi
    rm -f "$file"
}

stop() {
    stop_pid slurmd "$STATE/slurmd.pid"
    stop_pid slurmctld "$STATE/slurmctld.pid"
    stop_pid munged "$STATE/munged.pid"
    # A slurm.conf naming a controller that no longer runs makes every later `snakemake` on this machine wait
    # ~10 s (the slurm executor plugin runs `scontrol show config` when Snakemake starts): remove ours.
    if [ -e "$CONF" ] && grep -qF "$MARK" "$CONF"; then
        rm -f "$CONF" /etc/slurm/gres.conf
        log "removed $CONF (written by this script)"
    fi
}

start() {
    mkdir -p "$STATE"
    install
    stop  # a previous run's daemons, if any
    write_conf
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    if [ ! -s /etc/munge/munge.key ]; then
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        chmod 400 /etc/munge/munge.key
    fi
    chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
    munged --force --pid-file="$STATE/munged.pid" --log-file="$STATE/munged.log"
    rm -rf "$STATE/ctld"/* "$STATE/spool"/*
    slurmctld -c -i
    slurmd
    for _ in $(seq 60); do
        if sinfo -h -o %t 2>/dev/null | grep -qx idle; then
            log "cluster up: $(sinfo -h -o '%P %D %c CPUs %G %t')"
            return 0
        fi
        sleep 1
    done
    log "the node did not become idle in 60 s"
    sinfo -N -l >&2 || true
    tail -n 20 "$STATE/slurmctld.log" "$STATE/slurmd.log" >&2 || true
    stop
    exit 1
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
