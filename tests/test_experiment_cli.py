"""`python -m cl_hpc.experiment start|status|stop` through real subprocesses on a real store: every
bad input exits 2 with its message and writes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cl_hpc.registry import ModelRegistry
from cl_hpc.rollout.experiments import ExperimentStore
from tests.conftest import REPO, _env
from tests.serving import register_tabular


def _cli(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cl_hpc.experiment", *args, f"store.root={store}"], cwd=REPO,
                          env=_env(), capture_output=True, text=True, timeout=120)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    register_tabular(root, seeds=(0, 1, 2))
    return root


def test_start_status_stop(store: Path) -> None:
    started = _cli(store, "start", "experiment=canary", "experiment.challenger=2.0", "--reason", "retrained")
    assert started.returncode == 0, started.stderr
    assert "experiment 1 started: canary on demo (challenger 2.0 1%, champion 1.0 99%), unit user" in started.stdout
    with ModelRegistry.open(store) as registry:
        marked = registry.events("demo", "challenger")[-1]
        assert str(marked.to_version) == "2.0" and marked.reason == "experiment 1 (canary) started: retrained"
    listed = [json.loads(line) for line in _cli(store, "status", "--json").stdout.splitlines()]
    assert [(e["id"], e["kind"], e["state"], e["weights"]) for e in listed] == [
        (1, "canary", "running", {"challenger": 0.01, "champion": 0.99})]
    assert listed[0]["config"]["steps"] == [1.0, 5.0, 25.0, 50.0, 100.0] and listed[0]["reason"] == "retrained"
    stopped = _cli(store, "stop", "1", "--reason", "enough")
    assert stopped.returncode == 0, stopped.stderr
    again = _cli(store, "stop", "1", "--reason", "twice")
    assert again.returncode == 2 and "is stopped since" in again.stderr
    ab = _cli(store, "start", "experiment=ab", "experiment.challenger=3.0", "experiment.unit=request", "--reason", "r")
    assert ab.returncode == 0 and "challenger 3.0 50%, champion 1.0 50%), unit request" in ab.stdout, ab.stderr
    assert "sample size: accuracy from " in ab.stdout and "-> need " in ab.stdout and "mSPRT" in ab.stdout


@pytest.mark.parametrize("args, message", [
    (["experiment.challenger=9.0"], "has no version '9.0'"),
    ([], "experiment.challenger is not set"),
    (["experiment.challenger=1.0"], "both demo 1.0"),
    (["experiment.challenger=2.0", "experiment.kind=nope"], "experiment.kind='nope'; valid: shadow, ab, canary"),
    (["experiment.challenger=2.0", "experiment.unit=session"], "experiment.unit='session'; valid: request, user"),
    (["experiment.challenger=2.0", "experiment.weights={challenger: 0.7, champion: 0.2}"], "must sum to 1"),
    (["experiment.challenger=2.0", "experiment.model=nope"], "nope"),
    (["experiment.challenger=2.0", "experiment.steps=[50, 5]"], "increasing percentages"),
    (["experiment.challenger=2.0", "experiment.more_arms=[3.0]"], "only a bandit plays more than two versions"),
    (["experiment=bandit", "experiment.challenger=2.0", "experiment.more_arms=[1.0]"], "must be distinct versions"),
    (["experiment.challenger=2.0", "experiment.metric=clicks"], "experiment.metric='clicks'; valid: accuracy"),
])
def test_bad_starts_exit_2_and_write_nothing(store: Path, args: list[str], message: str) -> None:
    proc = _cli(store, "start", *args, "--reason", "r")
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    with ExperimentStore.open(store) as experiments:
        assert experiments.listing() == []


def test_a_bandit_plays_more_versions_evenly(store: Path) -> None:
    started = _cli(store, "start", "experiment=bandit", "experiment.challenger=2.0", "experiment.more_arms=[3.0]",
                   "--reason", "three")
    assert started.returncode == 0, started.stderr
    assert "challenger 2.0 33%, champion 1.0 33%, v3.0 3.0 33%), unit request" in started.stdout
    with ExperimentStore.open(store) as experiments:
        assert sum(experiments.latest(1).weights.values()) == pytest.approx(1.0)


def test_a_second_experiment_on_the_model_is_refused(store: Path) -> None:
    assert _cli(store, "start", "experiment.challenger=2.0", "--reason", "first").returncode == 0
    second = _cli(store, "start", "experiment=shadow", "experiment.challenger=3.0", "--reason", "second")
    assert second.returncode == 2 and "experiment 1 (ab, started" in second.stderr and "stop it first" in second.stderr
    with ModelRegistry.open(store) as registry, ExperimentStore.open(store) as experiments:
        assert len(experiments.listing()) == 1 and str(registry.resolve("demo", "champion")) == "1.0"


def _logged(store: Path, units: list[str | None]) -> None:
    """Live answers of the model in its prediction log, one per unit (None: a request without one)."""
    import time

    import numpy as np

    from cl_hpc.data.predictions import PredictionBatch, Role, Stream, predictions_table, shard_path, write_shard

    now = time.time()
    batches = [PredictionBatch(f"r{i}", now, "demo", "1.0", Role.LIVE, 1.0, {"a": np.array([0.5])},
                               {"class": np.array([1])}, unit) for i, unit in enumerate(units)]
    write_shard(shard_path(store / "predictions", Stream.PREDICTIONS, now, "test", 0), predictions_table(batches))


def test_by_user_is_refused_when_the_logged_requests_carry_no_unit(store: Path) -> None:
    _logged(store, [None] * 30)
    refused = _cli(store, "start", "experiment.challenger=2.0", "experiment.unit=user", "--reason", "r")
    assert refused.returncode == 2 and "none of the last 30 requests to demo" in refused.stderr, refused.stderr
    assert "experiment.unit=request or day" in refused.stderr
    by_request = _cli(store, "start", "experiment.challenger=2.0", "experiment.unit=request", "--reason", "r")
    assert by_request.returncode == 0, by_request.stderr


def test_by_user_starts_when_the_requests_carry_units(store: Path) -> None:
    _logged(store, [None, "user-1", "user-2"])
    started = _cli(store, "start", "experiment.challenger=2.0", "experiment.unit=user", "--reason", "r")
    assert started.returncode == 0, started.stderr


def test_report_of_a_fresh_experiment_and_of_an_unknown_one(store: Path) -> None:
    assert _cli(store, "start", "experiment.challenger=2.0", "--reason", "r").returncode == 0
    shown = _cli(store, "report", "1", "--json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert [(a["arm"], a["version"], a["requests"]) for a in report["arms"]] == [("challenger", "2.0", 0),
                                                                              ("champion", "1.0", 0)]
    assert report["state"] == "running" and report["plan"]["n_a"] > 0 and report["notes"]
    assert report["controller"]["decision"] == "wait" and "0 champion and 0 challenger values" in \
        report["controller"]["reason"]
    table = _cli(store, "report", "1")
    assert table.returncode == 0 and "controller now: wait: accuracy: 0 champion" in table.stdout, table.stderr
    unknown = _cli(store, "report", "9")
    assert unknown.returncode == 2 and "no experiment 9; experiments in this store: 1" in unknown.stderr


def test_decide_waits_without_traffic_and_refuses_an_ended_experiment(store: Path) -> None:
    assert _cli(store, "start", "experiment=canary", "experiment.challenger=2.0", "--reason", "r").returncode == 0
    waited = _cli(store, "decide", "1", "--dry-run")
    assert waited.returncode == 0 and "experiment 1: wait: canary at 1%" in waited.stdout, waited.stderr
    assert "(dry run: nothing written)" in waited.stdout
    assert _cli(store, "stop", "1", "--reason", "r").returncode == 0
    assert _cli(store, "start", "experiment.challenger=2.0", "--reason", "ab").returncode == 0
    waited = _cli(store, "decide", "2")
    assert waited.returncode == 0 and "experiment 2: wait: accuracy: 0 champion and 0 challenger values" in \
        waited.stdout, waited.stderr
    assert "(nothing to write)" in waited.stdout
    ended = _cli(store, "decide", "1")
    assert ended.returncode == 2 and "experiment 1 is stopped" in ended.stderr
