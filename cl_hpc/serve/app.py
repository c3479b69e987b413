"""The HTTP app: ``/predict``, ``/rank``, ``/outcomes``, the Open Inference Protocol v2, ``/metrics``.

Every prediction goes through :func:`cl_hpc.learn.scoring.predict`, the code the evaluate task and
the gate use, with the version's preprocessing state. A request takes one snapshot of the served
version at its start (hot swaps never split a request), its answer names that version, and its
rows go to the prediction log's memory queue: no disk write, no commit and no registry query on
the request path. Bad input is a 4xx naming the field and what is valid; the server goes on.

Handlers are ``async`` and predict inline: a small model answers in well under a millisecond, less
than a hop to a worker thread costs. Requests for an explicit version that is not loaded yet load
it in a worker thread, so the event loop keeps answering meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Mapping, Optional, Sequence

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from cl_hpc.config.serving import ServeConf
from cl_hpc.data.predictions import Outcome, PredictionBatch, Role
from cl_hpc.errors import ClHpcError, DataError
from cl_hpc.learn.scoring import predict
from cl_hpc.registry.versions import RegistryError, is_version
from cl_hpc.rollout.records import ExperimentKind
from cl_hpc.serve import inputs as wire
from cl_hpc.serve import ranking
from cl_hpc.serve.features import model_inputs
from cl_hpc.serve.inputs import RequestError
from cl_hpc.serve.metrics import CONTENT_TYPE, ServerMetrics
from cl_hpc.serve.models import Loaded, ModelSlot, Readiness
from cl_hpc.serve.predlog import PredictionLog
from cl_hpc.serve.routing import CHALLENGER, CHAMPION, Routing
from cl_hpc.serve.shadow import ShadowRunner

_PREDICT_KEYS = {"inputs", "unit"}
_OUTCOME_KEYS = {"request_id", "row", "unit", "label", "reward"}
_V2_KEYS = {"id", "inputs", "outputs", "parameters"}
MAX_ROW = 2**31 - 1  # the log's row column is int32 (a request carries at most serve.max_batch_rows rows)


@dataclass
class ServerState:
    """What the app serves from: the model slot, the prediction log and the metrics."""

    conf: ServeConf
    slot: ModelSlot
    log: PredictionLog
    metrics: ServerMetrics = field(init=False)
    shadow: ShadowRunner = field(init=False)
    on_start: list[Any] = field(default_factory=list)  # callables run once the app has started
    on_stop: list[Any] = field(default_factory=list)  # callables run after the log is flushed

    def __post_init__(self) -> None:
        self.metrics = ServerMetrics(self.log.stats, self.slot_state)
        self.shadow = ShadowRunner(self.log)

    def slot_state(self) -> dict[str, Any]:
        health, current = self.slot.health, self.slot.current
        return {"model": current.name if current else self.slot.name, "version": current.version if current else None,
                "alias": self.slot.alias, "ready": health.state is Readiness.READY, "swaps": self.slot.swaps,
                "experiment": self.slot.routing.experiment_id if self.slot.routing else None,
                "shadow": self.shadow.stats()}

    def start(self) -> None:
        self.log.start()
        self.slot.start()
        for hook in self.on_start:
            hook()

    def stop(self) -> None:
        """After the last request: stop watching, flush the log, then the hooks (discovery file)."""
        self.slot.stop()
        self.shadow.stop()  # its queued copies are answered and logged before the log's last flush
        self.log.close()
        for hook in self.on_stop:
            hook()


def create_app(state: ServerState, manage: bool = True) -> FastAPI:
    """The app; with ``manage`` its lifespan starts and stops ``state`` (uvicorn runs it on SIGTERM
    after the requests in flight finished)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if manage:
            state.start()
        try:
            yield
        finally:
            if manage:
                await asyncio.to_thread(state.stop)

    app = FastAPI(title="cl_hpc model server", lifespan=lifespan,
                  description="The registry's model by alias: /predict, /rank, the Open Inference Protocol v2, "
                              "/outcomes for late labels, /metrics for Prometheus.")
    _errors(app, state)
    _health_routes(app, state)
    _predict_routes(app, state)
    _v2_routes(app, state)
    return app


