"""From an experiment's config to what the store records: the model, the arms' versions, the first
weights and the unit. Every check (the config, the versions, the weights) runs before anything is
written; the store then checks, in its transaction, that no other experiment runs on the model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from cl_hpc.config.experiment import ExperimentConf, check_experiment
from cl_hpc.rollout.assign import UnitKind, unit_kind
from cl_hpc.rollout.experiments import RolloutError
from cl_hpc.rollout.records import Arm, ExperimentKind

CHALLENGER, CHAMPION = "challenger", "champion"


@dataclass(frozen=True)
class Plan:
    name: str
    kind: ExperimentKind
    arms: tuple[Arm, ...]  # the challenger first: its range of buckets only grows as its weight rises
    weights: dict[str, float]
    unit: UnitKind
    config: dict[str, Any]


def plan(conf: ExperimentConf, registry: Any) -> Plan:
    check_experiment(conf)
    name = conf.model or _only_model(registry)
    if conf.challenger is None:
        raise RolloutError(f"experiment.challenger is not set: name the version to test, e.g. "
                           f"experiment.challenger=1.1 (versions of {name}: {_versions(registry, name)})")
    champion = str(registry.resolve(name, conf.champion))
    challenger = str(registry.resolve(name, conf.challenger))
    if champion == challenger:
        raise RolloutError(f"experiment.champion ({conf.champion}) and experiment.challenger ({conf.challenger}) are "
                           f"both {name} {champion}: an experiment compares two versions")
    kind = ExperimentKind(conf.kind)
    weights = dict(conf.weights) or first_weights(kind, conf)
    arms = (Arm(CHALLENGER, challenger), Arm(CHAMPION, champion))
    return Plan(name, kind, arms, weights, unit_kind(conf.unit), dataclasses.asdict(conf))


def first_weights(kind: ExperimentKind, conf: ExperimentConf) -> dict[str, float]:
    """The kind's starting split: a canary starts at its first step, a shadow sends no live traffic to the
    challenger (it gets copies), the others split evenly."""
    share = {ExperimentKind.CANARY: conf.steps[0] / 100.0, ExperimentKind.SHADOW: 0.0}.get(kind, 0.5)
    return {CHALLENGER: share, CHAMPION: 1.0 - share}


def _only_model(registry: Any) -> str:
    names = registry.names()
    if len(names) != 1:
        raise RolloutError(f"experiment.model is not set and the registry holds {len(names)} models "
                           f"({', '.join(names) or 'none'}); set experiment.model=<name>")
    return str(names[0])


def _versions(registry: Any, name: str) -> str:
    return ", ".join(str(v.version) for v in registry.versions(name)) or "none"
