#!/usr/bin/env bash
# The profiler's GPU check (issue 4): bf16 training of a small transformer under the profiler, with
# MFU, a FLOPs cross-check, NVML samples, energy and stall fraction. Runs on CPU too, and says so.
#   bash scripts/gpu_check.sh [--steps N]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${CL_HPC_PYTHON:-$here/.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,power.limit --format=csv || echo "gpu_check: no nvidia-smi here"
exec "$python" "$here/scripts/gpu_check.py" "$@"
