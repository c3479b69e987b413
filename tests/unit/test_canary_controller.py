"""The canary controller on a real registry and store, with a prediction log and labelled rows written
as the server and the label join write them: a bad challenger is rolled back (tagged rejected, the
champion untouched), a good one ramps step by step and is promoted at 100 % through the registry with
a reason naming the experiment, a step without traffic waits, and a broken split halts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from cl_hpc.registry import ModelRegistry
from cl_hpc.rollout.assign import UnitKind
from cl_hpc.rollout.canary import canary_step
from cl_hpc.rollout.controller import Decision, apply
from cl_hpc.rollout.experiments import ExperimentStore
from cl_hpc.rollout.records import Arm, Experiment, ExperimentKind, ExperimentState
from cl_hpc.store.db import Store
from tests.rollout_traffic import traffic
from tests.serving import NAME, register_tabular

ARMS = (Arm("challenger", "2.0"), Arm("champion", "1.0"))
CONFIG = {"min_samples": 40, "steps": [50.0, 100.0], "alpha": 0.05}
WINDOW_S = 10.0


T0 = time.time() - 10_000  # the experiment's clock: traffic is written between its events
NOW = [T0]
Stores = tuple[ModelRegistry, ExperimentStore, Path]


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Stores]:
    root = tmp_path / "store"
    register_tabular(root, seeds=(0, 1))
    NOW[0] = T0
    with ModelRegistry.open(root) as registry, ExperimentStore(Store(root), clock=lambda: NOW[0]) as experiments:
        yield registry, experiments, tmp_path


def _start(registry: ModelRegistry, experiments: ExperimentStore, challenger: float = 0.5) -> Experiment:
    experiment, _ = experiments.start(registry, NAME, ExperimentKind.CANARY, ARMS,
                                      {"challenger": challenger, "champion": 1 - challenger}, unit=UnitKind.USER,
                                      reason="canary test", config=CONFIG)
    return experiment


def _step(experiments: ExperimentStore, experiment: Experiment, tmp: Path) -> Any:
    return canary_step(experiment, experiments.events(experiment.id), tmp / "log", tmp / "labels", window_s=WINDOW_S)


def test_a_bad_challenger_is_rolled_back_and_tagged_rejected(stores: Stores) -> None:
    registry, experiments, tmp = stores
    experiment = _start(registry, experiments)
    traffic(tmp, experiment, T0 + 1, {"champion": 300, "challenger": 300},
             {"champion": 0.9, "challenger": 0.5}, {"champion": 1.0, "challenger": 1.0}, seed=1)
    step = _step(experiments, experiment, tmp)
    assert step.decision is Decision.ROLLBACK and "accuracy" in step.reason, step.reason
    apply(step, experiment, experiments, registry)
    latest = experiments.latest(experiment.id)
    assert latest.state is ExperimentState.DECIDED and latest.weights == {"challenger": 0.0, "champion": 1.0}
    assert f"experiment {experiment.id} (canary)" in latest.reason
    assert "rejected" in registry.get(NAME, "2.0").tags and str(registry.resolve(NAME, "champion")) == "1.0"
    withdrawn = registry.events(NAME, "challenger")[-1]  # the reason in the alias log
    assert str(withdrawn.to_version) == "1.0" and f"experiment {experiment.id} (canary): canary at 50% failed" in \
        withdrawn.reason


def test_a_good_challenger_ramps_and_is_promoted_at_100(stores: Stores) -> None:
    registry, experiments, tmp = stores
    experiment = _start(registry, experiments)
    traffic(tmp, experiment, T0 + 1, {"champion": 300, "challenger": 300},
             {"champion": 0.85, "challenger": 0.86}, {"champion": 1.0, "challenger": 1.0}, seed=2)
    step = _step(experiments, experiment, tmp)
    assert step.decision is Decision.STEP and step.weights == {"challenger": 1.0, "champion": 0.0}, step.reason
    NOW[0] = T0 + 100
    apply(step, experiment, experiments, registry)
    waiting = _step(experiments, experiment, tmp)  # no traffic at 100 % yet: never a pass
    assert waiting.decision is Decision.WAIT, waiting.reason
    traffic(tmp, experiment, T0 + 101, {"challenger": 300}, {"challenger": 0.86}, {"challenger": 1.0}, seed=3)
    NOW[0] = T0 + 200
    final = _step(experiments, experiment, tmp)
    assert final.decision is Decision.PROMOTE, final.reason
    apply(final, experiment, experiments, registry)
    assert str(registry.resolve(NAME, "champion")) == "2.0"
    last = registry.events(NAME, "champion")[-1]
    assert f"experiment {experiment.id} (canary): canary passed at 100%" in last.reason
    assert experiments.latest(experiment.id).state is ExperimentState.DECIDED


def test_a_step_without_traffic_waits(stores: Stores) -> None:
    registry, experiments, tmp = stores
    experiment = _start(registry, experiments)
    (tmp / "labels").mkdir()  # the label join's zone exists, empty
    step = _step(experiments, experiment, tmp)
    assert step.decision is Decision.WAIT and "no_data" in step.reason
    assert apply(step, experiment, experiments, registry) is None


def test_a_broken_split_halts(stores: Stores) -> None:
    registry, experiments, tmp = stores
    experiment = _start(registry, experiments)  # 50/50 by weights, but 100 vs 500 users arrive
    traffic(tmp, experiment, T0 + 1, {"champion": 500, "challenger": 100},
             {"champion": 0.9, "challenger": 0.9}, {"champion": 1.0, "challenger": 1.0}, seed=4)
    step = _step(experiments, experiment, tmp)
    assert step.decision is Decision.HALT and "sample-ratio mismatch" in step.reason
    apply(step, experiment, experiments, registry)
    assert experiments.latest(experiment.id).state is ExperimentState.HALTED
