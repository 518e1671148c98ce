#!/usr/bin/env bash
# A one-node SLURM 22.05 cluster on 127.0.0.1 for tests and demos, started by hand (no systemd).
#
#   scripts/slurm_local.sh up       # install Debian packages if missing, write config, start daemons
#   scripts/slurm_local.sh status   # which daemons run, and sinfo
#   scripts/slurm_local.sh down     # stop the daemons this script started (packages stay)
#
# Everything it writes lives in one state folder, $SLURM_LOCAL_DIR (default
# /tmp/landscape_hpc_slurm): config, munge key and socket, MariaDB data, spool, logs, pid files.
# Daemons, in start order: munged -> mariadbd -> slurmdbd -> slurmctld -> slurmd. slurmdbd must be
# up (and the cluster added to it) before slurmctld, or jobs are not accounted and submitit, which
# asks sacct for a job's state, waits forever on a job that died.
#
# Client commands (sbatch, srun, sinfo, sacct, submitit) find the config through the symlink
# /etc/slurm/slurm.conf -> $SLURM_LOCAL_DIR/etc/slurm.conf. Where /etc/slurm/slurm.conf is a real
# file this script leaves it alone and says to `export SLURM_CONF=$SLURM_LOCAL_DIR/etc/slurm.conf`.
#
# Root only (it installs packages and runs the daemons as root). Other settings:
#   SLURM_LOCAL_DB_PORT   MariaDB TCP port on 127.0.0.1 (default 3307, to stay clear of a system one)
#   SLURM_LOCAL_TIMEOUT   seconds `up` waits for the node to be idle (default 60)
set -euo pipefail

STATE=${SLURM_LOCAL_DIR:-/tmp/landscape_hpc_slurm}
DB_PORT=${SLURM_LOCAL_DB_PORT:-3307}
TIMEOUT=${SLURM_LOCAL_TIMEOUT:-60}
CLUSTER=landscape   # ClusterName in slurm.conf and in the accounting database
ACCOUNT=landscape   # the account every local user is added to
PARTITION=debug     # the one partition, the default
NODE=localhost      # the one node; slurmd is started with -N localhost
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)
PACKAGES=(slurm-wlm slurmdbd munge mariadb-server libpmix-dev)

ETC=$STATE/etc
RUN=$STATE/run
LOG=$STATE/log
MUNGE=$STATE/munge
DB=$STATE/mysql
SLURM_CONF_FILE=$ETC/slurm.conf
export SLURM_CONF=$SLURM_CONF_FILE

say() { printf '[slurm_local] %s\n' "$*"; }
die() {
  say "ERROR: $*" >&2
  exit 1
}

pid_file() { echo "$RUN/$1.pid"; }

# The pid of a daemon this script started, if it is still alive (the name check guards against a
# recycled pid); nothing otherwise.
running_pid() {
  local file pid
  file=$(pid_file "$1")
  [ -s "$file" ] || return 1
  pid=$(tr -dc 0-9 <"$file")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] || return 1
  echo "$pid"
}

# Poll a command until it succeeds or `seconds` pass; no fixed sleeps.
wait_for() {
  local seconds=$1
  shift
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 0.2
  done
}

log_tail() {
  local f
  for f in "$@"; do
    [ -f "$f" ] || continue
    say "---- last lines of $f ----" >&2
    tail -n 25 "$f" >&2
  done
}

install_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "apt-get install ${missing[*]} (about 30 s)"
  # Keep the packages' maintainer scripts from starting system-wide munge/mariadb/slurm services:
  # this script runs its own. policy-rc.d exit 101 = "do not start"; removed afterwards if ours.
  local policy=/usr/sbin/policy-rc.d own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && own_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  local rc=0
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
    </dev/null >"$STATE/apt.log" 2>&1 || rc=$?
  [ $own_policy = 1 ] && rm -f "$policy"
  if [ $rc -ne 0 ]; then
    log_tail "$STATE/apt.log"
    die "apt-get install failed (rc=$rc), full log in $STATE/apt.log"
  fi
}

