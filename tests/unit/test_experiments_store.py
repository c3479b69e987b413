"""Experiments in a real SQLite store: started once after every check, then only appended to."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Iterator

import pytest

from cl_hpc.errors import ChecksumError
from cl_hpc.registry import ModelRegistry, RegistryError
from cl_hpc.rollout.assign import UnitKind
from cl_hpc.rollout.experiments import ExperimentStore, RolloutError
from cl_hpc.rollout.records import Action, Arm, ExperimentKind, ExperimentState
from tests.unit.test_registry import REPO, make_checkpoint

ARMS = (Arm("champion", "1.0"), Arm("challenger", "2.0"))
SPLIT = {"champion": 0.5, "challenger": 0.5}


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[ModelRegistry, ExperimentStore]]:
    root = tmp_path / "store"
    with ModelRegistry.open(root) as registry, ExperimentStore.open(root) as experiments:
        for seed in (0, 1):
            path = tmp_path / f"ckpt-{seed}" / "model.pt"
            registry.register("m", path, strategy="stateless", checkpoint_sha256=make_checkpoint(path, seed),
                              workdir=REPO)
        registry.promote("m", "1.0", reason="first")
        yield registry, experiments


def _start(stores: tuple[ModelRegistry, ExperimentStore], **changes: object) -> tuple[object, object]:
    registry, experiments = stores
    args: dict[str, object] = {"name": "m", "kind": ExperimentKind.AB, "arms": ARMS, "weights": SPLIT,
                               "unit": UnitKind.USER, "reason": "is 2.0 better?"}
    args.update(changes)
    return experiments.start(registry, **args)  # type: ignore[arg-type]


def test_start_records_the_experiment_and_a_running_start_event(stores: tuple[ModelRegistry, ExperimentStore]) -> None:
    experiment, event = _start(stores, config={"alpha": 0.05})
    _, experiments = stores
    stored = experiments.get(experiment.id)  # type: ignore[attr-defined]
    assert stored == experiment and stored.arm("challenger").version == "2.0" and stored.config == {"alpha": 0.05}
    assert len(stored.salt) == 16 and stored.actor
    assert (event.action, event.state, event.weights) == (Action.START, ExperimentState.RUNNING, SPLIT)  # type: ignore[attr-defined]
    assert experiments.active("m") == (stored, event)


@pytest.mark.parametrize("changes, message", [
    ({"arms": (Arm("champion", "1.0"), Arm("challenger", "9.0"))}, "has no version '9.0'"),
    ({"name": "nope"}, "nope"),
    ({"weights": {"champion": 0.5, "challenger": 0.6}}, "which sum to 1.1"),
    ({"weights": {"champion": 1.0}}, "give one weight per arm"),
    ({"weights": {"champion": 1.5, "challenger": -0.5}}, "must lie in [0, 1]"),
    ({"arms": (Arm("a", "1.0"), Arm("a", "2.0")), "weights": {"a": 1.0}}, "each arm named once"),
    ({"reason": "  "}, "needs a reason"),
    ({"arms": (Arm("new", "2.0"), Arm("old", "1.0")), "weights": {"new": 0.5, "old": 0.5}},
     "two arms named challenger and champion"),
])
def test_bad_starts_are_refused_and_write_nothing(stores: tuple[ModelRegistry, ExperimentStore],
                                                  changes: dict[str, object], message: str) -> None:
    with pytest.raises((RolloutError, RegistryError), match=message.replace("[", r"\[").replace(".", r"\.")):
        _start(stores, **changes)
    assert stores[1].listing() == []


def test_a_quarantined_version_is_refused(stores: tuple[ModelRegistry, ExperimentStore]) -> None:
    registry, experiments = stores
    path = Path(registry.get("m", "2.0").checkpoint_path)
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(ChecksumError):
        registry.verify("m", "2.0")  # marks it quarantined
    with pytest.raises(RolloutError, match="quarantined"):
        _start(stores)
    assert experiments.listing() == []


def test_one_experiment_per_model_at_a_time(stores: tuple[ModelRegistry, ExperimentStore]) -> None:
    first, _ = _start(stores)
    with pytest.raises(RolloutError, match=f"experiment {first.id} .* still runs on m"):  # type: ignore[attr-defined]
        _start(stores, kind=ExperimentKind.CANARY)
    stores[1].append(first.id, Action.STOP, ExperimentState.STOPPED, SPLIT, "enough")  # type: ignore[attr-defined]
    second, _ = _start(stores, kind=ExperimentKind.CANARY)
    assert stores[1].active("m")[0] == second  # type: ignore[index]


def test_events_append_until_the_experiment_ends(stores: tuple[ModelRegistry, ExperimentStore]) -> None:
    experiment, _ = _start(stores, kind=ExperimentKind.CANARY,
                           weights={"champion": 0.99, "challenger": 0.01})
    _, experiments = stores
    eid = experiment.id  # type: ignore[attr-defined]
    experiments.append(eid, Action.WEIGHTS, ExperimentState.RUNNING, {"champion": 0.95, "challenger": 0.05}, "step 2")
    experiments.append(eid, Action.DECIDE, ExperimentState.DECIDED, {"champion": 1.0, "challenger": 0.0},
                       "judge failed: error rate", {"score": 40})
    with pytest.raises(RolloutError, match="is decided since .* an ended experiment takes no more events"):
        experiments.append(eid, Action.WEIGHTS, ExperimentState.RUNNING, SPLIT, "too late")
    history = experiments.events(eid)
    assert [e.action for e in history] == [Action.START, Action.WEIGHTS, Action.DECIDE]
    assert history[-1].detail == {"score": 40} and experiments.active("m") is None


def test_the_tables_are_append_only(stores: tuple[ModelRegistry, ExperimentStore], tmp_path: Path) -> None:
    _start(stores)
    conn = sqlite3.connect(tmp_path / "store" / "cl_hpc.db")
    for sql in ("UPDATE experiments SET reason = 'x'", "DELETE FROM experiment_events",
                "UPDATE experiment_events SET state = 'stopped'", "DELETE FROM experiments"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute(sql)
    conn.close()
