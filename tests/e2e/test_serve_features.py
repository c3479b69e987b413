"""Train on catalog features, serve by entity key, and check train/serve consistency, for real.

pipeline=features_train on the bundled users stream (dated the last hours, so the view's 48 h TTL holds
at serving time) materializes the view, builds the training set point in time, trains, gates and
registers the version with its feature binding. ``python -m cl_hpc.serve`` then takes ``{"user_id": ...}``
rows, fetches the features from the online store, and logs them; ``python -m cl_hpc.features check``
finds every logged value consistent, and after a skew is injected into the online store (one user's
``amount_mean_24h`` changed at the same event, as a bug in an online write path would) it reports
exactly that user's rows of that feature, and exits 1.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import httpx
import pandas as pd
import pytest
import yaml

from cl_hpc.data.predictions import Stream, read_stream
from cl_hpc.features.definitions import BUNDLED, load_catalog
from cl_hpc.features.materialize import online_path
from cl_hpc.features.online import OnlineStore, table_name
from cl_hpc.registry.store import ModelRegistry
from tests.conftest import REPO, Launcher, _env
from tests.serving import Server, wait_for

pytestmark = pytest.mark.e2e

MODEL = "features_train"  # the registry name: the pipeline's
SKEWED = "amount_mean_24h"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A features_train run on 6 hourly partitions of users that ended an hour ago, and a server of it."""
    tmp = tmp_path_factory.mktemp("serve-features")
    zone, catalog = tmp / "landing" / "users", tmp / "catalog"
    catalog.mkdir()
    definition = yaml.safe_load((BUNDLED / "user_activity.yaml").read_text())
    definition["source"]["landing_dir"] = str(zone)
    (catalog / "user_activity.yaml").write_text(yaml.safe_dump(definition))
    start = (pd.Timestamp.now("UTC").floor("h") - pd.Timedelta(hours=7)).tz_localize(None)
    launcher = Launcher(tmp)
    done = launcher("pipeline=features_train", "data=users", f"data.landing_dir={zone}",
                    f"data.start={start.isoformat()}", "data.n_partitions=6", "data.rows_per_partition=1000",
                    "data.generator_params.n_users=300", "data.train_window=3", "data.eval_window=2",
                    "fit.max_epochs=3", f"pipeline.tasks.materialize.params.catalog={catalog}", timeout=600)
    assert done.proc.returncode == 0, done.output
    store = launcher.store_root
    server = Server.start(store)
    yield {"store": store, "catalog": catalog, "features": store / "features", "server": server, "tmp": tmp}
    server.close()


def present_users(trained: dict, count: int) -> list[int]:
    """Users the online store holds values for (every feature, defaults or not)."""
    view = load_catalog(trained["catalog"]).view("user_activity")
    store = OnlineStore(online_path(trained["features"]))
    found = store.read(view, list(range(300)))
    store.close()
    names = view.feature_names
    return [u for u, row in enumerate(found) if row is not None and all(row[f] is not None for f in names)][:count]


def logged_rows(trained: dict, expected: int) -> pd.DataFrame:
    log_dir = trained["store"] / "predictions"
    wait_for(lambda: len(read_stream(log_dir, Stream.PREDICTIONS).frame) >= expected, 30,
             f"{expected} rows in the prediction log")
    return read_stream(log_dir, Stream.PREDICTIONS).frame.sort_values(["ts", "row"], kind="stable")


def check(trained: dict, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cl_hpc.features", "check", "--log-dir",
                           str(trained["store"] / "predictions"), "--store", str(trained["features"]), "--catalog",
                           str(trained["catalog"]), *extra], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=120)


def test_the_version_records_its_features(trained: dict) -> None:
    with ModelRegistry.open(trained["store"]) as registry:
        record = registry.get(MODEL, "1.0")
    binding = record.config["features"]
    view = load_catalog(trained["catalog"]).view("user_activity")
    assert binding["views"] == {"user_activity": view.ident}
    assert binding["entities"] == [["user_id", "int64"]]
    assert binding["features"] == [s["name"] for s in record.signature["inputs"]]
    assert Path(binding["store"]) == trained["features"].resolve()


