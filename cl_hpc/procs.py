"""Processes on this machine, by pid and start time: alive or not, their trees, their memory, stopping them.

A pid alone can be reused by an unrelated process, so a process is named by its pid and its start
time (psutil's ``create_time``). A zombie (exited, not yet reaped by its parent) still has both,
but runs nothing: it is dead here. The local scheduler, the run's tasks and the watch's lock
holder are judged by these functions alone.
"""

from __future__ import annotations

import errno
from typing import Any, Iterable

import psutil

_DEAD = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
# psutil derives create_time from the boot time, which /proc/stat gives in whole seconds, computed as
# the wall clock minus the uptime: as NTP slews the wall clock, btime can flip by one second, and the
# same process's create_time with it (seen in CI: a live local scheduler judged gone, its run left
# running). So two readings of one process may differ by a whole second; a pid reused within 2 s is
# not a risk worth that false alarm.
START_TOLERANCE_S = 2.0


def process(pid: Any, started: Any = None, before: Any = None) -> psutil.Process | None:
    """The live process ``pid``, if it is the one meant: started at ``started`` (to the tolerance),
    or, given ``before`` instead, started no later than that time (a process that recorded
    ``before`` while running was created before it; one that reused its pid later was not)."""
    try:
        proc = psutil.Process(int(pid))
        created = proc.create_time()
        if started is not None and abs(created - float(started)) >= START_TOLERANCE_S:
            return None
        if before is not None and created > float(before) + START_TOLERANCE_S:
            return None
        return None if proc.status() in _DEAD else proc
    except (psutil.Error, TypeError, ValueError):
        return None


def alive(pid: Any, started: Any) -> bool:
    """The process lives, runs (not a zombie) and is the same one (its start time matches)."""
    return started is not None and process(pid, started=started) is not None


def tree(root: psutil.Process, with_root: bool = True) -> list[psutil.Process]:
    """``root`` and every descendant that still exists."""
    try:
        kids = root.children(recursive=True)
    except psutil.Error:
        kids = []
    return ([root] if with_root else []) + kids


def mem_bytes(procs: Iterable[psutil.Process]) -> int:
    """The memory ``procs`` hold together: the sum of their proportional set sizes (PSS), as a
    cgroup-based cluster counts (each page once) and as Slurm's jobacct_gather/linux does with
    ``JobAcctGatherParams=UsePss``. A page shared by forked children (a DataLoader worker's copy of
    the dataset) counts once over them all, where summing RSS would count it once per process. A
    process whose PSS cannot be read (smaps closed to us, or absent) counts its RSS."""
    total = 0
    for proc in procs:
        try:
            if proc.status() in _DEAD:
                continue
            try:
                info = proc.memory_full_info()
                # Without /proc/<pid>/smaps (gVisor, some kernels) psutil returns plain memory_info: no pss.
                total += getattr(info, "pss", info.rss)
            except psutil.AccessDenied:
                total += proc.memory_info().rss
        except psutil.Error:  # ended between the listing and the reading
            pass
    return total


def stop(procs: Iterable[psutil.Process], grace_s: float = 5.0) -> None:
    """SIGTERM ``procs``, then SIGKILL those still there after ``grace_s`` (as scancel does); returns
    once every one has exited."""
    procs = list(procs)
    for sig in ("terminate", "kill"):
        for proc in procs:
            try:
                getattr(proc, sig)()
            except psutil.Error:
                pass
        _, procs = psutil.wait_procs(procs, timeout=grace_s if sig == "terminate" else 30.0)
        procs = [p for p in procs if _running(p)]
        if not procs:
            return


def kill(procs: Iterable[psutil.Process]) -> None:
    """SIGKILL ``procs`` at once (Slurm's OverMemoryKill gives no grace) and wait for them."""
    procs = list(procs)
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=30.0)


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.status() not in _DEAD
    except psutil.Error:
        return False


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)

