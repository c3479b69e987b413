"""The bandit's live reward loop end to end, through the real server, and across a server restart (issue 14).

A real ``python -m cl_hpc.serve`` answers requests while the CLI runs a Thompson-sampling bandit over
1.0 (champion) and 2.0 (challenger), assigned by request. The client posts a ``reward`` per answer to
``/outcomes``: 1 with probability 0.8 when 2.0 answered, 0.3 when 1.0 did. ``python -m cl_hpc.labels
join labels.value=reward`` matures them into a zone, and one ``python -m cl_hpc.experiment decide``
must write a WEIGHTS event that moves the split to 2.0, with the posterior of exactly the rewards sent
in its detail. The running server must then route by it, and so must a fresh server started on the same
store, from its first requests, with no look in between: the posterior lives in the store, not in a
server. ``report --json`` finally shows the controller's view over every reward: prob_best and regret.

Shares of traffic are judged by binomial tests at a generous level, never by a wall-clock threshold.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np
import pytest
from scipy import stats

from cl_hpc.rollout.experiments import ExperimentStore
from cl_hpc.rollout.report import labelled_rows
from tests.serving import Server, register_tabular, row, run_module, wait_for

pytestmark = pytest.mark.e2e

P_REWARD = {"2.0": 0.8, "1.0": 0.3}  # the chance of a reward 1 when this version answered
ARM = {"2.0": "challenger", "1.0": "champion"}  # the arms `start` makes for experiment.challenger=2.0
FIRST = 300  # requests before the first look, at the starting 50/50 split
BATCH = 100  # requests per batch judged against a split
LEVEL = 1e-4  # a binomial test's level: generous, so that a correct split does not fail by chance
WINDOW = "1s"  # the join's window and partition span: outcomes are posted at once, partitions mature fast


class Traffic:
    """One client: answers by version, and a reward posted for each; the tally of what was sent per arm."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(14)
        self.pulls = dict.fromkeys(ARM.values(), 0)
        self.reward_sum = dict.fromkeys(ARM.values(), 0)
        self.sent = 0

    def send(self, url: str, n: int) -> list[str]:
        """``n`` requests to /predict, their rewards to /outcomes; the versions that answered, in order."""
        versions, outcomes = [], []
        with httpx.Client(base_url=url, timeout=30) as client:
            for _ in range(n):
                answer = client.post("/predict", json={"inputs": [row(self.sent)]})
                assert answer.status_code == 200, answer.text
                body = answer.json()
                reward = int(self.rng.random() < P_REWARD[body["version"]])
                arm = ARM[body["version"]]
                self.pulls[arm] += 1
                self.reward_sum[arm] += reward
                self.sent += 1
                versions.append(body["version"])
                outcomes.append({"request_id": body["request_id"], "reward": reward})
            for start in range(0, len(outcomes), 50):
                posted = client.post("/outcomes", json={"outcomes": outcomes[start:start + 50]})
                assert posted.status_code == 200, posted.text
        return versions


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    """The running servers, the current one last; each is closed (drained, exit 0, no traceback) at the end."""
    store = tmp_path / "store"
    register_tabular(store, seeds=(0, 1))  # 1.0 champion, 2.0
    running = [Server.start(store)]
    yield running
    for server in running:
        if server.proc.poll() is None:
            server.close()


def _joined(store: Path, zone: Path, expected: int) -> bool:
    """One label join; whether the zone now holds a labelled row for every request the experiment answered."""
    run_module("cl_hpc.labels", "join", "--json", f"log_dir={store / 'predictions'}", f"out_dir={zone}",
               f"window={WINDOW}", f"freq={WINDOW}", "value=reward")
    with ExperimentStore.open(store) as experiments:
        experiment = experiments.get(1)
    return zone.is_dir() and len(labelled_rows(experiment, zone, "y", "label")) == expected


def _status(store: Path) -> dict[str, Any]:
    lines = run_module("cl_hpc.experiment", "status", "--json", f"store.root={store}").stdout.splitlines()
    assert len(lines) == 1, lines
    return dict(json.loads(lines[0]))