# ---- errors ------------------------------------------------------------------------------------


def _errors(app: FastAPI, state: ServerState) -> None:
    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError) -> JSONResponse:
        state.metrics.refused(_endpoint(request), exc.status)
        return JSONResponse({"error": str(exc), "field": exc.field}, status_code=exc.status)


def _endpoint(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "path", request.url.path))


async def _body(request: Request, max_bytes: int) -> dict[str, Any]:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:  # refused before it is read
        raise RequestError(f"the request body is {int(declared)} bytes; the most is {max_bytes} "
                           f"(serve.max_body_mb): split the batch", "body", 413)
    raw = await request.body()
    if len(raw) > max_bytes:  # chunked bodies declare no length
        raise RequestError(f"the request body is {len(raw)} bytes; the most is {max_bytes} (serve.max_body_mb): "
                           f"split the batch", "body", 413)
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: arrays nested deeper than the parser goes
        raise RequestError(f"the request body is not valid JSON: {exc}; send an object such as "
                           f'{{"inputs": [{{...}}]}} with Content-Type: application/json', "body", 400) from None
    if not isinstance(payload, dict):
        raise RequestError(f"the request body is a JSON {type(payload).__name__}; it must be an object", "body")
    return payload


def _only(payload: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(payload) - allowed)
    if extra:
        raise RequestError(f"{where}: unknown field{'s' if len(extra) > 1 else ''} {', '.join(map(repr, extra))}; "
                           f"valid: {', '.join(sorted(allowed))}", extra[0])


def _serving(state: ServerState) -> Loaded:
    loaded = state.slot.current
    if loaded is None:
        health = state.slot.health
        raise RequestError(f"no model is loaded yet ({health.state.value}: {health.reason}); "
                           f"GET /v2/health/ready says when", "model", 503)
    return loaded


@dataclass(frozen=True)
class Route:
    """Who answers one request: the version, and the experiment and arm when one runs."""

    loaded: Loaded
    request_id: str
    routing: Optional[Routing] = None
    arm: Optional[str] = None


def _route(state: ServerState, unit: Optional[str]) -> Route:
    """The running experiment's arm for this request (by its unit's bucket), else the alias's version.
    A shadow's live answer is the champion arm's; the challenger gets a copy after the answer."""
    request_id = uuid.uuid4().hex
    routing = state.slot.routing
    if routing is None:
        return Route(_serving(state), request_id)
    if routing.splits:
        arm, loaded = routing.route(request_id, unit, time.time())
        return Route(loaded, request_id, routing, arm)
    return Route(routing.arms[CHAMPION], request_id, routing, CHAMPION)


def _predicted(loaded: Loaded, frame: Any) -> dict[str, np.ndarray]:
    """The version's outputs for ``frame``, through the model contract; its failures as RequestErrors."""
    try:
        return wire.typed_outputs(loaded.signature, predict(loaded.workload, frame))
    except DataError as exc:  # rows of the signature's types that the data module refuses (a token past the vocab)
        raise RequestError(f"inputs: {exc}", "inputs") from exc
    except Exception as exc:  # the model's own code failed: a 500 that names it, and the server goes on
        raise RequestError(f"model {loaded.name} {loaded.version} ({loaded.model_class}) failed on this request: "
                           f"{type(exc).__name__}: {exc}", "model", 500) from exc


