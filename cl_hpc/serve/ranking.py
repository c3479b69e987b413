"""``POST /rank``: candidate items scored by a version and ranked; under an interleave experiment, both
arms' rankings merged by team-draft interleaving (cl_hpc/rollout/interleave.py).

The request: ``{"items": [{<the version's inputs>, "id": "<item id>"}, ...], "unit": ..., "k": ...}``.
Each item carries the inputs of the version's signature and an ``id`` (a string or an integer, distinct
within the request); ``k`` (optional) cuts the answer to the top k.

What a version ranks by: a ``score`` output (one number per row) when the model has one; else, for a
classifier, the probability of its last class, ``probs[:, -1]`` (the positive class of a binary one,
whose labels sort false/0 before true/1). Items are ordered by it, highest first, ties in request order.
A version with neither cannot rank: a 422 that says so.

Who ranks: without an experiment, the alias's version; under an A/B, canary or bandit, the request's
arm (by its unit, as ``/predict``); under a shadow, the champion (no copy is made of a ranking request).
Under an interleave experiment both arms rank and the answer is their team draft, its coin seeded from the
request id (:func:`interleaved`), so the log's request id replays the same list from the same rankings.

The log (the answer's rows, off the request path as every answer's): one row per shown item, ``row`` =
its position; the outputs ``item`` (its id as text) and ``score`` (the ranking version's score), and under
interleaving ``first`` (this pick opened its round). An interleaved answer logs each team's items as
their own batch, under that team's arm and version, so clicks credit the team that placed the item
(cl_hpc/rollout/interleaving.py). Clicks come back through ``POST /outcomes``: the answer's request_id,
``row`` = the clicked position, and ``reward: 1`` (or ``label: true``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from cl_hpc.data.predictions import PredictionBatch, Role
from cl_hpc.learn.contract import Signature
from cl_hpc.rollout.interleave import Interleaving, Team, team_draft
from cl_hpc.rollout.interleaving import FIRST, ITEM, SCORE
from cl_hpc.serve import inputs as wire
from cl_hpc.serve.inputs import RequestError
from cl_hpc.serve.models import Loaded
from cl_hpc.serve.routing import CHALLENGER, CHAMPION

KEYS = {"items", "unit", "k"}
# The sign test's sides (cl_hpc/rollout/interleaving.py): team A is the champion, team B the challenger.
TEAM_ARMS = {Team.A: CHAMPION, Team.B: CHALLENGER}
Predict = Callable[[Loaded, pd.DataFrame], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class RankRequest:
    items: list[Mapping[str, Any]]  # as sent, each with its "id"
    ids: list[Any]  # the ids as sent (an answer gives them back in their type)
    k: int  # items shown: the top k, at most all


@dataclass(frozen=True)
class Ranked:
    """One answer: the shown items (indices into the request), who placed each, and what each arm saw."""

    order: list[int]  # item index per position
    arms: list[Optional[str]]  # the arm whose ranking placed each position (None: no experiment)
    first: Optional[list[bool]]  # interleaving: the position's pick opened its round
    loaded: dict[Optional[str], Loaded]  # arm -> the version that ranked
    scores: dict[Optional[str], np.ndarray]  # arm -> its score per item
    columns: dict[Optional[str], dict[str, np.ndarray]]  # arm -> its input columns (for the log)


def parse(payload: Mapping[str, Any], max_items: int) -> RankRequest:
    """The body's items and k, checked (the inputs are checked per version by :func:`rank`)."""
    items = payload.get("items")
    if not isinstance(items, list):
        got = "missing" if items is None else f"a {type(items).__name__}"
        raise RequestError(f"items is {got}; send a list of candidate objects, each with an \"id\" and the "
                           f"model's inputs", "items")
    if not items or len(items) > max_items:
        raise RequestError(f"items has {len(items)} candidates; a ranking takes 1 to {max_items} "
                           f"(serve.max_batch_rows)", "items")
    ids = [_item_id(item, i) for i, item in enumerate(items)]
    seen: dict[str, int] = {}
    for i, key in enumerate(str(x) for x in ids):
        if key in seen:
            raise RequestError(f"items[{i}].id {ids[i]!r} repeats items[{seen[key]}].id; each candidate has its "
                               f"own id", f"items[{i}].id")
        seen[key] = i
    return RankRequest(items, ids, _k(payload.get("k"), len(items)))


def _item_id(item: Any, i: int) -> Any:
    if not isinstance(item, Mapping):
        raise RequestError(f"items[{i}] is a {type(item).__name__}; each candidate is an object with an \"id\" "
                           f"and the model's inputs", f"items[{i}]")
    value = item.get("id")
    if not (type(value) is int or (type(value) is str and value)):
        raise RequestError(f"items[{i}].id is {value!r}; each candidate has an id, a non-empty string or an "
                           f"integer", f"items[{i}].id")
    return value


