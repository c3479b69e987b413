"""The controller's A/B, shadow and bandit looks on a real registry and store, with a prediction log
and label zones written as the server and the label join write them: a better challenger is promoted
through the registry, a worse one rejected, an equal one waits under the mSPRT and is rejected at a
fixed horizon, a broken split halts, a shadow's copies are judged from their own zone, and a bandit's
posterior is written to the store, where a reopened store (a restarted server) finds it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import pytest

from cl_hpc.data.predictions import Role
from cl_hpc.registry import ModelRegistry
from cl_hpc.rollout.assign import UnitKind
from cl_hpc.rollout.bandit import policy_from_dict
from cl_hpc.rollout.controller import Decision, Sources, apply, evaluate, look_all, mark_challenger
from cl_hpc.rollout.experiments import ExperimentStore
from cl_hpc.rollout.records import Action, Arm, Experiment, ExperimentKind, ExperimentState
from cl_hpc.rollout.report import labelled_in
from cl_hpc.rollout.sequential import MSPRT, StreamKind
from cl_hpc.store.db import Store
from tests.rollout_traffic import traffic
from tests.serving import NAME, register_tabular

ARMS = (Arm("challenger", "2.0"), Arm("champion", "1.0"))
T0 = time.time() - 10_000
NOW = [T0]
Stores = tuple[ModelRegistry, ExperimentStore, Path]
LATENCY = {"champion": 1.0, "challenger": 1.0}


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Stores]:
    root = tmp_path / "store"
    register_tabular(root, seeds=(0, 1))
    NOW[0] = T0
    with ModelRegistry.open(root) as registry, ExperimentStore(Store(root), clock=lambda: NOW[0]) as experiments:
        yield registry, experiments, tmp_path


def _start(stores: Stores, kind: ExperimentKind, challenger: float = 0.5, **config: Any) -> Experiment:
    registry, experiments, _ = stores
    settings = {"min_samples": 100, "alpha": 0.05, "mde": 0.05, "sequential": True, **config}
    weights = {"challenger": challenger, "champion": 1 - challenger}
    experiment, _ = experiments.start(registry, NAME, kind, ARMS, weights,
                                      unit=UnitKind.USER, reason="decision test", config=settings)
    return experiment


def _look(stores: Stores, experiment: Experiment, *zones: str) -> Any:
    _, experiments, tmp = stores
    sources = Sources(tmp / "log", tuple(tmp / z for z in zones or ("labels",)))
    return evaluate(experiment, experiments.events(experiment.id), sources)


def test_ab_promotes_a_better_challenger_through_the_registry(stores: Stores) -> None:
    registry, experiments, tmp = stores
    experiment = _start(stores, ExperimentKind.AB)
    traffic(tmp, experiment, T0 + 1, {"champion": 800, "challenger": 800}, {"champion": 0.70, "challenger": 0.85},
            LATENCY, seed=1)
    step = _look(stores, experiment)
    assert step.decision is Decision.PROMOTE and "accuracy: the challenger is better" in step.reason, step.reason
    assert step.detail["test"]["test"] == "msprt" and step.detail["test"]["p_value"] < 0.05
    apply(step, experiment, experiments, registry)
    assert str(registry.resolve(NAME, "champion")) == "2.0"
    assert f"experiment {experiment.id} (ab): accuracy: the challenger is better" in \
        registry.events(NAME, "champion")[-1].reason
    assert experiments.latest(experiment.id).state is ExperimentState.DECIDED


def test_ab_rejects_a_worse_challenger_and_leaves_the_champion(stores: Stores) -> None:
    registry, experiments, tmp = stores
    experiment = _start(stores, ExperimentKind.AB)
    mark_challenger(registry, experiment)  # as the CLI's start does: the alias names the version under test
    traffic(tmp, experiment, T0 + 1, {"champion": 800, "challenger": 800}, {"champion": 0.85, "challenger": 0.60},
            LATENCY, seed=2)
    step = _look(stores, experiment)
    assert step.decision is Decision.REJECT and "the challenger is worse" in step.reason, step.reason
    apply(step, experiment, experiments, registry)
    assert "rejected" in registry.get(NAME, "2.0").tags and "rejected" not in registry.get(NAME, "1.0").tags
    assert str(registry.resolve(NAME, "champion")) == "1.0"
    moves = [(e.action, str(e.to_version)) for e in registry.events(NAME, "challenger")]
    assert moves == [("promote", "2.0"), ("rollback-to", "1.0")]
    assert "the challenger is worse" in registry.events(NAME, "challenger")[-1].reason
    latest = experiments.latest(experiment.id)
    assert latest.state is ExperimentState.DECIDED and latest.weights == {"challenger": 0.0, "champion": 1.0}


def test_ab_waits_on_an_equal_challenger_and_on_too_few_rows(stores: Stores) -> None:
    _, _, tmp = stores
    experiment = _start(stores, ExperimentKind.AB, min_samples=1000)
    traffic(tmp, experiment, T0 + 1, {"champion": 900, "challenger": 900}, {"champion": 0.8, "challenger": 0.8},
            LATENCY, seed=3)
    few = _look(stores, experiment)
    assert few.decision is Decision.WAIT and "of the 1000 per arm needed" in few.reason, few.reason
    equal = _look(stores, _start_again(stores, experiment, min_samples=100))
    assert equal.decision is Decision.WAIT and "no decision yet" in equal.reason, equal.reason
    assert equal.detail["test"]["p_value"] >= 0.05


def _start_again(stores: Stores, experiment: Experiment, **config: Any) -> Experiment:
    """The same experiment read back with other settings (its rows stay its own)."""
    return Experiment(**{**experiment.__dict__, "config": {**experiment.config, **config}})


def test_ab_compares_users_not_their_correlated_rows(stores: Stores) -> None:
    """By user, each user's answers are all right or all wrong (the extreme of correlated rows). 33 of 60
    good users on one arm against 27 on the other is chance: rows taken as independent (3,000 per arm)
    would call it a significant 10-point gain; per-user means see 60 values per arm and no evidence."""
    _, _, tmp = stores
    experiment = _start(stores, ExperimentKind.AB, min_samples=50, mde=0.1)
    rows = []
    for arm, good in (("challenger", 33), ("champion", 27)):
        for user in range(60):
            rows.append(pd.DataFrame({"ts": pd.to_datetime(T0 + 20 + np.arange(50), unit="s"), "y": 1,
                                      "_experiment": experiment.id, "_arm": arm, "_unit": f"{arm}-{user}",
                                      "_request_id": [f"{arm}-{user}-{i}" for i in range(50)],
                                      "_output.label": int(user < good)}))
    (tmp / "labels").mkdir()
    pd.concat(rows).to_parquet(tmp / "labels" / "part-20261205T000000.parquet")
    step = _look(stores, experiment)
    assert step.decision is Decision.WAIT and step.samples == {"champion": 60, "challenger": 60}, step.reason
    rowwise = MSPRT(StreamKind.BERNOULLI, 0.1 ** 2)
    rowwise.update(np.repeat([1.0] * 27 + [0.0] * 33, 50), np.repeat([1.0] * 33 + [0.0] * 27, 50))
    assert rowwise.rejected


def test_ab_fixed_horizon_waits_for_its_planned_size_then_rejects_no_gain(stores: Stores) -> None:
    registry, experiments, tmp = stores
    experiment = _start(stores, ExperimentKind.AB, sequential=False, mde=0.1)
    traffic(tmp, experiment, T0 + 1, {"champion": 150, "challenger": 150}, {"champion": 0.8, "challenger": 0.8},
            LATENCY, seed=4)
    early = _look(stores, experiment)
    assert early.decision is Decision.WAIT and "fixed-horizon test read at" in early.reason, early.reason
    planned = early.detail["plan"]["n_a"]
    assert 150 < planned < 600
    traffic(tmp, experiment, T0 + 100, {"champion": 600, "challenger": 600}, {"champion": 0.8, "challenger": 0.8},
            LATENCY, seed=5)
    final = _look(stores, experiment)
    assert final.decision is Decision.REJECT and "not significantly better at the planned sample size" in \
        final.reason, final.reason
    assert final.detail["test"]["test"] == "two-proportion z"


def test_ab_on_latency_rejects_a_slower_challenger(stores: Stores) -> None:
    _, _, tmp = stores
    experiment = _start(stores, ExperimentKind.AB, metric="latency_ms", mde=0.5)
    traffic(tmp, experiment, T0 + 1, {"champion": 300, "challenger": 300}, {"champion": 0.8, "challenger": 0.8},
            {"champion": 1.0, "challenger": 3.0}, seed=6)
    step = _look(stores, experiment)
    assert step.decision is Decision.REJECT and step.reason.startswith("latency_ms: the challenger is worse")


def test_ab_halts_on_a_broken_split(stores: Stores) -> None:
    registry, experiments, tmp = stores
    experiment = _start(stores, ExperimentKind.AB)
    traffic(tmp, experiment, T0 + 1, {"champion": 900, "challenger": 300}, {"champion": 0.8, "challenger": 0.8},
            LATENCY, seed=7)
    step = _look(stores, experiment)
    assert step.decision is Decision.HALT and "sample-ratio mismatch" in step.reason
    apply(step, experiment, experiments, registry)
    assert experiments.latest(experiment.id).state is ExperimentState.HALTED


def test_shadow_judges_the_copies_from_their_own_zone(stores: Stores) -> None:
    registry, experiments, tmp = stores
    experiment = _start(stores, ExperimentKind.SHADOW, challenger=0.0)
    traffic(tmp, experiment, T0 + 1, {"champion": 700}, {"champion": 0.70}, LATENCY, seed=8)
    traffic(tmp, experiment, T0 + 1, {"challenger": 700}, {"challenger": 0.85}, LATENCY, seed=9,
            roles={"challenger": Role.SHADOW}, labels="shadow-labels")
    only_live = _look(stores, experiment, "labels")
    assert only_live.decision is Decision.WAIT and "0 challenger values" in only_live.reason
    step = _look(stores, experiment, "labels", "shadow-labels")
    assert step.decision is Decision.PROMOTE, step.reason
    apply(step, experiment, experiments, registry)
    assert str(registry.resolve(NAME, "champion")) == "2.0"


def test_bandit_writes_its_posterior_and_split_then_promotes_the_best_arm(stores: Stores) -> None:
    registry, experiments, tmp = stores
    experiment = _start(stores, ExperimentKind.BANDIT, policy="thompson", min_samples=200)
    rates = {"champion": 0.5, "challenger": 0.56}
    traffic(tmp, experiment, T0 + 1, {"champion": 150, "challenger": 150}, {"champion": 0.9, "challenger": 0.9},
            LATENCY, seed=10, rewards=rates)
    first = _look(stores, experiment)
    assert first.decision is Decision.STEP, first.reason
    posterior = first.detail["posterior"]["arms"]
    assert posterior["champion"]["pulls"] == 150 and posterior["challenger"]["pulls"] == 150
    assert abs(sum(first.weights.values()) - 1) < 1e-6 and min(first.weights.values()) >= 0.0099
    assert first.weights["challenger"] == pytest.approx(first.detail["prob_best"]["challenger"], abs=0.02)
    NOW[0] = T0 + 100
    apply(first, experiment, experiments, registry)
    same = _look(stores, experiment)
    assert same.decision is Decision.WAIT and "no new rewards" in same.reason
    assert same.detail["posterior"] == first.detail["posterior"]  # the stored posterior, shown between looks
    traffic(tmp, experiment, T0 + 101, {"champion": 400, "challenger": 400}, {"champion": 0.9, "challenger": 0.9},
            LATENCY, seed=11, rewards={"champion": 0.4, "challenger": 0.7})
    final = _look(stores, experiment)
    assert final.decision is Decision.PROMOTE and final.winner == "challenger", final.reason
    apply(final, experiment, experiments, registry)
    assert str(registry.resolve(NAME, "champion")) == "2.0"


def test_bandit_posterior_survives_a_reopened_store(stores: Stores) -> None:
    registry, experiments, tmp = stores
    experiment = _start(stores, ExperimentKind.BANDIT, policy="epsilon_greedy", epsilon=0.2)
    traffic(tmp, experiment, T0 + 1, {"champion": 120, "challenger": 80}, {"champion": 0.9, "challenger": 0.9},
            LATENCY, seed=12, rewards={"champion": 0.3, "challenger": 0.8})
    step = _look(stores, experiment)
    assert step.weights == {"challenger": pytest.approx(0.9), "champion": pytest.approx(0.1)}, step.reason
    apply(step, experiment, experiments, registry)
    with ExperimentStore.open(tmp / "store") as reopened:  # what a restarted server or controller reads
        latest = reopened.latest(experiment.id)
        assert latest.action is Action.WEIGHTS and latest.weights == step.weights
        policy = policy_from_dict(latest.detail["posterior"])
        assert policy.state["champion"].pulls == 120 and policy.state["challenger"].pulls == 80
        assert policy.state["challenger"].reward_sum == step.samples["challenger"]["reward_sum"]


def test_a_reward_zone_feeds_the_bandit_and_grades_no_answer(stores: Stores) -> None:
    """A zone joined with labels.value=reward holds the reward as its label: the bandit reads it, and
    no accuracy is computed from it (comparing a reward with the answered class means nothing)."""
    _, _, tmp = stores
    experiment = _start(stores, ExperimentKind.BANDIT, policy="thompson")
    traffic(tmp, experiment, T0 + 1, {"champion": 100, "challenger": 100}, {"champion": 0.9, "challenger": 0.9},
            LATENCY, seed=14, rewards={"champion": 0.3, "challenger": 0.8})
    zone = next((tmp / "labels").glob("*.parquet"))
    frame = pd.read_parquet(zone)
    frame["y"] = frame["_reward"]  # as the join writes it with value=reward
    frame.to_parquet(zone)
    step = _look(stores, experiment)
    assert step.samples["challenger"]["rewards"] == 100 and step.samples["champion"]["rewards"] == 100
    assert labelled_in(experiment, (tmp / "labels",), "y", "label").empty  # nothing graded
    assert len(labelled_in(experiment, (tmp / "labels",), "y", "label", graded=False)) == 200


def test_look_all_decides_every_running_experiment(stores: Stores) -> None:
    registry, experiments, tmp = stores
    experiment = _start(stores, ExperimentKind.AB)
    traffic(tmp, experiment, T0 + 1, {"champion": 800, "challenger": 800}, {"champion": 0.85, "challenger": 0.6},
            LATENCY, seed=13)
    looks = look_all(experiments, registry, Sources(tmp / "log", (tmp / "labels",)))
    assert [(x.experiment.id, x.step.decision) for x in looks] == [(experiment.id, Decision.REJECT)]
    assert look_all(experiments, registry, Sources(tmp / "log", (tmp / "labels",))) == []  # decided: none runs
