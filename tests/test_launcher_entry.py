"""The launcher's entry shim (cl_hpc/launch.py): the cyclic GC is paused from the first import until the
DAG is submitted; and run.json, as a real launch and its resume leave it (written by RunDir.record_launch)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, Launcher, _env

# Runs an entry in a fresh interpreter and reports every cyclic collection the GC starts, each as the
# names of the functions and modules on the stack when it began (a callback sees the allocating frame).
PROBE = """
import gc, json, runpy, sys

seen = []

def probe(phase, info):
    if phase != "start":
        return
    frames, frame = [], sys._getframe(1)
    while frame is not None:
        frames.append([frame.f_code.co_name, frame.f_code.co_filename])
        frame = frame.f_back
    seen.append(frames)

gc.callbacks.append(probe)
entry, sys.argv = sys.argv[1], [sys.argv[1], *sys.argv[2:]]
try:
    if entry == "shim":
        runpy.run_module("cl_hpc.launch", run_name="__main__", alter_sys=True)
    else:  # the launcher itself, without the shim: nothing pauses the GC
        from cl_hpc.launcher import main
        main()
except SystemExit as exc:
    print(json.dumps({"code": exc.code, "gc_enabled": gc.isenabled(), "collections": seen}))
"""

# Where the launcher is busy before its DAG is submitted (a dry run submits nothing: it ends there).
BUSY = ("compose_config", "resolve", "_launch")


def _probe(entry: str, tmp_path: Path) -> dict:
    args = [sys.executable, "-c", PROBE, entry, "hydra.searchpath=[file://tests/conf]", "pipeline=diamond",
            "launch.dry_run=true", f"run_root={tmp_path / 'runs'}", f"store.root={tmp_path / 'store'}"]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _busy(collection: list[list[str]]) -> bool:
    """Began while the launcher composed, resolved or planned, or while Hydra or OmegaConf were imported."""
    return any(name in BUSY or (name == "<module>" and ("/hydra/" in path or "/omegaconf/" in path))
               for name, path in collection)


def test_the_shim_keeps_the_gc_off_from_the_imports_until_submission(tmp_path: Path) -> None:
    shim = _probe("shim", tmp_path)
    assert shim["code"] == 0 and shim["gc_enabled"] is True, "the GC must be on again once the launch ends"
    assert [c for c in shim["collections"] if _busy(c)] == []
    # The probe does see them where nothing pauses the GC: the launcher called without its shim.
    bare = _probe("bare", tmp_path)
    assert bare["code"] == 0 and any(_busy(c) for c in bare["collections"])


@pytest.mark.parametrize("entry", [["-m", "cl_hpc.launch"], ["-m", "cl_hpc"]])
def test_every_entry_still_launches(entry: list[str], tmp_path: Path) -> None:
    args = [sys.executable, *entry, "hydra.searchpath=[file://tests/conf]", "pipeline=diamond", "launch.dry_run=true",
            f"run_root={tmp_path / 'runs'}", f"store.root={tmp_path / 'store'}"]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 0 and "dry run: nothing was submitted" in proc.stdout, proc.stdout + proc.stderr


def test_run_json_after_a_launch_and_its_resume(launcher: Launcher) -> None:
    quick = ("pipeline=diamond", "cluster=inprocess", "pipeline.tasks.b.params.sleep_s=0",
             "pipeline.tasks.c.params.sleep_s=0")
    first = launcher(*quick, "launch.reason=a test")
    assert first.proc.returncode == 0, first.output
    run = first.run_dir()
    again = launcher(*quick, f"launch.resume={run.name}", "+pipeline.tasks.d.params.offset=5")  # d changed: d reruns
    assert again.proc.returncode == 0, again.output
    meta = json.loads((run / "run.json").read_text())
    assert set(meta) == {"run_id", "pipeline", "backend", "epoch", "launches", "created", "host", "user", "workdir"}
    assert (meta["run_id"], meta["pipeline"], meta["backend"], meta["epoch"], meta["workdir"]) == (
        run.name, "diamond", "inprocess", 1, str(REPO))
    assert [(x["epoch"], x["units"], x["reason"]) for x in meta["launches"]] == [
        (0, ["a", "b", "c", "d"], "a test"), (1, ["d"], None)]
    assert all(set(x) == {"epoch", "time", "units", "argv", "reason"} for x in meta["launches"])
    assert f"launch.resume={run.name}" in meta["launches"][1]["argv"]
