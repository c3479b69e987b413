"""`python -m cl_hpc.experiment simulate` in a real subprocess on a generated landing zone; bad input
exits 2 with its message before any work. (Needs the subcommand wired into cl_hpc/experiment/__main__.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, _env


def _cli(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cl_hpc.experiment", "simulate", *args, f"store.root={tmp / 'store'}",
                           f"data.landing_dir={tmp / 'zone'}", "data.n_partitions=6",
                           "data.train_window=4", "data.eval_window=2"], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=300)


def test_simulate_replays_the_bundled_stream(tmp_path: Path) -> None:
    done = _cli(tmp_path, "--json", "--runs", "1", "--seed", "3")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    results, summary = lines[:-1], lines[-1]
    assert {(r["method"], r["challenger"]) for r in results} == {
        (m, c) for m in ("shadow", "ab", "canary", "interleave", "bandit") for c in ("better", "worse", "equal")}
    by = {(r["method"], r["challenger"]): r for r in results}
    assert by[("canary", "worse")]["decision"] == "rollback"
    assert by[("ab", "worse")]["decision"] != "promote" and by[("ab", "equal")]["decision"] != "promote"
    assert by[("shadow", "worse")]["exposed"] == 0
    assert summary["rows"] == 6 * 2000 - 2000 and summary["runs"] == 1  # the reference champion's rows left out
    table = _cli(tmp_path, "--seed", "3")  # the same zone again, as a table
    assert table.returncode == 0 and "canary" in table.stdout and "rollback" in table.stdout, table.stderr


def test_bad_input_is_refused_before_any_work(tmp_path: Path) -> None:
    missing = _cli(tmp_path, "--zone", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = _cli(tmp_path, "--zone", str(empty))
    assert refused.returncode == 2 and "holds no rows" in refused.stderr
    bad = _cli(tmp_path, "--runs", "0")
    assert bad.returncode == 2 and "--runs 0" in bad.stderr
    assert not (tmp_path / "zone").exists()  # nothing generated for a refused command
    unknown = _cli(tmp_path, "--champion", "9.9")
    assert unknown.returncode == 2 and "registry holds 0 models" in unknown.stderr
    assert not (tmp_path / "zone").exists()
