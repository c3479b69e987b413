"""run.json is written in one place, RunDir.record_launch: its keys, and what a resume adds."""

from __future__ import annotations

import getpass
import json
import os
from pathlib import Path

from cl_hpc.rundir.layout import RunDir

RUN_KEYS = {"run_id", "pipeline", "backend", "epoch", "launches", "created", "host", "user", "workdir"}
LAUNCH_KEYS = {"epoch", "time", "units", "argv", "reason"}


def test_a_first_launch_records_the_run_and_its_launch(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "20260101-000000-000-abcd")
    run.path.mkdir()
    run.record_launch("diamond", "local", 0, ["a", "b"], ["pipeline=diamond"], None, "/work")
    meta = json.loads(run.meta_path.read_text())
    assert set(meta) == RUN_KEYS
    assert (meta["run_id"], meta["pipeline"], meta["backend"], meta["epoch"], meta["workdir"]) == (
        run.run_id, "diamond", "local", 0, "/work")
    assert (meta["host"], meta["user"]) == (os.uname().nodename, getpass.getuser())
    [launch] = meta["launches"]
    assert set(launch) == LAUNCH_KEYS
    assert launch["units"] == ["a", "b"] and launch["argv"] == ["pipeline=diamond"] and launch["reason"] is None
    assert meta["created"] == launch["time"]


def test_a_resume_appends_its_launch_and_keeps_the_creation_time(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    run.record_launch("diamond", "slurm", 0, ["a", "b", "c"], [], None, "/work")
    first = run.meta()
    run.record_launch("diamond", "slurm", 1, ["c"], ["launch.resume=r"], "volume: 0.3 >= 0.2", "/work")
    meta = run.meta()
    assert set(meta) == RUN_KEYS and meta["epoch"] == 1 and meta["created"] == first["created"]
    assert [(x["epoch"], x["units"], x["reason"]) for x in meta["launches"]] == [
        (0, ["a", "b", "c"], None), (1, ["c"], "volume: 0.3 >= 0.2")]


def test_keys_others_wrote_to_run_json_are_kept(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    run.update_meta(note="kept")
    run.record_launch("p", "local", 0, ["a"], [], None, "/w")
    assert run.meta()["note"] == "kept"