def test_serve_by_entity_key_then_catch_an_injected_skew(trained: dict) -> None:
    server, users = trained["server"], present_users(trained, 6)
    assert len(users) == 6
    with httpx.Client(base_url=server.url, timeout=30) as http:
        meta = http.get(f"/v2/models/{MODEL}").json()
        assert [i["name"] for i in meta["inputs"]] == ["user_id"]  # a request carries the key, not the features
        answer = http.post("/predict", json={"inputs": [{"user_id": u} for u in users]})
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["outputs"]) == 6
        v2 = http.post(f"/v2/models/{MODEL}/infer",
                       json={"inputs": [{"name": "user_id", "datatype": "INT64", "shape": [2], "data": users[:2]}]})
        assert v2.status_code == 200, v2.text

        unknown = http.post("/predict", json={"inputs": [{"user_id": users[0]}, {"user_id": 10**6}]})
        assert unknown.status_code == 404, unknown.text
        assert "inputs[1] (user_id=1000000)" in unknown.json()["error"] and "ttl" in unknown.json()["error"].lower()
        raw = http.post("/predict", json={"inputs": [{"amount_mean_24h": 3.0}]})
        assert raw.status_code == 422 and "user_id" in raw.json()["error"], raw.text
        ranked = http.post("/rank", json={"items": [{"user_id": users[0], "id": 1}]})
        assert ranked.status_code == 422 and "/predict" in ranked.json()["error"], ranked.text

        log = logged_rows(trained, 8)
        assert log["input.user_id"].tolist() == [*users, *users[:2]]
        assert log["input.user_activity.event_ts"].notna().all()
        clean = check(trained)
        assert clean.returncode == 0, clean.stdout + clean.stderr
        assert "consistent" in clean.stdout

        victim = users[0]
        view = load_catalog(trained["catalog"]).view("user_activity")
        with sqlite3.connect(online_path(trained["features"])) as db:  # a write path that computed it wrong
            db.execute(f"UPDATE {table_name(view)} SET {SKEWED} = {SKEWED} * 1.5 WHERE user_id = ?", (victim,))
        again = http.post("/predict", json={"inputs": [{"user_id": u} for u in [victim, *users[1:3], victim]]})
        assert again.status_code == 200, again.text
    logged_rows(trained, 12)
    skewed = check(trained, "--json")
    assert skewed.returncode == 1, skewed.stdout + skewed.stderr
    report = {f["feature"]: f for f in json.loads(skewed.stdout)["features"]}
    assert report[SKEWED]["counts"]["skew"] == 2 and report[SKEWED]["counts"]["match"] == 10
    assert {e["entity"][0] for e in report[SKEWED]["examples"]} == {victim}
    assert all(f["failed"] == 0 for name, f in report.items() if name != SKEWED)
    table = check(trained)
    assert table.returncode == 1 and SKEWED in table.stdout and "2 logged values are skewed" in table.stdout


def test_a_changed_view_is_not_served(trained: dict) -> None:
    """A catalog whose view is no longer the one the version trained on: not ready, with the reason."""
    changed = trained["tmp"] / "catalog-v2"
    changed.mkdir()
    definition = yaml.safe_load((trained["catalog"] / "user_activity.yaml").read_text())
    definition["version"], definition["ttl"] = 2, "12h"
    (changed / "user_activity.yaml").write_text(yaml.safe_dump(definition))
    server = Server.start(trained["store"], f"serve.feature_catalog={changed}", "serve.discovery=false", ready=False)
    try:
        body = server.wait_settled()
        assert body["state"] == "not_ready" and "trained on other feature code" in body["reason"], body
        assert "v2-" in body["reason"]
    finally:
        server.close()