def _answer(state: ServerState, route: Route, frame: Any, unit: Optional[str], started: float,
            endpoint: str, wanted: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Predict through the model contract, log the rows, count the request (``wanted``: the output
    names the client asked for, checked before the log and the counters see a refused request).
    ``frame``: the request's rows; for a version trained on catalog features, its entity keys, whose
    features are fetched here and logged with them."""
    loaded = route.loaded
    model_frame, logged = model_inputs(loaded.features, frame)
    try:
        outputs = _predicted(loaded, model_frame)
    except RequestError as exc:
        if exc.status >= 500:  # the model's fault, not the client's: the error rate a canary judges
            _log(state, route, Role.FAILED, logged, {}, unit, time.perf_counter() - started)
        raise
    unknown = [w for w in wanted if w not in outputs]
    if unknown:
        raise RequestError(f"outputs: unknown {unknown}; this version gives {sorted(outputs)}", "outputs")
    seconds = time.perf_counter() - started
    _log(state, route, Role.LIVE, logged, outputs, unit, seconds)
    state.metrics.answered(loaded.name, loaded.version, endpoint, len(model_frame), seconds)
    routing = route.routing
    if routing is not None and routing.kind is ExperimentKind.SHADOW and routing.copies(route.request_id):
        state.shadow.submit(routing, frame, route.request_id, unit)  # after the answer is built, off its path
    return outputs


def _log(state: ServerState, route: Route, role: Role, inputs: dict[str, np.ndarray],
         outputs: dict[str, np.ndarray], unit: Optional[str], seconds: float) -> None:
    """The request's rows in the prediction log, with the experiment and arm that routed it (a failure:
    no outputs)."""
    routing = route.routing
    state.log.log(PredictionBatch(route.request_id, time.time(), route.loaded.name, route.loaded.version, role,
                                  seconds * 1e3, inputs, outputs, unit,
                                  routing.experiment_id if routing is not None else None, route.arm))


# ---- routes ------------------------------------------------------------------------------------


def _health_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/v2", summary="Server metadata (Open Inference Protocol v2)")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "cl_hpc", "version": _package_version(), "extensions": []}

    @app.get("/v2/health/live", summary="Liveness: the process answers")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready", summary="Readiness: the alias's version is loaded (503 with the reason if not)")
    async def ready() -> JSONResponse:
        health = state.slot.health
        body = {"ready": health.state is Readiness.READY, "state": health.state.value, "reason": health.reason,
                "model": state.slot.name, "alias": state.slot.alias, "serving": health.serving,
                "target": health.target}
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @app.get("/metrics", summary="Prometheus metrics: requests, errors, latency per version")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)


def _predict_routes(app: FastAPI, state: ServerState) -> None:
    @app.post("/predict", summary="Predict rows given by input name",
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                  "type": "object", "required": ["inputs"], "properties": {
                      "inputs": {"type": "array", "items": {"type": "object"},
                                 "description": "rows, each an object of the version's signature inputs"},
                      "unit": {"type": "string", "description": "a user or session id (outcomes may name it)"}}}}}}})
    async def predict_rows(request: Request) -> JSONResponse:
        started = time.perf_counter()
        payload = await _body(request, state.conf.max_body_bytes)
        _only(payload, _PREDICT_KEYS, "body")
        unit = _unit(payload.get("unit"))
        if "inputs" not in payload:
            raise RequestError("body: missing field 'inputs' (a list of rows by input name)", "inputs")
        route = _route(state, unit)
        loaded = route.loaded
        frame = wire.rows_frame(loaded.request_signature, payload["inputs"], state.conf.max_batch_rows)
        outputs = _answer(state, route, frame, unit, started, "/predict")
        return JSONResponse({"request_id": route.request_id, "model": loaded.name, "version": loaded.version,
                             "outputs": wire.output_rows(outputs)})

    @app.post("/rank", summary="Rank candidate items (interleaved under an interleave experiment)",
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                  "type": "object", "required": ["items"], "properties": {
                      "items": {"type": "array", "items": {"type": "object"},
                                "description": "candidates: each an object of the version's inputs and an id"},
                      "unit": {"type": "string", "description": "a user or session id"},
                      "k": {"type": "integer", "description": "show the top k (default: all)"}}}}}}})
    async def rank(request: Request) -> JSONResponse:
        started = time.perf_counter()
        payload = await _body(request, state.conf.max_body_bytes)
        _only(payload, ranking.KEYS, "body")
        unit = _unit(payload.get("unit"))
        asked = ranking.parse(payload, state.conf.max_batch_rows)
        route = _route(state, unit)
        routing = route.routing
        arms: dict[Optional[str], Loaded] = {route.arm: route.loaded}  # the request's arm (a shadow: the champion)
        if routing is not None and routing.kind is ExperimentKind.INTERLEAVE:
            arms = {arm: routing.arms[arm] for arm in (CHALLENGER, CHAMPION)}
        fetching = [f"{a.name} {a.version}" for a in arms.values() if a.features is not None]
        if fetching:
            raise RequestError(f"/rank scores items by the model's own inputs, and {', '.join(fetching)} takes entity "
                               f"keys and fetches catalog features: send them to /predict, one row per entity",
                               "items", 422)
        ranked = ranking.rank(asked, route.request_id, arms, _predicted)
        seconds = time.perf_counter() - started
        experiment = routing.experiment_id if routing is not None else None
        for batch in ranking.batches(ranked, asked, route.request_id, time.time(), seconds * 1e3, unit, experiment):
            state.log.log(batch)
        for loaded in arms.values():
            state.metrics.answered(loaded.name, loaded.version, "/rank", len(asked.items), seconds)
        return JSONResponse(ranking.body(ranked, asked, route.request_id))

    @app.post("/outcomes", summary="Labels or rewards for earlier predictions, by request_id or unit",
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                  "type": "object", "properties": {"outcomes": {"type": "array", "items": {"type": "object"}}}}}}}})
    async def outcomes(request: Request) -> dict[str, int]:
        payload = await _body(request, state.conf.max_body_bytes)
        items = payload["outcomes"] if set(payload) == {"outcomes"} else [payload]
        if not isinstance(items, list):
            raise RequestError("outcomes must be a list of objects", "outcomes")
        wire.check_size(len(items), state.conf.max_batch_rows, "outcomes")
        now = time.time()
        checked = [_outcome(item, i, now) for i, item in enumerate(items)]  # all checked before any is logged
        for outcome in checked:
            state.log.outcome(outcome)
        state.metrics.outcomes.inc(len(checked))
        return {"accepted": len(checked)}


def _v2_routes(app: FastAPI, state: ServerState) -> None:
    @app.get("/v2/models/{name}", summary="Model metadata: versions, inputs and outputs")
    async def model_metadata(name: str) -> dict[str, Any]:
        loaded = _named(state, name)
        return {"name": loaded.name, "versions": [loaded.version], "platform": "pytorch",
                "inputs": wire.tensor_metadata(loaded.request_signature.inputs),
                "outputs": wire.tensor_metadata(loaded.outputs),
                "parameters": {"alias": state.slot.alias, "model_class": loaded.model_class}}

    @app.get("/v2/models/{name}/ready", summary="Model readiness")
    async def model_ready(name: str) -> JSONResponse:
        _named(state, name, need_loaded=False)
        ready = state.slot.health.state is Readiness.READY
        return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)

    @app.post("/v2/models/{name}/infer", summary="Inference on the alias's version (Open Inference Protocol v2)")
    async def infer(name: str, request: Request) -> JSONResponse:
        _named(state, name)
        return await _infer(state, request, None, "/v2/models/{name}/infer")

    @app.post("/v2/models/{name}/versions/{version}/infer", summary="Inference on one version")
    async def infer_version(name: str, version: str, request: Request) -> JSONResponse:
        _named(state, name, need_loaded=False)
        loaded = await _version(state, version)
        return await _infer(state, request, loaded, "/v2/models/{name}/versions/{version}/infer")


async def _infer(state: ServerState, request: Request, loaded: Optional[Loaded], endpoint: str) -> JSONResponse:
    """v2 inference: by alias (``loaded`` None: routed like /predict, by the running experiment) or one version."""
    started = time.perf_counter()
    payload = await _body(request, state.conf.max_body_bytes)
    _only(payload, _V2_KEYS, "body")
    parameters = payload.get("parameters") or {}
    unit = _unit(parameters.get("unit") if isinstance(parameters, Mapping) else None)
    route = _route(state, unit) if loaded is None else Route(loaded, uuid.uuid4().hex)
    frame = wire.tensors_frame(route.loaded.request_signature, payload.get("inputs"), state.conf.max_batch_rows)
    wanted = _wanted(payload.get("outputs"))
    outputs = _answer(state, route, frame, unit, started, endpoint, wanted)
    chosen = {k: v for k, v in outputs.items() if not wanted or k in wanted}
    body = {"model_name": route.loaded.name, "model_version": route.loaded.version,
            "id": str(payload.get("id") or route.request_id), "parameters": {"request_id": route.request_id},
            "outputs": wire.output_tensors(chosen)}
    return JSONResponse(body)


def _wanted(value: Any) -> list[str]:
    """The v2 request's ``outputs``: absent (every output) or a list of {"name": <output>}."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(o, Mapping) and isinstance(o.get("name"), str) for o in value):
        raise RequestError(f"outputs is {json.dumps(value)[:60]}; it is a list of objects {{\"name\": <output>}}, "
                           f"or absent for every output", "outputs")
    return [o["name"] for o in value]


