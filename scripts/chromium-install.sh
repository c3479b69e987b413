#!/usr/bin/env bash
# Install (if missing) Debian's Chromium for the browser tests (tests/browser): Playwright drives
# this system binary, /usr/bin/chromium, because a browser download of Playwright's own
# ('playwright install') cannot be fetched on machines that reach only package registries.
#
# Idempotent and quiet when everything is there. Needs root and apt-get to install; without
# them it says what to run and exits 1.
set -euo pipefail

# fonts-dejavu-core: with no font at all, Chromium draws text as empty boxes in screenshots.
readonly PACKAGES=(chromium fonts-dejavu-core)

log() { echo "chromium-install: $*"; }
die() { echo "chromium-install: ERROR: $*" >&2; exit 1; }

missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
(( ${#missing[@]} == 0 )) && exit 0

[[ $(id -u) == 0 ]] && command -v apt-get >/dev/null \
    || die "missing ${missing[*]}; install as root on Debian: sudo bash $0 (or set CL_HPC_CHROMIUM to a Chromium binary)"

log "installing ${missing[*]} (one-time, a minute or so)"
t0=$(date +%s)
rc=0
apt-get update -qq || rc=$?
# --no-install-recommends: the recommends are desktop pieces (notifications, the sound server)
# a headless test run never uses.
(( rc == 0 )) && { DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes apt-get install -y -qq \
    --no-install-recommends "${missing[@]}" >/dev/null || rc=$?; }
(( rc == 0 )) || die "apt-get failed (exit $rc) installing: ${missing[*]}"
log "installed in $(( $(date +%s) - t0 ))s: $(/usr/bin/chromium --version 2>/dev/null || echo '?')"
