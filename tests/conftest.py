"""Shared fixtures: run the real launcher and status commands as subprocesses, in a scratch area."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pytest

REPO = Path(__file__).resolve().parents[1]
pytest_plugins = ["tests.fakes.slurm"]  # the fake_slurm fixture: the fake Slurm CLI first on PATH


@dataclass
class Launched:
    proc: subprocess.CompletedProcess[str]
    run_root: Path

    @property
    def output(self) -> str:
        return self.proc.stdout + self.proc.stderr

    def runs(self) -> list[Path]:
        return (sorted(p for p in self.run_root.iterdir() if (p / "plan.json").exists())
                if self.run_root.exists() else [])

    def run_dir(self) -> Path:
        runs = self.runs()
        assert runs, f"no run was created; launcher said:\n{self.output}"
        return runs[-1]

    def outputs(self, key: str, run: Path | None = None) -> dict[str, Any]:
        folder = (run or self.run_dir()) / "tasks" / key.replace("[", "/").rstrip("]")
        return json.loads((folder / "outputs.json").read_text())


def poll(predicate: Callable[[], Any], timeout_s: float = 60.0, interval_s: float = 0.2) -> Any:
    """``predicate()``'s first truthy value within ``timeout_s``, else None (the caller's assert says what
    it waited for): tests wait on files, sacct and servers by polling to a deadline, never by a fixed sleep."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    return None


def attempt_records(run: Path, key: str) -> list[dict[str, Any]]:
    """A unit's attempt records (``tasks/<task>[/<shard>]/attempts/<n>.json``), oldest first; [] before any."""
    folder = run / "tasks" / key.replace("[", "/").rstrip("]") / "attempts"
    found = (json.loads(p.read_text()) for p in folder.glob("*.json")) if folder.is_dir() else ()
    return sorted(found, key=lambda a: a["attempt"])


def held_sleeper(gate: Path) -> tuple[str, ...]:
    """Overrides of ``pipeline=slow`` whose sleeper runs until ``gate`` exists: a run held going for a test."""
    return ("pipeline=slow", "pipeline.tasks.sleeper.target=tests.tasks.wait_for_file",
            "~pipeline.tasks.sleeper.params.sleep_s", f"+pipeline.tasks.sleeper.params.path={gate}")


class Launcher:
    """Runs `python -m cl_hpc.launch` from the repo root (so tests.tasks imports) into tmp dirs."""

    def __init__(self, tmp: Path) -> None:
        self.run_root = tmp / "runs"
        self.store_root = tmp / "store"
        self.tmp = tmp

    def __call__(self, *overrides: str, timeout: float = 300) -> Launched:
        flags = [o for o in overrides if o.startswith("-")]  # e.g. -m must precede the overrides
        if not any(o.startswith("launch.follow=") for o in overrides):
            overrides = (*overrides, "launch.follow=true")  # tests read results once the launcher returns
        args = [sys.executable, "-m", "cl_hpc.launch", *flags, "hydra.searchpath=[file://tests/conf]",
                f"run_root={self.run_root}", f"store.root={self.store_root}",
                *[o for o in overrides if not o.startswith("-")]]
        proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=_env())
        return Launched(proc, self.run_root)

    def status(self, run: str | None = None, *extra: str) -> subprocess.CompletedProcess[str]:
        args = [sys.executable, "-m", "cl_hpc.status", "--run-root", str(self.run_root), *extra]
        if run:
            args.insert(3, run)
        return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=60, env=_env())


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


@pytest.fixture
def launcher(tmp_path: Path) -> Launcher:
    return Launcher(tmp_path)


_UP_HINT = "start it with: sudo bash scripts/slurm-local-up.sh (logs: /var/log/slurm-local/)"


def _ready_node() -> tuple[str | None, str]:
    """(node name, "") for a node that can take a job now, else (None, why not)."""
    if shutil.which("sinfo") is None:
        return None, "sinfo is not installed"
    try:
        proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return None, "sinfo did not answer within 15 s"
    if proc.returncode != 0:
        return None, f"sinfo failed: {proc.stderr.strip()}"
    for line in proc.stdout.splitlines():
        name, _, state = line.partition(" ")
        if state.strip().rstrip("*~#") in ("idle", "mixed", "allocated", "completing"):  # up, maybe busy
            return name, ""
    return None, f"no node up in sinfo output {proc.stdout.strip()!r}"


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """The local cluster's ready node; skip without it, but fail under CI=true."""
    node, why = _ready_node()
    if node is None:
        message = f"local Slurm cluster not available: {why}; {_UP_HINT}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return node


@pytest.fixture(autouse=True)
def _slurm_marked_tests_need_the_cluster(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("slurm"):
        request.getfixturevalue("slurm_cluster")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under CI=true a skipped test is a failed test: CI must prove the Slurm tests ran."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if os.environ.get("CI") == "true" and skipped and exitstatus == 0:
        print(f"\nCI=true: {skipped} test(s) were skipped; under CI every test must run", file=sys.stderr)
        session.exitstatus = 1


FAKE_NVML = Path(__file__).parent / "fakes" / "pynvml.py"


@pytest.fixture
def fake_nvml(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """A fresh fake pynvml (tests/fakes/pynvml.py, empty scenario) as sys.modules["pynvml"] for
    this test only: NVML is the one thing faked, at its module boundary, with its real names."""
    spec = importlib.util.spec_from_file_location("pynvml", FAKE_NVML)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "pynvml", module)  # before exec: dataclasses look the module up
    spec.loader.exec_module(module)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return module
