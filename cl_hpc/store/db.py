"""The SQLite index of runs, tasks and attempts, through sqlite-utils.

Many job processes write at once. Every write transaction starts with BEGIN IMMEDIATE, so a writer
takes the lock up front and waits on the busy timeout instead of failing mid-transaction (the
deferred-upgrade deadlock that surfaces as "database is locked"); a bounded retry with jittered
backoff covers the rest. sqlite-utils' own writes nest inside as savepoints.
The default rollback journal is safe on the network filesystems clusters share; WAL is offered
for local disks.
"""

from __future__ import annotations

import random
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar


def _import_sqlite_utils() -> Any:
    """sqlite-utils imports pandas when it is installed (0.45 s on the test VM) only to map
    ``pandas.Timestamp`` to TEXT. The store never inserts pandas objects, and launch, status and
    the local scheduler open it on every call, so they skip that import: ``None`` in sys.modules
    makes ``import pandas`` raise ImportError, which sqlite-utils expects and handles."""
    if "pandas" in sys.modules:
        import sqlite_utils
        return sqlite_utils
    sys.modules["pandas"] = None  # type: ignore[assignment]
    try:
        import sqlite_utils
        return sqlite_utils
    finally:
        del sys.modules["pandas"]


sqlite_utils = _import_sqlite_utils()

from cl_hpc.errors import StoreError  # noqa: E402  (after the pandas-free import above)

T = TypeVar("T")
DB_NAME = "cl_hpc.db"
_JOURNAL_MODES = ("delete", "truncate", "persist", "wal")


