"""The canary rolls back a bad challenger end to end, through the real server (issue 14).

Champion 1.0 learnt y = [a + b > 0]; challenger 2.0 learnt the same rows with the labels flipped, so
it answers almost every row wrong. A real ``python -m cl_hpc.serve`` answers users' requests while
the CLI starts a canary on 2.0 (first step 10 %); the clients post each answer's true label to
``/outcomes``, ``python -m cl_hpc.labels join`` matures them into a labelled zone, and
``python -m cl_hpc.experiment decide`` is run, with traffic and joins between calls, until it
decides. It must roll back on accuracy: 2.0 tagged rejected, the experiment decided with the reason
naming it, the champion alias unmoved, the running server answering 1.0 again, and no more users
exposed to 2.0 than the first step gives them.
"""

from __future__ import annotations

import json
import math
import sys
import threading
from pathlib import Path
from typing import Any, Iterator, Optional

import httpx
import numpy as np
import pytest

from cl_hpc.registry.store import ModelRegistry
from tests.conftest import REPO
from tests.serving import FEATURES, NAME, Server, run_module, wait_for

pytestmark = pytest.mark.e2e

FIRST_STEP = 10  # percent of users on the challenger at the canary's first step
USERS = 400  # the user population the clients draw from
WINDOW_S = 1  # seconds of traffic per judged sample (the judge needs 4 windows an arm at alpha 0.05)
MIN_SAMPLES = 20  # requests and labelled answers per arm before the step is judged
RATE_S = 0.01  # seconds between a client's requests (~100 per second: room on 2 shared cores)


def truth(row: dict[str, float]) -> int:
    """The concept every outcome follows."""
    return int(row["a"] + row["b"] > 0)


def register_trained(store: Path) -> None:
    """1.0 trained on the concept (promoted champion), 2.0 on the same rows with flipped labels: an honest
    bad challenger, fitted by the project's own trainer and registered like any version."""
    import pandas as pd

    from cl_hpc.config.ml import FitConf
    from cl_hpc.learn.checkpoint import save_workload
    from cl_hpc.learn.contract import Target
    from cl_hpc.learn.training import fit
    from cl_hpc.learn.workload import Workload, data_from, model_for

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(1000, len(FEATURES))), columns=list(FEATURES))
    frame["y"] = [truth(r) for r in frame.to_dict("records")]
    data_target = Target("cl_hpc.learn.tabular.TabularData", {"label_col": "y", "features": list(FEATURES)})
    with ModelRegistry.open(store) as registry:
        for name, labels in (("good", frame["y"]), ("flipped", 1 - frame["y"])):
            rows = frame.assign(y=labels)
            data = data_from(data_target)
            data.fit_state(rows)
            model, built = model_for(Target("cl_hpc.learn.tabular.TabularClassifier",
                                            {"hidden": 8, "layers": 1, "dropout": 0.0, "lr": 0.03}), data)
            workload = Workload(model, data, built, data_target)
            fit(workload, rows, FitConf(max_epochs=10, accelerator="cpu"), store.parent / f"fit-{name}")
            path = store.parent / f"{name}-ckpt" / "model.pt"
            sha = save_workload(path, workload, {"window_digest": name})
            registry.register(NAME, path, strategy="stateless", checkpoint_sha256=sha, workdir=REPO,
                              model_class=built.path, init_args=built.args, datamodule_class=data_target.path,
                              signature=workload.signature.to_dict())
        registry.promote(NAME, "1.0", reason="test champion")


