"""The model server for real: ``python -m cl_hpc.serve`` in a subprocess on a loopback port, a real
registry of tiny real checkpoints, a real httpx client. Its answers and metadata, every bad input
refused with its 4xx while the server goes on, readiness that names why not, hot swaps under
concurrent traffic, signals that drain and flush, the GPT workload, ``status``, and config errors."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import httpx
import pytest

from cl_hpc.data.predictions import Stream, read_stream
from cl_hpc.registry.store import ModelRegistry
from tests.conftest import REPO, _env
from tests.serving import FEATURES, NAME, Server, register_gpt, register_tabular, row, serve_command, wait_for

pytestmark = pytest.mark.e2e

MAX_ROWS = 4  # serve.max_batch_rows of the shared server: a batch of 5 is 413


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the tests that only ask it: 1.0 (champion) and 2.0 of the tabular model."""
    store = tmp_path_factory.mktemp("served") / "store"
    register_tabular(store, seeds=(0, 1))
    server = Server.start(store, f"serve.max_batch_rows={MAX_ROWS}", "serve.max_body_mb=0.5")
    yield server
    server.close()


@pytest.fixture
def client(served: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=30) as http:
        yield http


def good_request(client: httpx.Client) -> dict[str, Any]:
    response = client.post("/predict", json={"inputs": [row(1), row(2)]})
    assert response.status_code == 200, response.text
    return response.json()


def v2_tensors(rows: list[dict[str, float]]) -> list[dict[str, Any]]:
    return [{"name": name, "datatype": "FP64", "shape": [len(rows)], "data": [r[name] for r in rows]}
            for name in FEATURES]


# ---- answers ---------------------------------------------------------------------------------------


def test_predict_answers_outputs_version_and_request_id(client: httpx.Client) -> None:
    body = good_request(client)
    assert (body["model"], body["version"]) == (NAME, "1.0")
    assert len(body["request_id"]) == 32 and int(body["request_id"], 16) >= 0
    assert len(body["outputs"]) == 2
    for out in body["outputs"]:
        assert out["class"] in (0, 1) and len(out["probs"]) == 2 and sum(out["probs"]) == pytest.approx(1, abs=1e-5)
        assert out["class"] == max((0, 1), key=lambda k: out["probs"][k])
    one = client.post("/predict", json={"inputs": row(1), "unit": "user-7"}).json()  # one row as a bare object
    assert len(one["outputs"]) == 1 and one["outputs"][0] == body["outputs"][0] and one["request_id"] != \
        body["request_id"]


def test_v2_infer_by_alias_and_by_version(client: httpx.Client) -> None:
    rows = [row(1), row(2), row(3)]
    body = client.post(f"/v2/models/{NAME}/infer", json={"id": "mine-1", "inputs": v2_tensors(rows)}).json()
    assert (body["model_name"], body["model_version"], body["id"]) == (NAME, "1.0", "mine-1")
    assert len(body["parameters"]["request_id"]) == 32
    tensors = {t["name"]: t for t in body["outputs"]}
    assert (tensors["class"]["datatype"], tensors["class"]["shape"]) == ("INT64", [3])
    probs = tensors["probs"]
    assert (probs["datatype"], probs["shape"], len(probs["data"])) == ("FP32", [3, 2], 6)
    by_rows = client.post("/predict", json={"inputs": rows}).json()["outputs"]
    assert tensors["class"]["data"] == [o["class"] for o in by_rows]  # the same rows, the same answers
    only = client.post(f"/v2/models/{NAME}/infer", json={"inputs": v2_tensors(rows), "outputs": [{"name": "probs"}]})
    assert [t["name"] for t in only.json()["outputs"]] == ["probs"]
    other = client.post(f"/v2/models/{NAME}/versions/2.0/infer", json={"inputs": v2_tensors(rows)}).json()
    assert other["model_version"] == "2.0" and "id" in other
    assert {t["name"]: t for t in other["outputs"]}["probs"]["data"] != tensors["probs"]["data"]  # other weights
    same = client.post(f"/v2/models/{NAME}/versions/1.0/infer", json={"inputs": v2_tensors(rows)}).json()
    assert same["model_version"] == "1.0" and same["outputs"] == body["outputs"]
    assert client.get("/v2/health/ready").json()["serving"] == "1.0"  # asking for 2.0 swapped nothing