def _on_challenger(versions: list[str]) -> int:
    return sum(v == "2.0" for v in versions)


def _routes_by(versions: list[str], share: float) -> bool:
    """Whether this many answers from 2.0 is consistent with a challenger ``share`` (two-sided binomial test)."""
    return bool(stats.binomtest(_on_challenger(versions), len(versions), share).pvalue >= LEVEL)


def test_the_bandit_moves_traffic_to_the_better_arm_and_keeps_it_across_a_restart(servers: list[Server],
                                                                                   tmp_path: Path) -> None:
    server, zone, traffic = servers[0], tmp_path / "labelled", Traffic()
    store = server.store
    started = run_module("cl_hpc.experiment", "start", "experiment=bandit", "experiment.challenger=2.0",
                   "experiment.min_samples=1000000", "--reason", "e2e: the bandit's reward loop", f"store.root={store}")
    assert "bandit on demo (challenger 2.0 50%, champion 1.0 50%), unit request" in started.stdout, started.stdout
    wait_for(lambda: server.metric("cl_hpc_experiment_routing", experiment="1") == 1, 30,
             "the server to route by experiment 1")

    first = traffic.send(server.url, FIRST)
    assert _routes_by(first, 0.5), _on_challenger(first)
    wait_for(lambda: _joined(store, zone, FIRST), 60, f"the join to label all {FIRST} answers", interval_s=0.5)

    line = run_module("cl_hpc.experiment", "decide", "1", "--labels", str(zone), f"store.root={store}").stdout.strip()
    assert line.startswith(f"experiment 1: step: thompson after {FIRST} rewards"), line
    status = _status(store)
    event = status["last_event"]
    assert event["action"] == "weights" and status["state"] == "running", event
    share = float(status["weights"]["challenger"])
    assert share > 0.5 and share + status["weights"]["champion"] == pytest.approx(1.0), status["weights"]
    sent = {arm: {"pulls": traffic.pulls[arm], "reward_sum": float(traffic.reward_sum[arm])} for arm in ARM.values()}
    assert event["detail"]["posterior"]["arms"] == sent, (event["detail"], sent)
    assert event["detail"]["rewards"] == FIRST
    assert event["detail"]["prob_best"]["challenger"] > 0.5, event["detail"]

    # The running server follows the new weights: a fresh batch's share on 2.0 fits them, and not 50/50.
    moved = wait_for(lambda: (got := traffic.send(server.url, BATCH)) and _routes_by(got, share) and got, 30,
                     f"the server to route {share:.0%} to 2.0")
    assert not _routes_by(moved, 0.5), _on_challenger(moved)

    # A restart with no look in between: the new server routes by the stored posterior's split from the start.
    server.close()
    restarted = Server.start(store)
    servers.append(restarted)
    after = traffic.send(restarted.url, BATCH)
    assert _routes_by(after, share) and not _routes_by(after, 0.5), (_on_challenger(after), share)
    assert _status(store)["last_event"]["id"] == event["id"]  # nothing was written meanwhile

    # Every reward sent, joined: the controller's view in the report is the posterior of all of them.
    wait_for(lambda: _joined(store, zone, traffic.sent), 60, f"the join to label all {traffic.sent} answers",
             interval_s=0.5)
    shown = json.loads(run_module("cl_hpc.experiment", "report", "1", "--json", "--labels", str(zone),
                            f"store.root={store}").stdout)
    controller = shown["controller"]
    assert controller["decision"] == "step", controller
    totals = {arm: {"rewards": traffic.pulls[arm], "reward_sum": float(traffic.reward_sum[arm])}
              for arm in ARM.values()}
    assert controller["samples"] == totals, (controller["samples"], totals)
    assert controller["detail"]["prob_best"]["challenger"] > 0.99, controller["detail"]
    means = {arm: traffic.reward_sum[arm] / traffic.pulls[arm] for arm in ARM.values()}
    gap = means["challenger"] - means["champion"]
    assert gap > 0 and controller["detail"]["regret"] == pytest.approx(traffic.pulls["champion"] * gap), controller


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
