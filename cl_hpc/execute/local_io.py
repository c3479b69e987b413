"""How the local scheduler writes: to its log, and to the run dir even when the disk is full.

A full disk must not leave a run stuck. A task that cannot write its outputs cannot write its
FAILED record either, so the scheduler records it, and it must be able to write when nothing else
can: it keeps a small reserve file in the run dir, frees it on the first write that fails for lack
of space, and writes again. Any write that still fails is reported in scheduler.log (stdout), and
the scheduler goes on with what it knows instead of dying.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

from cl_hpc import procs
from cl_hpc.atomic import read_json, write_json_atomic
from cl_hpc.execute.local_orphans import SCHEDULER_FILE
from cl_hpc.rundir.layout import RunDir

RESERVE_FILE = "scheduler.reserve"
RESERVE_BYTES = 1 << 20  # room for a few hundred small records (a page or block each)


def disk_note(path: Path) -> str | None:
    """Why a process may have failed to write under ``path``: its file system is full, or None."""
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return None
    if free >= RESERVE_BYTES:
        return None
    return (f"ENOSPC: the file system of {path} is full ({free // 1024} KB free: No space left on device); "
            f"free space there and resume the run")


class Recorder:
    def __init__(self, run: RunDir) -> None:
        self.run = run
        self.reserve_path = run.path / RESERVE_FILE

    def log(self, line: str) -> None:
        try:
            print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}", flush=True)
        except OSError:  # the log is on the full disk too: the records say it
            pass

    def write(self, what: str, write: Callable[[], Any]) -> bool:
        """Run ``write``; on a full disk free the reserve and run it once more. False (and logged)
        if it still fails: the caller goes on, so one lost record never stops the run."""
        try:
            write()
            return True
        except OSError as exc:
            if not (procs.is_disk_full(exc) and self.release()):
                self.log(f"cl_hpc scheduler: could not write {what}: {exc}")
                return False
            self.log(f"cl_hpc scheduler: disk full writing {what} ({exc}); freed its {RESERVE_BYTES >> 10} KB "
                     f"reserve ({self.reserve_path.name}) and wrote again")
        try:
            write()
            return True
        except OSError as exc:
            self.log(f"cl_hpc scheduler: could not write {what}, even after freeing its reserve: {exc}")
            return False

    def update_scheduler(self, **values: Any) -> bool:
        path = self.run.path / SCHEDULER_FILE
        return self.write(f"{path.name} ({', '.join(values)})",
                          lambda: write_json_atomic(path, {**(read_json(path) or {}), **values}))

    def reserve(self) -> None:
        try:
            with open(self.reserve_path, "wb") as handle:
                handle.write(b"\0" * RESERVE_BYTES)  # written, not sparse: the blocks are really held
        except OSError as exc:
            self.reserve_path.unlink(missing_ok=True)
            self.log(f"cl_hpc scheduler: no room for its {RESERVE_BYTES >> 10} KB reserve ({exc}); going on without")

    def release(self) -> bool:
        """Free the reserve; False if there was none left to free."""
        try:
            self.reserve_path.unlink()
            return True
        except FileNotFoundError:
            return False