def _k(value: Any, n: int) -> int:
    if value is None:
        return n
    if type(value) is not int or value < 1:
        raise RequestError(f"k is {value!r}; it is the number of items to show, an integer >= 1 (absent: all)", "k")
    return min(value, n)


def rank(request: RankRequest, request_id: str, arms: Mapping[Optional[str], Loaded], predict: Predict) -> Ranked:
    """Every arm scores the items; one arm's ranking is the answer, two (challenger and champion) are
    interleaved."""
    columns, scores = {}, {}
    for arm, loaded in arms.items():
        frame = _frame(loaded.signature, request.items)
        columns[arm] = wire.input_columns(frame)
        scores[arm] = score(loaded, predict(loaded, frame))
    rankings = {arm: ranking(values) for arm, values in scores.items()}
    if set(arms) == {CHALLENGER, CHAMPION}:
        shown = interleaved(request_id, rankings[CHAMPION], rankings[CHALLENGER], request.k)
        placed: list[Optional[str]] = [TEAM_ARMS[team] for team in shown.teams]
        # Both arms rank the same items, so no team runs out before the list is full and every round
        # fills two positions (the last maybe one): even positions open their rounds.
        return Ranked(list(shown.items), placed, [p % 2 == 0 for p in range(len(placed))], dict(arms), scores,
                      columns)
    (arm, only), = rankings.items()
    return Ranked(only[: request.k], [arm] * request.k, None, dict(arms), scores, columns)


def _frame(signature: Signature, items: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The items' inputs as the version's frame; its errors name ``items[i]``, not ``inputs[i]``."""
    keep_id = any(s.name == "id" for s in signature.inputs)
    rows = [{k: v for k, v in item.items() if k != "id" or keep_id} for item in items]
    try:
        return wire.rows_frame(signature, rows, len(rows))
    except RequestError as exc:
        raise RequestError(str(exc).replace("inputs", "items", 1), exc.field.replace("inputs", "items", 1),
                           exc.status) from None


def score(loaded: Loaded, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """What a version ranks by: its ``score`` output, else its last class's probability."""
    given = outputs.get(SCORE)
    if given is not None and given.ndim == 1 and given.dtype.kind in "biuf":
        return given.astype(np.float64)
    probs = outputs.get("probs")
    if probs is not None and probs.ndim == 2 and probs.shape[1] >= 1 and probs.dtype.kind == "f":
        return probs[:, -1].astype(np.float64)
    raise RequestError(f"model {loaded.name} {loaded.version} ({loaded.model_class}) gives outputs {sorted(outputs)} "
                       f"and none ranks: /rank orders items by a `score` output (one number per item) or a "
                       f"classifier's class probabilities `probs` (the last class's)", "model")


def ranking(scores: np.ndarray) -> list[int]:
    """Item indices, highest score first; equal scores keep the request's order."""
    return [int(i) for i in np.argsort(-scores, kind="stable")]


def seed(request_id: str) -> int:
    """The interleaving coin's seed: a hash of the request id (any string, not only the server's hex)."""
    return int.from_bytes(hashlib.blake2b(request_id.encode(), digest_size=8).digest(), "big")


def interleaved(request_id: str, champion: Sequence[int], challenger: Sequence[int], k: int) -> Interleaving[int]:
    """The team draft of one request (team A the champion, B the challenger), reproducible from its id."""
    return team_draft(champion, challenger, np.random.default_rng(seed(request_id)), k=k)


def batches(ranked: Ranked, request: RankRequest, request_id: str, at: float, latency_ms: float,
            unit: Optional[str], experiment: Optional[int]) -> list[PredictionBatch]:
    """The answer's log rows: one batch per arm that placed items, each row at its shown position."""
    out = []
    ids = np.array([str(x) for x in request.ids], dtype=object)
    for arm, loaded in ranked.loaded.items():
        positions = np.array([p for p, placed in enumerate(ranked.arms) if placed == arm], dtype=np.int64)
        if not positions.size:
            continue
        index = np.array(ranked.order, dtype=np.int64)[positions]
        outputs = {ITEM: ids[index], SCORE: ranked.scores[arm][index]}
        if ranked.first is not None:
            outputs[FIRST] = np.array(ranked.first, dtype=bool)[positions]
        inputs = {name: values[index] for name, values in ranked.columns[arm].items()}
        out.append(PredictionBatch(request_id, at, loaded.name, loaded.version, Role.LIVE, latency_ms, inputs, outputs,
                                   unit, experiment, arm, positions=positions))
    return out


def body(ranked: Ranked, request: RankRequest, request_id: str) -> dict[str, Any]:
    """The answer: the shown ids, best first; per position the arm and version that placed it."""
    any_loaded = next(iter(ranked.loaded.values()))
    return {"request_id": request_id, "model": any_loaded.name, "items": [request.ids[i] for i in ranked.order],
            "teams": list(ranked.arms) if any(a is not None for a in ranked.arms) else None,
            "versions": [ranked.loaded[arm].version for arm in ranked.arms]}
