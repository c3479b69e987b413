"""`python -m cl_hpc.status [RUN]`: the state of a run, rebuilt from its run directory.

Works whether or not the launcher is still alive. RUN is a run id, a unique prefix of one, a path,
or omitted for the newest run. Also refreshes the run's rows in the SQLite store.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Mapping, TypedDict

from cl_hpc.cli import run_parser
from cl_hpc.errors import ClHpcError
from cl_hpc.execute import make_executor
from cl_hpc.rundir.layout import RunDir, resolve_run
from cl_hpc.rundir.records import AttemptRecord
from cl_hpc.rundir.state import State, unreadable_records
from cl_hpc.store.sync import index_run, run_state
from cl_hpc.ui import explain, make_console, status_table


class UnitJson(TypedDict):
    """One unit in ``status --json``."""

    state: State
    attempts: list[AttemptRecord]  # every attempt's record, oldest first, as the run dir holds it
    cancelled: Mapping[str, Any] | None  # cancelled.json: reason, root_cause, time
    duration_s: float | None  # of its last attempt


class StatusJson(TypedDict):
    """``python -m cl_hpc.status --json``."""

    run_id: str
    run_dir: str
    state: State  # the run's, from its units' (store.sync.run_state)
    problems: list[str]  # what keeps it from ending, and records that cannot be read
    units: dict[str, UnitJson]


class _Backend:
    """Just enough of a cluster config to rebuild the run's executor from run.json."""

    def __init__(self, mode: str) -> None:
        self.mode, self.cpus, self.mem_gb, self.gpus, self.poll_s = mode, None, None, None, 0.2


def collect(run: RunDir) -> dict[str, Any]:
    executor = make_executor(_Backend(run.meta().get("backend", "local")))
    plan = run.load_plan()
    statuses = executor.status(run)
    problems = executor.problems(run) + unreadable_records(statuses)
    return {"run": run, "plan": plan, "statuses": statuses, "problems": problems}


def main(argv: list[str] | None = None) -> int:
    parser = run_parser("python -m cl_hpc.status", __doc__)
    parser.add_argument("--store-root", type=Path, default=None, help="store to refresh (default: the run's own)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")
    args = parser.parse_args(argv)
    console = make_console()
    try:
        info = collect(resolve_run(args.run_root, args.run))
        _refresh_store(info, args.store_root)
    except ClHpcError as exc:
        console.print(f"error: {exc}", style="red", highlight=False)
        return 2
    if args.json:
        print(json.dumps(_as_json(info), indent=2, default=str))
    else:
        console.print(status_table(info["run"], info["plan"], info["statuses"]))
        for line in explain(info["statuses"]) + info["problems"]:
            console.print(line, style="red", highlight=False)
        console.print(f"state: {run_state(info['statuses'])}", highlight=False)
    return 0


def _refresh_store(info: dict[str, Any], store_root: Path | None) -> None:
    conf = dict(info["plan"].meta.get("store") or {"journal_mode": "delete", "busy_timeout_s": 60.0})
    if store_root is not None:
        conf["root"] = str(store_root)
    if conf.get("root"):
        index_run(info["run"], conf)


def _as_json(info: dict[str, Any]) -> StatusJson:
    statuses = info["statuses"]
    return {
        "run_id": info["run"].run_id, "run_dir": str(info["run"].path), "state": run_state(statuses),
        "problems": info["problems"],
        "units": {k: {"state": s.state, "attempts": list(s.attempts), "cancelled": s.cancelled,
                      "duration_s": s.duration_s} for k, s in statuses.items()},
    }


if __name__ == "__main__":
    sys.exit(main())
