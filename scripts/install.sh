#!/usr/bin/env bash
# Usage: scripts/install.sh [VENV_DIR] [EXTRAS]
# Create (or reuse) a virtual environment and install cl_hpc into it, editable.
# torch is pinned to the 2.13.0 CPU build first: an unpinned torch would pull a multi-GB CUDA
# build. On a GPU cluster, install the torch build your site recommends before this script.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
extras=${2:-}
python=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
    if ! "$python" -m venv "$venv" 2>/dev/null; then
        # Debian splits venv out of python3; install it when we may.
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
            rm -rf "$venv" && "$python" -m venv "$venv"
        else
            echo "error: '$python -m venv' failed; install python3-venv (Debian) and retry" >&2
            exit 1
        fi
    fi
fi
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
    "${pip[@]}" "torch==2.13.0"
fi
"${pip[@]}" -e ".${extras:+[$extras]}"
# An editable install leaves cl_hpc uncompiled, and where PYTHONDONTWRITEBYTECODE is set (many
# container images) every process would then compile each module it imports from source, every
# time: +30-40 ms of CPU on each Slurm job's start and +0.2 s on each launch (scripts/bench_dag.py).
# Python reads these files even under that variable, and recompiles a module whose source changed.
"$venv/bin/python" -m compileall -q -j 0 cl_hpc scripts >/dev/null
echo "installed cl_hpc into $venv"
