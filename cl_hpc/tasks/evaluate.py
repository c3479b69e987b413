"""Task ``evaluate``: score the trained checkpoint on the held-out eval window, through the model
contract (the same code path the gate, the watch and the server use).

The checkpoint's sha256 must match what ``train`` recorded before it is loaded (with
``weights_only=True``); the recorded classes are rebuilt from their recorded init arguments, and
the eval rows are preprocessed with the data module's recorded state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch

from cl_hpc.config.ml import data_conf
from cl_hpc.context import TaskContext
from cl_hpc.data.tables import load_frame
from cl_hpc.learn.checkpoint import load_workload
from cl_hpc.learn.contract import Evaluation
from cl_hpc.learn.scoring import evaluate, place
from cl_hpc.tasks._common import cpus, gpus, upstream

_TRAIN_NEEDS = ("checkpoint_path", "checkpoint_sha256")
_INGEST_NEEDS = ("eval_path", "timestamp_col")


def run(ctx: TaskContext, data: Optional[Mapping[str, Any]] = None, model: Optional[Mapping[str, Any]] = None,
        datamodule: Optional[Mapping[str, Any]] = None, fit: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """``data``: the data config group, checked. ``model``/``datamodule``/``fit``: part of this task's params
    only so that a change to them re-runs it (the checkpoint says what to load)."""
    data_conf(data)
    trained = upstream(ctx, "train", _TRAIN_NEEDS)
    ingest = upstream(ctx, "ingest", _INGEST_NEEDS)
    threads = cpus(ctx)
    if threads:
        torch.set_num_threads(threads)
    path = Path(trained["checkpoint_path"])
    loaded = place(load_workload(path, trained["checkpoint_sha256"]), gpus(ctx))
    scores = evaluate(loaded, load_frame(ingest["eval_path"], ingest["timestamp_col"]))
    return {**scores.summary(), **_baseline(scores), "model_class": loaded.model_target.path,
            "checkpoint_path": str(path), "checkpoint_sha256": trained["checkpoint_sha256"],
            "eval_path": ingest["eval_path"]}


def _baseline(scores: Evaluation) -> dict[str, Any]:
    """The data module's trivial predictor on the same rows (the bar to beat): ``baseline_<metric>``."""
    return {f"baseline_{name}": float(np.mean(values)) for name, values in scores.baseline.items()
            if name in scores.metrics and len(values)}
