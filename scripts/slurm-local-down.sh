#!/usr/bin/env bash
# Stop the local Slurm test cluster started by scripts/slurm-local-up.sh.
#
# By default stops slurmd, slurmctld and slurmdbd and leaves munge and
# MariaDB running (they hold no Slurm state, and keeping them makes the next
# up faster). With --all, stops munge and MariaDB too.
# Job and accounting state survive: the next up picks them up again.
set -euo pipefail

readonly RUN_DIR=/run/slurm-local
STOP_ALL=0
case "${1:-}" in
    --all) STOP_ALL=1 ;;
    "") ;;
    *) echo "usage: $0 [--all]" >&2; exit 2 ;;
esac

log() { echo "slurm-local-down: $*"; }

(( EUID == 0 )) || { echo "slurm-local-down: ERROR: must run as root; try: sudo $0" >&2; exit 1; }

# stop NAME PIDFILE: SIGTERM the daemon, wait up to 15 s, then SIGKILL.
stop() {
    local name=$1 pidfile=$2 pid i
    [[ -r $pidfile ]] || return 0
    pid=$(<"$pidfile")
    # A stale pid file may name an unrelated process: check before killing.
    if [[ -z $pid || ! -r /proc/$pid/comm || $(<"/proc/$pid/comm") != "$name" ]]; then
        rm -f "$pidfile"; return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for (( i = 0; i < 75; i++ )); do
        kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }
        sleep 0.2
    done
    log "$name did not stop in 15 s: killing it"
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
}

# Compute node first so no job is launched onto a vanishing controller;
# slurmdbd last so slurmctld can flush its pending accounting records.
stop slurmd "$RUN_DIR/slurmd.pid"
stop slurmctld "$RUN_DIR/slurmctld.pid"
stop slurmdbd "$RUN_DIR/slurmdbd.pid"

if (( STOP_ALL )); then
    if command -v mysqladmin >/dev/null && mysqladmin --silent ping >/dev/null 2>&1; then
        log "stopping mariadb"
        mysqladmin shutdown
    fi
    stop munged /run/munge/munged.pid
fi
log "stopped"