def test_metadata_health_and_docs(client: httpx.Client) -> None:
    meta = client.get(f"/v2/models/{NAME}").json()
    assert (meta["name"], meta["versions"], meta["parameters"]["alias"]) == (NAME, ["1.0"], "champion")
    assert meta["parameters"]["model_class"] == "cl_hpc.learn.tabular.TabularClassifier"
    assert meta["inputs"] == [{"name": n, "datatype": "FP64", "shape": [-1]} for n in FEATURES]
    assert {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]} == {
        "class": ("INT64", [-1]), "probs": ("FP32", [-1, 2]), "label": ("INT64", [-1])}  # label: the decoded class
    assert client.get(f"/v2/models/{NAME}/ready").json() == {"name": NAME, "ready": True}
    assert client.get("/v2/health/live").json() == {"live": True}
    ready = client.get("/v2/health/ready").json()
    assert ready == {"ready": True, "state": "ready", "reason": "", "model": NAME, "alias": "champion",
                     "serving": "1.0", "target": "1.0"}
    assert client.get("/v2").json()["name"] == "cl_hpc"
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/predict", "/outcomes", "/metrics", "/v2/models/{name}/infer",
            "/v2/models/{name}/versions/{version}/infer"} <= set(paths)


BY_VERSION = "/v2/models/{name}/versions/{version}/infer"


def test_metrics_count_requests_errors_and_latency_per_version(served: Server, client: httpx.Client) -> None:
    def counts() -> tuple[float, ...]:
        return (served.metric("cl_hpc_requests_total", version="1.0", endpoint="/predict"),
                served.metric("cl_hpc_request_latency_seconds_count", version="1.0", endpoint="/predict"),
                served.metric("cl_hpc_predicted_rows_total", version="1.0"),
                served.metric("cl_hpc_requests_total", version="2.0", endpoint=BY_VERSION),
                served.metric("cl_hpc_request_errors_total", endpoint="/predict", status="422"),
                served.metric("cl_hpc_request_errors_total", endpoint="/predict", status="413"))

    before = counts()
    for _ in range(3):
        good_request(client)
    client.post(f"/v2/models/{NAME}/versions/2.0/infer", json={"inputs": v2_tensors([row(1)])})
    assert client.post("/predict", json={"inputs": [{"a": 1.0}]}).status_code == 422
    assert client.post("/predict", json={"inputs": [row(1)] * (MAX_ROWS + 1)}).status_code == 413
    after = counts()
    assert [a - b for a, b in zip(after, before)] == [3, 3, 6, 1, 1, 1]
    assert served.metric("cl_hpc_model_serving", model=NAME, version="1.0", alias="champion", ready="true") == 1
    assert served.metric("cl_hpc_model_swaps_total") == 0
    # the prediction log's own counters are scraped too: its writer flushes every 0.2 s here
    wait_for(lambda: served.metric("cl_hpc_prediction_log_rows_written_total") >= 6, 30, "log rows written")


# ---- bad input: every one is its 4xx, and the server answers the next good request ------------------


def bad(path: str, body: Any, status: int, field: Optional[str], *fragments: str, method: str = "POST") -> Any:
    return pytest.param(method, path, body, status, field, fragments)


