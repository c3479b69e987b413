"""The launcher and status commands as a user runs them: real subprocesses, real run dirs."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, Launcher

BAD_INPUTS = [
    # (overrides, fragments the error must contain)
    (["pipeline=diamond", "pipeline.tasks.a.depends_on=[d]"], ["dependency cycle: a -> b -> d -> a"]),
    (["pipeline=diamond", "pipeline.tasks.d.depends_on=[b,cc]"], ["unknown task 'cc'", "did you mean 'c'?"]),
    (["pipeline=diamond", "pipeline.tasks.b.target=tests.tasks.ad"],
     ["defines no 'ad'", "did you mean tests.tasks.add?"]),
    (["pipeline=diamond", "pipeline.tasks.b.target=nowhere.mod.fn"],
     ["cannot import module 'nowhere.mod'", "is the package installed"]),
    (["pipeline=diamond", "pipeline.tasks.b.resources.mem_gb=0"], ["pipeline.tasks.b.resources.mem_gb must be > 0"]),
    (["pipeline=diamond", "pipeline.tasks.b.resources.time_min=0"],
     ["pipeline.tasks.b.resources.time_min must be > 0"]),
    (["pipeline=diamond", "cluster.gpus=0", "pipeline.tasks.b.resources.gpus=1"],
     ["gpus=1 but this machine (cluster=local) offers at most 0"]),
    (["pipeline=diamond", "pipeline.tasks.b.foreach=shard1"],
     ["pipeline.tasks.b.foreach must be a list", "got str 'shard1'"]),
    # a value left MISSING, and an interpolation that fails: the config is resolved into the schema once, up front
    (["pipeline=diamond", "pipeline.name=???"],
     ["the config does not resolve", "missing mandatory value", "pipeline.name"]),
    (["pipeline=diamond", "launch.reason=${oc.env:CL_HPC_TEST_UNSET}"],
     ["the config does not resolve", "launch.reason", "CL_HPC_TEST_UNSET"]),
]


@pytest.mark.parametrize("overrides,fragments", BAD_INPUTS, ids=[o[-1] for o, _ in BAD_INPUTS])
def test_bad_input_fails_clearly_and_runs_nothing(launcher: Launcher, overrides: list[str],
                                                  fragments: list[str]) -> None:
    result = launcher(*overrides)
    assert result.proc.returncode == 2, result.output
    for fragment in fragments:
        assert fragment in result.output, f"{fragment!r} not in:\n{result.output}"
    assert "Nothing was submitted" in result.output
    assert "Traceback" not in result.output
    assert result.runs() == [], "nothing may be created or run"


def test_schema_rejects_wrong_types_and_unknown_keys(launcher: Launcher) -> None:
    wrong_type = launcher("pipeline=diamond", "pipeline.tasks.b.resources.cpus=many")
    assert wrong_type.proc.returncode != 0 and "cpus" in wrong_type.output and "many" in wrong_type.output
    unknown = launcher("pipeline=diamond", "pipeline.tasks.b.resources.cpu=2")
    assert unknown.proc.returncode != 0 and "cpu" in unknown.output
    assert wrong_type.runs() == [] and unknown.runs() == []


def test_dry_run_prints_plan_and_mermaid_and_submits_nothing(launcher: Launcher) -> None:
    result = launcher("pipeline=fanout", "launch.dry_run=true")
    assert result.proc.returncode == 0, result.output
    for fragment in ("pipeline 'fanout': 4 tasks, 8 units of work", "after      shards (shard-to-shard)",
                     "```mermaid", "flowchart LR", "shards -.->|per shard| more", "nothing was submitted"):
        assert fragment in result.output
    assert result.runs() == []


def test_default_pipeline_dry_run_names_every_task(launcher: Launcher) -> None:
    result = launcher("launch.dry_run=true")
    assert result.proc.returncode == 0, result.output
    for task in ("ingest", "train", "evaluate"):
        assert f"\n  {task}\n" in result.output
    assert "\n  features\n" not in result.output  # gone: scaling is the tabular data module's state


def test_status_works_after_the_launcher_exited(launcher: Launcher) -> None:
    result = launcher("pipeline=diamond", "launch.follow=false")
    assert result.proc.returncode == 0, result.output
    assert "detached" in result.output
    run = result.run_dir()
    deadline = time.monotonic() + 120
    while True:
        status = launcher.status(run.name, "--json")
        assert status.returncode == 0, status.stderr
        info = json.loads(status.stdout)
        if info["state"] in ("COMPLETED", "FAILED") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert info["state"] == "COMPLETED"
    assert all(u["state"] == "COMPLETED" and len(u["attempts"]) == 1 for u in info["units"].values())
    table = launcher.status().stdout  # newest run, table form
    assert run.name in table and "COMPLETED" in table and "logs" in table and "cpus=1" in table
    rows = sqlite3.connect(launcher.store_root / "cl_hpc.db").execute(
        "select key, state, attempts from tasks where run_id = ? order by key", [run.name]).fetchall()
    assert rows == [(k, "COMPLETED", 1) for k in "abcd"]


def test_status_names_unknown_runs(launcher: Launcher) -> None:
    launcher("pipeline=diamond", "launch.dry_run=true")
    status = launcher.status("nope")
    assert status.returncode == 2 and "no runs under" in status.stdout


def test_multirun_records_one_run_per_combination(launcher: Launcher) -> None:
    result = launcher("-m", "pipeline=diamond", "pipeline.tasks.a.params.value=1,2")
    assert result.proc.returncode == 0, result.output
    runs = result.runs()
    assert len(runs) == 2
    assert sorted(result.outputs("d", r)["value"] for r in runs) == [112, 114]


def test_store_rebuild_recreates_the_index_from_run_dirs(launcher: Launcher) -> None:
    assert launcher("pipeline=failing").proc.returncode == 1
    db = launcher.store_root / "cl_hpc.db"
    db.unlink()
    out = subprocess.run([sys.executable, "-m", "cl_hpc.store", "rebuild", "--run-root", str(launcher.run_root),
                          "--store-root", str(launcher.store_root)],
                         cwd=REPO, capture_output=True, text=True, check=True)
    assert "indexed 1 runs" in out.stdout
    conn = sqlite3.connect(db)
    assert conn.execute("select state, n_failed, n_cancelled from runs").fetchall() == [("FAILED", 1, 2)]
    cancelled = conn.execute("select key, root_cause from tasks where state = 'CANCELLED'").fetchall()
    assert dict(cancelled) == {"c": "bad", "d": "bad"}


@pytest.mark.parametrize("cluster", ["inprocess", "local"])
def test_tasks_run_with_the_gc_on_although_the_launcher_pauses_it_until_submission(launcher: Launcher,
                                                                                   cluster: str) -> None:
    """`python -m cl_hpc.launch` pauses the cyclic GC while it imports and composes; a task that runs
    in the launcher itself (inprocess) or in a process it starts (local) must find it on."""
    result = launcher("pipeline=diamond", f"cluster={cluster}", "pipeline.tasks.a.target=tests.tasks.gc_state",
                      "pipeline.tasks.b.params.sleep_s=0", "pipeline.tasks.c.params.sleep_s=0")
    assert result.proc.returncode == 0, result.output
    outputs = json.loads((result.run_dir() / "tasks" / "a" / "outputs.json").read_text())
    assert outputs["gc_enabled"] is True
    d = json.loads((result.run_dir() / "tasks" / "d" / "outputs.json").read_text())
    assert d["value"] == (10 + 1) + (100 + 1)  # b and c each add a's 1
