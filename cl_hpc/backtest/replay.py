"""The prequential engine: replay the history window by window (one window = one landing-zone
partition), as production would have lived it, for one cell (a cadence and a strategy).

After a warm-up (the first model is trained from scratch on the first ``train_window`` usable
partitions), at each window s, oldest first:

1. score the serving model on window s. It was trained at the end of window ``trained_at`` < s, on
   partitions <= trained_at only: a model never sees the window it is scored on. Its *staleness*
   there is ``s - trained_at - 1`` windows (0 = trained on everything up to the window before);
2. decide whether to retrain, with what is known at the end of s: a fixed cadence N retrains once
   ``s - trained_at >= N``; the trigger cadence evaluates cl_hpc.learn.triggers on what cl_hpc.watch
   would gather then: every usable row since the model's training (windows trained_at+1 .. s) is
   labelled, so the performance trigger compares the accuracy over all of them with the accuracy at
   promotion, a river detector replays their 0/1 errors, and the drift trigger compares their
   features with the rows the model last trained on. The accuracy at promotion is the model's
   accuracy on its own training rows: a prequential replay has no held-out window at promotion
   time (every later window is the future);
3. if so, train on data up to s, as ``decide()`` says (cl_hpc/learn/strategies.py): stateless = from
   scratch on the last ``train_window`` usable partitions; stateful = fine-tune the serving model on
   those of them it has not seen, plus a replay sample of the ones it has, scaled with its feature
   moments merged with the new rows' (what cl_hpc/tasks/train.py does); hybrid = stateful, stateless
   every ``hybrid_every_k`` updates or on severe drift. The new model serves from window s+1.

Excluded (corrupted) partitions are never trained on, never replayed, never a drift reference, and
fire no trigger; a retrain due while only excluded partitions are new waits for a usable one.
Everything is seeded (the fit with model.seed, the replay sample with model.seed + s): the same
inputs give the same numbers, except the seconds.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from cl_hpc.backtest.conf import BacktestConf, Cell, partition_ends, strategy_for
from cl_hpc.backtest.history import History
from cl_hpc.config.ml import ModelConf
from cl_hpc.errors import DataError
from cl_hpc.learn.drift import DriftConf, detect_drift
from cl_hpc.learn.strategies import Decision, Moments, decide, replay_sample
from cl_hpc.learn.triggers import TriggerResult, TriggerState, evaluate_triggers, fired, severe, trigger_conf

Progress = Callable[[int, int], None]  # (windows done, windows in all) of one cell


@dataclass
class Served:
    """The model in production, and what the triggers compare against."""

    net: Any  # torch.nn.Module
    moments: Moments  # raw-feature statistics its inputs are scaled with
    trained_at: int  # trained at the end of this window, on partitions <= it
    version: tuple[int, int]  # X.Y: stateless model X after Y stateful updates
    baseline: float  # accuracy at promotion (on its training rows): the performance trigger's level
    reference: np.ndarray  # raw features it last trained on: the drift trigger's reference window
    train_rows: int
    errors: list[np.ndarray] = field(default_factory=list)  # 0/1 errors on each window served since

    @property
    def name(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"


@dataclass
class _Setup:
    history: History
    cell: Cell
    model: ModelConf
    conf: BacktestConf
    train_window: int
    excluded: frozenset[int]
    root: Path  # Lightning's scratch folder


def run_cell(history: History, cell: Cell, model: ModelConf, conf: BacktestConf, train_window: int,
             excluded: frozenset[int] = frozenset(), progress: Optional[Progress] = None) -> dict[str, Any]:
    """Replay one cell over the whole history; the result is plain JSON (see report.py)."""
    usable = _check(history, excluded, train_window)
    with tempfile.TemporaryDirectory(prefix="cl_hpc-backtest-") as root:
        replay = _Replay(_Setup(history, cell, model, conf, train_window, excluded, Path(root)))
        first = usable[train_window - 1]
        served = replay.train(first, None, "warm-up", [], False)
        total = len(history) - first - 1
        for s in range(first + 1, len(history)):
            replay.score(served, s)
            if s < len(history) - 1:
                served = replay.maybe_retrain(served, s)
            if progress is not None:
                progress(s - first, total)
    return {"cell": cell.to_dict(), "first_window": first + 1, "excluded": sorted(excluded),
            "flops_per_row": replay.flops_per_row, "trainings": replay.trainings,
            "evaluations": replay.evaluations}


def _check(history: History, excluded: frozenset[int], train_window: int) -> list[int]:
    unreadable = sorted(history.unreadable - excluded)
    if unreadable:
        names = [f"{i} ({history.files[i]})" for i in unreadable]
        raise DataError(f"partitions {names} hold null or infinite values; clean them, or leave them out "
                        f"with backtest.exclude=[{','.join(map(str, unreadable))}]")
    usable = [i for i in range(len(history)) if i not in excluded]
    if len(usable) < train_window + 1 or usable[train_window - 1] >= len(history) - 1:
        raise DataError(f"{len(usable)} usable partitions of {len(history)} ({len(excluded)} excluded): a "
                        f"backtest needs data.train_window={train_window} of them, then at least one to score")
    return usable


class _Replay:
    """One cell's state between windows: the records so far, and the FLOPs count per architecture."""

    def __init__(self, setup: _Setup) -> None:
        self.s = setup
        self.trainings: list[dict[str, Any]] = []
        self.evaluations: list[dict[str, Any]] = []
        self.flops_per_row: Optional[float] = None
        self.ends = partition_ends(setup.history.starts)
        self.triggers = trigger_conf(setup.conf.triggers)
        self.drift = DriftConf(**dict(setup.conf.drift))
        self.strategy = strategy_for(setup.conf, setup.cell.strategy)

    # ---- scoring

    def score(self, served: Served, s: int) -> None:
        h, excluded = self.s.history, s in self.s.excluded
        scored = (not excluded or self.s.conf.score_excluded) and s not in h.unreadable
        accuracy = None
        if scored:
            wrong = predict(served, h.x[s]) != h.y[s]
            accuracy = float(1.0 - wrong.mean())
            if not excluded:
                served.errors.append(wrong.astype(np.int64))
        self.evaluations.append({
            "window": s, "start": h.starts[s].isoformat(), "model": served.name, "trained_at": served.trained_at,
            "staleness": s - served.trained_at - 1, "accuracy": accuracy, "rows": int(len(h.y[s])),
            "excluded": excluded, "scored": scored})

    # ---- deciding

    def maybe_retrain(self, served: Served, s: int) -> Served:
        due = self._due(served, s)
        if due is None or not self._new_parts(served, s):
            return served  # nothing calls for it, or every partition since the last training is excluded
        why, results = due
        return self.train(s, served, why, [r.to_dict() for r in fired(results)], severe(results))

    def _due(self, served: Served, s: int) -> Optional[tuple[str, list[TriggerResult]]]:
        cadence, age = self.s.cell.cadence, s - served.trained_at
        if cadence is not None:
            return (f"every {cadence} window(s): {age} since the last training", []) if age >= cadence else None
        if s in self.s.excluded:
            return None  # a corrupted window must not fire a retrain
        results = evaluate_triggers(self.triggers, self._trigger_state(served, s))
        hits = fired(results)
        return (f"trigger: {', '.join(r.name for r in hits)}", results) if hits else None

    def _trigger_state(self, served: Served, s: int) -> TriggerState:
        """What cl_hpc.watch would gather at the end of window s: every usable row since the model's
        training is labelled, so its accuracy and drift are judged over all of them, not window s alone."""
        h, new = self.s.history, self._new_parts(served, s)
        drift = None
        if self.triggers.drift.enabled:
            drift = detect_drift(h.frame(served.reference), h.frame(h.rows(new)[0]), conf=self.drift)
        errors = np.concatenate(served.errors) if served.errors else np.zeros(0, dtype=np.int64)
        return TriggerState(now=self.ends[s], last_trained_at=self.ends[served.trained_at],
                            train_rows=served.train_rows, new_rows=int(sum(len(h.y[i]) for i in new)),
                            metric_at_promotion=served.baseline,
                            metric_now=float(1.0 - errors.mean()) if errors.size else None,
                            labelled_rows=int(errors.size), errors=errors, drift=drift)

    def _new_parts(self, served: Served, s: int) -> list[int]:
        return [i for i in range(served.trained_at + 1, s + 1) if i not in self.s.excluded]

    def _window(self, s: int) -> list[int]:
        """The last train_window usable partitions up to s: a stateless model's training set."""
        return [i for i in range(s + 1) if i not in self.s.excluded][-self.s.train_window:]

    # ---- training

    def train(self, s: int, served: Optional[Served], why: str, triggers: list[dict[str, Any]],
              drift_severe: bool) -> Served:
        window = self._window(s)
        decision = decide(self.strategy, served.name if served else None,
                          served.version[1] if served else 0, drift_severe)
        if served is None or decision.mode == "stateless":
            plan = _stateless_plan(self.s.history, window)
        else:
            plan = _stateful_plan(self.s.history, window, served, self.strategy.replay_fraction, self.s.model.seed + s)
        new, result = self._fit(plan, decision, s, served)
        self._record(plan, decision, new, result, why, triggers)
        return new

    def _fit(self, plan: "_Plan", decision: Decision, s: int, served: Optional[Served]) -> tuple[Served, Any]:
        from cl_hpc.learn.training import fit  # torch and Lightning: only once a cell runs

        conf, init = self.s.model, None
        if decision.mode == "stateful" and served is not None:
            conf = dataclasses.replace(conf, lr=conf.lr * self.strategy.fine_tune_lr_scale,
                                       max_epochs=self.strategy.fine_tune_epochs or conf.max_epochs)
            init = served.net.state_dict()
        x = scale(plan.x, plan.moments)
        result = fit(x, plan.y, len(self.s.history.classes), conf, self.s.root, threads=self.s.conf.threads,
                     init_state=init)
        self._count_flops(result.module, x, plan.y)
        if init is not None and served is not None:  # a fine-tune of the served model: X.(Y+1)
            version = (served.version[0], served.version[1] + 1)
        else:
            version = ((served.version[0] + 1) if served else 1, 0)
        return Served(result.module.net, plan.moments, s, version, result.train_accuracy, plan.x, len(plan.y)), result

    def _count_flops(self, module: Any, x: np.ndarray, y: np.ndarray) -> None:
        """FLOPs per training row, counted once: every cell trains one architecture on one feature set."""
        if self.flops_per_row is not None:
            return
        import torch

        from cl_hpc.profile.flops import flops_per_step

        rows = min(len(y), self.s.model.batch_size)
        batch = (torch.from_numpy(x[:rows]), torch.from_numpy(y[:rows]))
        self.flops_per_row = flops_per_step(module, batch, batch_size=rows).flops / rows

    def _record(self, plan: "_Plan", decision: Decision, new: Served, fit: Any, why: str,
                triggers: list[dict[str, Any]]) -> None:
        rows_seen = len(plan.y) * fit.epochs  # = steps x batch, the last short batch at its own size
        self.trainings.append({
            "version": new.name, "at": new.trained_at, "mode": decision.mode, "reason": decision.reason,
            "why": why, "triggers": triggers, "partitions": sorted({*plan.new, *plan.replayed}),
            "new_partitions": plan.new, "replay_partitions": plan.replayed, "rows": int(len(plan.y)),
            "replay_rows": plan.replay_rows, "epochs": fit.epochs, "steps": fit.steps,
            "flops": float(rows_seen * (self.flops_per_row or 0.0)), "seconds": fit.seconds,
            "train_accuracy": fit.train_accuracy})


