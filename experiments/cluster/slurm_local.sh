#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, from Debian's packages: munged, MariaDB + slurmdbd
# (accounting, so `sacct` works), slurmctld and slurmd, all in one state folder, stopped by the
# PIDs recorded at start. For trying the SLURM launcher against a real scheduler
# (tests/test_cluster_slurm.py uses it); nothing under /etc is read or written.
#
#   experiments/cluster/slurm_local.sh up     [STATE]   # install if missing, start, wait until idle
#   eval "$(experiments/cluster/slurm_local.sh env [STATE])"   # export SLURM_CONF for sbatch & co
#   experiments/cluster/slurm_local.sh down   [STATE]   # cancel jobs, stop the daemons by PID
#   experiments/cluster/slurm_local.sh status [STATE]
#
# STATE: $SLURM_LOCAL_STATE, else /tmp/dpsynth-slurm. Needs root (the daemons run as root and the
# packages come from apt-get). Settings (environment): SLURM_LOCAL_CPUS (default: all),
# SLURM_LOCAL_MEM_MB (default: 3/4 of the machine's), SLURM_LOCAL_PARTITION (debug),
# SLURM_LOCAL_PORT_BASE (16800: slurmctld +17, slurmd +18, slurmdbd +19, MariaDB +6).
# Measured on 2 cores: install ~15 s (once), up ~10 s, down ~2 s.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CMD="${1:-}"
STATE="${2:-${SLURM_LOCAL_STATE:-/tmp/dpsynth-slurm}}"
CLUSTER=dpsynth
PARTITION="${SLURM_LOCAL_PARTITION:-debug}"
BASE="${SLURM_LOCAL_PORT_BASE:-16800}"
CTLD_PORT=$((BASE + 17)) SLURMD_PORT=$((BASE + 18)) DBD_PORT=$((BASE + 19)) DB_PORT=$((BASE + 6))
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
DAEMONS=(slurmd slurmctld slurmdbd mariadbd munged) # stop order

die() { echo "slurm_local: $*" >&2; exit 1; }
log() { echo "slurm_local: $*" >&2; }

need_root() { [ "$(id -u)" = 0 ] || die "needs root (the daemons run as root); run with sudo"; }

