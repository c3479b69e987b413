"""The run directory: the source of truth for one pipeline run.

    runs/<run_id>/
      config.yaml          resolved config, as launched (resumes add config.<n>.yaml)
      plan.json            the validated Plan every job reads
      run.json             run metadata: backend, host, submit times, resumes
      scheduler.json       the local scheduler's pid and heartbeat (cluster=local only)
      tasks/<task>/[<shard>/]
        attempts/<n>.json  one record per attempt (written by the job itself)
        outputs.json       the task's outputs (present only once it completed)
        cancelled.json     why it was cancelled, and the root cause
        progress.json      last progress report
        logs/              stdout/stderr of each attempt

Every file is written atomically. The SQLite store is an index that can be rebuilt from these.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from cl_hpc.atomic import read_json, write_json_atomic
from cl_hpc.dag.unit_call import UnitCall
from cl_hpc.errors import RunNotFoundError
from cl_hpc.states import AttemptState  # only enum: light enough for the job path

TYPE_CHECKING = False  # every job imports this module: no typing, no dataclasses (cl_hpc/dag/unit_call.py)
if TYPE_CHECKING:
    from typing import Any

    from cl_hpc.dag.model import Plan
    from cl_hpc.rundir.records import AttemptRecord

_SHARD = re.compile(r"^(?P<task>.+)\[(?P<shard>\d+)\]$")


def new_run_id(now: float | None = None) -> str:
    """Sortable by creation time (to the millisecond), unique thanks to a random suffix."""
    import secrets  # here: every job imports this module, only launches name runs
    from datetime import datetime, timezone

    stamp = datetime.fromtimestamp(time.time() if now is None else now, tz=timezone.utc)
    return stamp.strftime("%Y%m%d-%H%M%S-") + f"{stamp.microsecond // 1000:03d}-{secrets.token_hex(2)}"


class RunDir:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).resolve()

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def plan_path(self) -> Path:
        return self.path / "plan.json"

    @property
    def meta_path(self) -> Path:
        return self.path / "run.json"

    def exists(self) -> bool:
        return self.plan_path.exists()

    def load_plan(self) -> Plan:
        from cl_hpc.dag.model import Plan

        return Plan.from_dict(self._plan_data())

    def load_call(self, key: str) -> UnitCall:
        """Unit ``key`` of the plan as its job runs it, without building the whole Plan."""
        return UnitCall(self._plan_data(), key)

    def _plan_data(self) -> dict[str, Any]:
        data = read_json(self.plan_path)
        if data is None:
            raise RunNotFoundError(f"{self.path} holds no plan.json: not a cl_hpc run directory")
        return data

    def save_plan(self, plan: Plan) -> None:
        write_json_atomic(self.plan_path, plan.to_dict())

    def meta(self) -> dict[str, Any]:
        return read_json(self.meta_path) or {}

    def update_meta(self, **values: Any) -> None:
        write_json_atomic(self.meta_path, {**self.meta(), **values})

    def record_launch(self, pipeline: str, backend: str, epoch: int, units: list[str], argv: list[str],
                      reason: str | None, workdir: str) -> None:
        """Record one launch of the run in run.json, before its units are submitted; the one place
        that writes run.json's shape. Its readers: status and cancel (backend), the store (created,
        host, backend), the watch's lock (backend, host), run_status and the Slurm reconcile (the last
        of ``launches``: its epoch and units), a resume (epoch)."""
        import getpass  # here: every job imports this module, only launches record themselves

        meta = self.meta()
        launch = {"epoch": epoch, "time": time.time(), "units": list(units), "argv": list(argv), "reason": reason}
        self.update_meta(
            run_id=self.run_id, pipeline=pipeline, backend=backend, epoch=epoch,
            launches=[*meta.get("launches", []), launch], created=meta.get("created", launch["time"]),
            host=os.uname().nodename, user=getpass.getuser(), workdir=workdir,
        )

    # --- per unit -------------------------------------------------------------------------
    def task_dir(self, key: str) -> Path:
        match = _SHARD.match(key)
        if match:
            return self.path / "tasks" / match["task"] / match["shard"]
        return self.path / "tasks" / key

    def log_dir(self, key: str) -> Path:
        return self.task_dir(key) / "logs"

    def attempts(self, key: str) -> list[AttemptRecord]:
        """The unit's attempt records in order, their states as AttemptState. A record that cannot
        be read (a disk error, a hand edit) reads as a FAILED attempt that names the file in its
        ``error`` and ``unreadable``: status reports it, and nothing that reads the run crashes."""
        folder = self.task_dir(key) / "attempts"
        if not folder.is_dir():
            return []
        records = [_read_attempt(p) for p in folder.glob("*.json") if p.stem.isdigit()]
        return sorted((r for r in records if r is not None), key=lambda r: r["attempt"])

    def write_attempt(self, key: str, record: AttemptRecord) -> None:
        write_json_atomic(self.task_dir(key) / "attempts" / f"{int(record['attempt'])}.json", record)

    def outputs(self, key: str) -> Any | None:
        return read_json(self.task_dir(key) / "outputs.json")

    def write_outputs(self, key: str, outputs: Any) -> None:
        write_json_atomic(self.task_dir(key) / "outputs.json", outputs)

    def cancelled(self, key: str) -> dict[str, Any] | None:
        return read_json(self.task_dir(key) / "cancelled.json")

    def mark_cancelled(self, key: str, reason: str, root_cause: str | None) -> None:
        record = {"reason": reason, "root_cause": root_cause, "time": time.time()}
        write_json_atomic(self.task_dir(key) / "cancelled.json", record)

    def progress(self, key: str) -> dict[str, Any] | None:
        return read_json(self.task_dir(key) / "progress.json")

    def reset_for_rerun(self, key: str) -> None:
        """Forget a unit's result before it runs again; its attempt history stays."""
        for name in ("outputs.json", "cancelled.json", "progress.json"):
            (self.task_dir(key) / name).unlink(missing_ok=True)


