#!/usr/bin/env bash
# A throwaway one-node Slurm on this machine, to try cluster/slurm/cep-sweep.sbatch (and for its tests):
# munged, slurmctld and slurmd as root, with their config, state, sockets, pid files and logs in ONE folder.
#
#   cluster/slurm/local-slurm.sh start    # installs slurm-wlm and munge if missing (root, apt), starts, waits idle
#   eval "$(cluster/slurm/local-slurm.sh env)"   # export SLURM_CONF=...: sbatch, squeue, ... use this Slurm
#   cluster/slurm/local-slurm.sh status   # its daemons and `sinfo`; exit 1 when not running
#   cluster/slurm/local-slurm.sh stop     # cancels its jobs, stops the daemons it started (by pid), removes the folder
#
# Settings: CEP_SLURM_DIR (the folder, default /tmp/cep-slurm), CEP_SLURM_PORT (slurmctld's port, default
# 6917; slurmd's is the next one), CEP_SLURM_CRED_EXPIRE (seconds a requeued job waits, default 15; Slurm's
# own default is 120), CEP_SLURM_INSTALL=0 (never install packages). It never touches a Slurm it did not start: `start` refuses while a
# slurmctld or slurmd that is not its own runs on the machine, and `stop` signals only the pids it recorded.

set -euo pipefail

dir=${CEP_SLURM_DIR:-/tmp/cep-slurm}
port=${CEP_SLURM_PORT:-6917}
conf=$dir/slurm.conf
node=$(hostname -s)
daemons=(munged slurmctld slurmd)

log() { echo "local-slurm: $*" >&2; }
marker=$dir/.cep-local-slurm # in the folder from its creation on: `stop` removes only a folder that has it
cleanup_on_error=

die() {
    echo "error: $1" >&2
    [[ -z $cleanup_on_error ]] || cmd_stop quiet # a start that failed half-way leaves nothing running
    exit 2
}

# pid of our daemon $1 (from its pid file) if that process is alive and is that daemon, else nothing
our_pid() {
    local pid
    pid=$(cat "$dir/$1.pid" 2>/dev/null) || return 0
    [[ $pid =~ ^[0-9]+$ ]] && [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]] && echo "$pid"
    return 0
}

running() { [[ -n $(our_pid slurmctld) && -n $(our_pid slurmd) && -n $(our_pid munged) ]]; }

# pids of daemon $1 on this machine that are not ours (nor forks of ours: slurmctld's slurmscriptd)
foreign_pids() {
    local ours pid
    ours=$(our_pid "$1")
    for pid in $(pgrep -x "$1" || true); do
        [[ -n $ours && ($pid == "$ours" || $(ps -o ppid= -p "$pid" | tr -d ' ') == "$ours") ]] || echo "$pid"
    done
}

install_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v sbatch >/dev/null && return 0
    if ((EUID != 0)) || ! command -v apt-get >/dev/null || [[ ${CEP_SLURM_INSTALL:-1} == 0 ]]; then
        die "slurm: slurmctld, slurmd, munged or sbatch not installed; install slurm-wlm and munge (as root: apt-get install slurm-wlm munge)"
    fi
    log "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends slurm-wlm munge >"$dir/apt.log" 2>&1 \
        || { apt-get update -q >>"$dir/apt.log" 2>&1 \
             && apt-get install -y -q --no-install-recommends slurm-wlm munge >>"$dir/apt.log" 2>&1; } \
        || die "slurm: apt-get install slurm-wlm munge failed (see $dir/apt.log)"
}