install_packages() {
  local missing=()
  for c in munged slurmctld slurmd sbatch sacct slurmdbd mariadbd mariadb-install-db; do
    command -v "$c" >/dev/null 2>&1 || missing+=("$c")
  done
  [ ${#missing[@]} = 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
  log "installing ${PACKAGES[*]} (missing: ${missing[*]})"
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d: the packages' own services must not start (ours run from the state folder)
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1; fi
  apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >"$STATE.apt.log" 2>&1 \
    || { apt-get update -q >>"$STATE.apt.log" 2>&1 \
         && apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >>"$STATE.apt.log" 2>&1; } \
    || { [ $made_policy = 1 ] && rm -f "$policy"; die "apt-get install failed; see $STATE.apt.log"; }
  [ $made_policy = 1 ] && rm -f "$policy"
  return 0
}

pid_of() { cat "$STATE/run/$1.pid" 2>/dev/null || true; }
alive() { local p; p="$(pid_of "$1")"; [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

# start NAME CMD...: run a daemon in the foreground of its own session, record its PID
start() {
  local name="$1"; shift
  setsid "$@" >>"$STATE/log/$name.out" 2>&1 </dev/null &
  echo $! >"$STATE/run/$name.pid"
}

# wait_for SECONDS WHAT CMD...: poll until CMD succeeds
wait_for() {
  local secs="$1" what="$2"; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || { log "timed out waiting for $what"; tail -n 20 "$STATE"/log/*.log "$STATE"/log/*.out >&2 || true; return 1; }
    sleep 0.3
  done
}

fill() { # fill TEMPLATE OUT: substitute the @...@ values
  sed -e "s|@CLUSTER@|$CLUSTER|g" -e "s|@HOST@|$HOST|g" -e "s|@USER@|root|g" \
      -e "s|@STATE@|$STATE|g" -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" \
      -e "s|@DBD_PORT@|$DBD_PORT|g" -e "s|@DB_PORT@|$DB_PORT|g" -e "s|@DB_PASS@|$DB_PASS|g" \
      -e "s|@CPUS@|$CPUS|g" -e "s|@MEM_MB@|$MEM_MB|g" -e "s|@DEF_MEM_PER_CPU@|$DEF_MEM|g" \
      -e "s|@PARTITION@|$PARTITION|g" "$1" >"$2"
}

up() {
  need_root
  for d in "${DAEMONS[@]}"; do alive "$d" && die "already up in $STATE ($d running); run: $0 down $STATE"; done
  mkdir -p "$STATE"
  install_packages
  rm -rf "${STATE:?}"/{munge,ctld,slurmd,run,log,mysql}
  mkdir -p "$STATE"/{munge,ctld,slurmd,run,log,mysql}
  chmod 755 "$STATE/munge" # the socket must be reachable by every client
  HOST="$(hostname -s)"
  CPUS="${SLURM_LOCAL_CPUS:-$(nproc)}"
  MEM_MB="${SLURM_LOCAL_MEM_MB:-$(awk '/MemTotal/ {print int($2 / 1024 * 3 / 4)}' /proc/meminfo)}"
  DEF_MEM=$((MEM_MB / CPUS))
  DB_PASS="$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  fill "$HERE/slurm.conf" "$STATE/slurm.conf"
  fill "$HERE/slurmdbd.conf" "$STATE/slurmdbd.conf"
  chmod 600 "$STATE/slurmdbd.conf"
  : >"$STATE/plugstack.conf"
  export SLURM_CONF="$STATE/slurm.conf"

  # munge: a fresh key, its own socket
  head -c 1024 /dev/urandom >"$STATE/munge/munge.key" && chmod 400 "$STATE/munge/munge.key"
  start munged munged -F --force --key-file="$STATE/munge/munge.key" \
    --socket="$STATE/munge/munge.socket" --pid-file="$STATE/munge/munged.pid" \
    --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/munged.seed"
  wait_for 20 munged test -S "$STATE/munge/munge.socket"

  # MariaDB on loopback, a private data folder; slurmdbd's user
  mariadb-install-db --no-defaults --datadir="$STATE/mysql" --user=root \
    --auth-root-authentication-method=socket --skip-test-db >"$STATE/log/mariadb-install.out" 2>&1 \
    || die "mariadb-install-db failed; see $STATE/log/mariadb-install.out"
  start mariadbd mariadbd --no-defaults --datadir="$STATE/mysql" --user=root \
    --socket="$STATE/mysql.sock" --port="$DB_PORT" --bind-address=127.0.0.1 \
    --pid-file="$STATE/mysql/mariadbd.pid" --log-error="$STATE/log/mariadbd.log" \
    --innodb-buffer-pool-size=32M --skip-log-bin
  wait_for 60 MariaDB mariadb --no-defaults -S "$STATE/mysql.sock" -u root -e "select 1"
  mariadb --no-defaults -S "$STATE/mysql.sock" -u root -e "
    CREATE USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
    CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"

  start slurmdbd slurmdbd -D
  wait_for 60 slurmdbd sacctmgr -n list cluster
  sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null 2>&1 || true
  start slurmctld slurmctld -D -i -f "$SLURM_CONF"
  wait_for 60 slurmctld scontrol ping
  start slurmd slurmd -D -f "$SLURM_CONF" -N "$HOST"
  wait_for 60 "node $HOST idle" bash -c "sinfo -h -n '$HOST' -o %T | grep -qx idle"
  wait_for 30 "sacct" sacct -n -X -S now
  log "up: cluster $CLUSTER, node $HOST ($CPUS CPUs, $MEM_MB MB, DefMemPerCPU $DEF_MEM), partition $PARTITION, state $STATE"
  echo "export SLURM_CONF=$SLURM_CONF"
}

down() {
  export SLURM_CONF="$STATE/slurm.conf"
  if alive slurmctld; then # jobs first: their processes are not the daemons' children
    scancel --full -u "$(id -un)" >/dev/null 2>&1 || true
    local end=$((SECONDS + 20))
    while [ -n "$(squeue -h -o %i 2>/dev/null)" ] && [ $SECONDS -lt $end ]; do sleep 0.5; done
  fi
  for d in "${DAEMONS[@]}"; do
    local p; p="$(pid_of "$d")"
    [ -n "$p" ] || continue
    if kill -0 "$p" 2>/dev/null; then
      kill -TERM "$p" 2>/dev/null || true
      local end=$((SECONDS + 15))
      while kill -0 "$p" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 0.2; done
      kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null || true
    fi
    rm -f "$STATE/run/$d.pid"
  done
  log "down: $STATE"
}

status() {
  local ok=0
  for d in "${DAEMONS[@]}"; do
    if alive "$d"; then echo "$d $(pid_of "$d") running"; else echo "$d stopped"; ok=1; fi
  done
  return $ok
}

case "$CMD" in
  up) up ;;
  down) down ;;
  status) status ;;
  env) echo "export SLURM_CONF=$STATE/slurm.conf" ;;
  *) die "usage: $0 up|down|status|env [STATE]" ;;
esac
