#!/usr/bin/env bash
# A one-node Slurm cluster on 127.0.0.1 for tests and benchmarks: slurm/local-cluster.sh start|stop|status
#
#   start   install slurmctld, slurmd, slurm-client and munge (Debian/Ubuntu, apt) if missing, write a minimal
#           slurm.conf for this machine, start munged, slurmctld and slurmd, wait until the node runs a job.
#   stop    stop the three daemons (only the ones whose pid files this script wrote).
#   status  sinfo + squeue, exit status 0 when the node is up.
#
# Needs root (apt-get, daemons run as root). Idempotent: `start` on a running cluster only checks it is up.
# Cgroup-free (proctrack/linuxproc, task/none), so it also runs in containers and VMs without systemd.
# No slurmdbd: `sacct` is not available on this cluster (use squeue / scontrol show job); on a real cluster it is.
set -euo pipefail

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
STATE=/var/spool/slurm-local           # state and spool dirs
RUN=/run/slurm-local                   # pid files
LOG=/var/log/slurm-local
NODE=$(hostname -s)
MARK="# written by sfbench slurm/local-cluster.sh"

die() { echo "local-cluster: $*" >&2; exit 1; }

need_root() { [[ $(id -u) == 0 ]] || die "must run as root (apt-get install, daemons as root)"; }

install_packages() {
  local missing=()
  for cmd in slurmctld slurmd sinfo munged; do
    command -v "$cmd" >/dev/null 2>&1 || [[ -x /usr/sbin/$cmd ]] || missing+=("$cmd")
  done
  [[ ${#missing[@]} == 0 ]] && return
  echo "local-cluster: installing slurmctld slurmd slurm-client munge (missing: ${missing[*]})" >&2
  # no init system here: tell the packages' maintainer scripts not to start services (we start them below)
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [[ ! -e $policy ]]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; made_policy=1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
  [[ $made_policy == 1 ]] && rm -f "$policy"
  return 0
}

write_conf() {
  # CPUs and memory from this machine; leave ~10% of memory (at least 512 MiB) to the system.
  local cpus mem_mb
  cpus=$(nproc --all)
  mem_mb=$(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo)
  mem_mb=$(( mem_mb - (mem_mb / 10 > 512 ? mem_mb / 10 : 512) ))
  mkdir -p "$CONF_DIR" "$STATE/ctld" "$STATE/d" "$RUN" "$LOG"
  if [[ -f $CONF ]] && ! grep -q "^$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script; not touching it"
  fi
  cat >"$CONF" <<CONF
$MARK (one node, 127.0.0.1)
ClusterName=sfbench-local
MailProg=/bin/true
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# a requeued job may start again once its old job credential has expired: 120 s by default, 5 s here
AuthInfo=cred_expire=5
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
# no cgroups, no accounting daemon: works in containers and VMs without systemd
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
# CPUs are consumable, memory is not (a job without --mem would otherwise take the whole node)
SelectTypeParameters=CR_CPU
PreemptType=preempt/none
JobRequeue=1
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MinJobAge=300
KillWait=10
InactiveLimit=0
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
}

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# the node's state as sinfo prints it: a trailing * (not responding), ~, #, ! … marks a node that can't run jobs yet
node_state() { sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -1; }

start_munge() {
  if pid_alive "$RUN/munged.pid"; then return; fi
  if pgrep -x munged >/dev/null; then return; fi           # a munged started by the system
  mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
  if [[ ! -s /etc/munge/munge.key ]]; then
    if command -v mungekey >/dev/null; then mungekey --create --keyfile=/etc/munge/munge.key --force
    else dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none; fi
  fi
  chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge
  chmod 0700 /etc/munge /var/lib/munge /var/log/munge
  chmod 0755 /run/munge
  chmod 0400 /etc/munge/munge.key
  runuser -u munge -- /usr/sbin/munged || die "munged did not start"
  # munged writes its pid file (as user munge) under /run/munge; keep a copy beside ours for `stop`
  for _ in $(seq 50); do [[ -s /run/munge/munged.pid ]] && break; sleep 0.1; done
  cp /run/munge/munged.pid "$RUN/munged.pid"
}

start() {
  need_root
  install_packages
  mkdir -p "$RUN"
  if pid_alive "$RUN/slurmctld.pid" && pid_alive "$RUN/slurmd.pid"; then
    wait_idle; echo "local-cluster: already running"; status; return
  fi
  stop quiet
  write_conf
  start_munge
  /usr/sbin/slurmctld -i || die "slurmctld did not start; see $LOG/slurmctld.log"
  /usr/sbin/slurmd || die "slurmd did not start; see $LOG/slurmd.log"
  wait_idle
  status
}

wait_idle() {
  # until the node responds and a one-second job runs on it (a node listed idle may not take jobs yet)
  local state=""
  for i in $(seq 240); do
    state=$(node_state || true)
    case $state in
      idle|mixed|allocated)
        if timeout 60 srun -N1 -n1 -t 1 -J local-cluster-check true >/dev/null 2>&1; then return 0; fi ;;
      drain*|down*|fail*) scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  tail -20 "$LOG/slurmctld.log" "$LOG/slurmd.log" >&2 || true
  die "node $NODE does not run a job after 120 s (state: ${state:-none})"
}

stop() {
  local quiet=${1:-}
  for d in slurmd slurmctld munged; do
    local pidfile=$RUN/$d.pid
    if pid_alive "$pidfile"; then
      local pid; pid=$(cat "$pidfile")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      [[ -n $quiet ]] || echo "local-cluster: stopped $d ($pid)"
    fi
    rm -f "$pidfile"
  done
}

status() {
  if ! pid_alive "$RUN/slurmctld.pid" || ! pid_alive "$RUN/slurmd.pid"; then
    echo "local-cluster: not running"; return 1
  fi
  sinfo
  squeue
  [[ $(node_state) =~ ^(idle|mixed|allocated|completing)$ ]]
}

case ${1:-} in
  start) start ;;
  stop) need_root; stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