def _read_attempt(path: Path) -> AttemptRecord | None:
    """None if the file is gone (a rerun's reset removed it since the listing)."""
    try:
        record = read_json(path)
        if record is None:
            return None
        record["attempt"], record["state"] = int(record["attempt"]), AttemptState(record["state"])
        return record
    except (OSError, ValueError, KeyError, TypeError) as exc:  # ValueError: bad JSON, bad UTF-8, an unknown state
        why = f"{type(exc).__name__}: {exc}"
        try:
            written = path.stat().st_mtime
        except OSError:
            written = 0.0
        return {"attempt": int(path.stem), "state": AttemptState.FAILED, "unreadable": str(path), "written": written,
                "error": f"attempt record {path} cannot be read ({why}); counted as a failed attempt"}


def runs_in(root: Path) -> list[RunDir]:
    """Run directories under ``root``, oldest first (run ids sort by time)."""
    if not root.is_dir():
        return []
    return [RunDir(p) for p in sorted(root.iterdir()) if (p / "plan.json").exists()]


def resolve_run(root: Path, ref: str | None) -> RunDir:
    """A run by id, unique id prefix, path, or None/'latest' for the newest."""
    if ref and os.sep in ref and (Path(ref) / "plan.json").exists():
        return RunDir(ref)
    runs = runs_in(root)
    if not runs:
        raise RunNotFoundError(f"no runs under {root}; start one with `python -m cl_hpc.launch` (or pass run_root=...)")
    if ref in (None, "", "latest"):
        return runs[-1]
    hits = [r for r in runs if r.run_id.startswith(ref)]
    if len(hits) == 1:
        return hits[0]
    newest = ", ".join(r.run_id for r in runs[-5:])
    what = "matches several runs" if hits else "matches no run"
    raise RunNotFoundError(f"run {ref!r} {what} under {root}; newest runs: {newest}")


