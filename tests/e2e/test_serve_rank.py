"""POST /rank on a real server (issue 14, interleaving): without an experiment the champion's ranking;
under an interleave experiment both versions' rankings merged by team draft, reproducible from the
request id; clicks posted to /outcomes, and after the server flushed its log, the interleaving decision
credits the clicked teams. Bad bodies are 4xx with a clear message and the server goes on."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import pytest

from cl_hpc.data.predictions import Stream, read_stream
from cl_hpc.registry import ModelRegistry
from cl_hpc.rollout.assign import UnitKind
from cl_hpc.rollout.experiments import ExperimentStore
from cl_hpc.rollout.interleave import Team
from cl_hpc.rollout.interleaving import interleave_step
from cl_hpc.rollout.records import Arm, ExperimentKind
from cl_hpc.rollout.steps import CHALLENGER, CHAMPION, Decision
from cl_hpc.serve import ranking
from tests.serving import FEATURES, NAME, Server, register_tabular, row, wait_for

pytestmark = pytest.mark.e2e

VERSIONS = {CHALLENGER: "2.0", CHAMPION: "1.0"}
ARM_OF = {version: arm for arm, version in VERSIONS.items()}
MAX_ITEMS = 16


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Server]:
    store = tmp_path / "store"
    register_tabular(store, seeds=(0, 1))
    server = Server.start(store, f"serve.max_batch_rows={MAX_ITEMS}")
    yield server
    server.close()


def candidates(query: int, n: int = 8) -> list[dict[str, Any]]:
    return [{**row(1000 * query + j), "id": f"q{query}-item{j}"} for j in range(n)]


def ranked_ids(client: httpx.Client, version: str, items: list[dict[str, Any]]) -> list[str]:
    """A version's ranking of the items, from its class probabilities through the v2 protocol (highest
    probability of the last class first, ties in request order)."""
    tensors = [{"name": f, "shape": [len(items)], "datatype": "FP64", "data": [it[f] for it in items]}
               for f in FEATURES]
    answer = client.post(f"/v2/models/{NAME}/versions/{version}/infer", json={"inputs": tensors})
    assert answer.status_code == 200, answer.text
    probs = next(o for o in answer.json()["outputs"] if o["name"] == "probs")
    last = np.asarray(probs["data"], dtype=np.float64).reshape(probs["shape"])[:, -1]
    return [items[i]["id"] for i in np.argsort(-last, kind="stable")]


def rank(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    answer = client.post("/rank", json=body)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_one_version_ranks_outside_an_interleave(served: Server) -> None:
    """No experiment: the champion's ranking; an A/B by user: the user's arm's ranking, logged under it."""
    with httpx.Client(base_url=served.url, timeout=30) as client:
        items = candidates(0)
        expected = {version: ranked_ids(client, version, items) for version in VERSIONS.values()}
        assert expected["1.0"] != expected["2.0"]  # the two versions disagree on this query
        answer = rank(client, {"items": items})
        assert answer["items"] == expected["1.0"] and answer["versions"] == ["1.0"] * 8 and answer["teams"] is None
        assert rank(client, {"items": items, "k": 3, "unit": "u1"})["items"] == expected["1.0"][:3]
        experiment = _start(served, ExperimentKind.AB, UnitKind.USER)
        arms = set()
        for user in range(12):
            answer = rank(client, {"items": items, "unit": f"user-{user}", "k": 4})
            version, = set(answer["versions"])
            assert answer["items"] == expected[version][:4] and set(answer["teams"]) == {ARM_OF[version]}
            arms.add(ARM_OF[version])
    served.stop()
    logged = read_stream(served.store / "predictions", Stream.PREDICTIONS).frame
    routed = logged[logged["experiment"] == experiment]
    assert len(routed) == 12 * 4 and set(routed["row"]) == set(range(4)) and set(routed["arm"]) == arms
    assert (routed["arm"].map(VERSIONS) == routed["version"]).all()


BAD = [  # (body, status, what the error says); one server answers them all, and a good body after each
    ({}, 422, "items is missing"),
    ({"items": []}, 422, f"items has 0 candidates; a ranking takes 1 to {MAX_ITEMS}"),
    ({"items": candidates(1, MAX_ITEMS + 1)}, 422, f"items has {MAX_ITEMS + 1} candidates"),
    ({"items": candidates(1, 2) + [{**row(5), "id": "q1-item0"}]}, 422, "items[2].id 'q1-item0' repeats items[0].id"),
    ({"items": [{"a": 1.0, "b": 2.0, "id": "x"}]}, 422, "items[0]: missing input 'c'"),
    ({"items": [row(1)]}, 422, "items[0].id is None"),
    ({"items": candidates(1, 2), "k": 0}, 422, "k is 0"),
    ({"items": candidates(1, 2), "top": 1}, 422, "unknown field 'top'"),
    ({"items": [{**row(1), "id": "x", "a": "high"}]}, 422, "items[0].a is 'high'"),
    ({"items": "a,b"}, 422, "items is a str"),
]


