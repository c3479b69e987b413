"""Samples of a task's whole process tree (DataLoader workers included) through psutil.

Imported when the sampler first samples: at a GPU task's start, and otherwise at the first tick,
after two intervals, so a CPU task shorter than that never loads psutil (cl_hpc/profile/sampler.py).
Why memory is measured three ways: cl_hpc/profile/host.py.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cl_hpc.profile.host import parse_vm_hwm

if TYPE_CHECKING:
    import psutil

MIN_CPU_WINDOW_S = 0.2  # CPU% is a rate since the previous sample: shorter windows are not reported


@dataclass(frozen=True)
class HostSample:
    cpu_pct: float | None  # the main process, percent of one core (None: too soon to measure)
    workers_cpu_pct: float | None  # its descendants (DataLoader workers), summed, percent of one core
    workers: int  # live descendant processes
    rss_mb: float  # summed over the tree
    hwm_mb: float  # VmHWM summed over the live tree: no spike missed, shared pages counted twice
    iowait_fraction: float | None  # system-wide share of CPU time waiting for I/O, 0-1 (Linux)


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


def _iowait() -> float | None:
    import psutil

    percent = getattr(psutil.cpu_times_percent(None), "iowait", None)  # psutil says percent
    return percent / 100.0 if percent is not None else None
