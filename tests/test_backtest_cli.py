"""`python -m cl_hpc.backtest` as a user runs it: real subprocesses on a tiny generated landing zone,
the report's JSON + PNG, job-array cells merged, bad input, and (marked slurm) the real job array."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, _env

TINY = ["data.n_partitions=10", "data.rows_per_partition=300", "data.drift_at=[4,7]", "data.train_window=3",
        "model.hidden=16", "fit.max_epochs=2", "datamodule.batch_size=64"]


def backtest(tmp: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "cl_hpc.backtest", f"data.landing_dir={tmp / 'zone'}", *TINY, *args]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=_env())


def report(out: Path) -> dict[str, Any]:
    return json.loads((out / "backtest.json").read_text())


def test_a_local_backtest_writes_the_report_json_png_and_tables(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = backtest(tmp_path, "--out", str(out), "backtest.cadences=[1,4,trigger]", "backtest.exclude=[5]",
                    "backtest.workers=2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = report(out)
    names = [s["name"] for s in result["summary"]]
    assert names == [f"{c}/{s}" for c in ("every-1", "every-4", "trigger") for s in ("stateless", "stateful", "hybrid")]
    assert result["recommendation"]["cell"] in names and "mean accuracy >=" in result["recommendation"]["why"]
    assert {r["staleness"] for r in result["freshness"] if r["strategy"] == "all"} >= set(range(4))
    assert result["backtest"]["exclude"] == [5] and result["model"]["hidden"] == 16
    assert all(s["windows_scored"] == 10 - 3 - 1 for s in result["summary"])  # window 5 excluded, not scored
    assert (out / "freshness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((out / "cells").glob("cell-*.json"))) == 9
    for fragment in ("Backtest: one row per cadence x strategy", "Freshness", "recommended:", "backtest.json"):
        assert fragment in proc.stdout


def test_cells_run_one_by_one_then_merge_as_in_a_job_array(tmp_path: Path) -> None:
    out, grid = tmp_path / "out", ["backtest.cadences=[2]", "backtest.strategies=[stateless,hybrid]"]
    first = backtest(tmp_path, "--out", str(out), "--only-cell", "1", *grid)
    assert first.returncode == 0 and not (out / "backtest.json").exists(), first.stderr
    missing = backtest(tmp_path, "--out", str(out), "--merge", *grid)
    assert missing.returncode == 2 and "cell-000.json is missing" in missing.stdout
    assert "Traceback" not in missing.stderr
    assert backtest(tmp_path, "--out", str(out), "--only-cell", "0", *grid).returncode == 0
    other = backtest(tmp_path, "--out", str(out), "--merge", "backtest.cadences=[2]",
                     "backtest.strategies=[stateless,hybrid]", "model.hidden=8")
    assert other.returncode == 2 and "other ['model'] settings" in other.stdout
    merged = backtest(tmp_path, "--out", str(out), "--merge", *grid)
    assert merged.returncode == 0, merged.stdout + merged.stderr
    assert [s["name"] for s in report(out)["summary"]] == ["every-2/stateless", "every-2/hybrid"]


@pytest.mark.parametrize("args,fragment", [
    (["backtest.cadences=[0]"], "integer >= 1"),
    (["backtest.tolerance=much"], "tolerance"),
    (["model.hiden=3"], "hiden"),
    (["--only-cell", "99"], "cells 0..14"),
    (["backtest.exclude=[99]"], "indices run 0..9"),
])
def test_bad_input_is_one_clear_line(tmp_path: Path, args: list[str], fragment: str) -> None:
    proc = backtest(tmp_path, "--out", str(tmp_path / "out"), *args)
    assert proc.returncode == 2 and fragment in proc.stdout, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_slurm_dry_run_prints_the_array_and_the_merge_job(tmp_path: Path) -> None:
    proc = backtest(tmp_path, "--out", str(tmp_path / "out"), "--slurm", "--dry-run", "backtest.cadences=[1,2]")
    assert proc.returncode == 0, proc.stderr
    assert "#SBATCH --array=0,1,2,3,4,5" in proc.stdout and "--only-cell $SLURM_ARRAY_TASK_ID" in proc.stdout
    assert "afterok:{array_job}" in proc.stdout and f"data.landing_dir={tmp_path / 'zone'}" in proc.stdout


@pytest.mark.slurm
def test_slurm_runs_the_grid_as_one_array_and_merges_after_it(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = backtest(tmp_path, "--out", str(out), "--slurm", "backtest.cadences=[3]",
                    "backtest.strategies=[stateless,stateful]", "backtest.slurm_time_min=10")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "submitted 2 cells as job array" in proc.stdout
    deadline = time.monotonic() + 600
    while not (out / "backtest.json").exists() and time.monotonic() < deadline:
        time.sleep(2)
    logs = "\n".join(p.read_text() for p in sorted((out / "slurm").glob("*.err")))
    assert (out / "backtest.json").exists(), f"no report after 10 min; job logs:\n{logs}"
    assert [s["name"] for s in report(out)["summary"]] == ["every-3/stateless", "every-3/stateful"]
    assert (out / "freshness.png").exists()
