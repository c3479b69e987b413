"""The executor contract: every backend (local, inprocess; slurm later) passes this same suite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import Launcher

BACKENDS = ["local", "inprocess", pytest.param("slurm", marks=pytest.mark.slurm)]


def _attempts(run: Path, key: str) -> list[dict]:
    folder = run / "tasks" / key.replace("[", "/").rstrip("]") / "attempts"
    return sorted((json.loads(p.read_text()) for p in folder.glob("*.json")), key=lambda a: a["attempt"])


def _cancelled(run: Path, key: str) -> dict | None:
    path = run / "tasks" / key / "cancelled.json"
    return json.loads(path.read_text()) if path.exists() else None


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_dag_gives_same_outputs(launcher: Launcher, backend: str) -> None:
    diamond = launcher(f"cluster={backend}", "pipeline=diamond")
    assert diamond.proc.returncode == 0, diamond.output
    assert diamond.outputs("d")["value"] == (1 + 10) + (1 + 100)
    fan = launcher(f"cluster={backend}", "pipeline=fanout")
    assert fan.proc.returncode == 0, fan.output
    shard_values = [fan.outputs(f"shards[{i}]")["value"] for i in range(3)]
    assert shard_values == [1 + 1, 1 + 2, 1 + 3]  # each shard sees src plus its item
    # shard-to-shard: more[i] sees only shards[i]; item "a"/"b"/"c" is not numeric, so emit is not used
    assert [fan.outputs(f"more[{i}]")["value"] for i in range(3)] == [1000 + v for v in shard_values]
    assert fan.outputs("sink")["value"] == sum(1000 + v for v in shard_values)


def test_independent_tasks_overlap_under_local(launcher: Launcher) -> None:
    result = launcher("cluster=local", "cluster.cpus=2", "pipeline=diamond")
    assert result.proc.returncode == 0, result.output
    b, c = result.outputs("b"), result.outputs("c")
    assert b["pid"] != c["pid"]
    assert b["start"] < c["end"] and c["start"] < b["end"], "b and c should have run at the same time"


@pytest.mark.parametrize("backend", BACKENDS)
def test_failure_cancels_dependents_with_root_cause(launcher: Launcher, backend: str) -> None:
    result = launcher(f"cluster={backend}", "pipeline=failing")
    assert result.proc.returncode == 1, result.output
    run = result.run_dir()
    assert _attempts(run, "bad")[-1]["state"] == "FAILED"
    assert "deliberate failure" in _attempts(run, "bad")[-1]["error"]
    for key in ("c", "d"):
        cancelled = _cancelled(run, key)
        assert cancelled and cancelled["root_cause"] == "bad", key
        assert not _attempts(run, key), f"{key} must never have started"
    assert result.outputs("e")["value"] == 5  # independent work still completes
    status = launcher.status(run.name)
    assert "root cause: bad failed" in status.stdout and "deliberate failure" in status.stdout


@pytest.mark.parametrize("backend", BACKENDS)
def test_retries_rerun_a_failed_task(launcher: Launcher, backend: str) -> None:
    result = launcher(f"cluster={backend}", "pipeline=retry")
    assert result.proc.returncode == 0, result.output
    run = result.run_dir()
    assert [a["state"] for a in _attempts(run, "once")] == ["FAILED", "COMPLETED"]
    assert result.outputs("after")["value"] == 100


@pytest.mark.parametrize("backend", BACKENDS)
def test_resume_runs_only_what_it_must(launcher: Launcher, backend: str, tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    flag.write_text("fail")
    base = [f"cluster={backend}", "pipeline=flaky", f"pipeline.tasks.flaky.params.flag={flag}"]
    first = launcher(*base)
    assert first.proc.returncode == 1, first.output
    run = first.run_dir()
    flag.unlink()

    second = launcher(*base, f"launch.resume={run.name}")
    assert second.proc.returncode == 0, second.output
    assert len(second.runs()) == 1, "resume must continue the same run"
    assert len(_attempts(run, "a")) == 1 and len(_attempts(run, "other")) == 1, "completed, unchanged: reused"
    assert [a["state"] for a in _attempts(run, "flaky")] == ["FAILED", "COMPLETED"]
    assert len(_attempts(run, "c")) == 1 and second.outputs("c")["value"] == 7

    third = launcher(*base, f"launch.resume={run.name}")
    assert third.proc.returncode == 0 and "nothing to run" in third.output

    changed = launcher(*base, "pipeline.tasks.c.params.offset=5", "launch.resume=latest")
    assert changed.proc.returncode == 0, changed.output
    assert len(_attempts(run, "c")) == 2 and changed.outputs("c")["value"] == 12
    assert len(_attempts(run, "flaky")) == 2 and len(_attempts(run, "a")) == 1


@pytest.mark.parametrize("backend", ["local", "inprocess"])  # under Slurm, admission is slurmctld's
def test_admission_never_oversubscribes_cpus(launcher: Launcher, backend: str) -> None:
    result = launcher(f"cluster={backend}", "cluster.cpus=2", "pipeline=wide")
    assert result.proc.returncode == 0, result.output
    spans = [(result.outputs(f"t{i}"), 2 if i == 4 else 1) for i in range(1, 7)]
    events = sorted([(o["start"], cpus) for o, cpus in spans] + [(o["end"], -cpus) for o, cpus in spans])
    in_use, peak = 0, 0
    for _, delta in events:
        in_use += delta
        peak = max(peak, in_use)
    assert peak <= 2
    if backend == "local":
        assert peak == 2, "two 1-cpu tasks should have shared the 2 cpus"
