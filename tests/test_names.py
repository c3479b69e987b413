"""Names that become paths and keys are checked before anything is written (issue 10, defect 6):
a task named ``../../../x`` wrote outside the run dir, ``launch.run_id=../../x`` made a dir outside
run_root, and a task ``a[0]`` beside a fan-out ``a`` silently replaced shard 0 (1021 instead of 32)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cl_hpc.dag.build import build_plan
from cl_hpc.dag.names import TASK_NAME_RULE
from cl_hpc.errors import DagError
from tests.conftest import REPO, _env

FANOUT_AND_SHARD = {  # a[0] is the key of the fan-out's shard 0
    "a": {"target": "tests.tasks.emit", "foreach": [1, 2], "params": {"value": 16}},
    "a[0]": {"target": "tests.tasks.emit", "params": {"value": 1021}},
    "sink": {"target": "tests.tasks.add", "depends_on": ["a"]},
}
BAD_NAMES = ["../../../x", "a[0]", "a b", "", ".hidden", "x/y", "-rm", "t" * 65, "naïve", "a.b"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_bad_task_name_is_named_with_the_rule(name: str) -> None:
    tasks = {"ok": {"target": "tests.tasks.emit"}, name: {"target": "tests.tasks.emit", "depends_on": ["ok"]}}
    with pytest.raises(DagError) as caught:
        build_plan({"name": "p", "tasks": tasks}, None)
    assert f"pipeline.tasks.{name}: task name {name!r} is not allowed" in str(caught.value)
    assert TASK_NAME_RULE in str(caught.value)


def test_names_equal_but_for_case_are_refused() -> None:
    tasks = {"train": {"target": "tests.tasks.emit"}, "Train": {"target": "tests.tasks.emit"}}
    with pytest.raises(DagError, match="task names 'train' and 'Train' differ only in case"):
        build_plan({"name": "p", "tasks": tasks}, None)


def test_good_names_pass_and_a_bad_pipeline_name_is_named_too() -> None:
    tasks = {n: {"target": "tests.tasks.emit"} for n in ("train", "_prep", "t-2", "Fit_3", "x" * 64)}
    assert list(build_plan({"name": "retrain-2", "tasks": tasks}, None).tasks) == list(tasks)
    with pytest.raises(DagError, match=r"pipeline.name '\.\./p' is not allowed"):
        build_plan({"name": "../p", "tasks": tasks}, None)


def _launch(tmp_path: Path, *overrides: str, pipeline: dict | None = None) -> subprocess.CompletedProcess[str]:
    conf = tmp_path / "conf" / "pipeline"
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "named.yaml").write_text(json.dumps({"name": "named", "tasks": pipeline or FANOUT_AND_SHARD}))
    args = [sys.executable, "-m", "cl_hpc.launch", f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
            "pipeline=named", "cluster=inprocess", f"run_root={tmp_path / 'area' / 'runs'}",
            f"store.root={tmp_path / 'area' / 'store'}", *overrides]
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300, env=_env())


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_a_task_named_like_a_shard_of_a_fan_out_is_refused_before_anything_runs(tmp_path: Path) -> None:
    proc = _launch(tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "pipeline.tasks.a[0]: task name 'a[0]' is not allowed" in proc.stdout + proc.stderr
    assert not (tmp_path / "area").exists()  # no run dir, no store


def test_a_task_name_that_climbs_out_writes_nothing_anywhere(tmp_path: Path) -> None:
    before = _files(tmp_path)
    proc = _launch(tmp_path, pipeline={"../../../x": {"target": "tests.tasks.emit"}})
    assert proc.returncode == 2 and "task name '../../../x' is not allowed" in proc.stdout + proc.stderr
    assert _files(tmp_path) == sorted([*before, "conf", "conf/pipeline", "conf/pipeline/named.yaml"])


def test_a_run_id_that_climbs_out_of_run_root_is_refused(tmp_path: Path) -> None:
    proc = _launch(tmp_path, "launch.run_id=../../escaped", pipeline={"t": {"target": "tests.tasks.emit"}})
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "launch.run_id='../../escaped' is not allowed" in output, output
    assert "Nothing was submitted" in output
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "area").exists()
    ok = _launch(tmp_path, "launch.run_id=nightly-2026.12.04_a", pipeline={"t": {"target": "tests.tasks.emit"}})
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert (tmp_path / "area" / "runs" / "nightly-2026.12.04_a" / "plan.json").exists()
