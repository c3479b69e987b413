"""From an experiment's config to what the store records: the model, the arms' versions, the first
weights and the unit. Every check (the config, the versions, the weights) runs before anything is
written; the store then checks, in its transaction, that no other experiment runs on the model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import pandas as pd
import pyarrow.parquet as pq

from cl_hpc.config.experiment import ExperimentConf, check_experiment
from cl_hpc.data.predictions import Stream, list_shards
from cl_hpc.rollout.assign import UnitKind, unit_kind
from cl_hpc.rollout.experiments import RolloutError
from cl_hpc.rollout.records import Arm, ExperimentKind
from cl_hpc.rollout.stats import sample_size_binary

CHALLENGER, CHAMPION = "challenger", "champion"
SHARDS_CHECKED = 50  # the newest prediction-log shards read to see whether requests carry a unit


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
    name = conf.model or only_model(registry)
    if conf.challenger is None:
        raise RolloutError(f"experiment.challenger is not set: name the version to test, e.g. "
                           f"experiment.challenger=1.1 (versions of {name}: {_versions(registry, name)})")
    champion = str(registry.resolve(name, conf.champion))
    challenger = str(registry.resolve(name, conf.challenger))
    if champion == challenger:
        raise RolloutError(f"experiment.champion ({conf.champion}) and experiment.challenger ({conf.challenger}) are "
                           f"both {name} {champion}: an experiment compares two versions")
    kind = ExperimentKind(conf.kind)
    # The checkpoint is checked now, not when the challenger alias is pointed at it after the start.
    registry.verify(name, challenger)
    arms = (Arm(CHALLENGER, challenger), Arm(CHAMPION, champion), *_more_arms(conf, registry, name))
    if len({a.version for a in arms}) != len(arms):
        raise RolloutError(f"an experiment's arms must be distinct versions; got {[a.version for a in arms]}")
    weights = dict(conf.weights) or first_weights(kind, conf, [a.name for a in arms])
    share = weights.get(CHALLENGER)
    if kind is ExperimentKind.CANARY and not (isinstance(share, (int, float)) and 0 < share < 1):
        # At 0 % the challenger is never judged; at 100 % from the start the champion has no baseline: either
        # way the canary waits forever (and at 100 % every user meets an unjudged version).
        raise RolloutError(f"a canary starts with some traffic on both arms; its first share for the challenger is "
                           f"{share!r} (experiment.steps={list(conf.steps)}, experiment.weights="
                           f"{dict(conf.weights)}): give a first step below 100, e.g. experiment.steps=[5,25,50,100]")
    return Plan(name, kind, arms, weights, unit_kind(conf.unit), dataclasses.asdict(conf))


def check_units_carried(unit: UnitKind, name: str, log_dir: Path, now: float, lookback_s: float = 86_400.0) -> None:
    """By user, the requests must carry a `unit`: refused when the model's live traffic of the last day,
    in the prediction log, carries none (a split by user would send every such request to a 422).
    No logged traffic: nothing to check (the server refuses unit-less requests itself)."""
    if unit is not UnitKind.USER:
        return
    shards = list_shards(log_dir, Stream.PREDICTIONS, since=now - lookback_s)[-SHARDS_CHECKED:]
    frames = [pq.read_table(p, columns=["model", "role", "unit"]).to_pandas() for p in shards]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["model", "role", "unit"])
    live = rows[(rows["model"] == name) & (rows["role"] == "live")]
    if len(live) and live["unit"].isna().all():
        raise RolloutError(f"experiment.unit=user, but none of the last {len(live)} requests to {name} in {log_dir} "
                           f"carries a `unit`: send one (a user or session id) with every request, or assign by "
                           f"experiment.unit=request or day")


def first_weights(kind: ExperimentKind, conf: ExperimentConf, names: Sequence[str] = (CHALLENGER, CHAMPION)
                  ) -> dict[str, float]:
    """The kind's starting split: a canary starts at its first step, a shadow sends no live traffic to the
    challenger (it gets copies), the others split evenly (a bandit over all its arms)."""
    if len(names) > 2:
        return {name: 1.0 / len(names) for name in names}
    share = {ExperimentKind.CANARY: conf.steps[0] / 100.0, ExperimentKind.SHADOW: 0.0}.get(kind, 0.5)
    return {CHALLENGER: share, CHAMPION: 1.0 - share}


def _more_arms(conf: ExperimentConf, registry: Any, name: str) -> list[Arm]:
    """A bandit's arms beyond the two, each named by its version (v1.3)."""
    versions = [str(registry.resolve(name, ref)) for ref in conf.more_arms]
    return [Arm(f"v{version}", version) for version in versions]


def only_model(registry: Any) -> str:
    """The store's one model (experiment.model unset), or an error naming them."""
    names = registry.names()
    if len(names) != 1:
        raise RolloutError(f"experiment.model is not set and the registry holds {len(names)} models "
                           f"({', '.join(names) or 'none'}); set experiment.model=<name>")
    return str(names[0])


def _versions(registry: Any, name: str) -> str:
    return ", ".join(str(v.version) for v in registry.versions(name)) or "none"


def power_note(chosen: Plan, registry: Any) -> Optional[str]:
    """For an A/B or shadow test of accuracy, the sample size it needs, printed when it starts (the
    champion's registered accuracy as the baseline, else 0.5: the widest a rate's variance gets)."""
    config = chosen.config
    if chosen.kind not in (ExperimentKind.AB, ExperimentKind.SHADOW) or config.get("metric") != "accuracy":
        return None
    recorded = registry.get(chosen.name, chosen.arms[1].version).metrics.get("accuracy")
    baseline = float(recorded) if isinstance(recorded, (int, float)) and 0 < recorded < 1 else 0.5
    mde = float(config["mde"])
    baseline = min(baseline, 0.99 - mde)  # a champion near 1 still gets a plan (the rise must stay below 1)
    need = sample_size_binary(baseline, mde, alpha=float(config["alpha"]), power=float(config["power"]))
    how = ("the always-valid mSPRT may decide at any look, typically within 1-2x of it" if config.get("sequential")
           else "the fixed-horizon test is read once both arms hold it")
    return (f"accuracy from {baseline:.3f} (the champion's {'registered' if recorded is not None else 'assumed'} "
            f"accuracy) by +{mde:g}: {need.summary()}; {how}")
