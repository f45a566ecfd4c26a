#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, from Debian's packages (install_slurm in
# scripts/lib.sh), for the tests and the cohort benchmark: munged, MariaDB + slurmdbd
# (accounting: sacct), slurmctld and slurmd.
#
#   scripts/slurm.sh start DIR      a new cluster in DIR (emptied first): write its configuration,
#                                   start the daemons, wait until the node is idle; prints the
#                                   SLURM_CONF to export (about 4 s)
#   scripts/slurm.sh stop DIR       cancel its jobs and stop the daemons
#
# Partitions: 'cpu' (default) and 'gpu', both on this one node, its cores as CPUs. The node
# describes GPUS_PER_NODE GPUs as a generic resource (gres.conf, with stand-in device files), so
# that jobs sent to the GPU destination ask for '--gres=gpu:1' as they would on a GPU node; no GPU
# is present, and dlhisto runs them on the CPU. Both partitions let 2 jobs share a core
# (OverSubscribe=FORCE:2), as the test Galaxy's local runner let 4 jobs share the 2 cores of a CI
# machine: its jobs wait on I/O and Galaxy often. Everything (state, logs, sockets, the database)
# lives in DIR but munge's socket (/run/munge); nothing under /etc is changed, and the only ports
# opened are SLURM_PORT_BASE to SLURM_PORT_BASE+3 (slurmctld, slurmd, slurmdbd, MariaDB) on 127.0.0.1.
set -euo pipefail

SLURM_PORT_BASE=${SLURM_PORT_BASE:-16817}
GPUS_PER_NODE=${GPUS_PER_NODE:-4}
MUNGE_SOCKET_DIR=/run/munge

log() { echo "[$(date +%H:%M:%S)] slurm: $*" >&2; }

