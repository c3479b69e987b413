"""`python -m cl_hpc.features list|describe` as a user runs it: a real subprocess, the bundled catalog and a bad one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cl_hpc.features.definitions import load_catalog


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cl_hpc.features", *args], capture_output=True, text=True, timeout=120)


def test_list_and_describe_the_bundled_catalog() -> None:
    listed = _run("list", "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = [r for r in json.loads(listed.stdout) if r["name"] == "user_activity"]
    assert row["ident"] == load_catalog().view("user_activity").ident and row["features"] == 10
    table = _run("list")
    assert table.returncode == 0 and "user_activity" in table.stdout and "48h" in table.stdout
    described = _run("describe", "user_activity")
    assert described.returncode == 0, described.stderr
    assert "amount_mean_24h" in described.stdout and "mean spending per event in the last 24 hours" in described.stdout


def test_bad_catalog_and_unknown_view_exit_2(tmp_path: Path) -> None:
    unknown = _run("describe", "nope")
    assert unknown.returncode == 2 and "no feature view 'nope'" in unknown.stderr and "user_activity" in unknown.stderr
    (tmp_path / "bad.yaml").write_text("name: bad\nversion: one\n")
    bad = _run("list", "--catalog", str(tmp_path))
    assert bad.returncode == 2 and "version='one' must be an integer >= 1" in bad.stderr
    assert "Traceback" not in bad.stderr
