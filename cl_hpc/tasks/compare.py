"""Task ``compare``: the champion/challenger gate on the newest labelled window nobody trained on.

Any workload: both models are scored through the model contract (cl_hpc/learn/scoring.py) on the
eval window's raw rows, each with its own recorded preprocessing state. The challenger must beat
the registry's champion on the gate's metric (which the model must report, in its own direction)
by the configured margin with a significant test, must not forget the champion's own training rows
(the older part of the train window), and must hold up on configured slices (cl_hpc/learn/gate.py).
Before any champion it must beat the data module's trivial predictor where it defines one.

A challenger whose signature differs from the champion's (other inputs or outputs), or whose
window the champion cannot score (labels it never saw), or where either cannot score the champion's
own training rows (the forgetting check), is not comparable: it fails the gate
unless ``allow_signature_change`` (then it is judged like a cold start). The verdict, every number
and reason, goes to ``verdict.json``; ``promote`` acts on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional

import pandas as pd

from cl_hpc.atomic import write_bytes_atomic
from cl_hpc.context import TaskContext
from cl_hpc.data.partitions import utc_naive
from cl_hpc.data.tables import load_frame
from cl_hpc.learn.checkpoint import load_workload
from cl_hpc.learn.contract import Evaluation, require_metric, with_primary_metric
from cl_hpc.learn.gate import decide_evaluations, gate_conf
from cl_hpc.learn.scoring import evaluate, place
from cl_hpc.learn.workload import Workload
from cl_hpc.tasks._common import gpus, upstream

_TRAIN = ("checkpoint_path", "checkpoint_sha256")
_INGEST = ("eval_path", "train_path", "timestamp_col")
_MIN_PREVIOUS_ROWS = 50  # fewer of the champion's own rows than this: the forgetting check is skipped


def run(ctx: TaskContext, gate: Optional[Mapping[str, Any]] = None, registry: Optional[Mapping[str, Any]] = None,
        allow_signature_change: bool = False, allow_label_space_change: Optional[bool] = None) -> dict[str, Any]:
    """``allow_signature_change``: judge a challenger that is not comparable with the champion (another
    signature, or labels the champion never saw) against the baseline; by default it fails the gate
    (one odd window must not silently replace the champion with a model of another kind).
    ``allow_label_space_change``: the older name of the same switch."""
    allow = allow_signature_change or bool(allow_label_space_change)
    trained, ingest = upstream(ctx, "train", _TRAIN), upstream(ctx, "ingest", _INGEST)
    challenger = place(load_workload(Path(trained["checkpoint_path"]), trained["checkpoint_sha256"]), gpus(ctx))
    conf = gate_conf(with_primary_metric(gate, challenger.model))
    direction = require_metric(challenger.model, conf.metric, "compare (pipeline.tasks.compare.params.gate.metric)")
    frame = load_frame(ingest["eval_path"], ingest["timestamp_col"])
    alias_at, champ, why_not = _champion(registry, challenger, frame, gpus(ctx))
    previous, why_not = _previous(ingest, challenger, champ) if champ else (None, why_not)
    if why_not and not allow:
        return _refused(ctx, why_not, alias_at)
    champ = None if why_not else champ  # allowed: judged like a cold start, as when the window cannot be scored
    new = evaluate(challenger, frame)
    reference = champ[2] if champ else None
    slices = {column: frame[column].to_numpy() for column in conf.slices if column in frame.columns}
    verdict = decide_evaluations(conf, direction, new, reference, previous, slices)
    # "champion": where the alias pointed, whether or not it was scored (not comparable): promote
    # moves the alias only from there. "scored_against": the champion the challenger was measured with.
    data = {**verdict.to_dict(), "champion": alias_at, "scored_against": champ[0] if champ else None}
    if why_not:  # allowed: say why a run with a champion was judged like a cold start
        data["reasons"] = [f"not comparable: {why_not}; allow_signature_change=true: judged against the baseline "
                           f"instead", *data["reasons"]]
    write_bytes_atomic(ctx.task_dir / "verdict.json", json.dumps(data, indent=1, default=str).encode())
    return {"passed": verdict.passed, "reasons": data["reasons"], "champion": alias_at,
            "scored_against": data["scored_against"], "metric": conf.metric, "direction": direction.value,
            "challenger_metrics": new.summary(), "champion_metrics": reference.summary() if reference else None,
            "verdict_path": str(ctx.task_dir / "verdict.json"), "eval_rows": new.rows}


def _refused(ctx: TaskContext, why: str, alias_at: Optional[str]) -> dict[str, Any]:
    reason = (f"not comparable: {why}; the challenger cannot be compared with the champion, so it is not "
              f"promoted (pipeline.tasks.compare.params.allow_signature_change=true judges it against the baseline)")
    data = {"passed": False, "reasons": [reason], "champion": alias_at, "scored_against": None}
    write_bytes_atomic(ctx.task_dir / "verdict.json", json.dumps(data, indent=1).encode())
    return {**data, "metric": None, "direction": None, "challenger_metrics": None, "champion_metrics": None,
            "verdict_path": str(ctx.task_dir / "verdict.json"), "eval_rows": 0}


_Champion = tuple[str, Workload, Evaluation, Any]  # version, workload, its eval-window scores, registry record


def _champion(registry: Optional[Mapping[str, Any]], challenger: Workload, frame: pd.DataFrame,
              gpus: int = 0) -> tuple[Optional[str], Optional[_Champion], Optional[str]]:
    """Where the alias points (None at a cold start); (version, workload, its eval-window scores,
    record) of the champion to score against, or None at a cold start or when it is not comparable;
    and why it is not comparable, or None."""
    if not registry:
        return None, None, None
    from cl_hpc.registry.store import ModelRegistry
    from cl_hpc.tasks._registry import champion, registry_ref

    ref = registry_ref(registry)
    with ModelRegistry.open(ref.root) as reg:
        record = champion(reg, ref)
        if record is None:
            return None, None, None
        loaded = place(reg.load_model(ref.name, record.version), gpus)  # checksum verified
    version = str(record.version)
    differences = loaded.signature.differences(challenger.signature)
    if differences:
        return version, None, f"champion {version}'s signature differs from the challenger's: {'; '.join(differences)}"
    try:
        scores = evaluate(loaded, frame)
    except Exception as exc:  # user code too: e.g. labels it never saw, so it cannot score this window
        return version, None, f"champion {version} cannot score the eval window: {type(exc).__name__}: {exc}"
    return version, (version, loaded, scores, record), None


def _previous(ingest: Mapping[str, Any], challenger: Workload,
              champ: _Champion) -> tuple[Optional[tuple[Evaluation, Evaluation]], Optional[str]]:
    """The forgetting guardrail's window: (the challenger's and the champion's scores on the
    train-window rows the champion itself trained on, or None to skip the check; why the two are
    not comparable there, or None). Scored under the same guard as the eval window: a label one of
    them never saw makes them not comparable, not a crash."""
    if not champ[3].metrics.get("window_end"):
        return None, None
    frame = load_frame(ingest["train_path"], ingest["timestamp_col"])
    old = frame[frame[ingest["timestamp_col"]] <= utc_naive(pd.Timestamp(champ[3].metrics["window_end"]))]
    if len(old) < _MIN_PREVIOUS_ROWS:
        return None, None
    scores = []
    for who, workload in (("the challenger", challenger), (f"champion {champ[0]}", champ[1])):
        try:
            scores.append(evaluate(workload, old))
        except Exception as exc:  # user code too: e.g. labels it never saw
            return None, (f"{who} cannot score the {len(old)} train-window rows champion {champ[0]} trained on "
                          f"(the forgetting check): {type(exc).__name__}: {exc}")
    return (scores[0], scores[1]), None