def _named(state: ServerState, name: str, need_loaded: bool = True) -> Loaded:
    served = state.slot.name
    if served is not None and name != served:
        raise RequestError(f"model {name!r} is not served here; this server serves {served!r} "
                           f"({state.slot.alias})", "name", 404)
    return _serving(state) if need_loaded else None  # type: ignore[return-value]


async def _version(state: ServerState, version: str) -> Loaded:
    if not is_version(version):
        raise RequestError(f"version {version!r} is not of the form X.Y (e.g. 1.0)", "version", 404)
    try:
        return await asyncio.to_thread(state.slot.version, version)
    except RegistryError as exc:
        raise RequestError(str(exc), "version", 404) from None
    except ClHpcError as exc:
        raise RequestError(f"version {version} cannot be served: {exc}", "version", 503) from None


def _unit(value: Any) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise RequestError(f"unit is {value!r}; it is a string (a user or session id) or an integer", "unit")


def _outcome(item: Any, i: int, now: float) -> Outcome:
    where = f"outcomes[{i}]"
    if not isinstance(item, Mapping):
        raise RequestError(f"{where} is a {type(item).__name__}; each outcome is an object", where)
    _only(item, _OUTCOME_KEYS, where)
    request_id, unit, row = item.get("request_id"), _unit(item.get("unit")), item.get("row")
    if (request_id is None) == (unit is None):
        raise RequestError(f"{where}: name exactly one of request_id (from a /predict answer) or unit", where)
    if request_id is not None and not isinstance(request_id, str):
        raise RequestError(f"{where}.request_id is {request_id!r}; it is the string a /predict answer gave",
                           f"{where}.request_id")
    if row is not None and (type(row) is not int or not 0 <= row <= MAX_ROW):
        raise RequestError(f"{where}.row is {row!r}; it is a row index of that request, 0 or more", f"{where}.row")
    label, reward = item.get("label"), item.get("reward")
    if label is None and reward is None:
        raise RequestError(f"{where}: give a label, a reward, or both", where)
    if label is not None and not (type(label) in (str, bool) or _finite_number(label)):
        raise RequestError(f"{where}.label is {label!r}; a label is a string, an integer, a finite number or a "
                           f"boolean", f"{where}.label")
    if reward is not None and not _finite_number(reward):
        raise RequestError(f"{where}.reward is {reward!r}; a reward is a finite number", f"{where}.reward")
    return Outcome(at=now, request_id=request_id, row=row, unit=unit, label=label,
                   reward=None if reward is None else float(reward))


def _finite_number(value: Any) -> bool:
    """An int within int64 or a finite float: what the log's columns hold (a 400-digit integer is neither)."""
    if type(value) is int:
        return -(2**63) <= value < 2**63
    return type(value) is float and math.isfinite(value)


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cl_hpc")
    except PackageNotFoundError:
        return "unknown"
