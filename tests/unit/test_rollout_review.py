"""Review of the experiment controller (issue 14): edge cases that made a look crash, a decision loop
forever, or an experiment run that can never decide. Real registry, real store, real log and label
files (tests/rollout_traffic.py writes them as the server and the label join do)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pandas as pd
import pytest

from cl_hpc.config.experiment import ExperimentConf
from cl_hpc.errors import DataError
from cl_hpc.registry import ModelRegistry
from cl_hpc.rollout.assign import UnitKind
from cl_hpc.rollout.controller import Decision, Sources, evaluate, look
from cl_hpc.rollout.experiments import ExperimentStore, RolloutError
from cl_hpc.rollout.records import Arm, Experiment, ExperimentKind, ExperimentState
from cl_hpc.rollout.start import plan
from cl_hpc.store.db import Store
from cl_hpc.watch.check import Journal
from cl_hpc.watch.experiments import look_experiments
from tests.rollout_traffic import traffic
from tests.serving import NAME, register_tabular

ARMS = (Arm("challenger", "2.0"), Arm("champion", "1.0"))
T0 = time.time() - 10_000
LATENCY = {"champion": 1.0, "challenger": 1.0}
Stores = tuple[ModelRegistry, ExperimentStore, Path]


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Stores]:
    root = tmp_path / "store"
    register_tabular(root, seeds=(0, 1, 2))
    with ModelRegistry.open(root) as registry, ExperimentStore(Store(root), clock=lambda: T0) as experiments:
        yield registry, experiments, tmp_path


def _start(stores: Stores, kind: ExperimentKind = ExperimentKind.AB, **config: Any) -> Experiment:
    registry, experiments, _ = stores
    settings = {"min_samples": 100, "alpha": 0.05, "mde": 0.05, "sequential": True, **config}
    experiment, _ = experiments.start(registry, NAME, kind, ARMS, {"challenger": 0.5, "champion": 0.5},
                                      unit=UnitKind.USER, reason="review", config=settings)
    return experiment


def test_a_promotion_over_a_champion_moved_meanwhile_halts_instead_of_failing_every_look(stores: Stores) -> None:
    registry, experiments, tmp = stores
    experiment = _start(stores)
    traffic(tmp, experiment, T0 + 1, {"champion": 800, "challenger": 800}, {"champion": 0.70, "challenger": 0.85},
            LATENCY, seed=1)
    registry.promote(NAME, "3.0", reason="a retrain promoted meanwhile")  # not the champion the test compared
    done = look(experiments, registry, experiment.id, Sources(tmp / "log", (tmp / "labels",)))
    assert done.step.decision is Decision.PROMOTE
    latest = experiments.latest(experiment.id)
    assert latest.state is ExperimentState.HALTED, latest  # ended: the server stops routing to 2.0
    assert "3.0" in latest.reason and "not promoted" in latest.reason, latest.reason
    assert str(registry.resolve(NAME, "champion")) == "3.0"  # the newer promotion is not replaced


def test_an_unreadable_label_partition_is_a_data_error_naming_it(stores: Stores) -> None:
    _, experiments, tmp = stores
    experiment = _start(stores)
    traffic(tmp, experiment, T0 + 1, {"champion": 200, "challenger": 200}, {"champion": 0.8, "challenger": 0.8},
            LATENCY, seed=2)
    bad = tmp / "labels" / "part-20990101T000000.parquet"
    bad.write_bytes(b"PAR1 half a file")
    with pytest.raises(DataError, match=bad.name):
        evaluate(experiment, experiments.events(experiment.id), Sources(tmp / "log", (tmp / "labels",)))


def test_the_watch_journals_a_look_that_fails_outside_cl_hpc_errors_and_goes_on(stores: Stores) -> None:
    registry, experiments, tmp = stores
    experiment = _start(stores, ExperimentKind.BANDIT)
    traffic(tmp, experiment, T0 + 1, {"champion": 50, "challenger": 50}, {"champion": 0.8, "challenger": 0.8},
            LATENCY, seed=3)
    # a zone written by another tool: its reward column holds text (pandas raises ValueError, not a ClHpcError)
    frame = pd.read_parquet(next((tmp / "labels").glob("*.parquet")))
    frame.assign(_reward="n/a").to_parquet(tmp / "labels" / "part-20990101T000000.parquet")
    lines: list[str] = []
    settings = SimpleNamespace(store_root=tmp / "store", store_options={}, model=NAME, log_dir=tmp / "log",
                               label_dirs=(tmp / "labels",))
    journal = Journal(tmp / "watch.jsonl", NAME, lines.append)
    failed = look_experiments(settings, journal, dry_run=False)  # type: ignore[arg-type]
    assert failed == 1
    events = [json.loads(x) for x in (tmp / "watch.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["experiment-error"] and "ValueError" in events[0]["error"]
    assert experiments.latest(experiment.id).state is ExperimentState.RUNNING


@pytest.mark.parametrize("settings", [{"steps": [100.0]}, {"weights": {"challenger": 1.0, "champion": 0.0}},
                                      {"weights": {"challenger": 0.0, "champion": 1.0}}])
def test_a_canary_that_starts_with_one_arm_dark_is_refused(stores: Stores, settings: dict[str, Any]) -> None:
    registry, _, _ = stores
    conf = ExperimentConf(kind="canary", challenger="2.0", **settings)
    with pytest.raises(RolloutError, match="canary"):
        plan(conf, registry)


def test_a_bandit_with_no_rewards_yet_keeps_its_split(stores: Stores) -> None:
    _, experiments, tmp = stores
    experiment = _start(stores, ExperimentKind.BANDIT)
    step = evaluate(experiment, experiments.events(experiment.id), Sources(tmp / "log", ()))
    assert step.decision is Decision.WAIT and step.weights == {"challenger": 0.5, "champion": 0.5}, step.reason
