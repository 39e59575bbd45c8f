#!/usr/bin/env bash
# A throw-away single-node SLURM cluster on localhost, for the tests.
#   cluster.sh start DIR   write DIR/slurm.conf, start munged, slurmctld and slurmd; wait until the node is idle
#   cluster.sh stop DIR    cancel all jobs, stop the three daemons, check none is left
# Everything (config, key, sockets, state, logs) lives in DIR; export SLURM_CONF=DIR/slurm.conf
# for sbatch/squeue/scontrol to talk to this cluster. Inside jobs, Snakemake's SLURM executor
# drops SLURM_* variables, so srun falls back to the default /etc/slurm/slurm.conf: start links
# it to DIR/slurm.conf if no such file exists, and stop removes that link (never a real config).
# Needs root and Debian's slurm-wlm + munge.
set -euo pipefail

cmd=${1:?usage: cluster.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: cluster.sh start|stop DIR}")
export SLURM_CONF="$dir/slurm.conf"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

stop_pid() {  # stop_pid FILE NAME: TERM, wait up to 10 s, then KILL
    local file=$1 name=$2 pid
    [ -f "$file" ] || return 0
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$pid" 2>/dev/null; then echo "cluster.sh: $name ($pid) ignored TERM; killing" >&2; kill -9 "$pid" || true; fi
    fi
    rm -f "$file"
}

case "$cmd" in
start)
    mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
    chmod 700 "$dir/munge"
    host=$(hostname -s)
    cpus=$(nproc)
    mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chmod 400 "$dir/munge/munge.key"
    munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
        --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munge/munge.seed"
    cat > "$SLURM_CONF" <<EOF
ClusterName=imtest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MinJobAge=3600
ReturnToService=2
MpiDefault=none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    default_conf=/etc/slurm/slurm.conf
    if [ -e "$default_conf" ] || [ -L "$default_conf" ]; then
        if [ "$(readlink "$default_conf" 2>/dev/null)" != "$SLURM_CONF" ]; then
            echo "cluster.sh: $default_conf exists and is not this test cluster's; refusing to touch it" >&2
            stop_pid "$dir/munged.pid" munged
            exit 1
        fi
    else
        mkdir -p /etc/slurm
        ln -s "$SLURM_CONF" "$default_conf"
    fi
    slurmctld -f "$SLURM_CONF"
    slurmd -f "$SLURM_CONF"
    for _ in $(seq 60); do
        state=$(sinfo -h -N -o %t 2>/dev/null || true)
        if [ "$state" = "idle" ]; then echo "cluster.sh: node $host idle ($cpus CPUs, $mem_mb MB); SLURM_CONF=$SLURM_CONF"; exit 0; fi
        sleep 0.5
    done
    echo "cluster.sh: the node did not become idle (state '${state:-none}'); logs in $dir" >&2
    tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
    exit 1
    ;;
stop)
    scancel --full --quiet --user "$(id -un)" 2>/dev/null || true
    stop_pid "$dir/slurmd.pid" slurmd
    stop_pid "$dir/slurmctld.pid" slurmctld
    stop_pid "$dir/munged.pid" munged
    if [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$SLURM_CONF" ]; then rm -f /etc/slurm/slurm.conf; fi
    left=$(pgrep -af "$dir" | grep -E "slurmctld|slurmd|munged" || true)
    if [ -n "$left" ]; then echo "cluster.sh: daemons still running: $left" >&2; exit 1; fi
    echo "cluster.sh: stopped"
    ;;
*)
    echo "usage: cluster.sh start|stop DIR" >&2
    exit 2
    ;;
esac
