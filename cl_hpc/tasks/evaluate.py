"""Task ``evaluate``: score the trained checkpoint on the held-out eval window.

The checkpoint's sha256 must match what ``train`` recorded before it is loaded (with
``weights_only=True``). The features must match the ones the eval table was scaled with. Torch
alone is imported, not Lightning, to keep this process's start-up short.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch

from cl_hpc.config.ml import data_conf, model_conf
from cl_hpc.context import TaskContext
from cl_hpc.data.tables import load_xy
from cl_hpc.errors import DataError
from cl_hpc.learn.checkpoint import load_checkpoint
from cl_hpc.learn.metrics import accuracy, classification_metrics
from cl_hpc.learn.nets import predict_proba
from cl_hpc.learn.strategies import to_model_scale
from cl_hpc.tasks._common import cpus, upstream

_TRAIN_NEEDS = ("checkpoint_path", "checkpoint_sha256")
_FEATURE_NEEDS = ("eval_path", "features", "label_col", "classes", "train_class_counts", "mean", "std")


def run(ctx: TaskContext, model: Optional[Mapping[str, Any]] = None,
        data: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """``model`` / ``data``: the config groups as dicts; checked, and part of this task's params so a
    change to either re-runs it. The checkpoint and the eval table come from ``train`` and ``features``."""
    model_conf(model)
    data_conf(data)
    trained = upstream(ctx, "train", _TRAIN_NEEDS)
    feats = upstream(ctx, "features", _FEATURE_NEEDS)
    threads = cpus(ctx)
    if threads:
        torch.set_num_threads(threads)
    path = Path(trained["checkpoint_path"])
    net, payload = load_checkpoint(path, trained["checkpoint_sha256"])
    if list(payload["features"]) != list(feats["features"]):
        raise DataError(f"checkpoint {path} was trained on features {payload['features']}, but the eval table "
                        f"{feats['eval_path']} has {feats['features']}; re-run train after features")
    x, y = load_xy(feats["eval_path"], list(feats["features"]), feats["label_col"])
    x = to_model_scale(x, feats["mean"], feats["std"], payload)
    probs = predict_proba(net, torch.from_numpy(x)).numpy()
    metrics = classification_metrics(probs, y)
    return {**metrics, "baseline_accuracy": _majority_accuracy(feats["train_class_counts"], probs, y),
            "classes": feats["classes"], "checkpoint_path": str(path),
            "checkpoint_sha256": trained["checkpoint_sha256"], "eval_path": feats["eval_path"]}


def _majority_accuracy(train_counts: list[int], probs: np.ndarray, y: np.ndarray) -> float:
    """Accuracy of always predicting the train window's most common class: the bar to beat."""
    majority = np.zeros_like(probs)
    majority[:, int(np.argmax(train_counts))] = 1.0
    return accuracy(majority, y)
