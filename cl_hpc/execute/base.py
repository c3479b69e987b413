"""One interface for every backend: submit the whole plan at once, ask for status, cancel.

``submit`` hands over every unit with its dependency edges in one go and returns; the backend
(Slurm itself, or cl_hpc's local scheduler process) enforces the order, so the launcher may exit
while the run goes on. State is never kept in the launcher: ``status`` derives it from the run
directory, which each job writes.
"""

from __future__ import annotations

import abc
from typing import Mapping, Sequence

from cl_hpc.dag.capacity import Capacity
from cl_hpc.dag.model import Plan
from cl_hpc.rundir.layout import RunDir
from cl_hpc.rundir.state import UnitStatus, run_status


class Executor(abc.ABC):
    name: str = "base"
    detaches: bool = True  # False when submit() only returns once the run is over (inprocess)
    follow_interval_s: float = 0.5  # how often a following launcher asks for status

    @abc.abstractmethod
    def capacity(self) -> Capacity | None:
        """The most one task can ever be given, if one bound holds for every task (see check)."""

    def check(self, plan: Plan) -> list[str]:
        """Every reason a task of the plan can never run here, beyond ``capacity`` (e.g. a Slurm
        partition's limits, read from the live cluster). Called before anything is submitted."""
        return []

    @abc.abstractmethod
    def describe(self, plan: Plan) -> Mapping[str, str]:
        """What the backend will do for each task, by task name (shown by launch.dry_run=true)."""

    @abc.abstractmethod
    def submit(self, run: RunDir, plan: Plan, todo: Sequence[str], epoch: int) -> None:
        """Hand over the units ``todo`` (keys, in plan order) with their edges; units outside
        ``todo`` are already complete and are reused. ``epoch`` counts launches of this run."""

    @abc.abstractmethod
    def cancel(self, run: RunDir) -> None:
        """Stop every unit of the run that has not finished; they end CANCELLED."""

    def stop_earlier(self, run: RunDir, plan: Plan) -> None:
        """Before a resume writes anything (resets task dirs, records its launch): stop what earlier
        launches of the run left running, so that no old copy of a unit runs beside its new one or
        writes into a dir the resume just reset. Raises, naming what is left, when it cannot. A
        backend whose runs end with their launcher (inprocess) has nothing to stop."""
        return None

    def problems(self, run: RunDir) -> list[str]:
        """Anything wrong with the run that the files alone cannot show (e.g. a dead scheduler)."""
        return []

    def status(self, run: RunDir) -> dict[str, UnitStatus]:
        return run_status(run)
