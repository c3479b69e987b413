"""A (re)started server routes by the running experiment from its first answer: the model slot's first
load sets the experiment's routing before it makes the alias's version current (issue 14). Before, the
watcher made the champion current and ready, and only then loaded the arms: the first requests of a
restarted server all went to the champion, whatever the stored weights said."""

from __future__ import annotations

from pathlib import Path

from cl_hpc.registry import ModelRegistry
from cl_hpc.rollout.assign import UnitKind
from cl_hpc.rollout.experiments import ExperimentStore
from cl_hpc.rollout.records import Arm, ExperimentKind
from cl_hpc.serve.models import ModelSlot, Readiness
from tests.serving import NAME, register_tabular

ARMS = (Arm("challenger", "2.0"), Arm("champion", "1.0"))


def _first_poll(store: Path) -> ModelSlot:
    """A slot after the watcher's first poll of the alias alone (no separate look at the experiment)."""
    slot = ModelSlot(store, NAME, "champion")
    with ModelRegistry.open(store) as registry:
        slot.check(registry)
    return slot


def test_the_first_load_routes_by_the_running_experiment_before_it_answers(tmp_path: Path) -> None:
    store = tmp_path / "store"
    register_tabular(store, seeds=(0, 1))
    with ModelRegistry.open(store) as registry, ExperimentStore.open(store) as experiments:
        experiments.start(registry, NAME, ExperimentKind.BANDIT, ARMS, {"challenger": 1.0, "champion": 0.0},
                          unit=UnitKind.REQUEST, reason="unit test", config={})
    slot = _first_poll(store)
    assert slot.health.state is Readiness.READY and slot.current is not None and slot.current.version == "1.0"
    assert slot.routing is not None and slot.routing.experiment_id == 1
    assert {slot.routing.route(f"r{i}", None, 0.0)[1].version for i in range(20)} == {"2.0"}
    assert slot.routing.arms["champion"] is slot.current  # the alias's version is loaded once, not twice


def test_without_an_experiment_the_first_load_serves_the_alias(tmp_path: Path) -> None:
    store = tmp_path / "store"
    register_tabular(store, seeds=(0, 1))
    slot = _first_poll(store)
    assert slot.health.state is Readiness.READY and slot.current is not None and slot.current.version == "1.0"
    assert slot.routing is None and slot.routing_error == ""
