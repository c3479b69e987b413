"""What only the detached local backend must show: it outlives the launcher, cancels and times out."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO, Launcher, _env


def _wait_for(predicate, timeout_s: float = 60.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def _state(launcher: Launcher) -> dict:
    out = launcher.status(None, "--json")
    return json.loads(out.stdout) if out.returncode == 0 else {}


def _running(launcher: Launcher, key: str) -> bool:
    return _state(launcher).get("units", {}).get(key, {}).get("state") == "RUNNING"


def test_killing_the_launcher_does_not_stop_the_run(launcher: Launcher) -> None:
    args = [sys.executable, "-m", "cl_hpc.launch", "hydra.searchpath=[file://tests/conf]", "pipeline=slow",
            f"run_root={launcher.run_root}", f"store.root={launcher.store_root}", "launch.follow=true"]
    proc = subprocess.Popen(args, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    assert _wait_for(lambda: _running(launcher, "sleeper")), "sleeper never started"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert _wait_for(lambda: _state(launcher).get("state") == "COMPLETED", 60), _state(launcher)


def test_cancel_stops_running_and_pending_units(launcher: Launcher) -> None:
    result = launcher("pipeline=slow", "launch.follow=false")
    assert result.proc.returncode == 0, result.output
    assert _wait_for(lambda: _running(launcher, "sleeper"))
    out = subprocess.run([sys.executable, "-m", "cl_hpc.cancel", "--run-root", str(launcher.run_root)],
                         cwd=REPO, env=_env(), capture_output=True, text=True, check=True)
    assert "cancel requested" in out.stdout
    assert _wait_for(lambda: _state(launcher).get("state") == "CANCELLED", 30), _state(launcher)
    units = _state(launcher)["units"]
    assert units["first"]["state"] == "COMPLETED"
    assert units["sleeper"]["state"] == units["last"]["state"] == "CANCELLED"
    assert not (Path(result.run_dir()) / "tasks" / "sleeper" / "outputs.json").exists()


def test_a_unit_over_its_time_limit_is_killed_and_reported(launcher: Launcher) -> None:
    result = launcher("pipeline=slow", "pipeline.tasks.sleeper.resources.time_min=0.05",
                      "pipeline.tasks.sleeper.params.sleep_s=30")
    assert result.proc.returncode == 1, result.output
    attempt = json.loads((result.run_dir() / "tasks" / "sleeper" / "attempts" / "1.json").read_text())
    assert attempt["state"] == "FAILED"
    assert attempt["ended"] - attempt["started"] < 20, "killed near its 3 s limit, not after the 30 s sleep"
    assert "time limit" in attempt["error"]
    assert "root cause: sleeper failed" in result.output