write_config() {
    local dir=$1 node cpus memory_mb
    node=$(hostname -s)
    cpus=$(nproc)
    memory_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    mkdir -p "$dir"/{state,spool,log,run,mysql}
    cat > "$dir/slurm.conf" <<EOF
ClusterName=dlhisto
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$SLURM_PORT_BASE
SlurmdPort=$((SLURM_PORT_BASE + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
# no cgroups in this sandbox: processes are tracked by parent, and scancel kills the whole tree
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=10
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$((SLURM_PORT_BASE + 2))
AccountingStorageTRES=gres/gpu
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
ReturnToService=2
MpiDefault=none
InactiveLimit=0
KillWait=10
MinJobAge=30
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory_mb Gres=gpu:$GPUS_PER_NODE State=UNKNOWN
PartitionName=cpu Nodes=$node Default=YES MaxTime=INFINITE OverSubscribe=FORCE:2 State=UP
PartitionName=gpu Nodes=$node MaxTime=INFINITE OverSubscribe=FORCE:2 State=UP
EOF
    # stand-in GPU devices (Slurm drops a GPU without a device file), where a GPU node names
    # /dev/nvidia0..N or uses AutoDetect=nvml; nothing opens them (no cgroup device confinement here)
    mkdir -p "$dir/dev"
    for i in $(seq 0 $((GPUS_PER_NODE - 1))); do
        [ -e "$dir/dev/nvidia$i" ] || mknod "$dir/dev/nvidia$i" c 195 "$i"
    done
    echo "NodeName=$node Name=gpu File=$dir/dev/nvidia[0-$((GPUS_PER_NODE - 1))]" > "$dir/gres.conf"
    (umask 077 && cat > "$dir/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$((SLURM_PORT_BASE + 2))
SlurmUser=root
LogFile=$dir/log/slurmdbd.log
PidFile=$dir/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$((SLURM_PORT_BASE + 3))
StorageUser=root
StorageLoc=slurm_acct_db
EOF
    )
}

# wait_for DESCRIPTION COMMAND...: COMMAND tried every 0.5 s, 120 times, each try cut at 10 s
wait_for() {
    local what=$1
    shift
    for _ in $(seq 1 120); do
        timeout 10 "$@" > /dev/null 2>&1 && return 0
        sleep 0.5
    done
    log "$what did not come up; its log is in $DIR/log"
    return 1
}

start() {
    local node
    node=$(hostname -s)
    stop_daemons 2>/dev/null || true
    if pgrep -x slurmctld > /dev/null || pgrep -x munged > /dev/null; then
        log "another Slurm cluster (or munged) runs on this machine: one at a time (stop it with 'stop ITS_DIR')"
        return 1
    fi
    rm -rf "$DIR"   # a new cluster each start: no jobs, node states or accounting from an earlier one
    write_config "$DIR"
    export SLURM_CONF="$DIR/slurm.conf"
    # munge: a key of this cluster's own, on munge's usual socket (Slurm's clients reach slurmdbd
    # through it whatever AuthInfo says); munged refuses root without --force
    (umask 077 && mungekey --create --keyfile "$DIR/munge.key" --bits 1024)
    mkdir -p "$MUNGE_SOCKET_DIR"
    munged --force --key-file "$DIR/munge.key" --socket "$MUNGE_SOCKET_DIR/munge.socket.2" --num-threads 10 \
        --pid-file "$DIR/run/munged.pid" --log-file "$DIR/log/munged.log" --seed-file "$DIR/run/munged.seed"
    wait_for munged munge -n
    # MariaDB for slurmdbd, on 127.0.0.1 only
    mariadb-install-db --no-defaults --user=root --datadir="$DIR/mysql" --auth-root-authentication-method=normal \
        > "$DIR/log/mariadb-install.log" 2>&1
    mariadbd --no-defaults --user=root --datadir="$DIR/mysql" --bind-address=127.0.0.1 \
        --port=$((SLURM_PORT_BASE + 3)) --socket="$DIR/run/mysqld.sock" --pid-file="$DIR/run/mariadbd.pid" \
        --log-error="$DIR/log/mariadb.log" --innodb-buffer-pool-size=64M > /dev/null 2>&1 &
    wait_for MariaDB mariadb --no-defaults --socket="$DIR/run/mysqld.sock" -u root -e 'select 1'
    slurmdbd   # reads slurmdbd.conf beside $SLURM_CONF
    wait_for slurmdbd sacctmgr -i list cluster
    # the cluster and root's account in the accounting database (slurmctld registers the cluster)
    sacctmgr -i add cluster dlhisto > /dev/null 2>&1 || true
    slurmctld -f "$SLURM_CONF"
    wait_for slurmctld scontrol ping
    slurmd -f "$SLURM_CONF"
    wait_for "slurmd on $node" sh -c "sinfo -h -n $node -o %T | grep -q -E '^(idle|mixed|allocated)'"
    log "cluster dlhisto up: $(sinfo -h -o '%P %D %c %G %T' | tr '\n' ';')"
    echo "export SLURM_CONF=$SLURM_CONF"
}

stop_daemons() {
    local pidfile pid
    # the jobs first: slurmstepd and a job's processes outlive slurmd
    if [ -s "$DIR/run/slurmctld.pid" ] && kill -0 "$(cat "$DIR/run/slurmctld.pid")" 2>/dev/null; then
        SLURM_CONF="$DIR/slurm.conf" timeout 10 scancel --full --cluster dlhisto --user root 2>/dev/null || true
        for _ in $(seq 1 30); do pgrep -x slurmstepd > /dev/null || break; sleep 0.5; done
    fi
    for name in slurmd slurmctld slurmdbd mariadbd munged; do
        pidfile="$DIR/run/$name.pid"
        [ -s "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || continue
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$pidfile"
    done
    pkill -9 -x slurmstepd 2>/dev/null || true   # one cluster per machine (munge's socket): these are its
}

case "${1:-}" in
    start) DIR=$(realpath -m "${2:?usage: $0 start DIR}"); start ;;
    stop) DIR=$(realpath -m "${2:?usage: $0 stop DIR}"); stop_daemons ;;
    *) echo "usage: $0 start DIR | stop DIR" >&2; exit 2 ;;
esac
