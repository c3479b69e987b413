"""The server routes by the store's running experiment (issue 14), on a real uvicorn with a real client:
an A/B split by request and by user (sticky), a canary's rising weight that only moves users to the
challenger, a shadow whose copies are logged and never change a live answer, and a stop that gives
every request back to the champion. No restart: the watcher follows the experiment's events."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from scipy import stats

from cl_hpc.data.predictions import Stream, read_stream
from cl_hpc.registry import ModelRegistry
from cl_hpc.rollout.assign import UnitKind
from cl_hpc.rollout.experiments import ExperimentStore
from cl_hpc.rollout.records import Action, Arm, ExperimentKind, ExperimentState
from tests.serving import NAME, Server, register_tabular, row, wait_for

pytestmark = pytest.mark.e2e

ARMS = (Arm("challenger", "2.0"), Arm("champion", "1.0"))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Server]:
    store = tmp_path / "store"
    register_tabular(store, seeds=(0, 1))
    server = Server.start(store)
    yield server
    server.close()


def _start(server: Server, kind: ExperimentKind, unit: UnitKind, challenger: float, **config: Any) -> int:
    with ModelRegistry.open(server.store) as registry, ExperimentStore.open(server.store) as experiments:
        experiment, _ = experiments.start(registry, NAME, kind, ARMS,
                                          {"challenger": challenger, "champion": 1 - challenger}, unit=unit,
                                          reason="e2e", config=config)
    _wait_routing(server, experiment.id)
    return experiment.id


def _append(server: Server, experiment_id: int, action: Action, state: ExperimentState, challenger: float) -> None:
    with ExperimentStore.open(server.store) as experiments:
        experiments.append(experiment_id, action, state, {"challenger": challenger, "champion": 1 - challenger}, "e2e")


def _wait_routing(server: Server, experiment_id: int) -> None:
    """Until the server's watcher routes by the experiment (its /metrics name it)."""
    wait_for(lambda: server.metric("cl_hpc_experiment_routing", experiment=str(experiment_id)) == 1, 30,
             f"the server to route by experiment {experiment_id}")


def _versions(client: httpx.Client, n: int, unit: str | None = None, units: bool = False) -> list[tuple[str, str]]:
    out = []
    for i in range(n):
        body: dict[str, Any] = {"inputs": [row(i)]}
        if unit is not None or units:
            body["unit"] = unit if unit is not None else f"user-{i}"
        answer = client.post("/predict", json=body)
        assert answer.status_code == 200, answer.text
        out.append((answer.json()["request_id"], answer.json()["version"]))
    return out


def test_ab_by_request_splits_and_stop_gives_the_champion_back(served: Server) -> None:
    with httpx.Client(base_url=served.url, timeout=30) as client:
        experiment = _start(served, ExperimentKind.AB, UnitKind.REQUEST, 0.5)
        seen = wait_for(lambda: (v := _versions(client, 400)) and {x for _, x in v} == {"1.0", "2.0"} and v, 60,
                        "both arms to answer")
        on_challenger = sum(version == "2.0" for _, version in seen)
        assert stats.binomtest(on_challenger, len(seen), 0.5).pvalue > 1e-6, on_challenger
        _append(served, experiment, Action.STOP, ExperimentState.STOPPED, 0.0)
        wait_for(lambda: {x for _, x in _versions(client, 20)} == {"1.0"}, 30, "the champion alone again")
    served.stop()  # flush the log, then compare every answer with its logged arm
    logged = read_stream(served.store / "predictions", Stream.PREDICTIONS).frame
    routed = logged[logged["experiment"] == experiment]
    assert set(routed["role"]) == {"live"} and len(routed) >= 400
    assert (routed["arm"].map({"challenger": "2.0", "champion": "1.0"}) == routed["version"]).all()


def test_by_user_each_user_stays_on_one_arm_and_a_canary_only_moves_users_to_the_challenger(served: Server) -> None:
    with httpx.Client(base_url=served.url, timeout=30) as client:
        experiment = _start(served, ExperimentKind.CANARY, UnitKind.USER, 0.1)
        refused = client.post("/predict", json={"inputs": [row(0)]})
        assert refused.status_code == 422 and refused.json()["field"] == "unit"
        assert "assigns by user: send the request's `unit`" in refused.json()["error"]
        empty = client.post("/predict", json={"inputs": [row(0)], "unit": ""})
        assert empty.status_code == 422 and empty.json()["field"] == "unit", empty.text
        users = [f"user-{i}" for i in range(150)]
        before = wait_for(lambda: (m := {u: _versions(client, 1, u)[0][1] for u in users})
                          and "2.0" in m.values() and m, 60, "the 10% step to reach some users")
        again = {u: _versions(client, 1, u)[0][1] for u in users}
        assert again == before  # sticky
        _append(served, experiment, Action.WEIGHTS, ExperimentState.RUNNING, 0.5)
        after = wait_for(lambda: (m := {u: _versions(client, 1, u)[0][1] for u in users})
                         and sum(v == "2.0" for v in m.values()) > sum(v == "2.0" for v in before.values()) and m,
                         60, "the 50% step")
        assert all(after[u] == "2.0" for u in users if before[u] == "2.0")  # never back to the champion


def test_a_shadow_is_logged_and_never_changes_a_live_answer(served: Server) -> None:
    rows = [row(i) for i in range(40)]
    with httpx.Client(base_url=served.url, timeout=30) as client:
        plain = [client.post("/predict", json={"inputs": [r]}).json() for r in rows]
        experiment = _start(served, ExperimentKind.SHADOW, UnitKind.REQUEST, 0.0, shadow_share=1.0)
        wait_for(lambda: client.post("/predict", json={"inputs": [rows[0]]}).status_code == 200
                 and served.metric("cl_hpc_shadow_answered_total") > 0, 30, "a first shadow answer")
        shadowed = [client.post("/predict", json={"inputs": [r]}).json() for r in rows]
    assert [a["outputs"] for a in shadowed] == [a["outputs"] for a in plain]
    assert {a["version"] for a in shadowed} == {"1.0"}
    served.stop()
    logged = read_stream(served.store / "predictions", Stream.PREDICTIONS).frame
    copies = logged[(logged["experiment"] == experiment) & (logged["role"] == "shadow")]
    ids = {a["request_id"] for a in shadowed}
    assert ids <= set(copies["request_id"]) and set(copies["version"]) == {"2.0"}
    assert set(copies["arm"]) == {"challenger"}
