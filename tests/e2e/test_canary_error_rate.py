"""A canary rolls back a challenger whose own code fails, judged on the error rate, through the real
server (issue 14: the judge per metric covers error rate, latency p99 and accuracy).

1.0 is the tiny tabular MLP; 2.0 is the same model with a bug (tests/flaky_model.py): it raises on
any row with an input out of its range. Clients send such rows in one request of three. The server
answers the challenger's failures with a 500 and logs them as ``failed`` (with the experiment and
arm); ``decide`` judges the share of failed requests per window and arm, and rolls back: no labels
are needed for it. Every failure the clients saw is in the log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from cl_hpc.data.predictions import Stream, read_stream
from cl_hpc.registry.store import ModelRegistry
from tests.serving import NAME, Server, register_tabular, row, run_module, wait_for

pytestmark = pytest.mark.e2e

WINDOW_S = 1


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Server]:
    store = tmp_path / "store"
    register_tabular(store, seeds=(0, 1), classes={1: "tests.flaky_model.FlakyClassifier"})
    server = Server.start(store)
    yield server
    server.close()


def _traffic(client: httpx.Client, n: int, start: int) -> dict[str, int]:
    seen = {"ok": 0, "failed": 0}
    for i in range(start, start + n):
        inputs = row(i)
        if i % 3 == 0:
            inputs = {**inputs, "a": 1e6}  # out of 2.0's range; 1.0 answers it
        answer = client.post("/predict", json={"inputs": [inputs]})
        assert answer.status_code in (200, 500), answer.text
        seen["ok" if answer.status_code == 200 else "failed"] += 1
        if answer.status_code == 500:
            assert "failed on this request: RuntimeError: flaky" in answer.json()["error"], answer.text
    return seen


def test_a_failing_challenger_is_rolled_back_on_its_error_rate(served: Server) -> None:
    store = served.store
    run_module("cl_hpc.experiment", "start", "experiment=canary", "experiment.challenger=2.0",
               "experiment.unit=request", "experiment.steps=[50,100]", "experiment.min_samples=20",
               "--reason", "does 2.0 hold up?", f"store.root={store}")
    wait_for(lambda: served.metric("cl_hpc_experiment_routing", experiment="1") == 1, 30, "routing by experiment 1")
    totals = {"ok": 0, "failed": 0}
    with httpx.Client(base_url=served.url, timeout=30) as client:

        def decided() -> str | None:
            seen = _traffic(client, 60, sum(totals.values()))
            totals.update({k: totals[k] + v for k, v in seen.items()})
            line = run_module("cl_hpc.experiment", "decide", "1", "--window", str(WINDOW_S),
                              f"store.root={store}").stdout
            return line if ": wait:" not in line else None

        line = wait_for(decided, 120, "the canary to decide", interval_s=0.2)
        assert "experiment 1: rollback: canary at 50% failed the judge" in line and "error_rate" in line, line
        assert totals["failed"] > 0
        # the server follows the rollback: every request to 1.0 again (rows 2.0 answers too, so that a
        # request it gets before the server's next poll is no failure the test did not count)
        wait_for(lambda: all(client.post("/predict", json={"inputs": [row(i)]}).json().get("version") == "1.0"
                             for i in range(10)), 30, "the champion alone again")
        assert client.post("/predict", json={"inputs": [{**row(0), "a": 1e6}]}).json()["version"] == "1.0"
    status = json.loads(run_module("cl_hpc.experiment", "status", "--json", f"store.root={store}").stdout)
    assert status["state"] == "decided" and status["weights"] == {"challenger": 0.0, "champion": 1.0}
    with ModelRegistry.open(store) as registry:
        assert "rejected" in registry.get(NAME, "2.0").tags and str(registry.resolve(NAME, "champion")) == "1.0"
    served.stop()  # flush the log: every failure the clients saw was logged, on the challenger's arm
    logged = read_stream(store / "predictions", Stream.PREDICTIONS).frame
    failed = logged[logged["role"] == "failed"]
    assert len(failed) == totals["failed"] and set(failed["version"]) == {"2.0"}
    assert set(failed["arm"]) == {"challenger"} and set(failed["experiment"]) == {1}
