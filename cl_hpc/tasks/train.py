"""Task ``train``: fit the classifier on the scaled train window with Lightning on CPU.

The checkpoint is a plain state_dict plus what serving needs (features, classes, scaling), saved
atomically and checksummed; ``evaluate`` refuses it if the checksum no longer matches.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

from cl_hpc.config.ml import model_conf
from cl_hpc.context import TaskContext
from cl_hpc.data.tables import load_xy
from cl_hpc.learn.checkpoint import save_checkpoint
from cl_hpc.learn.training import fit, slurm_world
from cl_hpc.tasks._common import cpus, upstream

_NEEDS = ("train_path", "features", "label_col", "classes", "mean", "std", "window_digest")
CHECKPOINT = "model.pt"


def run(ctx: TaskContext, model: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """``model``: the model config group as a dict (``cl_hpc.config.ml.ModelConf``; None = defaults)."""
    conf = model_conf(model)
    feats = upstream(ctx, "features", _NEEDS)
    x, y = load_xy(feats["train_path"], list(feats["features"]), feats["label_col"])
    ctx.progress(0, None, f"training on {len(y)} rows", force=True)
    result = fit(x, y, len(feats["classes"]), conf, ctx.task_dir, ctx.progress, threads=cpus(ctx),
                 resume_path=ctx.task_dir / f"resume-attempt{ctx.attempt}.ckpt", profiler=ctx.profiler)
    world = slurm_world()
    if int(os.environ.get("SLURM_PROCID", "0")) != 0:
        return {}  # a DDP worker: rank 0 alone writes the model and the outputs
    meta = {key: feats[key] for key in ("features", "classes", "mean", "std", "label_col", "window_digest")}
    path = ctx.task_dir / CHECKPOINT
    sha = save_checkpoint(path, result.module.net, result.module.net_hparams, meta)
    return {
        "checkpoint_path": str(path),
        "checkpoint_sha256": sha,
        "train_loss": result.train_loss,
        "train_accuracy": result.train_accuracy,
        "epoch_loss": result.epoch_loss,
        "epoch_accuracy": result.epoch_accuracy,
        "epochs": result.epochs,
        "steps": result.steps,
        "seconds": result.seconds,
        "n_params": result.n_params,
        "processes": world[0] * world[1],  # >1: DDP over Slurm tasks
        "train_rows": int(len(y)),
        "window_digest": feats["window_digest"],
    }