def test_bad_bodies_are_refused_and_the_server_goes_on(served: Server) -> None:
    with httpx.Client(base_url=served.url, timeout=30) as client:
        for body, status, message in BAD:
            answer = client.post("/rank", json=body)
            assert answer.status_code == status and message in answer.json()["error"], (body, answer.text)
            assert rank(client, {"items": candidates(2)})["items"]
        not_json = client.post("/rank", content=b"{items", headers={"content-type": "application/json"})
        assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["error"]
    assert served.metric("cl_hpc_request_errors_total", endpoint="/rank") == len(BAD) + 1


def _start(server: Server, kind: ExperimentKind, unit: UnitKind, **config: Any) -> int:
    with ModelRegistry.open(server.store) as registry, ExperimentStore.open(server.store) as experiments:
        experiment, _ = experiments.start(registry, NAME, kind, (Arm(CHALLENGER, "2.0"), Arm(CHAMPION, "1.0")),
                                          {CHALLENGER: 0.5, CHAMPION: 0.5}, unit=unit, reason="e2e", config=config)
    wait_for(lambda: server.metric("cl_hpc_experiment_routing", experiment=str(experiment.id)) == 1, 30,
             f"the server to route by the {kind.value} experiment")
    return experiment.id


def test_interleaving_merges_both_rankings_and_clicks_credit_the_teams(served: Server) -> None:
    experiment = _start(served, ExperimentKind.INTERLEAVE, UnitKind.REQUEST, min_samples=10, alpha=0.05,
                        srm_alpha=1e-6)
    clicks: list[dict[str, Any]] = []
    differ = 0
    with httpx.Client(base_url=served.url, timeout=30) as client:
        for query in range(24):
            items = candidates(query)
            rankings = {arm: ranked_ids(client, version, items) for arm, version in VERSIONS.items()}
            differ += rankings[CHALLENGER] != rankings[CHAMPION]
            answer = rank(client, {"items": items, "k": 6})
            _check_team_draft(answer, rankings)
            # The click log: the challenger's items win 20 impressions, the champion's 2, and 2 get no click.
            team = CHALLENGER if query < 20 else CHAMPION if query < 22 else None
            mine = [{"request_id": answer["request_id"], "row": p, "reward": 1.0} if query % 2 else
                    {"request_id": answer["request_id"], "row": p, "label": True}
                    for p, arm in enumerate(answer["teams"]) if arm == team]
            if mine:
                posted = client.post("/outcomes", json={"outcomes": mine})
                assert posted.status_code == 200 and posted.json() == {"accepted": len(mine)}, posted.text
            clicks += mine
    assert differ >= 20  # the versions rank most queries differently: the draft has something to merge
    served.stop()  # the log's last flush
    with ExperimentStore.open(served.store) as experiments:
        step = interleave_step(experiments.get(experiment), experiments.events(experiment),
                               served.store / "predictions")
    assert step.samples["impressions"] == 24 and step.samples["clicks"] == len(clicks)
    assert step.samples["wins"] == {CHALLENGER: 20, CHAMPION: 2} and step.samples["ties"] == 2
    assert sum(step.samples["first_picks"].values()) == 24 * 3
    assert step.decision is Decision.PROMOTE, step.reason


def _check_team_draft(answer: dict[str, Any], rankings: dict[str, list[str]]) -> None:
    """Each position holds its team's highest-ranked item not shown before; the coin of the request id
    replays the same list; each version is named with the positions its team placed."""
    shown, teams = answer["items"], answer["teams"]
    assert len(shown) == len(set(shown)) == 6 and set(teams) == {CHALLENGER, CHAMPION}
    for position, (item, team) in enumerate(zip(shown, teams)):
        assert item == next(x for x in rankings[team] if x not in shown[:position])
        if position % 2:
            assert teams[position - 1 : position + 1].count(team) == 1  # a round: one pick per team
    assert answer["versions"] == [VERSIONS[t] for t in teams]
    replay = ranking.interleaved(answer["request_id"], rankings[CHAMPION], rankings[CHALLENGER], 6)
    assert list(replay.items) == shown and [ranking.TEAM_ARMS[t] for t in replay.teams] == teams
    assert ranking.TEAM_ARMS[Team.B] == CHALLENGER
