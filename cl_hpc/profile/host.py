"""CPU and memory of a task and its whole process tree (DataLoader workers included).

Memory is measured three ways, because each misses something:

- **RSS summed over the tree**, sampled: what ``top`` shows, but a 1 Hz sample misses a short
  spike, and shared pages (a forked worker's copy-on-write dataset) count once per process;
- **VmHWM summed over the tree**: each process's own high-water mark, kept by the kernel, so no
  spike is missed; summed it can only overestimate the tree's peak, which is the safe side for
  sizing a memory request;
- **the job's cgroup peak** (``memory.peak`` in cgroup v2, ``memory.max_usage_in_bytes`` in v1):
  exact and counting shared pages once. Used only when the process's cgroup is the job's own
  (Slurm's cgroup plugins name it ``job_<id>``); in a container without them the cgroup is the
  whole machine's, whose peak says nothing about this task.

This module holds the kernel's counters, read without psutil when a task starts and ends (every
job imports it); cl_hpc/profile/tree.py samples the process tree through psutil while it runs.
"""

from __future__ import annotations

import os
import re
import resource
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def own_peak_mb() -> float | None:
    """This process's high-water mark plus that of its largest finished child, without psutil:
    the peak of a task too short for the sampler's first tick."""
    try:
        own = parse_vm_hwm(Path("/proc/self/status").read_text())
    except OSError:
        own = None
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024.0  # Linux reports kB
    return (own or 0.0) / 2**20 + children / 2**20 if own or children else None


def cpu_seconds() -> float:
    """CPU time of this process and its waited-for children, user + system (os.times)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def parse_vm_hwm(status: str) -> float | None:
    """Bytes of ``VmHWM`` in a /proc/<pid>/status text (the kernel prints kB)."""
    match = re.search(r"^VmHWM:\s+(\d+)\s+kB", status, re.M)
    return float(match.group(1)) * 1024 if match else None


# ---------------------------------------------------------------- the job's cgroup

def job_cgroup_dir(proc_cgroup: str, job_id: str | None, root: Path = CGROUP_ROOT) -> Path | None:
    """The memory cgroup directory of Slurm job ``job_id`` from /proc/self/cgroup's text, or None
    when this process is not in a per-job cgroup (no cgroup plugin: the path is the machine's)."""
    if not job_id:
        return None
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers not in ("", "memory") and "memory" not in controllers.split(","):
            continue
        match = re.search(rf"^(.*/job_{re.escape(job_id)})(?:/|$)", path)
        if match:
            base = root if controllers == "" else root / "memory"
            return base / match.group(1).lstrip("/")
    return None


def read_cgroup_peak_mb(directory: Path | None) -> float | None:
    """The cgroup's peak memory in MB (v2 ``memory.peak``, v1 ``memory.max_usage_in_bytes``)."""
    if directory is None:
        return None
    for name in ("memory.peak", "memory.max_usage_in_bytes"):
        try:
            return int((directory / name).read_text().strip()) / 2**20
        except (OSError, ValueError):
            continue
    return None


def this_job_cgroup() -> Path | None:
    try:
        text = Path("/proc/self/cgroup").read_text()
    except OSError:
        return None
    return job_cgroup_dir(text, os.environ.get("SLURM_JOB_ID"))
