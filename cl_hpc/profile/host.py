"""CPU and memory of a task's whole process tree (DataLoader workers included), through psutil.

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
"""

from __future__ import annotations

import os
import re
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psutil

CGROUP_ROOT = Path("/sys/fs/cgroup")
MIN_CPU_WINDOW_S = 0.2  # CPU% is a rate since the previous sample: shorter windows are not reported


@dataclass(frozen=True)
class HostSample:
    cpu_pct: float | None  # the main process, percent of one core (None: too soon to measure)
    workers_cpu_pct: float | None  # its descendants (DataLoader workers), summed, percent of one core
    workers: int  # live descendant processes
    rss_mb: float  # summed over the tree
    hwm_mb: float  # VmHWM summed over the live tree: no spike missed, shared pages counted twice
    iowait_pct: float | None  # system-wide share of CPU time waiting for I/O (Linux)


class ProcessTree:
    """Samples one process and its descendants. psutil measures CPU% between two calls on the
    same Process object, so they are kept from one sample to the next."""

    def __init__(self, pid: int | None = None) -> None:
        import psutil  # here, not at import: a task shorter than one interval never pays for it

        self.root = psutil.Process(pid or os.getpid())
        self._known: dict[int, psutil.Process] = {}
        self.root.cpu_percent(None)  # primes the counter: the first call always answers 0
        psutil.cpu_times_percent(None)
        self._last = time.monotonic()

    def sample(self) -> HostSample:
        children = self._children()
        cpu, workers_cpu = _safe_cpu(self.root), sum(_safe_cpu(c) for c in children)
        now, since = time.monotonic(), time.monotonic() - self._last
        self._last = now
        rss = hwm = 0.0
        for proc in [self.root, *children]:
            rss_b, hwm_b = _memory(proc)
            rss, hwm = rss + rss_b, hwm + hwm_b
        if since < MIN_CPU_WINDOW_S:  # a rate over a few ms is noise (it reads 300% at start-up)
            return HostSample(None, None, len(children), rss / 2**20, hwm / 2**20, None)
        return HostSample(cpu, workers_cpu, len(children), rss / 2**20, hwm / 2**20, _iowait())

    def _children(self) -> list[psutil.Process]:
        import psutil

        try:
            live = self.root.children(recursive=True)
        except psutil.Error:
            return []
        current = {p.pid: self._known.get(p.pid, p) for p in live}
        for pid, proc in current.items():
            if pid not in self._known:
                _safe_cpu(proc)  # prime a new worker; it reports from the next sample on
        self._known = current
        return list(current.values())


def _safe_cpu(proc: psutil.Process) -> float:
    import psutil

    try:
        return proc.cpu_percent(None)
    except psutil.Error:  # the worker ended between the listing and now
        return 0.0


def _memory(proc: psutil.Process) -> tuple[float, float]:
    """(RSS, VmHWM) in bytes; VmHWM from /proc/<pid>/status, where psutil does not expose it."""
    import psutil

    try:
        rss = float(proc.memory_info().rss)
    except psutil.Error:
        return 0.0, 0.0
    try:
        status = Path(f"/proc/{proc.pid}/status").read_text()
    except OSError:
        return rss, rss
    return rss, max(rss, parse_vm_hwm(status) or 0.0)


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


def _iowait() -> float | None:
    import psutil

    times = psutil.cpu_times_percent(None)
    return getattr(times, "iowait", None)


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