@dataclass
class _Plan:
    """What one fit trains on."""

    x: np.ndarray  # raw features
    y: np.ndarray
    moments: Moments  # the scaling the model will carry
    new: list[int]  # partitions it has not seen before
    replayed: list[int] = field(default_factory=list)  # partitions the replay sample was drawn from
    replay_rows: int = 0


def _stateless_plan(history: History, window: list[int]) -> _Plan:
    x, y = history.rows(window)
    return _Plan(x, y, moments_of(x), window)


def _stateful_plan(history: History, window: list[int], served: Served, fraction: float, seed: int) -> _Plan:
    new = [i for i in window if i > served.trained_at]
    seen = [i for i in window if i <= served.trained_at]
    x_new, y_new = history.rows(new)
    x_old, y_old = replay_sample(*history.rows(seen), len(y_new), fraction, seed)
    merged = served.moments.merge(moments_of(x_new))
    return _Plan(np.concatenate([x_new, x_old]), np.concatenate([y_new, y_old]), merged, new,
                 seen if len(y_old) else [], int(len(y_old)))


def moments_of(raw: np.ndarray) -> Moments:
    mean = raw.mean(axis=0)
    return Moments(float(len(raw)), tuple(map(float, mean)), tuple(map(float, ((raw - mean) ** 2).sum(axis=0))))


def scale(raw: np.ndarray, moments: Moments) -> np.ndarray:
    return ((raw - np.asarray(moments.mean)) / np.asarray(moments.std)).astype(np.float32)


def predict(served: Served, raw: np.ndarray) -> np.ndarray:
    import torch

    from cl_hpc.learn.nets import predict_proba

    return predict_proba(served.net, torch.from_numpy(scale(raw, served.moments))).numpy().argmax(axis=1)
