"""Right-sizing end to end on the local backend: a profiled run, then the next run's plan sized
from it (rightsize.mode=auto|suggest|off), and the efficiency report of the first run."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO, Launcher, _env


def _first_run(launcher: Launcher) -> dict:
    result = launcher("cluster=local", "pipeline=sizing")
    assert result.proc.returncode == 0, result.output
    profile = json.loads((result.run_dir() / "tasks" / "hog" / "profile.json").read_text())
    assert profile["outcome"] == "COMPLETED" and profile["memory"]["exact"]
    assert profile["memory"]["peak_mb"] >= 300  # the 300 MB it held, however briefly
    return profile


def test_auto_sizes_the_next_run_from_the_measured_peak_and_says_why(launcher: Launcher) -> None:
    peak_gb = _first_run(launcher)["memory"]["peak_mb"] / 1024
    result = launcher("cluster=local", "pipeline=sizing", "rightsize.mode=auto")
    assert result.proc.returncode == 0, result.output
    assert "rightsize hog: set mem_gb 2 ->" in result.output and "peak" in result.output
    plan = json.loads((result.run_dir() / "plan.json").read_text())
    (res,) = [t["resources"] for t in plan["tasks"] if t["name"] == "hog"]
    assert peak_gb <= res["mem_gb"] and peak_gb / res["mem_gb"] >= 0.8, res  # sized, with the margin
    assert res["time_min"] == 1  # seconds of work: Slurm's smallest limit
    assert plan["meta"]["rightsize"]["mode"] == "auto"
    second = json.loads((result.run_dir() / "tasks" / "hog" / "profile.json").read_text())
    assert second["outcome"] == "COMPLETED" and second["requested"]["mem_gb"] == res["mem_gb"]


def test_suggest_prints_the_changes_but_keeps_the_plan_and_off_reads_nothing(launcher: Launcher) -> None:
    _first_run(launcher)
    suggest = launcher("cluster=local", "pipeline=sizing", "launch.dry_run=true")  # suggest is the default
    assert suggest.proc.returncode == 0, suggest.output
    assert "rightsize hog: suggest mem_gb 2 ->" in suggest.output and "mem=2G" in suggest.output
    auto = launcher("cluster=local", "pipeline=sizing", "launch.dry_run=true", "rightsize.mode=auto")
    assert "rightsize hog: set mem_gb" in auto.output and "mem=2G" not in auto.output
    off = launcher("cluster=local", "pipeline=sizing", "launch.dry_run=true", "rightsize.mode=off")
    assert "rightsize" not in off.output and "mem=2G" in off.output
    bad = launcher("cluster=local", "pipeline=sizing", "rightsize.mode=sometimes")
    assert bad.proc.returncode == 2 and "rightsize.mode='sometimes'" in bad.output and "auto" in bad.output


def test_efficiency_report_of_a_local_run(launcher: Launcher) -> None:
    _first_run(launcher)
    proc = subprocess.run([sys.executable, "-m", "cl_hpc.report", "efficiency", "--run-root", str(launcher.run_root),
                           "--json"], cwd=REPO, capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)["attempts"]
    assert row["key"] == "hog" and row["state"] == "COMPLETED" and row["mem_req_gb"] == 2
    assert 0.13 < row["mem_eff"] < 0.5  # ~0.3 GB of 2
    assert row["time_eff"] < 0.05 and row["cpus_req"] == 1
    assert "mem=" in row["recommended"] and any(r.startswith("mem_gb") for r in row["reasons"])
    table = subprocess.run([sys.executable, "-m", "cl_hpc.report", "efficiency", "--run-root", str(launcher.run_root)],
                           cwd=REPO, capture_output=True, text=True, timeout=120, env=_env())
    assert table.returncode == 0 and "hog #1" in table.stdout and "core-h" in table.stdout
