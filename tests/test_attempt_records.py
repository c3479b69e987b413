"""Attempt records on disk: old run dirs read into the same states, and an unreadable record is a
failed attempt that status names, never a crash (issue 10: typed records where layers meet)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from cl_hpc.rundir.layout import RunDir
from cl_hpc.rundir.state import run_status, unit_status
from cl_hpc.states import AttemptState, State
from cl_hpc.store.db import Store
from tests.conftest import Launcher


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One completed inprocess run of the diamond (a -> b, c -> d; a may retry once), launched once."""
    launcher = Launcher(tmp_path_factory.mktemp("records"))
    launched = launcher("cluster=inprocess", "pipeline=diamond", "pipeline.tasks.a.retries=1",
                        "pipeline.tasks.b.params.sleep_s=0", "pipeline.tasks.c.params.sleep_s=0")
    assert launched.proc.returncode == 0, launched.output
    return launched.run_dir()


@pytest.fixture
def run(finished: Path, tmp_path: Path) -> RunDir:
    """A copy of the finished run that a test may change."""
    return RunDir(shutil.copytree(finished, tmp_path / "runs" / finished.name))


def _status(run: RunDir, *extra: str) -> tuple[int, str]:
    proc = Launcher(run.path.parent.parent).status(run.run_id, *extra)
    return proc.returncode, proc.stdout + proc.stderr


# What the runner wrote before the enums: plain strings, sorted keys, two-space indent.
OLD = '{{\n  "attempt": {n},\n  "ended": {ended},\n  "epoch": 0,\n  "error": null,\n  "started": 1700000000.0,\n' \
      '  "state": "{state}"\n}}\n'


@pytest.mark.parametrize(("states", "expected"), [
    (["RUNNING"], State.RUNNING),
    (["COMPLETED"], State.COMPLETED),
    (["PREEMPTED"], State.RUNNING),  # the requeued job resumes the same attempt
    (["FAILED"], State.RETRYING),  # a has one retry left
    (["FAILED", "FAILED"], State.FAILED),
    (["FAILED", "COMPLETED"], State.COMPLETED),
    (["CANCELLED"], State.CANCELLED),
])
def test_old_attempt_records_read_into_the_same_states(run: RunDir, states: list[str], expected: State) -> None:
    folder = run.task_dir("a") / "attempts"
    shutil.rmtree(folder)
    folder.mkdir()
    for n, state in enumerate(states, 1):
        ended = "null" if state in ("RUNNING", "PREEMPTED") else "1700000060.0"
        (folder / f"{n}.json").write_text(OLD.format(n=n, state=state, ended=ended))
    records = run.attempts("a")
    assert [r["state"] for r in records] == [AttemptState(s) for s in states]
    assert all(type(r["state"]) is AttemptState for r in records)
    assert unit_status(run, run.load_plan(), "a").state is expected


def test_state_values_written_to_json_read_back_equal(run: RunDir) -> None:
    for member in [*State, *AttemptState]:
        back = json.loads(json.dumps({"state": member}))["state"]
        assert type(back) is str and back == member and type(member)(back) is member
        assert f"{member}" == str(member) == member.value  # messages show the word, on every Python
    for n, state in enumerate(AttemptState, 1):
        run.write_attempt("d", {"attempt": n, "state": state})
        assert f'"state": "{state.value}"' in (run.task_dir("d") / "attempts" / f"{n}.json").read_text()
    assert [r["state"] for r in run.attempts("d")] == list(AttemptState)


@pytest.mark.parametrize("damage", [
    b'{"attempt": 1, "state": "COMPL',  # cut short
    b'{"attempt": 1, "state": "\xff\xfe"}',  # not UTF-8
    b'{"attempt": 1, "state": "DONE"}',  # a hand edit: no such state
    b'[1, 2]',  # JSON, but no record
])
def test_an_unreadable_attempt_record_is_a_failed_attempt_that_status_names(run: RunDir, damage: bytes) -> None:
    path = run.task_dir("b") / "attempts" / "1.json"
    path.write_bytes(damage)
    [record] = run.attempts("b")
    assert record["state"] is AttemptState.FAILED and record["attempt"] == 1
    assert str(path) in (record.get("error") or "") and record.get("unreadable") == str(path)
    assert run_status(run)["b"].state is State.FAILED  # b has no retries

    code, out = _status(run, "--json")
    assert code == 0, out
    shown = json.loads(out)
    assert shown["units"]["b"]["state"] == "FAILED"
    assert shown["units"]["b"]["attempts"][0]["error"] == record["error"]
    assert any(str(path) in p and "cannot be read" in p for p in shown["problems"]), shown["problems"]

    code, out = _status(run)
    assert code == 0, out
    assert "cannot be read" in " ".join(out.split()), out

    with Store(run.load_plan().meta["store"]["root"]) as store:  # status refreshed the index from the run dir
        [row] = store.rows("attempts", "run_id = ? AND key = ?", [run.run_id, "b"])
    assert row["state"] == "FAILED" and row["error"] == record["error"]


def test_an_unreadable_record_of_a_resumed_launch_counts_for_that_launch(run: RunDir) -> None:
    """It carries no epoch to read: before, only the epoch decided, so a resumed unit whose new record
    was damaged read PENDING forever (review of issue 10). Its file's time places it in the launch."""
    meta = run.meta()
    began = float(meta["launches"][-1]["time"]) + 10
    run.update_meta(epoch=1, launches=[*meta["launches"], {"epoch": 1, "time": began, "units": ["b"]}])
    assert run_status(run)["b"].state is State.PENDING  # resubmitted, nothing of this launch yet
    damaged = run.task_dir("b") / "attempts" / "2.json"
    damaged.write_bytes(b'{"attempt": 2, "state": "RUNN')  # cut short by a full disk, say
    os.utime(damaged, (began + 5, began + 5))  # written after this launch began
    assert run_status(run)["b"].state is State.FAILED
    os.utime(damaged, (began - 5, began - 5))  # an older launch's damage does not decide this one
    assert run_status(run)["b"].state is State.PENDING
