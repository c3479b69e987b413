"""Experiments in the project's SQLite store: started once, then only appended to.

Every write is one of Store's BEGIN IMMEDIATE transactions, so the check "no other experiment runs
on this model" and the start are atomic even with several controllers. Bad input (an unknown or
quarantined version, arms that repeat, weights that do not sum to 1, a second experiment on one
model) is refused before anything is written, with what is valid.
"""

from __future__ import annotations

import getpass
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from cl_hpc.errors import ClHpcError, ConfigError
from cl_hpc.rollout.assign import Share, UnitKind, validate_arms
from cl_hpc.rollout.records import (
    Action,
    Arm,
    Experiment,
    ExperimentEvent,
    ExperimentKind,
    ExperimentState,
)
from cl_hpc.store.db import Store

PAIR = ("challenger", "champion")  # the arms of every kind but a bandit (which may have more)


class RolloutError(ClHpcError):
    """An experiment that cannot be started or moved (names the experiment and what is valid)."""


class ExperimentStore:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self.store, self.clock = store, clock

    @classmethod
    def open(cls, root: Path | str, **store_options: Any) -> "ExperimentStore":
        return cls(Store(root, **store_options))

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "ExperimentStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- starting ---------------------------------------------------------------------------

    def start(self, registry: Any, name: str, kind: ExperimentKind, arms: Sequence[Arm], weights: Mapping[str, float],
              *, unit: UnitKind, reason: str, config: Optional[Mapping[str, Any]] = None,
              salt: Optional[str] = None, actor: Optional[str] = None) -> tuple[Experiment, ExperimentEvent]:
        """Record a new running experiment on model ``name`` of ``registry`` (a ModelRegistry on the same
        store), after checking every arm's version and the weights."""
        checked = check_weights(arms, weights)
        names = sorted(a.name for a in arms)
        if kind is not ExperimentKind.BANDIT and names != sorted(PAIR):
            raise RolloutError(f"a {kind.value} experiment has two arms named {' and '.join(PAIR)} (the live "
                               f"answer's and the one under test); got {names}")
        for arm in arms:
            record = registry.get(name, arm.version)  # an unknown model or version: the registry's error lists them
            if not record.promotable:
                raise RolloutError(f"arm {arm.name!r}: {record.label} is quarantined ({record.quarantined}); "
                                   f"an experiment serves only trusted versions")
        if not reason.strip():
            raise RolloutError("an experiment needs a reason (it is kept with every decision it leads to)")
        now = self.clock()
        draft = Experiment(id=0, name=name, kind=kind, unit=unit, salt=salt or os.urandom(8).hex(), arms=tuple(arms),
                           config=dict(config or {}), created=now, reason=reason.strip(), actor=actor or _actor())

        def work() -> tuple[Experiment, ExperimentEvent]:
            running = self._active(name)
            if running is not None:
                began = time.strftime("%Y-%m-%d %H:%M", time.localtime(running[0].created))
                raise RolloutError(f"experiment {running[0].id} ({running[0].kind.value}, started {began}) still runs "
                                   f"on {name}; one experiment per model at a time: stop it first "
                                   f"(python -m cl_hpc.experiment stop {running[0].id} --reason ...)")
            cursor = self.store.db.execute(
                "INSERT INTO experiments (name, kind, unit, salt, arms, config, created, actor, reason) "
                "VALUES (:name, :kind, :unit, :salt, :arms, :config, :created, :actor, :reason)", draft.to_row())
            experiment = Experiment(**{**draft.__dict__, "id": int(cursor.lastrowid)})
            event = self._insert(experiment.id, Action.START, ExperimentState.RUNNING, checked, draft.reason,
                                 {}, draft.actor, now)
            return experiment, event

        return self.store._transaction(work)

    # ---- appending --------------------------------------------------------------------------

    def append(self, experiment_id: int, action: Action, state: ExperimentState, weights: Mapping[str, float],
               reason: str, detail: Optional[Mapping[str, Any]] = None, actor: Optional[str] = None) -> ExperimentEvent:
        """Append an event to a running experiment; an ended one is refused (its record is final)."""
        experiment = self.get(experiment_id)
        checked = check_weights(experiment.arms, weights)

        def work() -> ExperimentEvent:
            latest = self.latest(experiment_id)
            if not latest.state.active:
                raise RolloutError(f"experiment {experiment_id} is {latest.state.value} since "
                                   f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(latest.at))} "
                                   f"({latest.reason}); an ended experiment takes no more events")
            return self._insert(experiment_id, action, state, checked, reason, dict(detail or {}),
                                actor or _actor(), self.clock())

        return self.store._transaction(work)

    def _insert(self, experiment_id: int, action: Action, state: ExperimentState, weights: dict[str, float],
                reason: str, detail: dict[str, Any], actor: Optional[str], at: float) -> ExperimentEvent:
        draft = ExperimentEvent(id=0, experiment_id=experiment_id, at=at, action=action, state=state,
                                weights=weights, reason=reason, detail=detail, actor=actor)
        cursor = self.store.db.execute(
            "INSERT INTO experiment_events (experiment_id, at, action, state, weights, detail, reason, actor) "
            "VALUES (:experiment_id, :at, :action, :state, :weights, :detail, :reason, :actor)", draft.to_row())
        return ExperimentEvent(**{**draft.__dict__, "id": int(cursor.lastrowid)})

    # ---- reading ----------------------------------------------------------------------------

    def get(self, experiment_id: int) -> Experiment:
        rows = self._fetch("SELECT * FROM experiments WHERE id = ?", [experiment_id])
        if not rows:
            known = ", ".join(str(r["id"]) for r in self._fetch("SELECT id FROM experiments ORDER BY id")) or "none"
            raise RolloutError(f"no experiment {experiment_id}; experiments in this store: {known}")
        return Experiment.from_row(rows[0])

    def events(self, experiment_id: int) -> list[ExperimentEvent]:
        rows = self._fetch("SELECT * FROM experiment_events WHERE experiment_id = ? ORDER BY id", [experiment_id])
        return [ExperimentEvent.from_row(r) for r in rows]

    def latest(self, experiment_id: int) -> ExperimentEvent:
        rows = self._fetch("SELECT * FROM experiment_events WHERE experiment_id = ? ORDER BY id DESC LIMIT 1",
                           [experiment_id])
        return ExperimentEvent.from_row(rows[0])

    def active(self, name: str) -> Optional[tuple[Experiment, ExperimentEvent]]:
        """The running experiment on model ``name`` with its newest event (what the server routes by)."""
        return self._active(name)

    def listing(self, name: Optional[str] = None) -> list[tuple[Experiment, ExperimentEvent]]:
        where, args = ("WHERE name = ?", [name]) if name else ("", [])
        rows = self._fetch(f"SELECT * FROM experiments {where} ORDER BY id", args)
        return [(e, self.latest(e.id)) for e in map(Experiment.from_row, rows)]

    def _active(self, name: str) -> Optional[tuple[Experiment, ExperimentEvent]]:
        rows = self._fetch("SELECT * FROM experiments WHERE name = ? ORDER BY id DESC LIMIT 8", [name])
        for experiment in map(Experiment.from_row, rows):
            latest = self.latest(experiment.id)
            if latest.state.active:
                return experiment, latest
        return None

    def _fetch(self, sql: str, args: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cursor = self.store.db.execute(sql, list(args))
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row)) for row in cursor.fetchall()]


def check_weights(arms: Sequence[Arm], weights: Mapping[str, float]) -> dict[str, float]:
    """The weights in the arms' order, once there are two or more arms with one weight each, each in
    [0, 1], summing to 1 (assign.validate_arms: the rules the router assigns by)."""
    names = [a.name for a in arms]
    if len(arms) < 2:
        raise RolloutError(f"arms {names}: an experiment compares two or more versions")
    if set(weights) != set(names) or len(set(names)) != len(names):
        raise RolloutError(f"weights name {sorted(weights)} but the arms are {names}: give one weight per arm, "
                           f"each arm named once")
    try:
        validate_arms([Share(name, float(weights[name])) for name in names])
    except (TypeError, ValueError, ConfigError) as exc:
        raise RolloutError(f"weights {dict(weights)}: {exc}") from None
    return {name: float(weights[name]) for name in names}


def _actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"
