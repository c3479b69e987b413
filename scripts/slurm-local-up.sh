#!/usr/bin/env bash
# Install (if needed) and start a single-node Slurm 22.05 test cluster on this
# Debian machine: munge, MariaDB, slurmdbd, slurmctld and slurmd, with 8 fake
# CPUs, ~20 GB and two fake GPUs. See slurm/local/README.md.
#
# Idempotent: a second run only checks that everything answers. Daemons are
# started directly (no systemd: this runs in containers and CI runners).
# Environment knobs (defaults in brackets):
#   SLURM_LOCAL_CPUS [8]  SLURM_LOCAL_MEMORY_MB [20000]  SLURM_LOCAL_GPU_TYPE [fake]
#   SLURM_LOCAL_MIN_JOB_AGE [30]  SLURM_LOCAL_WAIT_S [60]
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
readonly TEMPLATES="$SCRIPT_DIR/../slurm/local"
readonly PACKAGES=(munge mariadb-server slurmdbd slurmctld slurmd slurm-client)

readonly CLUSTER=local
HOST="$(hostname -s)"
readonly HOST
readonly CPUS="${SLURM_LOCAL_CPUS:-8}"
readonly REAL_MEMORY="${SLURM_LOCAL_MEMORY_MB:-20000}"
readonly GPU_TYPE="${SLURM_LOCAL_GPU_TYPE:-fake}"
readonly MIN_JOB_AGE="${SLURM_LOCAL_MIN_JOB_AGE:-30}"
readonly WAIT_S="${SLURM_LOCAL_WAIT_S:-60}"
readonly CTLD_PORT=6817 SLURMD_PORT=6818 DBD_PORT=6819
readonly DB_NAME=slurm_acct_db DB_USER=slurm
readonly STATE_DIR=/var/lib/slurm-local
readonly LOG_DIR=/var/log/slurm-local
readonly RUN_DIR=/run/slurm-local
readonly CONF_DIR=/etc/slurm
# Why each parameter: slurm/local/README.md ("Fast dispatch").
readonly SCHED_PARAMS="bf_interval=1,sched_interval=1,batch_sched_delay=0,default_queue_depth=1000"
# Accounts every local user gets (the first is the default account).
readonly ACCOUNTS=(default research)

START_TS=$(date +%s)
CONFIG_CHANGED=0

log() { echo "slurm-local-up: $*"; }
die() { echo "slurm-local-up: ERROR: $*" >&2; exit 1; }

