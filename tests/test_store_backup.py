"""`python -m cl_hpc.store backup`: a consistent, checked copy of a real SQLite store, registry included."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cl_hpc.errors import StoreError
from cl_hpc.registry import ModelRegistry
from cl_hpc.rightsize.apply import ReadOnlyDb
from cl_hpc.store.backup import backup
from cl_hpc.store.db import DB_NAME, Store
from tests.conftest import REPO, _env
from tests.unit.test_registry import make_checkpoint


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A store with one run row, two versions of a model and a promotion."""
    root = tmp_path / "store"
    with ModelRegistry.open(root) as reg:
        for seed, (strategy, parent) in enumerate([("stateless", None), ("stateful", "1.0")]):
            path = tmp_path / f"run{seed}" / "model.pt"
            sha = make_checkpoint(path, seed, 16)
            reg.register("retrain", path, strategy=strategy, parent=parent, checkpoint_sha256=sha, workdir=REPO,
                         run_id=f"run{seed}", task_key="train")
        reg.promote("retrain", "1.1", reason="beat 1.0")
        reg.store.upsert("runs", [{"run_id": "run1", "pipeline": "continual", "state": "COMPLETED"}])
    return root


def _rows(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_the_copy_holds_the_registry_and_the_runs(store: Path, tmp_path: Path) -> None:
    result = backup(store / DB_NAME, tmp_path / "backups" / "copy.db")
    assert result.path == tmp_path / "backups" / "copy.db" and result.size_bytes == result.path.stat().st_size
    assert result.rows == {"runs": 1, "models": 2, "alias_events": 1}
    assert result.schema_version == Store(store).version
    query = "SELECT name, major, minor, checkpoint_sha256 FROM models ORDER BY major, minor"
    assert _rows(result.path, query) == _rows(store / DB_NAME, query)
    assert not list(result.path.parent.glob(".*.tmp"))  # no temporary file left behind


def test_a_directory_gets_a_time_stamped_name_and_nothing_is_ever_replaced(store: Path, tmp_path: Path) -> None:
    when = time.mktime((2026, 11, 27, 4, 5, 6, 0, 0, 0)) - time.timezone
    first = backup(store / DB_NAME, tmp_path, clock=lambda: when)
    assert first.path == tmp_path / "cl_hpc-20261127-040506.db"
    before = first.path.read_bytes()
    with pytest.raises(StoreError, match="exists; a backup never replaces a file"):
        backup(store / DB_NAME, tmp_path, clock=lambda: when)
    assert first.path.read_bytes() == before


def test_a_missing_store_is_named(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"no store at .*cl_hpc.db: nothing to back up \(store.root"):
        backup(tmp_path / "nowhere" / DB_NAME, tmp_path / "copy.db")
    assert not (tmp_path / "copy.db").exists()


def test_an_uncommitted_write_is_not_copied_and_does_not_block(store: Path, tmp_path: Path) -> None:
    writer = sqlite3.connect(store / DB_NAME, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")  # what every store writer does; readers go on meanwhile
        writer.execute("INSERT INTO runs (run_id, pipeline, state) VALUES ('half', 'x', 'RUNNING')")
        copy = backup(store / DB_NAME, tmp_path / "copy.db", busy_timeout_s=5)
        writer.execute("COMMIT")
    finally:
        writer.close()
    assert _rows(copy.path, "SELECT run_id FROM runs") == [("run1",)]
    assert sorted(_rows(store / DB_NAME, "SELECT run_id FROM runs")) == [("half",), ("run1",)]


def test_cli_prints_what_it_copied_and_exits_2_on_errors(store: Path, tmp_path: Path) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cl_hpc.store", "backup", *args, "--store-root", str(store)],
                              cwd=REPO, capture_output=True, text=True, timeout=60, env=_env())

    ok = cli(f"{tmp_path / 'b'}/")  # a trailing slash: a directory, made if missing
    assert ok.returncode == 0, ok.stderr
    assert "backed up" in ok.stdout and "2 models, 1 alias_events" in ok.stdout
    (made,) = (tmp_path / "b").glob("cl_hpc-*.db")
    assert str(made) in ok.stdout
    again = cli(str(made))
    assert again.returncode == 2 and f"error: {made} exists" in again.stderr


def test_keep_prunes_only_older_time_stamped_copies(store: Path, tmp_path: Path) -> None:
    folder = tmp_path / "nightly"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")  # not a copy: never touched
    days = [time.mktime((2026, 11, d, 3, 15, 0, 0, 0, 0)) - time.timezone for d in (24, 25, 26, 27)]
    made = [backup(store / DB_NAME, folder, keep=2, clock=lambda t=t: t) for t in days]
    assert sorted(p.name for p in folder.iterdir()) == ["cl_hpc-20261126-031500.db", "cl_hpc-20261127-031500.db",
                                                       "notes.txt"]
    assert made[-1].pruned == (folder / "cl_hpc-20261125-031500.db",)
    # A clock that went back: the copy just made stays; a user's file of a similar name is never touched.
    (folder / "cl_hpc-before-migration.db").write_text("mine")
    earlier = backup(store / DB_NAME, folder, keep=1, clock=lambda: days[0])
    assert earlier.path.exists() and (folder / "cl_hpc-before-migration.db").exists()
    assert sorted(p.name for p in folder.iterdir()) == ["cl_hpc-20261124-031500.db", "cl_hpc-before-migration.db",
                                                       "notes.txt"]
    with pytest.raises(StoreError, match="keep at least the copy just made"):
        backup(store / DB_NAME, folder, keep=0)
    with pytest.raises(StoreError, match="names one file"):
        backup(store / DB_NAME, tmp_path / "one.db", keep=3)


def test_a_wal_store_is_copied_with_what_its_log_holds(tmp_path: Path) -> None:
    with Store(tmp_path / "wal", journal_mode="wal") as live:  # store.journal_mode=wal, a writer still open
        live.upsert("runs", [{"run_id": "in-the-wal", "pipeline": "p", "state": "COMPLETED"}])
        assert (tmp_path / "wal" / f"{DB_NAME}-wal").stat().st_size > 0  # not yet checkpointed
        copy = backup(tmp_path / "wal" / DB_NAME, tmp_path / "copy.db")
    assert _rows(copy.path, "SELECT run_id FROM runs") == [("in-the-wal",)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.db", "wal"]  # no -wal/-shm/temp left over


def test_keep_holds_that_many_daily_copies_over_twenty_days(store: Path, tmp_path: Path) -> None:
    """Issue 10, defect 1: the prune slice went negative, so --keep 14 held 7 and --keep 4 held 2."""
    start = time.mktime((2026, 11, 1, 3, 0, 0, 0, 0, 0)) - time.timezone
    for keep in (14, 4, 1):
        folder = tmp_path / f"keep{keep}"
        for day in range(20):
            made = backup(store / DB_NAME, f"{folder}/", keep=keep, clock=lambda d=day: start + d * 86400)
            held = sorted(p.name for p in folder.iterdir())
            assert len(held) == min(day + 1, keep), (keep, day, held)
            assert held[-1] == made.path.name  # the newest copies are the ones kept
        assert held[0] == time.strftime("cl_hpc-%Y%m%d-%H%M%S.db", time.gmtime(start + (20 - keep) * 86400))


def test_a_store_path_with_uri_characters_is_copied_whole(store: Path, tmp_path: Path) -> None:
    """Issue 10, defect 7: a `?` pasted raw into a file: URI opened another, empty database."""
    weird = tmp_path / "ops?v=2#x%41"
    shutil.copytree(store, weird)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = backup(weird / DB_NAME, tmp_path / "copy.db")
    assert result.rows == {"runs": 1, "models": 2, "alias_events": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "copy.db"])  # no stray file
    with ReadOnlyDb(weird / DB_NAME) as db:  # the right-sizer's read-only view of the store
        assert len(db.rows("models", "1 = 1", [])) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "copy.db"])