# Slurm's pmix plugin dlopens pmix2/lib/libpmix.so, which only libpmix-dev ships; without it
# srun --mpi=pmix fails at job launch. (pmi2 is no fallback: Debian's OpenMPI has no PMI-2 client.)
mpi_default() {
  local plugin
  for plugin in /usr/lib/*/slurm-wlm/mpi_pmix.so; do
    if [ -e "$plugin" ] && [ -e "${plugin%/slurm-wlm/*}/pmix2/lib/libpmix.so" ]; then
      echo pmix
      return 0
    fi
  done
  say "WARNING: slurm's pmix plugin or libpmix.so is missing: MpiDefault=none, so srun cannot" \
    "start MPI ranks; use mpirun inside allocations" >&2
  echo none
}

write_config() {
  local cpus mem_mb mpi db_password
  cpus=$(nproc)
  # RealMemory may not exceed what slurmd sees; leave 5% for the daemons and the OS.
  mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.95)}' /proc/meminfo)
  mpi=$(mpi_default)
  db_password=$(cat "$DB/slurm.password")

  cat >"$SLURM_CONF_FILE" <<EOF
# Written by scripts/slurm_local.sh: a one-node test cluster on 127.0.0.1. Edits are overwritten.
ClusterName=$CLUSTER
# slurmctld refuses to start unless this names the host it runs on; the address keeps it local.
SlurmctldHost=$(uname -n | cut -d. -f1)(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
# Our own munged, not a system one.
AuthInfo=socket=$MUNGE/munge.socket.2
StateSaveLocation=$STATE/spool/slurmctld
SlurmdSpoolDir=$STATE/spool/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in a container without systemd: track job processes through /proc, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
# srun launches MPI ranks through PMIx, which Debian's OpenMPI 4.1 speaks.
MpiDefault=$mpi
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# Trust the CPUs/RealMemory below even where the hardware reports more (containers, cgroups).
SlurmdParameters=config_overrides
# A node that was down (e.g. after down/up) comes back as soon as slurmd registers.
ReturnToService=2
# Accounting: sacct must know every job, or submitit never learns that a job died.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
# For slurmdbd this "password" is the munge socket that connections to slurmdbd authenticate with
# (AuthInfo alone does not reach sacct/sacctmgr).
AccountingStoragePass=$MUNGE/munge.socket.2
JobCompType=jobcomp/none
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

  # slurmdbd reads slurmdbd.conf next to slurm.conf, and only if it is private to SlurmUser.
  (
    umask 077
    cat >"$ETC/slurmdbd.conf" <<EOF
# Written by scripts/slurm_local.sh. Edits are overwritten.
AuthType=auth/munge
AuthInfo=socket=$MUNGE/munge.socket.2
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
LogFile=$LOG/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
# TCP to our own mariadbd (slurmdbd.conf has no socket setting).
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$db_password
StorageLoc=slurm_acct_db
EOF
  )
  chmod 600 "$ETC/slurmdbd.conf"
}

# Clients (sbatch, sinfo, submitit's sacct) look for /etc/slurm/slurm.conf.
link_client_config() {
  local link=/etc/slurm/slurm.conf
  mkdir -p /etc/slurm
  if [ -L "$link" ] || [ ! -e "$link" ]; then
    ln -sfn "$SLURM_CONF_FILE" "$link"
  elif [ "$(readlink -f "$link")" != "$SLURM_CONF_FILE" ]; then
    say "WARNING: $link is a real file; left alone. Run: export SLURM_CONF=$SLURM_CONF_FILE" >&2
  fi
}

start_munged() {
  if [ ! -s "$MUNGE/munge.key" ]; then
    (umask 077 && dd if=/dev/urandom of="$MUNGE/munge.key" bs=1024 count=1 status=none)
  fi
  # munged refuses a key, socket folder or log folder that others can read or write.
  chmod 700 "$MUNGE"
  chmod 600 "$MUNGE/munge.key"
  rm -f "$MUNGE/munge.socket.2" "$MUNGE/munge.socket.2.lock"
  munged --force --key-file="$MUNGE/munge.key" --socket="$MUNGE/munge.socket.2" \
    --pid-file="$(pid_file munged)" --log-file="$LOG/munged.log" --seed-file="$MUNGE/munged.seed" \
    </dev/null || { log_tail "$LOG/munged.log"; die "munged did not start"; }
  wait_for 15 munge -S "$MUNGE/munge.socket.2" -n ||
    { log_tail "$LOG/munged.log"; die "munged does not answer on $MUNGE/munge.socket.2"; }
}

mysql_root() { mariadb --no-defaults --socket="$DB/mysqld.sock" -uroot "$@"; }

start_mariadbd() {
  if [ ! -d "$DB/data/mysql" ]; then
    say "initialising MariaDB in $DB/data"
    mariadb-install-db --no-defaults --datadir="$DB/data" --user=root \
      --auth-root-authentication-method=socket --skip-test-db >"$LOG/mariadb-install.log" 2>&1 ||
      { log_tail "$LOG/mariadb-install.log"; die "mariadb-install-db failed"; }
  fi
  # --no-defaults: ignore /etc/mysql (its socket and pid paths belong to the system service).
  # No native AIO: io_uring/libaio are missing in some sandboxes (gVisor) and InnoDB then aborts.
  setsid mariadbd --no-defaults --user=root --datadir="$DB/data" --socket="$DB/mysqld.sock" \
    --bind-address=127.0.0.1 --port="$DB_PORT" --pid-file="$(pid_file mariadbd)" \
    --log-error="$LOG/mariadbd.log" --innodb-use-native-aio=0 --skip-name-resolve \
    </dev/null >/dev/null 2>&1 &
  local launched=$! deadline=$((SECONDS + 60))
  # Stop waiting as soon as it has died (a taken port, a broken data folder).
  until mysql_root -e 'SELECT 1' >/dev/null 2>&1; do
    if ! kill -0 "$launched" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
      log_tail "$LOG/mariadbd.log"
      die "mariadbd does not answer on $DB/mysqld.sock (port $DB_PORT taken? SLURM_LOCAL_DB_PORT)"
    fi
    sleep 0.2
  done
  wait_for 10 running_pid mariadbd || die "mariadbd wrote no pid file $(pid_file mariadbd)"
  local pw
  pw=$(cat "$DB/slurm.password")
  mysql_root <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pw';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$pw';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
EOF
}

start_slurmdbd() {
  slurmdbd </dev/null || { log_tail "$LOG/slurmdbd.log"; die "slurmdbd did not start"; }
  wait_for 60 sacctmgr -n list cluster ||
    { log_tail "$LOG/slurmdbd.log"; die "slurmdbd does not answer (sacctmgr list cluster)"; }
}

# Cluster, account and user associations, each only if missing (sacctmgr add fails on repeats).
add_accounting() {
  if [ -z "$(sacctmgr -n -P list cluster "$CLUSTER" format=cluster)" ]; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
  fi
  if [ -z "$(sacctmgr -n -P list account "$ACCOUNT" format=account)" ]; then
    sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description="landscape_hpc tests" \
      organization=local >/dev/null
  fi
  # root already has an association with account "root" (made with the cluster); make ours its
  # default too, so jobs are charged to $ACCOUNT.
  local user
  for user in root ${SUDO_USER:-}; do
    if [ -z "$(sacctmgr -n -P list assoc user="$user" account="$ACCOUNT" format=user)" ]; then
      sacctmgr -i add user "$user" account="$ACCOUNT" cluster="$CLUSTER" >/dev/null
    fi
    if [ "$(sacctmgr -n -P list user "$user" format=defaultaccount)" != "$ACCOUNT" ]; then
      sacctmgr -i modify user where name="$user" set defaultaccount="$ACCOUNT" >/dev/null
    fi
  done
}

start_slurmctld() {
  slurmctld </dev/null || { log_tail "$LOG/slurmctld.log"; die "slurmctld did not start"; }
  wait_for 30 scontrol ping ||
    { log_tail "$LOG/slurmctld.log"; die "slurmctld does not answer (scontrol ping)"; }
}

start_slurmd() {
  slurmd -N "$NODE" </dev/null || { log_tail "$LOG/slurmd.log"; die "slurmd did not start"; }
}

# The node answers and takes jobs: idle, or busy with jobs already (`up` while jobs run is fine).
node_ready() {
  case "$(sinfo -h -n "$NODE" -o %T 2>/dev/null)" in
    idle | mixed | allocated | completing) return 0 ;;
    *) return 1 ;;
  esac
}

cmd_up() {
  [ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts daemons as root)"
  mkdir -p "$STATE"
  install_packages
  mkdir -p "$ETC" "$RUN" "$LOG" "$MUNGE" "$DB" "$STATE/spool/slurmctld" "$STATE/spool/slurmd"
  if [ ! -s "$DB/slurm.password" ]; then
    (umask 077 && od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$DB/slurm.password")
  fi

  local all_running=1 d
  for d in "${DAEMONS[@]}"; do running_pid "$d" >/dev/null || all_running=0; done
  if [ $all_running = 1 ] && node_ready; then
    link_client_config
    say "already running (state in $STATE)"
    sinfo
    return 0
  fi
  # Config is rewritten only while slurm is down, so running daemons never see it change.
  running_pid slurmctld >/dev/null || write_config

  running_pid munged >/dev/null || { say "starting munged"; start_munged; }
  running_pid mariadbd >/dev/null || { say "starting mariadbd"; start_mariadbd; }
  running_pid slurmdbd >/dev/null || { say "starting slurmdbd"; start_slurmdbd; }
  add_accounting
  running_pid slurmctld >/dev/null || { say "starting slurmctld"; start_slurmctld; }
  running_pid slurmd >/dev/null || { say "starting slurmd"; start_slurmd; }

  if ! wait_for "$TIMEOUT" node_ready; then
    say "node $NODE is not idle after ${TIMEOUT}s:" >&2
    sinfo -N -l >&2 || true
    sinfo -R >&2 || true
    log_tail "$LOG/slurmctld.log" "$LOG/slurmd.log"
    die "cluster did not come up; logs in $LOG"
  fi
  # Only now, so a failed `up` of a second state folder leaves clients on the working cluster.
  link_client_config
  say "up in $SECONDS s (state in $STATE)"
  sinfo
}

cmd_down() {
  local d pid deadline stopped=()
  # Reverse start order: slurmd first, munged last (the slurm daemons authenticate through it).
  for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
    d=${DAEMONS[i]}
    pid=$(running_pid "$d") || { rm -f "$(pid_file "$d")"; continue; }
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 10))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      say "$d (pid $pid) ignored TERM for 10 s; sending KILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$(pid_file "$d")"
    stopped+=("$d")
  done
  if [ ${#stopped[@]} -eq 0 ]; then
    say "nothing running (state in $STATE)"
  else
    say "stopped ${stopped[*]}"
  fi
}

cmd_status() {
  local d pid rc=0
  for d in "${DAEMONS[@]}"; do
    if pid=$(running_pid "$d"); then
      printf '  %-10s running (pid %s)\n' "$d" "$pid"
    else
      printf '  %-10s stopped\n' "$d"
      rc=1
    fi
  done
  if command -v sinfo >/dev/null && [ -f "$SLURM_CONF_FILE" ]; then
    sinfo || rc=1
  fi
  return $rc
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 up|down|status   (state folder: $STATE)" >&2
    exit 2
    ;;
esac