# On any failure, show what the daemons said: that is where the cause is.
show_logs() {
    local rc=$?
    trap - ERR EXIT
    if (( rc != 0 )); then
        echo "slurm-local-up: FAILED (exit $rc). Last daemon log lines:" >&2
        for f in "$LOG_DIR"/{mariadb,slurmdbd,slurmctld,slurmd}.log /var/log/munge/munged.log; do
            [[ -s $f ]] || continue
            echo "----- tail $f" >&2
            tail -n 25 "$f" >&2
        done
    fi
    exit "$rc"
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds.
wait_for() {
    local limit=$1 what=$2; shift 2
    local deadline=$(( $(date +%s) + limit ))
    until "$@" >/dev/null 2>&1; do
        (( $(date +%s) < deadline )) || die "timed out after ${limit}s waiting for $what"
        sleep 0.2
    done
}

# running NAME PIDFILE: is the daemon NAME alive according to its pid file?
running() {
    local name=$1 pidfile=$2 pid
    [[ -r $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ -n $pid && -r /proc/$pid/comm && $(<"/proc/$pid/comm") == "$name" ]]
}

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    (( ${#missing[@]} == 0 )) && return 0
    log "installing ${missing[*]} (one-time, a minute or two)"
    # Keep package scripts from starting daemons with their default config;
    # this script starts them itself. Containers often ship such a file already.
    local policy=/usr/sbin/policy-rc.d own_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=1
    fi
    local t0 rc=0
    t0=$(date +%s)
    apt-get update -qq || rc=$?
    (( rc == 0 )) && { DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes apt-get install -y -qq \
        --no-install-recommends "${missing[@]}" >/dev/null || rc=$?; }
    (( own_policy )) && rm -f "$policy"
    (( rc == 0 )) || die "apt-get failed (exit $rc) installing: ${missing[*]}"
    log "packages installed in $(( $(date +%s) - t0 ))s"
}

# render TEMPLATE DEST MODE: fill @PLACEHOLDERS@; note whether DEST changed.
render() {
    local src=$TEMPLATES/$1 dest=$2 mode=$3 tmp
    tmp=$(mktemp)
    sed -e "s|@CLUSTER@|$CLUSTER|g" -e "s|@HOST@|$HOST|g" \
        -e "s|@CPUS@|$CPUS|g" -e "s|@REAL_MEMORY@|$REAL_MEMORY|g" \
        -e "s|@GPU_TYPE@|$GPU_TYPE|g" -e "s|@MIN_JOB_AGE@|$MIN_JOB_AGE|g" \
        -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" \
        -e "s|@DBD_PORT@|$DBD_PORT|g" -e "s|@SCHED_PARAMS@|$SCHED_PARAMS|g" \
        -e "s|@STATE_DIR@|$STATE_DIR|g" -e "s|@LOG_DIR@|$LOG_DIR|g" \
        -e "s|@DB_NAME@|$DB_NAME|g" -e "s|@DB_USER@|$DB_USER|g" \
        -e "s|@DB_PASS@|$DB_PASS|g" "$src" >"$tmp"
    if grep -q '@[A-Z_]*@' "$tmp"; then
        rm -f "$tmp"; die "unfilled placeholder in $src"
    fi
    if ! cmp -s "$tmp" "$dest"; then
        install -m "$mode" -o root -g root "$tmp" "$dest"
        CONFIG_CHANGED=1
        log "wrote $dest"
    fi
    rm -f "$tmp"
}

write_configs() {
    mkdir -p "$CONF_DIR" "$STATE_DIR"/{slurmctld,slurmd} "$LOG_DIR" "$RUN_DIR"
    # The fake GPU "device files" gres.conf points at. Slurm drops a File=
    # that is not a character device, and then sets no CUDA_VISIBLE_DEVICES;
    # a symlink to /dev/null is an empty character device (no mknod needed).
    local i
    for i in 0 1; do
        [[ -L $STATE_DIR/gpu$i ]] || ln -sfn /dev/null "$STATE_DIR/gpu$i"
    done
    # The DB password is generated once and kept, so reruns do not change it.
    local pass_file=$STATE_DIR/db.pass
    if [[ ! -s $pass_file ]]; then
        (umask 077; head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$pass_file")
    fi
    DB_PASS=$(<"$pass_file")
    render slurm.conf.in "$CONF_DIR/slurm.conf" 644
    render gres.conf.in "$CONF_DIR/gres.conf" 644
    render slurmdbd.conf.in "$CONF_DIR/slurmdbd.conf" 600
}

start_munge() {
    local key=/etc/munge/munge.key
    if [[ ! -s $key ]]; then
        log "creating $key"
        mkdir -p /etc/munge
        dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
    fi
    chown munge:munge "$key" && chmod 400 "$key"
    install -d -o munge -g munge -m 755 /run/munge
    if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        log "starting munged"
        runuser -u munge -- /usr/sbin/munged
        wait_for 10 munged sh -c 'munge -n | unmunge'
    fi
}

mysql_up() { mysqladmin --silent ping; }

start_mariadb() {
    if ! mysql_up >/dev/null 2>&1; then
        log "starting mariadb"
        install -d -o mysql -g mysql -m 755 /run/mysqld
        local bin=/usr/sbin/mariadbd
        [[ -x $bin ]] || bin=/usr/sbin/mysqld
        # Debian's config logs to syslog, which containers lack: log to a file.
        setsid "$bin" --user=mysql --log-error="$LOG_DIR/mariadb.log" \
            </dev/null >/dev/null 2>&1 &
        wait_for 60 mariadb mysql_up
    fi
    # Root reaches MariaDB through the unix socket (Debian's default auth).
    mariadb -u root <<SQL
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON $DB_NAME.* TO '$DB_USER'@'localhost';
SQL
}

start_slurm_daemon() {
    local name=$1
    if running "$name" "$RUN_DIR/$name.pid"; then
        return 0
    fi
    log "starting $name"
    # Each daemon forks into the background itself once it is set up.
    "/usr/sbin/$name"
}

# register USER: give USER an association with every account in ACCOUNTS.
register_user() {
    local user=$1 a
    for a in "${ACCOUNTS[@]}"; do
        if [[ -z $(sacctmgr -n -P list assoc cluster="$CLUSTER" user="$user" account="$a" format=Account) ]]; then
            log "adding user $user to account $a"
            sacctmgr -i -Q add user "$user" account="$a" cluster="$CLUSTER" >/dev/null
        fi
    done
    if [[ $(sacctmgr -n -P list user "$user" format=DefaultAccount) != "${ACCOUNTS[0]}" ]]; then
        sacctmgr -i -Q modify user "$user" set defaultaccount="${ACCOUNTS[0]}" >/dev/null
    fi
}

register_accounting() {
    wait_for 60 "slurmdbd to answer" sacctmgr -n list cluster
    if [[ -z $(sacctmgr -n -P list cluster "$CLUSTER" format=Cluster) ]]; then
        log "adding cluster $CLUSTER to the accounting database"
        sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null
    fi
    local a
    for a in "${ACCOUNTS[@]}"; do
        if [[ -z $(sacctmgr -n -P list account "$a" format=Account) ]]; then
            log "adding account $a"
            sacctmgr -i -Q add account "$a" cluster="$CLUSTER" description="local test account" >/dev/null
        fi
    done
    register_user root
    # The person behind sudo submits jobs too.
    if [[ -n ${SUDO_USER:-} && $SUDO_USER != root ]]; then register_user "$SUDO_USER"; fi
}

ctld_up() { scontrol ping 2>/dev/null | grep -q 'is UP'; }

node_state() { sinfo -h -N -n "$HOST" -o '%T' 2>/dev/null | head -n1; }

wait_node_ready() {
    local deadline=$(( $(date +%s) + WAIT_S )) state last_resume=0
    while :; do
        state=$(node_state || true)
        case $state in
            idle|mixed|allocated|completing) return 0 ;;
            # ReturnToService=2 clears DOWN on registration; DRAIN needs a resume.
            *drain*|*down*|*fail*)
                if (( $(date +%s) - last_resume >= 5 )); then
                    log "node $HOST is '$state': resuming it"
                    scontrol update nodename="$HOST" state=resume 2>/dev/null || true
                    last_resume=$(date +%s)
                fi ;;
        esac
        (( $(date +%s) < deadline )) || die "node $HOST not idle after ${WAIT_S}s (state '${state:-none}')"
        sleep 0.5
    done
}

main() {
    (( EUID == 0 )) || die "must run as root (installs packages, writes /etc/slurm, starts daemons); try: sudo $0"
    command -v apt-get >/dev/null || die "needs a Debian/Ubuntu machine (apt-get not found)"
    [[ -d $TEMPLATES ]] || die "templates not found at $TEMPLATES"
    trap show_logs EXIT
    install_packages
    write_configs
    if (( CONFIG_CHANGED )); then
        # Slurm daemons read their config only at start: restart them.
        "$SCRIPT_DIR/slurm-local-down.sh" >/dev/null
    fi
    start_munge
    start_mariadb
    start_slurm_daemon slurmdbd
    # The cluster must exist in the database before slurmctld registers.
    register_accounting
    start_slurm_daemon slurmctld
    wait_for 30 "slurmctld to answer" ctld_up
    start_slurm_daemon slurmd
    wait_node_ready
    sinfo
    log "cluster '$CLUSTER' ready on $HOST in $(( $(date +%s) - START_TS ))s"
}

main "$@"
