"""An experiment and its events, as typed values and as the store's rows (JSON text in JSON columns).

An experiment is written once: what it tests (its kind), on which versions (its arms), how units
are assigned (unit kind and salt) and its settings. Everything after is an appended event: the
weights it serves with, a ramp step, a halt (sample-ratio mismatch, a failed judge), a decision
(promote, rollback, reject), a stop. Its state is its newest event's.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from cl_hpc.rollout.assign import UnitKind  # defined once, where assignment uses it


class ExperimentKind(enum.Enum):
    SHADOW = "shadow"  # the challenger answers copies of requests; its answers are logged, never returned
    AB = "ab"  # a fixed split of units between the arms
    CANARY = "canary"  # the challenger's share ramps up in steps while a judge watches it
    INTERLEAVE = "interleave"  # ranking requests get both rankers' lists interleaved (team draft)
    BANDIT = "bandit"  # the split follows the arms' rewards (Thompson sampling, epsilon-greedy)


class ExperimentState(enum.Enum):
    RUNNING = "running"
    HALTED = "halted"  # stopped by a guard (sample-ratio mismatch, a failed judge): the champion serves all
    DECIDED = "decided"  # a decision went through the registry (promote, rollback, reject)
    STOPPED = "stopped"  # ended by hand, no decision

    @property
    def active(self) -> bool:
        return self is ExperimentState.RUNNING


class Action(enum.Enum):
    START = "start"
    WEIGHTS = "weights"  # the arms' shares changed (a canary step, a bandit's new split)
    SNAPSHOT = "snapshot"  # the controller's state (a bandit's posteriors, a sequential test's sums)
    HALT = "halt"
    DECIDE = "decide"
    STOP = "stop"


@dataclass(frozen=True)
class Arm:
    name: str  # "champion", "challenger", or any name for a bandit's arms
    version: str  # the registry version it serves, "X.Y"

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version}


@dataclass(frozen=True)
class Experiment:
    id: int
    name: str  # the registry model it runs on
    kind: ExperimentKind
    unit: UnitKind
    salt: str  # hashed with each unit key: another experiment assigns the same users independently
    arms: tuple[Arm, ...]
    config: dict[str, Any]  # the kind's settings (steps, metrics, thresholds), as started
    created: float
    reason: str
    actor: str | None = None

    def arm(self, name: str) -> Arm:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(f"experiment {self.id} has no arm {name!r}; its arms: {[a.name for a in self.arms]}")

    def to_row(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind.value, "unit": self.unit.value, "salt": self.salt,
                "arms": json.dumps([a.to_dict() for a in self.arms]), "config": json.dumps(self.config, sort_keys=True),
                "created": self.created, "actor": self.actor, "reason": self.reason}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "Experiment":
        return cls(id=int(row["id"]), name=row["name"], kind=ExperimentKind(row["kind"]), unit=UnitKind(row["unit"]),
                   salt=row["salt"], arms=tuple(Arm(a["name"], a["version"]) for a in json.loads(row["arms"])),
                   config=json.loads(row["config"]), created=float(row["created"]), reason=row["reason"],
                   actor=row["actor"])

    def to_json(self) -> dict[str, Any]:
        return {**self.to_row(), "id": self.id, "arms": [a.to_dict() for a in self.arms], "config": self.config}


@dataclass(frozen=True)
class ExperimentEvent:
    id: int
    experiment_id: int
    at: float
    action: Action
    state: ExperimentState  # the experiment's state from this event on
    weights: dict[str, float]  # arm name -> share of units, summing to 1 (shadow: the challenger's copy share)
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)  # the numbers behind it (a report, a posterior)
    actor: str | None = None

    def to_row(self) -> dict[str, Any]:
        return {"experiment_id": self.experiment_id, "at": self.at, "action": self.action.value,
                "state": self.state.value, "weights": json.dumps(self.weights, sort_keys=True),
                "detail": json.dumps(self.detail, sort_keys=True, default=str), "reason": self.reason,
                "actor": self.actor}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "ExperimentEvent":
        return cls(id=int(row["id"]), experiment_id=int(row["experiment_id"]), at=float(row["at"]),
                   action=Action(row["action"]), state=ExperimentState(row["state"]),
                   weights=json.loads(row["weights"]), reason=row["reason"], detail=json.loads(row["detail"]),
                   actor=row["actor"])

    def to_json(self) -> dict[str, Any]:
        return {**self.to_row(), "id": self.id, "weights": self.weights, "detail": self.detail}


SPLITS = (Action.START, Action.WEIGHTS)  # the events that set an experiment's weights


def current_split(events: Sequence[ExperimentEvent]) -> ExperimentEvent:
    """The event whose weights are in force (``events`` oldest first): the newest that set them."""
    return next(e for e in reversed(events) if e.action in SPLITS)


def previous_split(events: Sequence[ExperimentEvent], split: ExperimentEvent) -> ExperimentEvent:
    """The split before ``split`` (itself when it is the first): a canary at 100 % judges against it."""
    earlier = [e for e in events if e.id < split.id and e.action in SPLITS]
    return earlier[-1] if earlier else split
