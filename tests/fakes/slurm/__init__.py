"""The fake Slurm CLI's test side: a fixture that puts it first on PATH, and a handle on its state.

tests/conftest.py loads this module as a plugin, so any test can ask for ``fake_slurm``.
The commands themselves are tests/fakes/slurm/fake_slurm.py, linked as sbatch, squeue, sacct, ...
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

BIN = Path(__file__).resolve().parent
STATE_ENV = "CL_HPC_FAKE_SLURM_STATE"
TRANSIENT = "sbatch: error: Batch job submission failed: Socket timed out on send/recv operation"


class FakeSlurm:
    """The state file the fake commands share: seed faults before, read calls and jobs after."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._write({"jobs": {}, "calls": {}, "log": [], "faults": [], "next_id": 100})

    def read(self) -> dict[str, Any]:
        return json.loads(self.path.read_text())

    def _write(self, state: dict[str, Any]) -> None:
        self.path.write_text(json.dumps(state, indent=1))

    def update(self, **values: Any) -> None:
        self._write({**self.read(), **values})

    def fail(self, command: str, calls: list[int], stderr: str, rc: int = 1, queue: bool = False,
             hang_s: float = 0.0) -> None:
        """The given calls (1-based, per command) of ``command`` fail with ``stderr``."""
        state = self.read()
        state["faults"].append({"command": command, "calls": calls, "stderr": stderr, "rc": rc, "queue": queue,
                                "hang_s": hang_s})
        self._write(state)

    def calls(self, command: str) -> int:
        return int(self.read()["calls"].get(command, 0))

    def log(self, command: str) -> list[list[str]]:
        return [entry[1:] for entry in self.read()["log"] if entry[0] == command]

    def jobs(self) -> dict[str, dict[str, Any]]:
        return dict(self.read()["jobs"])

    def set_state(self, job_id: str, state: str, exit_code: str = "0:0") -> None:
        """Move a job ("123") or one shard ("123_4") to ``state``, as if Slurm had."""
        data = self.read()
        base, _, shard = job_id.partition("_")
        job = data["jobs"][base]
        for key in job["states"]:
            if not shard or key == shard:
                job["states"][key] = [state, exit_code]
        self._write(data)


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSlurm]:
    """The fake sbatch/squeue/sacct/scontrol/scancel/sinfo/srun first on PATH (then this Python,
    for their `env python3`), for this test and the subprocesses it starts."""
    fake = FakeSlurm(tmp_path / "fake_slurm.json")
    monkeypatch.setenv(STATE_ENV, str(fake.path))
    monkeypatch.setenv("PATH", os.pathsep.join([str(BIN), str(Path(sys.executable).parent), os.environ["PATH"]]))
    yield fake
