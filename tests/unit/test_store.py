"""The SQLite store: migrations, upserts, and many concurrent writer processes losing nothing."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
from pathlib import Path

import pytest

from cl_hpc.errors import StoreError
from cl_hpc.store.db import MIGRATIONS, Store


def test_migrations_bring_a_new_database_to_the_latest_version(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        assert store.version == len(MIGRATIONS)
        assert {"runs", "tasks", "attempts"} <= set(store.db.table_names())
    with Store(tmp_path) as again:  # reopening does not migrate twice
        assert again.version == len(MIGRATIONS)


def test_upsert_updates_rows_in_place(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        store.upsert("runs", [{"run_id": "r1", "state": "RUNNING"}])
        store.upsert("runs", [{"run_id": "r1", "state": "COMPLETED"}])
        assert [(r["run_id"], r["state"]) for r in store.rows("runs")] == [("r1", "COMPLETED")]


def test_bad_journal_mode_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="store.journal_mode='nfs' is not one of delete"):
        Store(tmp_path, journal_mode="nfs")


def _writer(root: str, worker: int, rows: int, journal_mode: str) -> None:
    with Store(root, journal_mode=journal_mode, busy_timeout_s=60) as store:
        for i in range(rows):
            store.upsert("attempts", [{"run_id": "r", "key": f"w{worker}", "attempt": i, "state": "COMPLETED"}])
            store.upsert("tasks", [{"run_id": "r", "key": f"w{worker}", "attempts": i + 1}])


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_concurrent_writers_lose_no_rows_and_never_see_locked(tmp_path: Path, journal_mode: str) -> None:
    workers, rows = 8, 40
    ctx = mp.get_context("spawn")  # fresh processes, like jobs: no shared connection state
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, rows, journal_mode)) for w in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * workers, "a writer failed (database is locked?)"
    conn = sqlite3.connect(tmp_path / "cl_hpc.db")
    assert conn.execute("select count(*) from attempts").fetchone()[0] == workers * rows
    assert conn.execute("select min(attempts), max(attempts) from tasks").fetchone() == (rows, rows)
