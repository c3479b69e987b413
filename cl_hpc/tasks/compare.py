"""Task ``compare``: the champion/challenger gate on the newest labelled window nobody trained on.

The challenger (this run's ``train``) must beat the registry's champion on the eval window by the
configured margin with a significant test, must not forget the champion's own training rows (the
older part of the train window), and must hold up on configured slices (cl_hpc/learn/gate.py).
Before any champion it must beat the class-prior baseline. The verdict, every number and reason,
goes to ``verdict.json``; ``promote`` acts on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd
import torch

from cl_hpc.atomic import write_bytes_atomic
from cl_hpc.context import TaskContext
from cl_hpc.data.partitions import utc_naive
from cl_hpc.data.tables import load_times, load_xy
from cl_hpc.learn.checkpoint import load_checkpoint
from cl_hpc.learn.gate import Scored, decide, gate_conf
from cl_hpc.learn.metrics import accuracy
from cl_hpc.learn.nets import predict_proba
from cl_hpc.learn.strategies import to_model_scale
from cl_hpc.tasks._common import upstream

_TRAIN = ("checkpoint_path", "checkpoint_sha256")
_FEATS = ("eval_path", "train_path", "features", "label_col", "mean", "std", "timestamp_col", "classes",
          "train_class_counts")


def run(ctx: TaskContext, gate: Optional[Mapping[str, Any]] = None, registry: Optional[Mapping[str, Any]] = None,
        allow_label_space_change: bool = False) -> dict[str, Any]:
    """``allow_label_space_change``: judge a challenger whose features or classes differ from the
    champion's against the class-prior baseline; by default such a challenger fails the gate (one
    odd window must not silently replace the champion with a model of another label space)."""
    conf = gate_conf(gate)
    trained, feats = upstream(ctx, "train", _TRAIN), upstream(ctx, "features", _FEATS)
    challenger, chal_payload = load_checkpoint(Path(trained["checkpoint_path"]), trained["checkpoint_sha256"])
    x, y = load_xy(feats["eval_path"], list(feats["features"]), feats["label_col"])
    alias_at, champ, other = _champion(registry, feats)
    if other and not allow_label_space_change:
        return _refused(ctx, other, alias_at)
    new = Scored(y, _probs(challenger, chal_payload, x, feats), _probs(champ[1], champ[2], x, feats) if champ else None)
    previous = _previous(feats, challenger, chal_payload, champ)
    prior = np.asarray(feats["train_class_counts"], dtype=float)
    verdict = decide(conf, new, previous, prior=list(prior / prior.sum()))
    # "champion": where the alias pointed, whether or not it was scored (another label space): promote
    # moves the alias only from there. "scored_against": the champion the challenger was measured with.
    data = {**verdict.to_dict(), "champion": alias_at, "scored_against": champ[0] if champ else None}
    if other:  # allowed: say why a run with a champion was judged like a cold start
        data["reasons"] = [f"label space: {other}; allow_label_space_change=true: judged against the baseline "
                           f"instead", *data["reasons"]]
    write_bytes_atomic(ctx.task_dir / "verdict.json", json.dumps(data, indent=1, default=str).encode())
    ref_probs = new.champion
    return {"passed": verdict.passed, "reasons": data["reasons"], "champion": alias_at,
            "scored_against": data["scored_against"],
            "challenger_accuracy": accuracy(new.challenger, y),
            "champion_accuracy": accuracy(ref_probs, y) if ref_probs is not None else None,
            "verdict_path": str(ctx.task_dir / "verdict.json"), "eval_rows": int(len(y))}


def _probs(net: torch.nn.Module, payload: Mapping[str, Any], x: np.ndarray, feats: Mapping[str, Any]) -> np.ndarray:
    return predict_proba(net, torch.from_numpy(to_model_scale(x, feats["mean"], feats["std"], payload))).numpy()



def _refused(ctx: TaskContext, why: str, alias_at: Optional[str]) -> dict[str, Any]:
    reason = (f"label space: {why}; the challenger cannot be compared with the champion, so it is not promoted "
              f"(pipeline.tasks.compare.params.allow_label_space_change=true judges it against the baseline)")
    data = {"passed": False, "reasons": [reason], "champion": alias_at, "scored_against": None}
    write_bytes_atomic(ctx.task_dir / "verdict.json", json.dumps(data, indent=1).encode())
    return {**data, "challenger_accuracy": None, "champion_accuracy": None,
            "verdict_path": str(ctx.task_dir / "verdict.json"), "eval_rows": 0}


def _champion(registry: Optional[Mapping[str, Any]],
              feats: Mapping[str, Any]) -> tuple[Optional[str], Optional[tuple], Optional[str]]:
    """The version the alias points at (None at cold start); (version, net, payload, record) of the
    champion to score against, or None at cold start or when it cannot be compared; and why it
    cannot be compared (other features or classes), or None."""
    if not registry:
        return None, None, None
    from cl_hpc.registry.store import ModelRegistry
    from cl_hpc.tasks._registry import champion, registry_ref

    ref = registry_ref(registry)
    with ModelRegistry.open(ref.root) as reg:
        record = champion(reg, ref)
        if record is None:
            return None, None, None
        net, payload = reg.load_checkpoint(ref.name, record.version)  # checksum verified
    for what in ("features", "classes"):
        if list(payload[what]) != list(feats[what]):
            why = f"champion {record.version} has {what} {list(payload[what])}, this window {list(feats[what])}"
            return str(record.version), None, why
    return str(record.version), (str(record.version), net, payload, record), None


def _previous(feats: Mapping[str, Any], challenger: Any, chal_payload: Any, champ: Optional[tuple]) -> Optional[Scored]:
    """The forgetting guardrail's window: the train-window rows the champion itself trained on."""
    if champ is None or not champ[3].metrics.get("window_end"):
        return None
    times = load_times(feats["train_path"], feats["timestamp_col"])
    old = (times <= utc_naive(pd.Timestamp(champ[3].metrics["window_end"]))).to_numpy()
    if old.sum() < 50:
        return None
    x, y = load_xy(feats["train_path"], list(feats["features"]), feats["label_col"])
    return Scored(y[old], _probs(challenger, chal_payload, x[old], feats), _probs(champ[1], champ[2], x[old], feats))
