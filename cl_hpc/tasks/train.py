"""Task ``train``: fit any workload (``model:`` + ``datamodule:``, the model contract) on the train window.

The checkpoint records the model's class and init arguments, its weights, the data module's
class, arguments and preprocessing state, and the signature; it is saved atomically and
checksummed, and everything downstream refuses it if the checksum no longer matches.

With ``strategy`` and ``registry`` params (the continual pipeline) it also decides between a
stateless fit and a stateful fine-tune of the registry's champion (cl_hpc/learn/strategies.py):
a fine-tune starts from the champion's weights and preprocessing state, moves that state with the
rows the champion never saw (``update_state``), and trains on them plus a replay sample of older
ones, with the model's own optimizers at ``fine_tune_lr_scale``. Without them it is always a
stateless fit (the default ``retrain`` pipeline).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd
from pytorch_lightning import seed_everything

from cl_hpc.atomic import read_json, write_json_atomic
from cl_hpc.config.ml import fit_conf
from cl_hpc.context import TaskContext
from cl_hpc.data.partitions import utc_naive
from cl_hpc.data.tables import load_frame
from cl_hpc.learn.checkpoint import save_workload, workload_from
from cl_hpc.learn.contract import CannotContinue, ContractError, Target
from cl_hpc.learn.scoring import evaluate, place
from cl_hpc.learn.strategies import Decision, decide, replay_index, strategy_conf
from cl_hpc.learn.training import fit as fit_workload
from cl_hpc.learn.training import slurm_world
from cl_hpc.learn.workload import Workload, check_batches, data_from, model_for
from cl_hpc.tasks._common import cpus, gpus, upstream

_NEEDS = ("train_path", "timestamp_col", "digest")
CHECKPOINT = "model.pt"


@dataclasses.dataclass
class _Inputs:
    """What one fit trains on, what it starts from, and why."""

    frame: pd.DataFrame  # the raw rows to train on
    workload: Workload
    decision: Decision
    parent: Optional[str] = None
    window_end: Optional[str] = None  # the newest row it trained on
    new_rows: int = 0
    replay_rows: int = 0


def run(ctx: TaskContext, model: Optional[Mapping[str, Any]] = None, datamodule: Optional[Mapping[str, Any]] = None,
        fit: Optional[Mapping[str, Any]] = None, strategy: Optional[Mapping[str, Any]] = None,
        registry: Optional[Mapping[str, Any]] = None, drift_severe: bool = False) -> dict[str, Any]:
    """``model``/``datamodule``: ``_target_`` configs (conf/model/*.yaml); ``fit``: cl_hpc.config.ml.FitConf;
    ``strategy``/``registry``: see the module docstring; ``drift_severe``: set by cl_hpc.watch."""
    conf = fit_conf(fit)
    targets = Target.from_config(model, "model"), Target.from_config(datamodule, "datamodule")
    ingest = upstream(ctx, "ingest", _NEEDS)
    frame = load_frame(ingest["train_path"], ingest["timestamp_col"])
    resume = ctx.task_dir / f"resume-attempt{ctx.attempt}.ckpt"
    pin = ctx.task_dir / f"strategy-attempt{ctx.attempt}.json"
    # A requeued segment resumes the weights of its first segment: it must keep that segment's
    # decision (mode and parent), whatever the registry's champion has become meanwhile.
    pinned = read_json(pin) if resume.exists() else None
    # The model's initial weights are drawn when it is built, before fit seeds: seed here too, or two
    # runs of the same config train from different weights.
    seed_everything(conf.seed, workers=True, verbose=False)
    inputs = _plan_inputs(frame, ingest["timestamp_col"], targets, strategy, registry, drift_severe, conf.seed,
                          pinned)
    if pinned is None:
        write_json_atomic(pin, {"mode": inputs.decision.mode, "parent": inputs.parent,
                                "reason": inputs.decision.reason})
    check_batches(inputs.workload, inputs.frame)  # a misfit data module fails before a training step
    stateful = inputs.decision.mode == "stateful"
    strat = strategy_conf(strategy) if stateful else None
    ctx.progress(0, None, f"{inputs.decision.mode} training on {len(inputs.frame)} rows", force=True)
    result = fit_workload(inputs.workload, inputs.frame, conf, ctx.task_dir, ctx.progress, threads=cpus(ctx),
                          resume_path=resume, profiler=ctx.profiler, gpus=gpus(ctx),
                          lr_scale=strat.fine_tune_lr_scale if strat else 1.0,
                          max_epochs=strat.fine_tune_epochs if strat else None)
    world = slurm_world()
    if int(os.environ.get("SLURM_PROCID", "0")) != 0:
        return {}  # a DDP worker: rank 0 alone writes the model and the outputs
    return _save(ctx, ingest, inputs, result, world)


def _save(ctx: TaskContext, ingest: Mapping[str, Any], inputs: _Inputs, result: Any,
          world: tuple[int, int]) -> dict[str, Any]:
    workload = inputs.workload
    path = ctx.task_dir / CHECKPOINT
    sha = save_workload(path, workload, {"window_digest": ingest["digest"], "window_end": inputs.window_end})
    # in eval mode, after training; on the task's GPU if it has one (Lightning's teardown moved the
    # model back to the CPU, where a large model would score its own window slowly)
    trained_on = evaluate(place(workload, gpus(ctx)), inputs.frame).summary()
    return {
        "checkpoint_path": str(path), "checkpoint_sha256": sha, "model_class": workload.model_target.path,
        "init_args": workload.model_target.args, "datamodule_class": workload.data_target.path,
        "signature": workload.signature.to_dict(), "train_metrics": trained_on,
        "epoch_loss": result.epoch_loss, "epoch_accuracy": result.epoch_accuracy, "epochs": result.epochs,
        "steps": result.steps, "seconds": result.seconds, "n_params": result.n_params,
        "processes": world[0] * world[1],  # >1: DDP over Slurm tasks
        "train_rows": int(len(inputs.frame)), "window_digest": ingest["digest"],
        "strategy": inputs.decision.mode, "strategy_reason": inputs.decision.reason, "parent": inputs.parent,
        "window_end": inputs.window_end, "new_rows": inputs.new_rows, "replay_rows": inputs.replay_rows,
    }


def _plan_inputs(frame: pd.DataFrame, ts: str, targets: tuple[Target, Target], strategy: Optional[Mapping[str, Any]],
                 registry: Optional[Mapping[str, Any]], drift_severe: bool, seed: int = 0,
                 pinned: Optional[Mapping[str, Any]] = None) -> _Inputs:
    end = _newest(frame, ts)
    if strategy is None:
        return _stateless(frame, targets, Decision("stateless", "no strategy configured"), end)
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
            return _stateless(frame, targets, decision, end)
        payload = reg.load_payload(ref.name, champ.version)  # checksum verified, weights_only
    parent = str(champ.version)
    try:
        return _fine_tune_inputs(frame, ts, targets, payload, parent, champ.metrics, strategy_conf(strategy),
                                 decision, seed)
    except CannotContinue as exc:
        return _stateless(frame, targets, Decision("stateless", f"champion {parent} {exc}: retrain from scratch"), end)


def _stateless(frame: pd.DataFrame, targets: tuple[Target, Target], decision: Decision,
               end: Optional[str]) -> _Inputs:
    model_target, data_target = targets
    data = data_from(data_target)
    data.fit_state(frame)
    model, built = model_for(model_target, data)
    return _Inputs(frame, Workload(model, data, built, data_target), decision, window_end=end)


def _fine_tune_inputs(frame: pd.DataFrame, ts: str, targets: tuple[Target, Target], payload: Mapping[str, Any],
                      parent: str, metrics: Mapping[str, Any], strat: Any, decision: Decision,
                      seed: int) -> _Inputs:
    """The rows the champion never saw and a replay sample of those it did, through the config's data
    module carrying the champion's preprocessing state, and the config's model with its weights."""
    model_target, data_target = targets
    recorded = workload_from(payload, f"champion {parent}")
    for what, mine, theirs in (("model", model_target.path, recorded.model_target.path),
                               ("data module", data_target.path, recorded.data_target.path)):
        if mine != theirs:
            raise CannotContinue(f"is a {theirs} {what}, the config asks for {mine}")
    times = frame[ts]
    seen_until = utc_naive(pd.Timestamp(metrics["window_end"])) if metrics.get("window_end") else None
    new = (times > seen_until).to_numpy() if seen_until is not None else np.ones(len(frame), dtype=bool)
    if not new.any():
        raise CannotContinue(f"saw every row of this window (its window ends {seen_until})")
    data = data_from(data_target)
    data.load_state_dict(recorded.datamodule.state_dict())
    data.update_state(frame[new])
    try:
        model, built = model_for(model_target, data)
        model.load_state_dict(recorded.model.state_dict())
    except (ContractError, RuntimeError) as exc:  # another architecture in the config
        raise CannotContinue(f"has init arguments {recorded.model_target.args}, which the config's model cannot "
                             f"take over ({exc})") from None
    old = frame[~new]
    replay = old.iloc[replay_index(len(old), int(new.sum()), strat.replay_fraction, seed)]
    rows = pd.concat([frame[new], replay], ignore_index=True)
    return _Inputs(rows, Workload(model, data, built, data_target), decision, parent=parent,
                   window_end=_newest(frame[new], ts), new_rows=int(new.sum()), replay_rows=len(replay))


def _newest(frame: pd.DataFrame, ts: str) -> Optional[str]:
    return str(frame[ts].max().isoformat()) if len(frame) and ts in frame.columns else None
