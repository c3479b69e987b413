"""One name and one unit per measure from the profile record through the store to the right-sizer
(issue 10): iowait is a 0-1 fraction named iowait_fraction everywhere (it was iowait_pct_mean, a
percent, in the record and the store, and iowait_fraction in the right-sizer), the MFU against the
measured ceiling is mfu_ceiling (it was mfu_measured_ceiling in the record), the loader worker count
is workers_max. Old profile.json files and old stores stay readable. Real files, real SQLite."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from cl_hpc.profile import record
from cl_hpc.rightsize import apply as rs
from cl_hpc.rundir.layout import RunDir
from cl_hpc.store.db import MIGRATIONS, Store
from cl_hpc.store.profiles import profile_row, profile_rows

if TYPE_CHECKING:
    from cl_hpc.profile.record import ProfileRecord

IDENTITY = {"run_id": "r1", "key": "train", "attempt": 1, "segment": 0, "task": "train", "pipeline": "p",
            "config_fp": "fp"}
TIMING = {"outcome": "COMPLETED", "started": 100.0, "ended": 160.0, "elapsed_s": 60.0, "setup_s": 5.0,
          "requested": {"cpus": 4, "gpus": 0, "mem_gb": 8.0, "time_min": 30.0}}
STEPS = {"steps": 500, "steady_steps": 490, "data_wait_s": 2.0, "compute_s": 40.0, "step_p50_s": 0.08,
         "step_p95_s": 0.1, "stall_fraction": 0.05}
ATTEMPTS = {("r1", "train", 1): {"state": "COMPLETED", "error": None}}


def new_record() -> ProfileRecord:
    host = {"cpu_pct_mean": 150.0, "workers_cpu_pct_mean": 120.0, "workers_max": 2, "iowait_fraction": 0.25,
            "hwm_mb_max": 900.0}
    compute = {"flops_per_step": 8e9, "peak_flops_per_s": None, "ceiling_flops_per_s": 1e12}
    return record.build_record(IDENTITY, TIMING, STEPS, host, record.best_memory(None, 900.0, 800.0), [],
                               compute, {"num_workers": 2, "data_rows": 1000}, {"t": [0.0]})


def v1_record() -> dict[str, Any]:
    """A profile.json as version 1 wrote it (names and units of then)."""
    rec: dict[str, Any] = dict(new_record())
    rec["version"] = 1
    host = {k: v for k, v in rec["host"].items() if k != "iowait_fraction"}
    rec["host"] = {**host, "iowait_pct_mean": 25.0}
    compute = {k: v for k, v in rec["compute"].items() if k != "mfu_ceiling"}
    rec["compute"] = {**compute, "mfu_measured_ceiling": 0.1}
    rec["series"] = {"t": [0.0, 1.0], "iowait_pct": [20.0, 30.0]}
    rec["stall"] = {"fraction": 0.05, "diagnosis": "compute-bound: data loading takes 5% of step time"}
    return rec


def test_each_measure_keeps_its_name_and_unit_from_record_to_store_to_right_sizer() -> None:
    rec = new_record()
    compute, steps = rec["compute"], rec["steps"]
    assert rec["version"] == record.VERSION == 2 and compute is not None and steps is not None
    assert compute["mfu_ceiling"] == pytest.approx(8e9 / 0.08 / 1e12)
    assert "mfu_measured_ceiling" not in compute
    row = profile_row(rec, Path("x.json"))
    assert row["mfu_ceiling"] == compute["mfu_ceiling"]
    assert row["iowait_fraction"] == rec["host"]["iowait_fraction"] == 0.25
    assert row["workers_max"] == rec["host"]["workers_max"] and row["step_p95_s"] == steps["step_p95_s"]
    assert row["stall_verdict"] == rec["stall"]["verdict"] == "compute-bound"
    [seen] = rs.observations([row], ATTEMPTS)
    assert seen.iowait_fraction == 0.25 and seen.step_p95_s == 0.1 and seen.loader_verdict == "compute-bound"


def test_a_version_1_profile_json_reads_under_the_new_names(tmp_path: Path) -> None:
    """Run dirs are the source of truth and `store rebuild` re-reads them: an old file must index the same."""
    path = tmp_path / "run" / "tasks" / "train" / "profiles" / "1-0.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(v1_record()))
    [row] = profile_rows(RunDir(tmp_path / "run"))
    assert row["mfu_ceiling"] == 0.1 and row["iowait_fraction"] == pytest.approx(0.25)
    assert row["stall_verdict"] == "compute-bound"  # diagnosed again by the one diagnosis
    upgraded = record.upgrade(v1_record())
    assert upgraded["version"] == 2 and "iowait_pct_mean" not in upgraded["host"]
    series = upgraded["series"] or {}
    assert series["iowait_fraction"] == pytest.approx([0.2, 0.3]) and "iowait_pct" not in series
    assert record.upgrade(new_record()) == new_record()  # a current record passes through


def _old_store(root: Path, version: int) -> Path:
    """A store file as an older cl_hpc left it: migrations 1..version, and one profile row of then."""
    path = root / "cl_hpc.db"
    root.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    for migration in MIGRATIONS[:version]:
        migration(conn)
    conn.execute(f"PRAGMA user_version={version}")
    conn.execute("INSERT INTO profiles (run_id, key, attempt, segment, task, pipeline, config_fp, ended, "
                 "req_cpus, req_gpus, req_mem_gb, req_time_min, peak_exact, cpu_pct_mean, workers_cpu_pct_mean, "
                 "workers, iowait_pct_mean, stall_fraction, num_workers) "
                 "VALUES ('r1', 'train', 1, 0, 'train', 'p', 'fp', 160, 4, 0, 8, 30, 1, 150, 120, 2, 25, 0.05, 2)")
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize("version", [2, 4])
def test_an_old_store_is_migrated_to_the_new_names_and_units(tmp_path: Path, version: int) -> None:
    _old_store(tmp_path, version)
    with Store(tmp_path) as store:
        [row] = store.rows("profiles")
    assert row["iowait_fraction"] == pytest.approx(0.25) and row["workers_max"] == 2
    assert "iowait_pct_mean" not in row and "workers" not in row and row["stall_verdict"] is None


@pytest.mark.parametrize("version", [2, 4])
def test_the_launchers_read_only_history_reads_a_store_not_yet_migrated(tmp_path: Path, version: int) -> None:
    """The launcher reads the history without migrating (ReadOnlyDb): old columns, same measures."""
    path = _old_store(tmp_path, version)
    with rs.ReadOnlyDb(path) as db:
        rows = db.rows("profiles", "task = ?", ["train"])
    [seen] = rs.observations(rows, ATTEMPTS)
    assert seen.iowait_fraction == pytest.approx(0.25) and seen.worker_cpu_util == pytest.approx(0.6)
    assert seen.loader_verdict is None  # the loader rule diagnoses it from these measures
