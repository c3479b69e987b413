#!/usr/bin/env bash
# Install cl_hpc and its test extras into .venv, check style and types (ruff, mypy: settings in
# pyproject.toml), start the local Slurm cluster and install Debian's Chromium (the browser tests)
# where this machine allows it (root and apt-get), and run the whole test suite. Extra arguments
# go to pytest.
#
# Under CI=true the Slurm and browser tests must run: a machine that cannot start the cluster or
# install Chromium fails here, and tests/conftest.py turns any skip into a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install.sh .venv test

# Style and types first: they take seconds, and a failure names the file and line.
.venv/bin/ruff check --quiet
.venv/bin/mypy

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    bash scripts/slurm-local-up.sh
elif [ "${CI:-}" = true ]; then
    echo "error: CI=true needs root and apt-get to start the local Slurm cluster (scripts/slurm-local-up.sh)" >&2
    exit 1
else
    echo "note: not root or no apt-get: the Slurm tests will be skipped (run scripts/slurm-local-up.sh as root to include them)" >&2
fi

# Playwright drives this system Chromium: its own browser download cannot be fetched here.
if [ -n "${CL_HPC_CHROMIUM:-}" ]; then
    :  # the caller's own Chromium (tests/browser/conftest.py)
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    bash scripts/chromium-install.sh
elif [ ! -x /usr/bin/chromium ]; then
    if [ "${CI:-}" = true ]; then
        echo "error: CI=true needs root and apt-get to install Chromium for tests/browser (scripts/chromium-install.sh)" >&2
        exit 1
    fi
    echo "note: no /usr/bin/chromium: the browser tests will be skipped (run scripts/chromium-install.sh as root to include them)" >&2
fi

exec .venv/bin/python -m pytest "$@"