A_ROW = {"a": 0.5, "b": -1.0, "c": 2.0}
BAD = {
    "malformed JSON": bad("/predict", '{"inputs": [{"a": 1', 400, "body", "not valid JSON", "Content-Type"),
    "not JSON at all": bad("/predict", "a=1&b=2", 400, "body", "not valid JSON"),
    "not UTF-8": bad("/predict", b'{"inputs": "\xff"}', 400, "body", "not valid JSON", "utf-8"),
    "nested too deep": bad("/predict", "[" * 100_000, 400, "body", "not valid JSON", "recursion"),
    "body a list": bad("/predict", "[1, 2]", 422, "body", "a JSON list; it must be an object"),
    "unknown top field": bad("/predict", {"inputs": [A_ROW], "input": 1}, 422, "input", "unknown field 'input'",
                             "valid: inputs, unit"),
    "no inputs": bad("/predict", {}, 422, "inputs", "missing field 'inputs'"),
    "missing feature": bad("/predict", {"inputs": [{"a": 1.0, "b": 2.0}]}, 422, "inputs[0]", "missing input 'c'",
                           "this version takes exactly a, b, c"),
    "extra feature": bad("/predict", {"inputs": [{**A_ROW, "d": 1.0}]}, 422, "inputs[0]", "unknown input 'd'"),
    "misspelt feature": bad("/predict", {"inputs": [A_ROW, {"a": 1.0, "b": 2.0, "cc": 3.0}]}, 422, "inputs[1]",
                            "unknown input 'cc' (did you mean 'c'?)", "missing input 'c'"),
    "string value": bad("/predict", {"inputs": [{**A_ROW, "b": "2.0"}]}, 422, "inputs[0].b",
                        "inputs[0].b is '2.0' (a str); b (float64) takes a finite number"),
    "bool value": bad("/predict", {"inputs": [{**A_ROW, "a": True}]}, 422, "inputs[0].a", "True (a bool)"),
    "null value": bad("/predict", {"inputs": [{**A_ROW, "a": None}]}, 422, "inputs[0].a", "None (a NoneType)"),
    "NaN literal": bad("/predict", '{"inputs": [{"a": NaN, "b": 1.0, "c": 2.0}]}', 422, "inputs[0].a",
                       "nan (not finite)"),
    "Infinity literal": bad("/predict", '{"inputs": [{"a": 1.0, "b": Infinity, "c": 2.0}]}', 422, "inputs[0].b",
                            "inf (not finite)"),
    "-Infinity literal": bad("/predict", '{"inputs": [{"a": 1.0, "b": 2.0, "c": -Infinity}]}', 422, "inputs[0].c",
                             "-inf (not finite)"),
    "1e999": bad("/predict", '{"inputs": [{"a": 1e999, "b": 1.0, "c": 2.0}]}', 422, "inputs[0].a", "not finite"),
    "huge integer": bad("/predict", '{"inputs": [{"a": 1' + "0" * 400 + ', "b": 1.0, "c": 2.0}]}', 422,
                        "inputs[0].a", "out of range for a (float64)"),
    "inputs not a list": bad("/predict", {"inputs": "a,b,c"}, 422, "inputs", "must be a list of rows", "{a, b, c}"),
    "empty batch": bad("/predict", {"inputs": []}, 422, "inputs", "inputs is empty", f"send 1 to {MAX_ROWS} rows"),
    "oversized batch": bad("/predict", {"inputs": [A_ROW] * (MAX_ROWS + 1)}, 413, "inputs",
                           f"has {MAX_ROWS + 1} rows", "serve.max_batch_rows"),
    "bad unit": bad("/predict", {"inputs": [A_ROW], "unit": [1]}, 422, "unit", "unit is [1]", "a string"),
    "v2 unknown model": bad("/v2/models/nope/infer", {"inputs": v2_tensors([A_ROW])}, 404, "name",
                            "model 'nope' is not served here", f"serves '{NAME}'"),
    "metadata unknown model": bad("/v2/models/nope", None, 404, "name", "'nope' is not served here", method="GET"),
    "readiness unknown model": bad("/v2/models/nope/ready", None, 404, "name", "not served here", method="GET"),
    "v2 unknown version": bad(f"/v2/models/{NAME}/versions/9.0/infer", {"inputs": v2_tensors([A_ROW])}, 404,
                              "version", "model 'demo' has no version '9.0'", "versions: 1.0, 2.0"),
    "v2 version not X.Y": bad(f"/v2/models/{NAME}/versions/latest/infer", {"inputs": v2_tensors([A_ROW])}, 404,
                              "version", "'latest' is not of the form X.Y"),
    "v2 wrong datatype": bad(f"/v2/models/{NAME}/infer", {"inputs": [{**v2_tensors([A_ROW])[0], "datatype": "BYTES"},
                                                                      *v2_tensors([A_ROW])[1:]]},
                             422, "inputs[a].datatype", "takes FP16, FP32, FP64"),
    "v2 shape and data disagree": bad(f"/v2/models/{NAME}/infer",
                                      {"inputs": [{**v2_tensors([A_ROW])[0], "shape": [2]}, *v2_tensors([A_ROW])[1:]]},
                                      422, "inputs[a].data", "has 1 values but shape [2] says 2"),
    "v2 duplicate tensor": bad(f"/v2/models/{NAME}/infer", {"inputs": [*v2_tensors([A_ROW]), v2_tensors([A_ROW])[0]]},
                               422, "inputs", "tensor 'a' twice"),
    "v2 unknown output": bad(f"/v2/models/{NAME}/infer", {"inputs": v2_tensors([A_ROW]), "outputs": [{"name": "x"}]},
                             422, "outputs", "unknown ['x']; this version gives [", "'class'", "'probs'"),
    "v2 outputs not a list": bad(f"/v2/models/{NAME}/infer", {"inputs": v2_tensors([A_ROW]), "outputs": "probs"},
                                 422, "outputs", 'outputs is "probs"; it is a list of objects {"name": <output>}'),
    "v2 unknown field": bad(f"/v2/models/{NAME}/infer", {"inputs": v2_tensors([A_ROW]), "input": []}, 422, "input",
                            "unknown field 'input'"),
    "outcomes not a list": bad("/outcomes", {"outcomes": "x"}, 422, "outcomes", "a list of objects"),
    "outcome names nothing": bad("/outcomes", {"label": 1}, 422, "outcomes[0]", "exactly one of request_id"),
    "outcome names both": bad("/outcomes", {"request_id": "r", "unit": "u", "label": 1}, 422, "outcomes[0]",
                              "exactly one of"),
    "outcome without label": bad("/outcomes", {"request_id": "r"}, 422, "outcomes[0]", "give a label, a reward"),
    "outcome NaN label": bad("/outcomes", '{"request_id": "r", "label": NaN}', 422, "outcomes[0].label",
                             "a finite number"),
    "outcome bool reward": bad("/outcomes", {"unit": "u", "reward": True}, 422, "outcomes[0].reward",
                               "a reward is a finite number"),
    "outcome negative row": bad("/outcomes", {"outcomes": [{"request_id": "r", "label": 1},
                                                           {"request_id": "r", "row": -1, "label": 1}]},
                                422, "outcomes[1].row", "0 or more"),
    "outcome misspelt field": bad("/outcomes", {"request_id": "r", "lable": 1}, 422, "lable",
                                  "unknown field 'lable'", "label"),
    "outcome row past int32": bad("/outcomes", {"request_id": "r", "row": 2**31, "label": 1}, 422,
                                  "outcomes[0].row", "0 or more"),
    "outcome huge integer reward": bad("/outcomes", '{"unit": "u", "reward": 1' + "0" * 400 + "}", 422,
                                       "outcomes[0].reward", "a finite number"),
    "outcome huge integer label": bad("/outcomes", {"unit": "u", "label": 2**70}, 422, "outcomes[0].label",
                                      "an integer"),
    "v2 flood of tensors": bad(f"/v2/models/{NAME}/infer", {"inputs": v2_tensors([A_ROW]) * 1000}, 422, "inputs",
                               "has 3000 tensors; this version takes 3"),
    "body over max_body_mb": bad("/predict", {"inputs": [A_ROW], "unit": "x" * (1 << 20)}, 413, "body",
                                 "serve.max_body_mb"),
    "too many outcomes": bad("/outcomes", {"outcomes": [{"unit": "u", "label": 1}] * (MAX_ROWS + 1)}, 413,
                             "outcomes", "serve.max_batch_rows"),
    "GET on /predict": bad("/predict", None, 405, None, "Method Not Allowed", method="GET"),
    "unknown path": bad("/nowhere", None, 404, None, "Not Found", method="GET"),
}