def _v1(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE runs (run_id TEXT PRIMARY KEY, pipeline TEXT, backend TEXT, created FLOAT,
        state TEXT, run_dir TEXT, host TEXT, n_units INTEGER, n_completed INTEGER, n_failed INTEGER,
        n_cancelled INTEGER, updated FLOAT)"""
    )
    conn.execute(
        """CREATE TABLE tasks (run_id TEXT, key TEXT, task TEXT, shard INTEGER, state TEXT,
        attempts INTEGER, started FLOAT, ended FLOAT, duration_s FLOAT, cpus INTEGER, gpus INTEGER,
        mem_gb FLOAT, time_min FLOAT, log TEXT, fingerprint TEXT, root_cause TEXT, error TEXT,
        PRIMARY KEY (run_id, key))"""
    )
    conn.execute(
        """CREATE TABLE attempts (run_id TEXT, key TEXT, attempt INTEGER, state TEXT, started FLOAT,
        ended FLOAT, host TEXT, pid INTEGER, job_id TEXT, log TEXT, error TEXT, fingerprint TEXT,
        PRIMARY KEY (run_id, key, attempt))"""
    )
    conn.execute("CREATE INDEX idx_tasks_state ON tasks (state)")


def _v2(conn: sqlite3.Connection) -> None:
    # One row per profiled attempt segment (a requeued attempt resumes as a new segment). The
    # columns are what the right-sizer and the efficiency report query; the whole record,
    # samples included, stays in the run dir's profile file (record_path).
    conn.execute(
        """CREATE TABLE profiles (run_id TEXT, key TEXT, attempt INTEGER, segment INTEGER, task TEXT,
        pipeline TEXT, config_fp TEXT, outcome TEXT, state TEXT, started FLOAT, ended FLOAT,
        elapsed_s FLOAT, setup_s FLOAT, req_cpus INTEGER, req_gpus INTEGER, req_mem_gb FLOAT,
        req_time_min FLOAT, peak_mem_mb FLOAT, peak_exact INTEGER, peak_source TEXT,
        cpu_pct_mean FLOAT, workers_cpu_pct_mean FLOAT, workers INTEGER, iowait_pct_mean FLOAT,
        steps INTEGER, step_p50_s FLOAT, step_p95_s FLOAT, stall_fraction FLOAT, stall_diagnosis TEXT,
        flops_per_step FLOAT, flops_method TEXT, mfu_datasheet FLOAT, mfu_ceiling FLOAT,
        gpu_util_pct TEXT, energy_j FLOAT, data_rows INTEGER, num_workers INTEGER, job_id TEXT,
        sacct_state TEXT, sacct_elapsed_s FLOAT, sacct_max_rss_mb FLOAT, sacct_total_cpu_s FLOAT,
        record_path TEXT, PRIMARY KEY (run_id, key, attempt, segment))"""
    )
    conn.execute("CREATE INDEX idx_profiles_task ON profiles (pipeline, task, config_fp)")


def _v3(conn: sqlite3.Connection) -> None:
    # The model registry (cl_hpc/registry/). Unlike the run tables these rows are not rebuilt
    # from run dirs: a version, its aliases and their history outlive the run that made them.
    # JSON columns: config, window_partitions, packages, metrics, tags. quarantined is NULL while
    # the checkpoint is trusted, else why it was refused; a quarantined version is never promoted.
    conn.execute(
        """CREATE TABLE models (name TEXT NOT NULL, major INTEGER NOT NULL, minor INTEGER NOT NULL,
        parent_major INTEGER, parent_minor INTEGER, strategy TEXT NOT NULL, checkpoint_path TEXT NOT NULL,
        checkpoint_sha256 TEXT NOT NULL, config TEXT, window_partitions TEXT, window_digest TEXT,
        git_commit TEXT, git_dirty INTEGER, python TEXT, packages TEXT, metrics TEXT, tags TEXT,
        run_id TEXT, task_key TEXT, created FLOAT NOT NULL, quarantined TEXT,
        PRIMARY KEY (name, major, minor))"""
    )
    conn.execute("CREATE INDEX idx_models_sha ON models (name, checkpoint_sha256)")
    conn.execute(
        """CREATE TABLE aliases (name TEXT NOT NULL, alias TEXT NOT NULL, major INTEGER NOT NULL,
        minor INTEGER NOT NULL, updated FLOAT NOT NULL, PRIMARY KEY (name, alias))"""
    )
    # Append-only history of every alias change; the triggers refuse edits and deletes, so
    # rollback can always replay it and an audit can trust it.
    conn.execute(
        """CREATE TABLE alias_events (id INTEGER PRIMARY KEY AUTOINCREMENT, at FLOAT NOT NULL,
        name TEXT NOT NULL, alias TEXT NOT NULL, action TEXT NOT NULL, from_major INTEGER,
        from_minor INTEGER, to_major INTEGER NOT NULL, to_minor INTEGER NOT NULL, reason TEXT NOT NULL,
        actor TEXT, run_id TEXT)"""
    )
    conn.execute("CREATE INDEX idx_alias_events ON alias_events (name, alias, id)")
    for verb in ("UPDATE", "DELETE"):
        conn.execute(f"""CREATE TRIGGER alias_events_no_{verb.lower()} BEFORE {verb} ON alias_events
            BEGIN SELECT RAISE(ABORT, 'alias_events is append-only'); END""")


def _v4(conn: sqlite3.Connection) -> None:
    # The profile's stall verdict (cl_hpc/profile/diagnosis.py Verdict), which the right-sizer acts
    # on; NULL in older rows, which the right-sizer diagnoses from their measures instead.
    conn.execute("ALTER TABLE profiles ADD COLUMN stall_verdict TEXT")


def _v5(conn: sqlite3.Connection) -> None:
    # One name and one unit per measure, as the profile record has them (cl_hpc/profile/record.py):
    # iowait as a 0-1 fraction like every other share, workers as the record's workers_max.
    conn.execute("ALTER TABLE profiles RENAME COLUMN iowait_pct_mean TO iowait_fraction")
    conn.execute("UPDATE profiles SET iowait_fraction = iowait_fraction / 100.0")
    conn.execute("ALTER TABLE profiles RENAME COLUMN workers TO workers_max")


def _v6(conn: sqlite3.Connection) -> None:
    # Any model (the model contract, cl_hpc/learn/contract.py): what a version is, so that loading it
    # rebuilds the recorded class and the gate and the server can check the signature. NULL in older
    # rows (the bundled MLP's first checkpoint format, which still loads).
    for column in ("model_class TEXT", "init_args TEXT", "datamodule_class TEXT", "signature TEXT"):
        conn.execute(f"ALTER TABLE models ADD COLUMN {column}")


def _v7(conn: sqlite3.Connection) -> None:
    # Testing in production (cl_hpc/rollout/): an experiment is written once (what it tests, on which
    # versions, how units are assigned) and everything that happens to it is an appended event (weights,
    # steps, halts, decisions), like the alias log: an audit replays it, and nothing is edited.
    conn.execute(
        """CREATE TABLE experiments (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, kind TEXT NOT NULL,
        unit TEXT NOT NULL, salt TEXT NOT NULL, arms TEXT NOT NULL, config TEXT NOT NULL, created FLOAT NOT NULL,
        actor TEXT, reason TEXT NOT NULL)"""
    )
    conn.execute(
        """CREATE TABLE experiment_events (id INTEGER PRIMARY KEY AUTOINCREMENT,
        experiment_id INTEGER NOT NULL REFERENCES experiments (id), at FLOAT NOT NULL, action TEXT NOT NULL,
        state TEXT NOT NULL, weights TEXT NOT NULL, detail TEXT NOT NULL, reason TEXT NOT NULL, actor TEXT)"""
    )
    conn.execute("CREATE INDEX idx_experiments_name ON experiments (name, id)")
    conn.execute("CREATE INDEX idx_experiment_events ON experiment_events (experiment_id, id)")
    for table in ("experiments", "experiment_events"):
        for verb in ("UPDATE", "DELETE"):
            conn.execute(f"""CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table}
                BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END""")


# Append only: migration N brings a database from user_version N-1 to N.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_v1, _v2, _v3, _v4, _v5, _v6, _v7)


class Store:
    def __init__(self, root: Path | str, journal_mode: str = "delete", busy_timeout_s: float = 60.0) -> None:
        if journal_mode.lower() not in _JOURNAL_MODES:
            raise StoreError(f"store.journal_mode={journal_mode!r} is not one of {', '.join(_JOURNAL_MODES)}")
        self.path = Path(root) / DB_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout_s = busy_timeout_s
        # isolation_level=None: transactions are begun explicitly below, never implicitly.
        conn = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None)
        self.db = sqlite_utils.Database(conn)
        self._retry(lambda: conn.execute(f"PRAGMA journal_mode={journal_mode}"))
        self._transaction(self._migrate)

    def close(self) -> None:
        self.db.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        # Inside one IMMEDIATE transaction, DDL included: two processes never both migrate.
        current = self.version
        for number, migration in enumerate(MIGRATIONS[current:], start=current + 1):
            migration(self.db.conn)
            self.db.conn.execute(f"PRAGMA user_version={number}")

    def _transaction(self, work: Callable[[], T]) -> T:
        conn = self.db.conn

        def attempt() -> T:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work()
                conn.execute("COMMIT")
                return result
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        return self._retry(attempt)

    def _retry(self, action: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.busy_timeout_s
        delay = 0.05
        while True:
            try:
                return action()
            except sqlite3.OperationalError as exc:
                transient = "locked" in str(exc) or "busy" in str(exc)
                if not transient or time.monotonic() > deadline:
                    raise StoreError(f"cannot write {self.path}: {exc}") from exc
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 1.0)

    def upsert(self, table: str, rows: Iterable[Mapping[str, Any]]) -> None:
        rows = [dict(r) for r in rows]
        if rows:
            pk = self.db[table].pks
            self._transaction(lambda: self.db[table].upsert_all(rows, pk=pk))

    def delete_run(self, run_id: str) -> None:
        def action() -> None:
            for table in ("profiles", "attempts", "tasks", "runs"):
                self.db.execute(f"DELETE FROM {table} WHERE run_id = ?", [run_id])

        self._transaction(action)

    def rows(self, table: str, where: str | None = None, args: Iterable[Any] = (),
             order_by: str | None = None) -> list[dict[str, Any]]:
        return list(self.db[table].rows_where(where, list(args), order_by=order_by))
