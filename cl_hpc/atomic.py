"""Atomic file writes: a reader (or a crash) never sees half a file, only the old one or the new one.

No imports beyond the standard library, and none of its heavier modules: every Slurm job writes
its records through here, and ``tempfile`` (with ``shutil``, ``random`` and the compressors it
pulls in) would add a few ms to each job's start, times eight jobs starting at once on a node.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

TYPE_CHECKING = False  # on the job path: no typing at run time (cl_hpc/dag/unit_call.py)
if TYPE_CHECKING:
    from typing import Any


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())  # the rename must not overtake the data on a crash
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _create_temp(path: Path) -> tuple[int, str]:
    """A new hidden file beside ``path``, opened exclusively (pid and random bytes keep writers on
    other hosts of a shared file system apart). Its mode follows the umask, as the final file's should."""
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file beside {path}")


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, value: Any) -> None:
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> Any | None:
    """The parsed file, or None if it does not exist."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
