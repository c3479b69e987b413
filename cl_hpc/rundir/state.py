"""Derive each unit's state from the files in the run directory (never from a live process)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from cl_hpc.dag.model import Plan
from cl_hpc.rundir.layout import RunDir
from cl_hpc.rundir.records import AttemptRecord
from cl_hpc.states import AttemptState, State

__all__ = ["State", "UnitStatus", "run_status", "unit_status", "root_cause", "unreadable_records"]


@dataclass(frozen=True)
class UnitStatus:
    key: str
    state: State
    attempts: tuple[AttemptRecord, ...]
    cancelled: Mapping[str, Any] | None
    progress: Mapping[str, Any] | None

    @property
    def last(self) -> AttemptRecord | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def error(self) -> str | None:
        """Why its last attempt failed (an unreadable record says so too)."""
        return self.last.get("error") if self.last else None

    @property
    def started(self) -> float | None:
        return self.attempts[0].get("started") if self.attempts else None

    @property
    def ended(self) -> float | None:
        return self.last.get("ended") if self.last and self.state.terminal else None

    @property
    def duration_s(self) -> float | None:
        ended, started = (self.last.get("ended"), self.last.get("started")) if self.last else (None, None)
        return None if ended is None or started is None else float(ended) - float(started)


def unit_status(run: RunDir, plan: Plan, key: str, launch: Mapping[str, Any] | None = None) -> UnitStatus:
    """``launch`` is the latest entry of run.json's launches: for the units it (re)submitted, only
    attempts of that launch decide the state, so a unit queued again reads PENDING, not its old end."""
    attempts = tuple(run.attempts(key))
    current = attempts
    if launch and key in launch.get("units", ()):
        current = tuple(a for a in attempts if _of_launch(a, launch))
    cancelled = run.cancelled(key)
    state = _state(current, cancelled, plan.spec(key).retries)
    return UnitStatus(key, state, attempts, cancelled, run.progress(key))


def _of_launch(attempt: Mapping[str, Any], launch: Mapping[str, Any]) -> bool:
    if "unreadable" in attempt:  # its epoch cannot be read: it is the launch's if written after the launch began
        return float(attempt.get("written") or 0.0) >= float(launch.get("time") or 0.0)
    return bool(attempt.get("epoch", 0) == launch.get("epoch", 0))


def run_status(run: RunDir, plan: Plan | None = None) -> dict[str, UnitStatus]:
    plan = plan or run.load_plan()
    launches = run.meta().get("launches") or [None]
    return {key: unit_status(run, plan, key, launches[-1]) for key in plan.units}


def _state(attempts: tuple[AttemptRecord, ...], cancelled: Mapping[str, Any] | None, retries: int) -> State:
    """From one launch's attempts: retries are counted within the launch that made them."""
    if cancelled is not None:
        return State.CANCELLED
    if not attempts:
        return State.PENDING
    last = attempts[-1]["state"]
    if last == AttemptState.FAILED:
        return State.RETRYING if len(attempts) <= retries else State.FAILED
    if last == AttemptState.PREEMPTED:  # saved its state; the requeued job resumes the same attempt
        return State.RUNNING
    return State(last.value)  # RUNNING, COMPLETED, CANCELLED: the same word


def unreadable_records(statuses: Mapping[str, UnitStatus]) -> list[str]:
    """One line per attempt record that could not be read (RunDir.attempts): a problem to report."""
    return [f"{s.key}: {a.get('error')}" for s in statuses.values() for a in s.attempts if a.get("unreadable")]


def root_cause(statuses: Mapping[str, UnitStatus]) -> UnitStatus | None:
    """The first unit (in plan order) that failed for good: what a user should look at first."""
    return next((s for s in statuses.values() if s.state is State.FAILED), None)
