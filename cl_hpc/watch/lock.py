"""The watch's lock: one watch-launched pipeline of a model at a time.

The lock file (default ``<run_root>/.watch-<model>.lock``) is JSON: who took it (pid and its start
time, host, the Slurm job the watch itself ran in, if any), when, and the run it launches (run id,
run dir, backend, Slurm job ids). The run id is chosen before the launch, so the lock names the
run from its first moment. A detached run keeps the lock after the watch exits (``launched``);
the next watch judges it:

- **held** while the run is not over (per its run dir) and something still drives it: the watch
  that took the lock, while it is still launching; then the run's Slurm jobs (in ``squeue``), or
  its local scheduler process;
- **stale** once the run ended, or nothing drives it any more (the jobs left ``squeue``, the pid on
  this host died). A stale lock is reported and replaced.

A process on another host cannot be checked from here: a watch that ran as a Slurm job (scrontab)
is checked through ``squeue``; otherwise it is trusted for ``GRACE_S`` after it took the lock.

Judging and replacing happen under an exclusive ``fcntl.flock`` on a side file (``<lock>.guard``),
and the lock itself is created with ``os.link`` of a complete temporary file (it fails if the lock
exists, like ``O_EXCL``, and a reader never sees half a file). So of two watches started at once,
exactly one takes the lock. Updates go through cl_hpc.atomic (write, then rename).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import psutil

from cl_hpc import procs
from cl_hpc.atomic import read_json, write_json_atomic
from cl_hpc.errors import ExecutorError
from cl_hpc.execute.slurm.parse import SlurmState
from cl_hpc.rundir.launch_lock import flock_until
from cl_hpc.rundir.layout import RunDir
from cl_hpc.rundir.state import State, run_status

GRACE_S = 600.0  # trust a lock holder on another host (not a Slurm job) for this long
# squeue as asked under the guard: judging calls it at most twice, so the guard is held for at most
# about 2 x (2 tries x 15 s + 1 s of pause) even when slurmctld does not answer.
SQUEUE_TIMEOUT_S, SQUEUE_RETRIES = 15.0, 1
# The longest wait for the guard's flock before naming its holder: about 3x the longest judging.
GUARD_TIMEOUT_S = 180.0
LiveJobs = Callable[[Sequence[str]], dict[str, str]]  # job ids -> {base id: state} of those in squeue


@dataclass(frozen=True)
class Verdict:
    held: bool
    why: str  # for a person: what holds the lock, or why it is stale


@dataclass(frozen=True)
class Taken:
    """The outcome of :meth:`WatchLock.acquire`."""

    ok: bool  # True: this watch holds the lock now
    why: str  # why it could not take the lock (the holder's verdict); "" when ok
    stale: Optional[dict[str, Any]] = None  # the stale lock this watch replaced, with "stale_why"


def live_slurm_jobs(job_ids: Sequence[str]) -> dict[str, str]:
    """{base id: state} of the ``job_ids`` that ``squeue`` still lists (pending, running, ...).

    Bounded (SQUEUE_TIMEOUT_S, SQUEUE_RETRIES): it runs while the guard is held, and other watches wait for it."""
    from cl_hpc.execute.slurm.commands import live_jobs

    return live_jobs(job_ids, timeout_s=SQUEUE_TIMEOUT_S, retries=SQUEUE_RETRIES)


def pid_alive(pid: Any, started: Any) -> bool:
    """The process lives, is no zombie, and is the same one (a pid can be reused: its start time must match)."""
    return procs.alive(pid, started)


def run_ended(run: RunDir) -> Optional[str]:
    """"COMPLETED" or e.g. "2 COMPLETED, 1 FAILED, 1 CANCELLED" once every unit is over; else None."""
    statuses = run_status(run)
    if not all(s.state.terminal for s in statuses.values()):
        return None
    counts = {state: sum(s.state is state for s in statuses.values()) for state in State if state.terminal}
    if counts[State.COMPLETED] == len(statuses):
        return State.COMPLETED
    return ", ".join(f"{n} {state.value}" for state, n in counts.items() if n)


def holder_alive(info: dict[str, Any], host: str, live_jobs: LiveJobs, now: float) -> tuple[bool, str]:
    """Is the watch that took the lock (and may still be launching) alive?"""
    who = f"watch pid {info.get('pid')} on {info.get('host')}"
    if info.get("host") == host:
        alive = pid_alive(info.get("pid"), info.get("pid_started"))
        return alive, f"{who} is {'alive' if alive else 'dead'}"
    job = str(info.get("watch_job") or "")
    if job and job == os.environ.get("SLURM_JOB_ID"):
        # A scrontab entry keeps its job id from one run to the next, and never overlaps itself.
        return False, f"{who} was an earlier run of this Slurm cron job ({job})"
    if job:
        state = live_jobs([job]).get(job, "gone from squeue")
        # PENDING: a cron job waiting for its next time; the run that took the lock is over.
        return state not in (SlurmState.PENDING, "gone from squeue"), f"{who} ran as Slurm job {job}, now {state}"
    age = now - float(info.get("created") or 0.0)
    return age < GRACE_S, f"{who} took the lock {age:.0f} s ago; it cannot be checked from {host}"


def run_alive(run: RunDir, info: dict[str, Any], host: str, live_jobs: LiveJobs) -> tuple[bool, str]:
    """Does anything still drive the run (its Slurm jobs, its local scheduler)?"""
    meta = run.meta()
    backend = meta.get("backend") or info.get("backend")
    if backend == "slurm":
        from cl_hpc.execute.slurm.executor import all_job_ids  # submitit: only for Slurm runs

        ids = all_job_ids(run) or list(info.get("job_ids") or [])
        live = sorted(live_jobs(ids)) if ids else []
        if live:
            return True, f"Slurm job(s) {', '.join(live)} in squeue"
        return False, f"its Slurm job(s) {', '.join(ids) or '(none recorded)'} are no longer in squeue"
    if backend == "local":
        if meta.get("host") not in (None, host):
            return True, f"its local scheduler runs on {meta['host']}; it cannot be checked from {host}"
        from cl_hpc.execute.local import scheduler_alive

        alive = scheduler_alive(run)
        return alive, f"its local scheduler is {'alive' if alive else 'gone'}"
    return False, f"a {backend} run lives only as long as its launcher"


def judge(info: dict[str, Any], host: str, live_jobs: LiveJobs = live_slurm_jobs,
          now: Optional[float] = None) -> Verdict:
    """Held or stale, and why. An error asking Slurm counts as held: never launch on a guess."""
    run_id = info.get("run_id") or "?"
    run = RunDir(info["run_dir"]) if info.get("run_dir") else None
    try:
        ended = run_ended(run) if run is not None and run.exists() else None
        if ended:
            return Verdict(False, f"run {run_id} ended ({ended})")
        return _unfinished(info, run, host, live_jobs, time.time() if now is None else now)
    except ExecutorError as exc:
        return Verdict(True, f"run {run_id} may still be going: {exc}")


def _unfinished(info: dict[str, Any], run: Optional[RunDir], host: str, live_jobs: LiveJobs,
                now: float) -> Verdict:
    run_id, started = info.get("run_id"), run is not None and run.exists()
    if not info.get("launched"):  # the watch may still be launching: it holds the lock while alive
        alive, why = holder_alive(info, host, live_jobs, now)
        if alive:
            return Verdict(True, f"run {run_id} still going: {why}")
        if not started:
            return Verdict(False, f"run {run_id} never started: {why}")
    elif not started:
        return Verdict(False, f"run {run_id} was launched but has no run dir at {info.get('run_dir')}")
    going, how = run_alive(run, info, host, live_jobs)  # type: ignore[arg-type]
    if going:
        return Verdict(True, f"run {run_id} still going: {how}")
    return Verdict(False, f"run {run_id} is unfinished but nothing drives it any more: {how}")


class WatchLock:
    """One lock file; ``acquire`` takes it (or says who holds it), ``update`` and ``release`` are
    for the holder only (they check the token it wrote)."""

    def __init__(self, path: Path, live_jobs: LiveJobs = live_slurm_jobs,
                 guard_timeout_s: float = GUARD_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.live_jobs = live_jobs
        self.guard_timeout_s = guard_timeout_s
        self.token: Optional[str] = None

    def read(self) -> Optional[dict[str, Any]]:
        """The lock's contents; a file that is not a JSON object reads as {} (judged stale)."""
        try:
            data = read_json(self.path)
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) or data is None else {}

    def peek(self) -> Optional[Verdict]:
        """The current holder's verdict without taking anything; None when there is no lock."""
        info = self.read()
        return None if info is None else self._judge(info)

    def clear_stale(self) -> tuple[Optional[Verdict], Optional[dict[str, Any]]]:
        """(verdict, contents) of the lock, removed if stale; (None, None) when there is none."""
        with self._guard():
            info = self.read()
            if info is None:
                return None, None
            verdict = self._judge(info)
            if not verdict.held:
                self.path.unlink(missing_ok=True)
            return verdict, info

    def acquire(self, run_dir: Path, backend: str) -> Taken:
        record = _record(run_dir, backend)
        with self._guard():
            stale = None
            info = self.read()
            if info is not None:
                verdict = self._judge(info)
                if verdict.held:
                    return Taken(False, verdict.why)
                stale = {**info, "stale_why": verdict.why}
                self.path.unlink(missing_ok=True)
            if not _create(self.path, record):  # only without a working flock can this race be lost
                return Taken(False, f"another watch took {self.path} at the same moment")
        self.token = record["token"]
        return Taken(True, "", stale)

    def update(self, **fields: Any) -> None:
        with self._guard():
            info = self._mine()
            write_json_atomic(self.path, {**info, **fields})

    def release(self) -> None:
        with self._guard():
            self._mine()
            self.path.unlink(missing_ok=True)
        self.token = None

    def _mine(self) -> dict[str, Any]:
        info = self.read() or {}
        if self.token is None or info.get("token") != self.token:
            raise ExecutorError(f"{self.path} is not held by this watch (holder: {json.dumps(info)[:300]})")
        return info

    def _judge(self, info: dict[str, Any]) -> Verdict:
        if not info.get("run_id"):
            return Verdict(False, f"unreadable lock file (no run id): {json.dumps(info)[:200]}")
        return judge(info, socket.gethostname(), self.live_jobs)

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """The side file's exclusive flock, for judging and replacing the lock.

        flock needs only an open file, not write access, so a guard others may read is one any of
        them can hold forever: it is the owner's alone (0600), and a guard of another owner is
        refused. A holder is waited for at most ``guard_timeout_s`` (judging takes seconds), then
        named: a hung process must not stall every later watch without a word.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        guard = Path(f"{self.path}.guard")
        deadline = time.monotonic() + self.guard_timeout_s
        while True:
            fd = _open_private(guard)
            try:
                _flock_until(fd, guard, deadline, self.guard_timeout_s, self.read)
                # A guard replaced while this watch waited (an old one made private) is another file:
                # its flock guards nothing, so take the one at the path now.
                if os.fstat(fd).st_ino == os.stat(guard).st_ino:
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        try:
            yield
        finally:
            os.close(fd)  # the flock goes with it, even if this process dies


def _open_private(guard: Path) -> int:
    """The guard, open: this user's, and readable by no one else (a loose one is replaced)."""
    while True:
        fd = os.open(guard, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        info = os.fstat(fd)
        if info.st_uid != os.geteuid():
            os.close(fd)
            raise ExecutorError(f"{guard} belongs to uid {info.st_uid}, not to this user ({os.geteuid()}); another "
                                f"user could hold it and block the watch. Remove it, or give the watch a lock "
                                f"path of its own (--lock)")
        if not info.st_mode & 0o077:
            return fd
        # Made by an older version (0644). A chmod would not revoke what others opened meanwhile, and
        # a read-only descriptor is all flock needs: a fresh private file takes the name instead.
        os.close(fd)
        fresh, tmp = tempfile.mkstemp(prefix=f".{guard.name}.", dir=guard.parent)  # 0600
        os.close(fresh)
        os.replace(tmp, guard)


def _flock_until(fd: int, guard: Path, deadline: float, timeout_s: float,
                 read_lock: Callable[[], Optional[dict[str, Any]]]) -> None:
    if not flock_until(fd, deadline, poll_s=0.05):
        raise ExecutorError(_held_too_long(fd, guard, timeout_s, read_lock()))


def _held_too_long(fd: int, guard: Path, timeout_s: float, lock: Optional[dict[str, Any]]) -> str:
    here = socket.gethostname()
    pids = flock_holders(fd)
    who = (f"pid {', '.join(map(str, pids))} on {here}" if pids else
           f"no process on {here} (/proc/locks names only this host's holders; on a shared filesystem it may "
           f"be a process on another host)")
    recorded = f"; the lock names watch pid {lock.get('pid')} on {lock.get('host')}" if lock else ""
    return (f"{guard} has been locked for over {timeout_s:g} s by {who}{recorded}. A watch judges a lock within "
            f"about a minute, so its holder is hung or is not a watch: stop it, then run the watch again")


def flock_holders(fd: int) -> list[int]:
    """Pids that hold a flock on the file open at ``fd`` (from /proc/locks; empty where there is none)."""
    info = os.fstat(fd)
    inode = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    pids = []
    for line in lines:  # "1: FLOCK  ADVISORY  WRITE 1234 00:2d:5678 0 EOF"; "->" marks a waiter
        fields = line.split()
        if "->" not in fields and len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == inode:
            pids.append(int(fields[4]))
    return sorted(set(pids) - {os.getpid()})


def _record(run_dir: Path, backend: str) -> dict[str, Any]:
    me = psutil.Process()
    return {"token": secrets.token_hex(8), "pid": me.pid, "pid_started": me.create_time(),
            "host": socket.gethostname(), "watch_job": os.environ.get("SLURM_JOB_ID"), "created": time.time(),
            "run_id": Path(run_dir).name, "run_dir": str(Path(run_dir).resolve()), "backend": backend,
            "launched": False, "job_ids": []}


def _create(path: Path, record: dict[str, Any]) -> bool:
    """Write ``record`` to a temporary file and link it to ``path``: False if ``path`` exists."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(record, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
