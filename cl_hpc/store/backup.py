"""A consistent copy of the store, taken while jobs, watches and promoters may be writing to it.

The run tables can be rebuilt from run dirs (``store rebuild``); the registry's (models, aliases,
alias_events) cannot: they outlive the runs that made them, so the store file is primary data and
wants a backup. Copying the file with ``cp`` can catch a writer mid-transaction; SQLite's online
backup API copies a consistent snapshot, committed transactions only. The copy is checked
(``PRAGMA integrity_check``) before it takes its name, and an existing file is never replaced.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cl_hpc.errors import StoreError
from cl_hpc.store.uri import sqlite_uri

COUNTED = ("runs", "models", "alias_events")  # what the summary line reports
STAMP = "cl_hpc-%Y%m%d-%H%M%S.db"  # the name a directory target's copy gets (UTC)
_STAMPED = re.compile(r"^cl_hpc-\d{8}-\d{6}\.db$")  # only such names are ever pruned


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size_bytes: int
    schema_version: int
    rows: dict[str, int]  # table -> rows, for the tables of COUNTED that exist
    pruned: tuple[Path, ...] = ()  # older time-stamped copies removed by ``keep``


def names_directory(dest: Path | str) -> bool:
    """Whether ``dest`` is a directory, or ends in / (the raw text: Path() drops a trailing slash)."""
    return str(dest).endswith(os.sep) or Path(dest).is_dir()


def backup_path(dest: Path | str, now: float) -> Path:
    """``dest`` itself, or a time-stamped file inside it when it names a directory."""
    return Path(dest) / time.strftime(STAMP, time.gmtime(now)) if names_directory(dest) else Path(dest)


def backup(db_path: Path, dest: Path | str, busy_timeout_s: float = 60.0, keep: int | None = None,
           clock: Callable[[], float] = time.time) -> BackupResult:
    """Copy the store at ``db_path`` to ``dest`` (a file, or a directory for a time-stamped name).

    ``keep``: with a directory, then remove all but the newest ``keep`` time-stamped copies in it.
    """
    if keep is not None and keep < 1:
        raise StoreError(f"keep={keep}: keep at least the copy just made (1 or more)")
    if keep is not None and not names_directory(dest):
        raise StoreError(f"keep applies to a directory of time-stamped copies; {dest} names one file")
    if not db_path.is_file():
        raise StoreError(f"no store at {db_path}: nothing to back up (store.root names its directory; "
                         f"the file is created by the first launch)")
    target = backup_path(dest, clock())
    if target.exists():
        raise StoreError(f"{target} exists; a backup never replaces a file: name another path, or a directory "
                         f"for a time-stamped name")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        _copy(db_path, tmp, busy_timeout_s)
        version, rows = _check(tmp)
        try:
            os.link(tmp, target)  # fails if a file took the name meanwhile: never overwrite
        except FileExistsError:
            raise StoreError(f"{target} appeared while the backup ran; the copy was not kept") from None
    finally:
        for leftover in (tmp, *(tmp.with_name(tmp.name + end) for end in ("-journal", "-wal", "-shm"))):
            leftover.unlink(missing_ok=True)
    pruned = _prune(target, keep) if keep is not None else ()
    return BackupResult(target, target.stat().st_size, version, rows, pruned)


def _prune(made: Path, keep: int) -> tuple[Path, ...]:
    """Remove all but the newest ``keep`` time-stamped copies beside ``made``, which always stays
    (a clock that went back must not make it "the oldest"). Other files are never touched."""
    others = sorted(p for p in made.parent.iterdir() if _STAMPED.match(p.name) and p.name != made.name)
    # Never a negative end: with fewer older copies than keep - 1, others[:-k] would remove some.
    old = others[:max(0, len(others) - (keep - 1))]
    for path in old:
        path.unlink(missing_ok=True)
    return tuple(old)


def _copy(source: Path, tmp: Path, busy_timeout_s: float) -> None:
    # Read-only: a backup must never take a write lock or run the migrations.
    src = sqlite3.connect(sqlite_uri(source), uri=True, timeout=busy_timeout_s)
    dst = sqlite3.connect(tmp)
    try:
        # In one step: a copy in steps starts over whenever another connection commits, and
        # might never finish under busy writers. Writers wait meanwhile (busy timeout); in WAL
        # mode they do not even wait.
        src.backup(dst)
        # A copy of a WAL store is in WAL mode too; as a plain file it opens (and checks) without
        # leaving -wal/-shm files beside it. Restoring it to a WAL store sets the mode again.
        dst.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.Error as exc:
        raise StoreError(f"backing up {source} failed: {exc}") from exc
    finally:
        dst.close()
        src.close()
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())  # on disk before it takes its name


def _check(path: Path) -> tuple[int, dict[str, int]]:
    conn = sqlite3.connect(sqlite_uri(path), uri=True)
    try:
        verdict = conn.execute("PRAGMA integrity_check").fetchone()[0]
        if verdict != "ok":
            raise StoreError(f"the copy failed SQLite's integrity check ({verdict}); it was not kept")
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        rows = {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in COUNTED if t in tables}
    finally:
        conn.close()
    return version, rows
