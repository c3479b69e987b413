"""Task ``train``: fit the classifier on the scaled train window with Lightning on CPU.

The checkpoint is a plain state_dict plus what serving needs (features, classes, scaling), saved
atomically and checksummed; ``evaluate`` refuses it if the checksum no longer matches.

With ``strategy`` and ``registry`` params (the continual pipeline) it also decides between a
stateless fit and a stateful fine-tune of the registry's champion (cl_hpc/learn/strategies.py):
a fine-tune starts from the champion's weights, trains on the rows the champion never saw plus a
replay sample of older ones, and carries the champion's feature statistics forward, merged with
the new rows'. Without them it is always a stateless fit (the default ``retrain`` pipeline).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd

from cl_hpc.atomic import read_json, write_json_atomic
from cl_hpc.config.ml import ModelConf, model_conf
from cl_hpc.context import TaskContext
from cl_hpc.data.partitions import utc_naive
from cl_hpc.data.tables import load_times, load_xy
from cl_hpc.learn.checkpoint import save_checkpoint
from cl_hpc.learn.strategies import Decision, Moments, decide, replay_sample, rescale, strategy_conf
from cl_hpc.learn.training import fit, slurm_world
from cl_hpc.tasks._common import cpus, upstream

_NEEDS = ("train_path", "features", "label_col", "classes", "mean", "std", "window_digest", "timestamp_col",
          "train_rows")
CHECKPOINT = "model.pt"


@dataclasses.dataclass
class _Inputs:
    """What one fit trains on, and where it starts from."""

    x: np.ndarray
    y: np.ndarray
    moments: Moments  # the feature statistics the model's inputs are scaled with
    decision: Decision
    init_state: Optional[dict[str, Any]] = None
    parent: Optional[str] = None
    window_end: Optional[str] = None  # the newest row it trained on
    new_rows: int = 0
    replay_rows: int = 0


def run(ctx: TaskContext, model: Optional[Mapping[str, Any]] = None, strategy: Optional[Mapping[str, Any]] = None,
        registry: Optional[Mapping[str, Any]] = None, drift_severe: bool = False) -> dict[str, Any]:
    """``model``: the model config group (``cl_hpc.config.ml.ModelConf``); ``strategy``/``registry``:
    see the module docstring; ``drift_severe``: set by cl_hpc.watch when the drift trigger says so."""
    conf = model_conf(model)
    feats = upstream(ctx, "features", _NEEDS)
    x, y = load_xy(feats["train_path"], list(feats["features"]), feats["label_col"])
    times = load_times(feats["train_path"], feats["timestamp_col"])
    resume = ctx.task_dir / f"resume-attempt{ctx.attempt}.ckpt"
    pin = ctx.task_dir / f"strategy-attempt{ctx.attempt}.json"
    # A requeued segment resumes the weights of its first segment: it must keep that segment's
    # decision (mode and parent), whatever the registry's champion has become meanwhile.
    pinned = read_json(pin) if resume.exists() else None
    inputs = _plan_inputs(x, y, times, feats, conf, strategy, registry, drift_severe, pinned)
    if pinned is None:
        write_json_atomic(pin, {"mode": inputs.decision.mode, "parent": inputs.parent,
                                "reason": inputs.decision.reason})
    if inputs.decision.mode == "stateful":
        strat = strategy_conf(strategy)
        conf = dataclasses.replace(conf, lr=conf.lr * strat.fine_tune_lr_scale,
                                   max_epochs=strat.fine_tune_epochs or conf.max_epochs)
    ctx.progress(0, None, f"{inputs.decision.mode} training on {len(inputs.y)} rows", force=True)
    result = fit(inputs.x, inputs.y, len(feats["classes"]), conf, ctx.task_dir, ctx.progress, threads=cpus(ctx),
                 resume_path=resume, profiler=ctx.profiler,
                 init_state=inputs.init_state)
    world = slurm_world()
    if int(os.environ.get("SLURM_PROCID", "0")) != 0:
        return {}  # a DDP worker: rank 0 alone writes the model and the outputs
    return _save(ctx, feats, inputs, result, world)


def _save(ctx: TaskContext, feats: Mapping[str, Any], inputs: _Inputs, result: Any,
          world: tuple[int, int]) -> dict[str, Any]:
    moments = inputs.moments
    meta = {key: feats[key] for key in ("features", "classes", "label_col", "window_digest")}
    meta.update(mean=list(moments.mean), std=list(moments.std), moments=moments.to_dict())
    path = ctx.task_dir / CHECKPOINT
    sha = save_checkpoint(path, result.module.net, result.module.net_hparams, meta)
    return {
        "checkpoint_path": str(path), "checkpoint_sha256": sha, "train_loss": result.train_loss,
        "train_accuracy": result.train_accuracy, "epoch_loss": result.epoch_loss,
        "epoch_accuracy": result.epoch_accuracy, "epochs": result.epochs, "steps": result.steps,
        "seconds": result.seconds, "n_params": result.n_params,
        "processes": world[0] * world[1],  # >1: DDP over Slurm tasks
        "train_rows": int(len(inputs.y)), "window_digest": feats["window_digest"],
        "strategy": inputs.decision.mode, "strategy_reason": inputs.decision.reason, "parent": inputs.parent,
        "window_end": inputs.window_end, "new_rows": inputs.new_rows, "replay_rows": inputs.replay_rows,
        "mean": list(moments.mean), "std": list(moments.std),
    }


def _plan_inputs(x: np.ndarray, y: np.ndarray, times: pd.Series, feats: Mapping[str, Any], conf: ModelConf,
                 strategy: Optional[Mapping[str, Any]], registry: Optional[Mapping[str, Any]],
                 drift_severe: bool, pinned: Optional[Mapping[str, Any]] = None) -> _Inputs:
    window = _window_moments(feats)
    end = str(times.max().isoformat()) if len(times) else None
    if strategy is None:
        return _Inputs(x, y, window, Decision("stateless", "no strategy configured"), window_end=end)
    from cl_hpc.registry.store import ModelRegistry
    from cl_hpc.tasks._registry import champion, fine_tune_block, registry_ref

    ref = registry_ref(registry)
    with ModelRegistry.open(ref.root) as reg:
        if pinned is not None:  # a requeued segment: the first segment's decision and parent
            decision = Decision(pinned["mode"], f"{pinned['reason']} (resumed after a requeue)")
            champ = reg.get(ref.name, pinned["parent"]) if pinned.get("parent") else None
        else:
            champ = champion(reg, ref)
            blocked = fine_tune_block(reg, champ) if champ is not None else None
            decision = decide(strategy_conf(strategy), str(champ.version) if champ else None,
                              champ.version.minor if champ else 0, drift_severe, blocked)
        if decision.mode == "stateless" or champ is None:
            return _Inputs(x, y, window, decision, window_end=end)
        _, payload = reg.load_checkpoint(ref.name, champ.version)  # checksum verified, weights_only
    mismatch = _incompatible(payload, feats, conf)
    if mismatch:
        return _Inputs(x, y, window, Decision("stateless", f"champion {champ.version} {mismatch}: retrain from "
                                                           f"scratch"), window_end=end)
    return _fine_tune_inputs(x, y, times, feats, payload, str(champ.version), champ.metrics, strategy_conf(strategy),
                             conf.seed, decision)


def _incompatible(payload: Mapping[str, Any], feats: Mapping[str, Any], conf: ModelConf) -> Optional[str]:
    """Why the champion's network cannot be fine-tuned on this window (None: it can): another feature
    list or label space (the features task takes both from the window), or another architecture."""
    if list(payload["features"]) != list(feats["features"]):
        return f"was trained on features {list(payload['features'])}, this window has {list(feats['features'])}"
    if list(payload["classes"]) != list(feats["classes"]):
        return f"predicts classes {list(payload['classes'])}, this window has {list(feats['classes'])}"
    net = payload.get("net", {})
    wanted = {"hidden": conf.hidden, "layers": conf.layers}
    if any(net.get(k) != v for k, v in wanted.items()):
        return f"has architecture {net}, the config asks for {wanted}"
    return None


def _fine_tune_inputs(x: np.ndarray, y: np.ndarray, times: pd.Series, feats: Mapping[str, Any],
                      payload: Mapping[str, Any], parent: str, metrics: Mapping[str, Any], strat: Any, seed: int,
                      decision: Decision) -> _Inputs:
    """The rows the champion never saw, a replay sample of the ones it did, on its feature scale."""
    seen_until = utc_naive(pd.Timestamp(metrics["window_end"])) if metrics.get("window_end") else None
    new = (times > seen_until).to_numpy() if seen_until is not None else np.ones(len(y), dtype=bool)
    if not new.any():
        why = f"no rows newer than champion {parent}'s window (ends {seen_until}): retrain from scratch"
        window = _window_moments(feats)
        return _Inputs(x, y, window, Decision("stateless", why), window_end=str(times.max().isoformat()))
    raw_new = x[new] * np.asarray(feats["std"]) + np.asarray(feats["mean"])
    merged = _parent_moments(payload, metrics).merge(_moments_of(raw_new))
    x_old, y_old = replay_sample(x[~new], y[~new], int(new.sum()), strat.replay_fraction, seed)
    xs = rescale(np.concatenate([x[new], x_old]), feats["mean"], feats["std"], merged.mean, merged.std)
    return _Inputs(xs, np.concatenate([y[new], y_old]), merged, decision, init_state=payload["state_dict"],
                   parent=parent, window_end=str(times[new].max().isoformat()), new_rows=int(new.sum()),
                   replay_rows=len(y_old))


def _window_moments(feats: Mapping[str, Any]) -> Moments:
    constant = [f in set(feats.get("constant") or ()) for f in feats["features"]]
    return Moments.from_std(feats["train_rows"], feats["mean"], feats["std"], constant)


def _parent_moments(payload: Mapping[str, Any], metrics: Mapping[str, Any]) -> Moments:
    if payload.get("moments"):
        return Moments.from_dict(payload["moments"])
    return Moments.from_std(float(metrics.get("train_rows", 0)), payload["mean"], payload["std"])


def _moments_of(raw: np.ndarray) -> Moments:
    raw = raw.astype(np.float64)
    mean = raw.mean(axis=0)
    return Moments(float(len(raw)), tuple(map(float, mean)), tuple(map(float, ((raw - mean) ** 2).sum(axis=0))))
