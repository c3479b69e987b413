"""cluster=inprocess: every unit runs in the launcher's own process, in plan order.

For debugging: a breakpoint() in a task stops in your terminal, and exceptions keep their
tracebacks. ``submit`` returns only when the run is over; the semantics (retries, cancelling
dependents of a failure, reusing completed units on resume) match the local backend.
"""

from __future__ import annotations

import sys
import traceback
from typing import Mapping, Sequence

from cl_hpc.dag.capacity import Capacity
from cl_hpc.dag.model import Plan
from cl_hpc.execute.base import Executor
from cl_hpc.execute.local import LocalExecutor
from cl_hpc.execute.runner import run_unit
from cl_hpc.execute.schedule import cancel_dependents
from cl_hpc.rundir.layout import RunDir


class InProcessExecutor(Executor):
    name = "inprocess"
    detaches = False

    def __init__(self, conf: object) -> None:
        self._local = LocalExecutor(conf)  # type: ignore[arg-type]  # same capacity rules

    def capacity(self) -> Capacity:
        return self._local.capacity()

    def describe(self, plan: Plan) -> Mapping[str, str]:
        return {name: "runs in the launcher's process, in plan order (resources are checked, not enforced)"
                for name in plan.tasks}

    def submit(self, run: RunDir, plan: Plan, todo: Sequence[str], epoch: int) -> None:
        skipped: set[str] = set()
        for key in [k for k in plan.units if k in set(todo)]:
            if key in skipped:
                continue
            if not self._run_with_retries(run, plan, key, epoch):
                skipped.update(cancel_dependents(run, plan, key))

    def _run_with_retries(self, run: RunDir, plan: Plan, key: str, epoch: int) -> bool:
        for _ in range(plan.spec(key).retries + 1):
            attempt = len(run.attempts(key)) + 1
            try:
                run_unit(str(run.path), key, attempt, epoch, in_process=True)
                return True
            except Exception:  # recorded in the attempt file; show it here, as a debugger user expects
                traceback.print_exc(file=sys.stderr)
        return False

    def cancel(self, run: RunDir) -> None:
        pass  # nothing outlives the launcher's process: Ctrl-C is the cancel