@pytest.mark.parametrize("method, path, body, status, field, fragments", BAD.values(), ids=BAD.keys())
def test_every_bad_request_gets_its_4xx_and_the_server_goes_on(served: Server, client: httpx.Client, method: str,
                                                               path: str, body: Any, status: int, field: Optional[str],
                                                               fragments: tuple[str, ...]) -> None:
    content = body if isinstance(body, (str, bytes)) else None if body is None else json.dumps(body)
    answered = served.metric("cl_hpc_requests_total")
    response = client.request(method, path, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert served.metric("cl_hpc_requests_total") == answered  # a refused request is not counted as answered
    answer = response.json()
    message = answer.get("error") or str(answer.get("detail"))
    if field is not None:
        assert answer["field"] == field, answer
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert good_request(client)["version"] == "1.0"  # and the server answers the next good one


def test_a_good_outcome_is_accepted(client: httpx.Client) -> None:
    request_id = good_request(client)["request_id"]
    outcomes = [{"request_id": request_id, "row": 1, "label": 0}, {"unit": "user-7", "reward": 0.5},
                {"request_id": request_id, "label": "cat", "reward": 1}]
    assert client.post("/outcomes", json={"outcomes": outcomes}).json() == {"accepted": 3}
    assert client.post("/outcomes", json={"request_id": request_id, "label": True}).json() == {"accepted": 1}


# ---- readiness -----------------------------------------------------------------------------------------


def test_not_ready_says_why_until_a_model_is_promoted(tmp_path: Path) -> None:
    store = tmp_path / "store"  # nothing there yet: not even the store's database
    server = Server.start(store, ready=False)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            health = server.wait_settled()
            assert server.health().status_code == 503
            assert (health["ready"], health["state"], health["serving"]) == (False, "not_ready", None)
            assert f"no store at {store}" in health["reason"] and "promote a model" in health["reason"]
            refused = http.post("/predict", json={"inputs": [row(1)]})
            assert refused.status_code == 503 and "no model is loaded yet" in refused.json()["error"]
            assert "/v2/health/ready" in refused.json()["error"] and health["reason"] in refused.json()["error"]
            assert http.get("/v2/health/live").status_code == 200
            register_tabular(store, seeds=(0,), champion=None)  # registered, no alias yet
            reason = wait_for(lambda: "no alias" in (r := server.health().json()["reason"]) and r, 30, "no alias")
            assert "model demo has no alias 'champion'" in reason and "python -m cl_hpc.registry promote demo" in reason
            assert http.get(f"/v2/models/{NAME}/ready").status_code == 503
            with ModelRegistry.open(store) as registry:
                registry.promote(NAME, "1.0", reason="first champion")
            server.wait_ready(30)  # no restart: the watcher sees the alias appear
            assert good_request(http)["version"] == "1.0"
    finally:
        server.close()


def test_a_checkpoint_restored_after_a_failed_load_is_served_without_an_alias_move(tmp_path: Path) -> None:
    store = tmp_path / "store"
    register_tabular(store, seeds=(0,))
    with ModelRegistry.open(store) as registry:
        path = Path(registry.get(NAME, "1.0").checkpoint_path)
    aside = path.with_suffix(".aside")
    path.rename(aside)  # e.g. a shared file system not mounted yet when the server started
    server = Server.start(store, ready=False)
    try:
        health = server.wait_settled()
        assert health["state"] == "not_ready" and "cannot be served" in health["reason"]
        aside.rename(path)
        server.wait_ready(30)  # retried with backoff, not only when the alias moves
        assert good_request(httpx.Client(base_url=server.url, timeout=30))["version"] == "1.0"
    finally:
        server.close()


def test_a_version_asked_for_in_another_spelling_is_the_same_version(client: httpx.Client) -> None:
    for spelling in ("2.0", "2.00", "02.0"):
        answer = client.post(f"/v2/models/{NAME}/versions/{spelling}/infer", json={"inputs": v2_tensors([A_ROW])})
        assert answer.status_code == 200 and answer.json()["model_version"] == "2.0", answer.text
    current = client.post(f"/v2/models/{NAME}/versions/1.00/infer", json={"inputs": v2_tensors([A_ROW])})
    assert current.json()["model_version"] == "1.0"


def test_a_tampered_champion_is_quarantined_and_not_served(tmp_path: Path) -> None:
    store = tmp_path / "store"
    register_tabular(store, seeds=(0,))
    with ModelRegistry.open(store) as registry:
        record = registry.get(NAME, "1.0")
    path = Path(record.checkpoint_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte changed after registration
    path.write_bytes(bytes(data))
    server = Server.start(store, ready=False)
    try:
        health = server.wait_settled()
        assert server.health().status_code == 503 and health["state"] == "not_ready" and health["serving"] is None
        assert "champion -> demo 1.0 cannot be served" in health["reason"]
        assert "sha256" in health["reason"] and "quarantined" in health["reason"]
        refused = httpx.post(f"{server.url}/predict", json={"inputs": [row(1)]}, timeout=30)
        assert refused.status_code == 503 and "quarantined" in refused.json()["error"]
        with ModelRegistry.open(store) as registry:
            assert "not the registered" in (registry.get(NAME, "1.0").quarantined or "")
    finally:
        server.close()


# ---- hot swap under concurrent requests -------------------------------------------------------------------


class Traffic:
    """``loops`` concurrent request loops on one async client; every answer and failure recorded."""

    def __init__(self, url: str, loops: int) -> None:
        self.url, self.loops = url, loops
        self.answers: list[tuple[float, str, str]] = []  # (monotonic time answered, version, request_id)
        self.failures: list[str] = []
        self.stop = asyncio.Event()

    async def run(self, client: httpx.AsyncClient, k: int, stop_on_error: bool = False) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                response = await client.post("/predict", json={"inputs": [row(k * 100_000 + i), row(i)]})
            except httpx.HTTPError as exc:
                if stop_on_error:
                    return  # the server stopped listening: this loop is done
                self.failures.append(f"{type(exc).__name__}: {exc}")
                continue
            body = response.json()
            if response.status_code != 200 or not body.get("version"):
                self.failures.append(f"{response.status_code}: {response.text}")
            else:
                self.answers.append((time.monotonic(), body["version"], body["request_id"]))

    async def version_after(self, since: float, version: str, timeout_s: float = 30) -> float:
        """Poll until an answer given after ``since`` names ``version``; when it came."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for at, got, _ in reversed(self.answers):
                if at <= since:
                    break
                if got == version:
                    return at
            await asyncio.sleep(0.02)
        raise AssertionError(f"no answer from {version} within {timeout_s} s of the move; "
                             f"failures: {self.failures[:3]}")


async def swap_under_load(url: str, store: Path, moves: int, loops: int = 8) -> tuple[Traffic, list[str]]:
    traffic = Traffic(url, loops)
    targets = []
    limits = httpx.Limits(max_connections=loops, max_keepalive_connections=loops)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        tasks = [asyncio.create_task(traffic.run(client, k)) for k in range(loops)]
        try:
            await traffic.version_after(0, "1.0")
            with ModelRegistry.open(store) as registry:
                for move in range(moves):
                    if move % 2 == 0:
                        registry.promote(NAME, "2.0", reason=f"move {move}")
                    else:
                        registry.rollback(NAME, reason=f"move {move}")
                    moved = time.monotonic()
                    targets.append(str(registry.aliases(NAME)["champion"]))
                    await traffic.version_after(moved, targets[-1])
            await asyncio.sleep(0.2)  # a little traffic after the last swap
        finally:
            traffic.stop.set()
            await asyncio.gather(*tasks)
    return traffic, targets


def test_hot_swaps_under_concurrent_requests_lose_no_request(tmp_path: Path) -> None:
    store = tmp_path / "store"
    register_tabular(store, seeds=(0, 1))
    server = Server.start(store)
    try:
        traffic, targets = asyncio.run(swap_under_load(server.url, store, moves=10))
        assert traffic.failures == []
        assert targets == ["2.0", "1.0"] * 5  # each move landed where the registry says
        versions = [v for _, v, _ in traffic.answers]
        assert set(versions) == {"1.0", "2.0"} and len(traffic.answers) > 100
        assert len({r for _, _, r in traffic.answers}) == len(traffic.answers)  # one request_id each
        assert server.metric("cl_hpc_model_swaps_total") == 10
        for version in ("1.0", "2.0"):
            assert server.metric("cl_hpc_requests_total", version=version, endpoint="/predict") == versions.count(
                version)
        assert server.metric("cl_hpc_model_serving", version="1.0", ready="true") == 1
        with ModelRegistry.open(store) as registry:
            assert [e.action for e in registry.events(NAME)][-10:] == ["promote", "rollback"] * 5
    finally:
        server.close()


# ---- signals: drain, flush, withdraw, exit 0 -------------------------------------------------------------


async def signal_under_load(server: Server, sig: signal.Signals, loops: int = 8) -> tuple[Traffic, float]:
    """Requests from ``loops`` loops; the signal once 100 were answered; each loop ends at its first
    connection error (the server stopped listening)."""
    traffic = Traffic(server.url, loops)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        tasks = [asyncio.create_task(traffic.run(client, k, stop_on_error=True)) for k in range(loops)]
        deadline = time.monotonic() + 60
        while len(traffic.answers) < 100 and time.monotonic() < deadline and not traffic.failures:
            await asyncio.sleep(0.01)
        signalled = time.monotonic()
        server.proc.send_signal(sig)
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    return traffic, signalled


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_drains_logs_every_answer_and_exits_0(tmp_path: Path, sig: signal.Signals) -> None:
    store = tmp_path / "store"
    register_tabular(store, seeds=(0,))
    # a flush interval far past the test: the rows on disk were written by the drain, not the timer
    server = Server.start(store, "serve.flush_interval_s=600")
    assert len(server.discovery_files()) == 1
    try:
        traffic, signalled = asyncio.run(signal_under_load(server, sig))
        code = server.proc.wait(60)
    finally:
        server.stop()
    assert code == 0, server.output()
    assert traffic.failures == [] and len(traffic.answers) >= 100
    assert f"stopped on {sig.name}: requests drained, prediction log flushed" in server.err.read_text()
    assert "Traceback" not in server.err.read_text()
    assert server.discovery_files() == []
    logged = read_stream(store / "predictions", Stream.PREDICTIONS).frame
    rows = logged.groupby("request_id")["row"].apply(sorted).to_dict()
    before = [r for at, _, r in traffic.answers if at <= signalled]
    assert before and all(rows.get(r) == [0, 1] for r in before)  # every answer before the signal, both rows
    assert all(r in rows for _, _, r in traffic.answers)  # and those answered while it drained
    assert set(logged["version"]) == {"1.0"} and set(logged["model"]) == {NAME} and set(logged["role"]) == {"live"}


# ---- the GPT workload ------------------------------------------------------------------------------------


def test_the_gpt_workload_is_served(tmp_path: Path) -> None:
    store = tmp_path / "store"
    inputs = register_gpt(store, vocab=16, seq=8)
    assert inputs == [f"tok_{i:03d}" for i in range(8)]
    server = Server.start(store)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            meta = http.get("/v2/models/gpt").json()
            assert meta["inputs"] == [{"name": n, "datatype": "INT64", "shape": [-1]} for n in inputs]
            assert meta["parameters"]["model_class"] == "cl_hpc.learn.gpt.GPT"
            contexts = [{n: (i * 3 + j) % 16 for j, n in enumerate(inputs)} for i in range(3)]
            body = http.post("/predict", json={"inputs": contexts}).json()
            assert (body["model"], body["version"]) == ("gpt", "1.0") and len(body["outputs"]) == 3
            for out in body["outputs"]:
                assert 0 <= out["next_token"] < 16 and 0 < out["next_token_prob"] <= 1
            tensors = [{"name": n, "datatype": "INT64", "shape": [3], "data": [c[n] for c in contexts]} for n in inputs]
            v2 = {t["name"]: t["data"] for t in http.post("/v2/models/gpt/infer", json={"inputs": tensors}).json()[
                "outputs"]}
            assert v2["next_token"] == [o["next_token"] for o in body["outputs"]]
            bad = http.post("/predict", json={"inputs": [{**contexts[0], "tok_003": 1.5}]})
            assert bad.status_code == 422 and "tok_003 (int64) takes an integer" in bad.json()["error"]
            missing = http.post("/predict", json={"inputs": [{n: 1 for n in inputs[:-1]}]})
            assert missing.status_code == 422 and "missing input 'tok_007'" in missing.json()["error"]
            # an int64, as the signature says, but outside the vocabulary: the data module refuses the rows
            outside = http.post("/predict", json={"inputs": [contexts[0], {**contexts[1], "tok_002": 16}]})
            assert outside.status_code == 422, outside.text
            assert "'tok_002' holds 16" in outside.json()["error"] and "[0, 16)" in outside.json()["error"]
            assert http.post("/predict", json={"inputs": contexts}).json()["outputs"] == body["outputs"]
    finally:
        server.close()


# ---- python -m cl_hpc.serve status -----------------------------------------------------------------------


def status(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**_env(), "COLUMNS": "300"}  # rich's table at full width: no URL cut short
    proc = subprocess.run([sys.executable, "-m", "cl_hpc.serve", "status", *args, f"store.root={store}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_status_lists_live_servers_and_marks_a_killed_one_unreachable(served: Server) -> None:
    second = Server.start(served.store)  # another server of the same store: a second discovery file
    second.proc.kill()  # -9: no drain, its file stays
    second.proc.wait(30)
    killed = second.discovery_files()
    assert len(killed) == 1
    table = status(served.store).stdout
    live_line = next(line for line in table.splitlines() if served.url in line)
    dead_line = next(line for line in table.splitlines() if second.url in line)
    assert "yes" in live_line and "(only)" in live_line and "1.0" in live_line  # the registry's only model, 1.0
    assert "unreachable" in dead_line and "ConnectError" in dead_line
    rows = {r["url"]: r for r in map(json.loads, status(served.store, "--json").stdout.splitlines())}
    assert set(rows) == {served.url, second.url}
    live = rows[served.url]
    assert (live["reachable"], live["ready"], live["serving"], live["alias"]) == (True, True, "1.0", "champion")
    assert live["pid"] == served.proc.pid and live["model"] is None
    assert (rows[second.url]["reachable"], rows[second.url]["ready"]) == (False, False)
    assert rows[second.url]["file"] == str(killed[0])
    pruned = status(served.store, "--prune").stdout
    assert "pruned" in pruned and not killed[0].exists() and len(served.discovery_files()) == 1
    assert [json.loads(line)["url"] for line in status(served.store, "--json").stdout.splitlines()] == [served.url]


# ---- config errors: exit 2 before binding -------------------------------------------------------------------


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


CONFIG_ERRORS = {
    "port out of range": (["serve.port=70000"], ["serve.port=70000: valid ports are 0 (any free one) to 65535",
                                                 "conf/serve/default.yaml"]),
    "no rows allowed": (["serve.max_batch_rows=0"], ["serve.max_batch_rows=0: must be >= 1"]),
    "zero poll interval": (["serve.poll_interval_s=0"], ["serve.poll_interval_s=0", "must be > 0 seconds"]),
    "port taken": (["serve.port={taken}"], ["cannot listen on 127.0.0.1:{taken}", "choose another serve.port"]),
    "unknown key": (["serve.prot=8000"], ["prot"]),
}


@pytest.mark.parametrize("overrides, fragments", CONFIG_ERRORS.values(), ids=CONFIG_ERRORS.keys())
def test_config_errors_exit_2_with_a_clear_message_before_serving(tmp_path: Path, taken_port: int,
                                                                  overrides: list[str], fragments: list[str]) -> None:
    store = tmp_path / "store"
    overrides = [o.format(taken=taken_port) for o in overrides]
    proc = subprocess.run(serve_command(store, *overrides), cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment.format(taken=taken_port) in proc.stderr, proc.stderr
    assert "serving" not in proc.stdout and not (store / "servers").exists()