class Users(threading.Thread):
    """Clients: each request from one of USERS users, its true label posted to /outcomes right after."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.halt = url, threading.Event()
        self.answers: list[tuple[str, str]] = []  # (user, version that answered)
        self.failures: list[str] = []

    def run(self) -> None:
        rng = np.random.default_rng(1)
        with httpx.Client(base_url=self.url, timeout=30) as client:
            outcomes: list[dict[str, Any]] = []
            while not self.halt.wait(RATE_S):
                user = f"user-{rng.integers(USERS)}"
                row = dict(zip(FEATURES, map(float, rng.normal(size=len(FEATURES)))))
                answer = client.post("/predict", json={"inputs": [row], "unit": user})
                if answer.status_code != 200:
                    self.failures.append(f"/predict {answer.status_code}: {answer.text}")
                    continue
                self.answers.append((user, answer.json()["version"]))
                outcomes.append({"request_id": answer.json()["request_id"], "label": truth(row)})
                if len(outcomes) >= 10:
                    posted = client.post("/outcomes", json={"outcomes": outcomes})
                    if posted.status_code != 200:
                        self.failures.append(f"/outcomes {posted.status_code}: {posted.text}")
                    outcomes = []

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=30)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Server]:
    store = tmp_path / "store"
    register_trained(store)
    server = Server.start(store)
    yield server
    server.close()


def _decided(store: Path, zone: Path, seen: list[str]) -> Optional[str]:
    """Join the matured labels, then one look of the controller; its line once it is not 'wait'."""
    run_module("cl_hpc.labels", "join", "--json", f"log_dir={store / 'predictions'}", f"out_dir={zone}",
         f"window={WINDOW_S}s", f"freq={WINDOW_S}s")
    line = run_module("cl_hpc.experiment", "decide", "1", "--labels", str(zone), "--window", str(WINDOW_S),
                f"store.root={store}").stdout.strip()
    seen.append(line)
    return None if line.startswith("experiment 1: wait:") else line


def _all_champion(url: str, users: list[str]) -> bool:
    with httpx.Client(base_url=url, timeout=30) as client:
        return all(client.post("/predict", json={"inputs": [dict.fromkeys(FEATURES, 0.5)], "unit": u})
                   .json()["version"] == "1.0" for u in users)


def test_the_canary_rolls_back_a_label_flipped_challenger(served: Server, tmp_path: Path) -> None:
    store, zone = served.store, tmp_path / "labelled"
    pid = served.proc.pid
    users = Users(served.url)
    users.start()  # traffic before the canary too: `start` checks the logged requests carry the unit
    try:
        wait_for(lambda: len(users.answers) >= 50, 30, "the first answers")
        started = run_module("cl_hpc.experiment", "start", "experiment=canary", "experiment.challenger=2.0",
                       f"experiment.min_samples={MIN_SAMPLES}", f"experiment.steps=[{FIRST_STEP},50,100]",
                       "--reason", "e2e: a label-flipped challenger", f"store.root={store}")
        assert f"challenger 2.0 {FIRST_STEP}%" in started.stdout and "unit user" in started.stdout, started.stdout
        wait_for(lambda: served.metric("cl_hpc_experiment_routing", experiment="1") == 1, 30,
                 "the server to route by experiment 1")
        begin = len(users.answers)
        looks: list[str] = []
        decision = wait_for(lambda: _decided(store, zone, looks), 60, "the controller to decide", interval_s=0.5)
        assert decision.startswith(f"experiment 1: rollback: canary at {FIRST_STEP}% failed the judge"), looks
        assert "accuracy: shift -0.9" in decision or "accuracy: shift -1" in decision, decision
        answered = users.answers[begin:]  # from the first routed request to the decision
        exposed = sorted({u for u, v in answered if v == "2.0"})
        wait_for(lambda: _all_champion(served.url, exposed), 30, "1.0 to answer the challenger's users again")
    finally:
        users.stop()
    assert served.proc.poll() is None and served.proc.pid == pid  # no restart
    assert not users.failures, users.failures[:5]

    with ModelRegistry.open(store) as registry:
        assert "rejected" in registry.get(NAME, "2.0").tags
        assert str(registry.resolve(NAME, "champion")) == "1.0"
        assert [str(e.to_version) for e in registry.events(NAME, "champion")] == ["1.0"]  # the alias never moved
        # the rollback, with its reason, in the alias log: the challenger alias went back to the champion
        moves = registry.events(NAME, "challenger")
        assert [(e.action, str(e.to_version)) for e in moves] == [("promote", "2.0"), ("rollback-to", "1.0")]
        assert moves[-1].reason.startswith("experiment 1 (canary): canary at 10% failed the judge")
    status = json.loads(run_module("cl_hpc.experiment", "status", "--json", f"store.root={store}").stdout)
    assert status["state"] == "decided" and status["weights"] == {"challenger": 0.0, "champion": 1.0}
    assert status["last_event"]["reason"].startswith("experiment 1 (canary): canary at 10% failed the judge")

    # Exposure: the share of users the challenger ever answered is the first step's, within 4 standard errors
    # (the user is the unit assigned, so its count, not the requests', sets the error of both shares).
    everyone = {u for u, _ in answered}
    step = FIRST_STEP / 100
    allowed = step + 4 * math.sqrt(step * (1 - step) / len(everyone))
    assert 0 < len(exposed) / len(everyone) <= allowed, (len(exposed), len(everyone))
    on_challenger = sum(v == "2.0" for _, v in answered) / len(answered)
    assert on_challenger <= allowed, (on_challenger, len(answered))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