write_config() {
    cat >"$conf" <<EOF
# One-node Slurm written by cluster/slurm/local-slurm.sh; everything lives in $dir.
ClusterName=cep-local
SlurmctldHost=$node
SlurmctldPort=$port
SlurmdPort=$((port + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job waits this long (default 120 s) before it may start again
AuthInfo=socket=$dir/munge.socket,cred_expire=${CEP_SLURM_CRED_EXPIRE:-15}
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.log
JobRequeue=1
ReturnToService=2
MinJobAge=600
KillWait=5
InactiveLimit=0
MessageTimeout=10
SlurmdTimeout=60
Waittime=0
NodeName=$node NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    # slurmd of 22.05 reads cgroup.conf only for cgroup plugins, none of which is configured; keep it explicit
    echo "CgroupPlugin=autodetect" >"$dir/cgroup.conf"
}

start_daemon() { # name, command...
    local name=$1
    shift
    "$@" >>"$dir/$name.log" 2>&1 || die "slurm: $name did not start (see $dir/$name.log)"
    local i
    for ((i = 0; i < 50; i++)); do
        [[ -n $(our_pid "$name") ]] && return 0
        sleep 0.2
    done
    die "slurm: $name did not start (see $dir/$name.log)"
}

wait_idle() {
    local i state=
    for ((i = 0; i < 120; i++)); do
        state=$(SLURM_CONF=$conf sinfo -h -n "$node" -o %t 2>/dev/null || true)
        [[ $state == idle ]] && return 0
        sleep 0.5
    done
    die "slurm: node $node is '${state:-unknown}' after 60 s, not idle (see $dir/slurmctld.log and $dir/slurmd.log)"
}

cmd_start() {
    if running; then
        log "already running in $dir"
        cmd_env
        return 0
    fi
    local d others
    for d in slurmctld slurmd; do
        others=$(foreign_pids "$d" | tr '\n' ' ')
        [[ -z $others ]] || die "slurm: a $d that this script did not start is running (pid ${others% }); not touching it: use that Slurm, or stop it first"
    done
    ((EUID == 0)) || die "slurm: the local Slurm runs its daemons as root; run this as root (sudo $0 start)"
    if [[ -e $marker ]]; then
        cmd_stop quiet # a crashed earlier run of ours
    elif [[ -e $dir ]] && ! rmdir "$dir" 2>/dev/null; then
        die "CEP_SLURM_DIR: $dir exists and was not made by this script; name a new folder (it is removed on stop)"
    fi
    mkdir -p "$dir"
    touch "$marker"
    cleanup_on_error=1
    mkdir -p "$dir/state" "$dir/spool"
    chmod 755 "$dir" # munged wants its socket folder reachable by all
    install_packages
    write_config
    # munge: a fresh key and its own socket, so that nothing else on the machine can talk to this Slurm
    dd if=/dev/urandom of="$dir/munge.key" bs=1024 count=1 status=none
    chmod 400 "$dir/munge.key"
    start_daemon munged munged --key-file="$dir/munge.key" --socket="$dir/munge.socket" \
        --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munged.seed"
    start_daemon slurmctld slurmctld -f "$conf" -i
    start_daemon slurmd slurmd -f "$conf"
    wait_idle
    log "running: node $node idle, $(nproc) CPU(s), partition local; folder $dir"
    cmd_env
}

cmd_env() { echo "export SLURM_CONF=$conf"; }

cmd_status() {
    local d pid rc=0
    for d in "${daemons[@]}"; do
        pid=$(our_pid "$d")
        if [[ -n $pid ]]; then echo "$d: running, pid $pid"; else echo "$d: not running"; rc=1; fi
    done
    ((rc == 0)) && SLURM_CONF=$conf sinfo && cmd_env
    return "$rc"
}

cmd_stop() {
    [[ -e $marker ]] || { [[ ${1:-} == quiet ]] || log "nothing to stop: no local Slurm in $dir"; return 0; }
    [[ -f $conf && -n $(our_pid slurmctld) ]] && cancel_jobs
    local d pid i
    for d in slurmd slurmctld munged; do
        pid=$(our_pid "$d")
        [[ -n $pid ]] || continue
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            [[ -e /proc/$pid ]] || break
            sleep 0.2
        done
        [[ -e /proc/$pid ]] && kill -KILL "$pid" 2>/dev/null
        [[ ${1:-} == quiet ]] || log "stopped $d (pid $pid)"
    done
    kill_leftover_steps
    rm -rf "$dir"
}

# Job step daemons of this Slurm (their working folder is ours) that outlived it, e.g. after slurmctld died,
# with every process under them (the jobs' own, Ray's included).
kill_leftover_steps() {
    local pid cwd victims=()
    for pid in $(pgrep -x slurmstepd || true); do
        cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null) || continue
        [[ ${cwd% (deleted)} == "$dir" || ${cwd% (deleted)} == "$dir"/* ]] && mapfile -t -O "${#victims[@]}" victims < <(tree_of "$pid")
    done
    ((${#victims[@]})) || return 0
    kill -KILL "${victims[@]}" 2>/dev/null || true
    log "killed ${#victims[@]} leftover job process(es)"
}

tree_of() { # pid and all its descendants
    local child
    echo "$1"
    for child in $(pgrep -P "$1" || true); do
        tree_of "$child"
    done
}

# Jobs still on this Slurm are cancelled through it (their step daemons outlive slurmd otherwise).
cancel_jobs() {
    local i jobs
    mapfile -t jobs < <(SLURM_CONF=$conf squeue -h -o %i 2>/dev/null)
    ((${#jobs[@]})) || return 0
    SLURM_CONF=$conf scancel --full --quiet "${jobs[@]}" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        [[ -z $(SLURM_CONF=$conf squeue -h -t running,completing -o %i 2>/dev/null) ]] && return 0
        sleep 0.2
    done
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    *) die "usage: $0 start|stop|status|env" ;;
esac
