"""One launcher at a time per run dir: an exclusive flock on ``RUN_DIR/.launch.lock``.

A resume reads the units' states, decides what to run and submits it; two resumes of one run at
once would both find the same units to run and submit each twice. The lock is taken before the
states are read and held until the units are submitted (cl_hpc/launcher.py); the second launcher
does not wait for the first: after about a second (``RETRY_S``: the instant a ``status`` probe
holds it) it fails, naming the holder. The kernel drops a flock when its
holder exits, however it exits, so a crashed launcher never leaves the run locked.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path

from cl_hpc.errors import ExecutorError

LOCK_NAME = ".launch.lock"
# busy() takes LOCK_SH for an instant (status does on every poll of a follow): an acquire that
# lands in that instant tries again for this long before it refuses.
RETRY_S = 1.0
_held: dict[Path, int] = {}  # lock path -> the open file that holds it (closing it drops the lock)


def acquire(run_path: Path) -> None:
    """Take the run's launch lock for this process, or raise naming whoever holds it."""
    path = (run_path / LOCK_NAME).resolve()
    if path in _held:
        return
    try:
        # 0600: a user who can only read the run dir cannot take (and so block) it
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ExecutorError(f"cannot open the launch lock {path} ({exc.strerror}); a run can be launched and "
                            f"resumed only by a user who can write its directory") from None
    if not flock_until(fd, time.monotonic() + RETRY_S):
        holder = _read(fd)
        os.close(fd)
        raise ExecutorError(f"run {run_path.name} is being launched by another process ({_describe(holder)}); "
                            f"wait until it has submitted, then see `python -m cl_hpc.status {run_path.name}` "
                            f"(lock: {path})")
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": os.uname().nodename, "time": time.time(),
                             "argv": sys.argv[1:]}).encode())
    _held[path] = fd


def flock_until(fd: int, deadline: float, poll_s: float = 0.02) -> bool:
    """Take an exclusive flock on ``fd``, trying until ``deadline`` (time.monotonic); False if it is
    still held by another then. Non-blocking tries: a blocking flock cannot be given up."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll_s)


def release(run_path: Path) -> None:
    """Drop the lock (if this process holds it). The file stays: deleting a lock file races with
    a process that has just opened it."""
    fd = _held.pop((run_path / LOCK_NAME).resolve(), None)
    if fd is not None:
        try:
            os.ftruncate(fd, 0)  # still held: a later refusal must not name this process, gone by then
        except OSError:
            pass
        os.close(fd)


def busy(run_path: Path) -> bool:
    """Does another process hold the run's launch lock now (is it submitting)?"""
    path = (run_path / LOCK_NAME).resolve()
    if path in _held:
        return False  # this very process: nobody else is
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False  # never launched with a lock, or not ours to read
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a probe: held only for this call
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def release_all() -> None:
    for path in list(_held):
        release(path.parent)


def _read(fd: int) -> dict[str, object]:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:  # the holder has opened it but not written yet
        return {}


def _describe(holder: dict[str, object]) -> str:
    if not holder:
        return "it has not written its pid yet"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(str(holder.get("time", 0)))))
    argv = holder.get("argv")
    args = " ".join(map(str, argv))[:300] if isinstance(argv, list) else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}, since {since}: {args or '(no arguments)'}"
