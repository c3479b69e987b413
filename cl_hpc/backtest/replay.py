"""The prequential engine: replay the history window by window (one window = one landing-zone
partition), as production would have lived it, for one cell (a cadence and a strategy).

The workload is any model meeting the contract (cl_hpc/learn/contract.py), built from the config's
``model:``/``datamodule:`` ``_target_``s and fitted with ``fit:``, on raw rows that its data module
preprocesses, exactly as the train task does. Every window is scored on one metric
(``backtest.metric``; null = the model's primary one) in its own direction, through the one scoring
path (cl_hpc/learn/monitor.py over cl_hpc/learn/scoring.py).

After a warm-up (the first model is trained from scratch on the first ``train_window`` usable
partitions), at each window s, oldest first:

1. score the serving model on window s. It was trained at the end of window ``trained_at`` < s, on
   partitions <= trained_at only: a model never sees the window it is scored on. Its *staleness*
   there is ``s - trained_at - 1`` windows (0 = trained on everything up to the window before);
2. decide whether to retrain, with what is known at the end of s: a fixed cadence N retrains once
   ``s - trained_at >= N``; the trigger cadence evaluates cl_hpc.learn.triggers on what cl_hpc.watch
   would gather then: every usable row since the model's training (windows trained_at+1 .. s) is
   labelled, so the performance trigger compares the metric over all of them with the metric at
   promotion, a river detector replays their 0/1 errors (where the model reports ``correct``), and
   the drift trigger compares their input columns with the rows the model last trained on. The
   metric at promotion is the model's metric on its own training rows: a prequential replay has no
   held-out window at promotion time (every later window is the future);
3. if so, train on data up to s, as ``decide()`` says (cl_hpc/learn/strategies.py): stateless = from
   scratch on the last ``train_window`` usable partitions (the data module fits its state on them);
   stateful = fine-tune the serving model on those of them it has not seen, plus a replay sample
   (``replay_index``) of the ones it has, through a data module that carries the serving model's
   state moved by the new rows (``update_state``), at ``fine_tune_lr_scale`` of the model's own
   optimizers (what cl_hpc/tasks/train.py does; a data module that cannot continue means a stateless
   retrain); hybrid = stateful, stateless every ``hybrid_every_k`` updates or on severe drift. The
   new model serves from window s+1.

Excluded (corrupted) partitions are never trained on, never replayed, never a drift reference, and
fire no trigger; a retrain due while only excluded partitions are new waits for a usable one.
Everything is seeded (the fit with fit.seed, the replay sample with fit.seed + s): the same inputs
give the same numbers, except the seconds.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pandas as pd

from cl_hpc.backtest.conf import BacktestConf, Cell, WorkloadConf, partition_ends, strategy_for
from cl_hpc.backtest.history import History
from cl_hpc.errors import ConfigError, DataError
from cl_hpc.learn.contract import CannotContinue, ContractError, Direction
from cl_hpc.learn.drift import DriftConf, detect_drift
from cl_hpc.learn.monitor import input_columns, resolve_metric, score_rows
from cl_hpc.learn.strategies import Decision, decide, replay_index
from cl_hpc.learn.triggers import TriggerResult, TriggerState, evaluate_triggers, fired, severe, trigger_conf

Progress = Callable[[int, int], None]  # (windows done, windows in all) of one cell

# keys of an evaluation record: a metric of the same name would overwrite one
_EVALUATION_KEYS = ("window", "start", "model", "trained_at", "staleness", "rows", "excluded", "scored", "note")


@dataclass
class Served:
    """The model in production, and what the triggers compare against."""

    workload: Any  # cl_hpc.learn.workload.Workload, fitted
    trained_at: int  # trained at the end of this window, on partitions <= it
    version: tuple[int, int]  # X.Y: stateless model X after Y stateful updates
    baseline: Optional[float]  # the metric at promotion (on its training rows): the performance trigger's level
    reference: pd.DataFrame  # raw rows it last trained on: the drift trigger's reference window
    train_rows: int

    @property
    def name(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"


@dataclass
class _Setup:
    history: History
    cell: Cell
    workload: WorkloadConf
    conf: BacktestConf
    train_window: int
    excluded: frozenset[int]
    root: Path  # Lightning's scratch folder


@dataclass
class _Plan:
    """What one fit trains: a workload ready to fit and its raw rows."""

    workload: Any  # cl_hpc.learn.workload.Workload, its data module's state set for these rows
    frame: pd.DataFrame
    new: list[int]  # partitions it has not seen before
    replayed: list[int] = field(default_factory=list)  # partitions the replay sample was drawn from
    replay_rows: int = 0


def run_cell(history: History, cell: Cell, workload: WorkloadConf, conf: BacktestConf, train_window: int,
             excluded: frozenset[int] = frozenset(), progress: Optional[Progress] = None) -> dict[str, Any]:
    """Replay one cell over the whole history; the result is plain JSON (see report.py)."""
    usable = _check(history, excluded, train_window)
    with tempfile.TemporaryDirectory(prefix="cl_hpc-backtest-") as root:
        replay = _Replay(_Setup(history, cell, workload, conf, train_window, excluded, Path(root)))
        first = usable[train_window - 1]
        served = replay.train(first, None, "warm-up", [], False)
        total = len(history) - first - 1
        for s in range(first + 1, len(history)):
            replay.score(served, s)
            if s < len(history) - 1:
                served = replay.maybe_retrain(served, s)
            if progress is not None:
                progress(s - first, total)
    return {"cell": cell.to_dict(), "metric": replay.metric, "direction": replay.direction.value,
            "first_window": first + 1, "excluded": sorted(excluded), "flops_per_row": replay.flops_per_row,
            "trainings": replay.trainings, "evaluations": replay.evaluations}


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


def scored_metric(workload: WorkloadConf, conf: BacktestConf) -> tuple[str, Direction]:
    """The metric the backtest scores (backtest.metric, else the model's primary one) and its direction;
    the trigger cadence judges the same one."""
    from cl_hpc.learn.workload import import_class

    cls = import_class(workload.model.path, "model")
    name, direction = resolve_metric(conf.metric, cls, "backtest.metric")
    asked = trigger_conf(conf.triggers).performance.metric
    if asked is not None and asked != name:
        raise ConfigError(f"backtest.triggers.performance.metric={asked!r}, but the backtest scores {name!r}: the "
                          f"trigger cadence judges the metric every window is scored on; set backtest.metric={asked}")
    if name in _EVALUATION_KEYS:
        raise ConfigError(f"backtest.metric={name!r} is also a field of the backtest's records {_EVALUATION_KEYS}; "
                          f"score another of the model's metrics")
    return name, direction


class _Replay:
    """One cell's state between windows: the records so far, and the FLOPs count of its architecture."""

    def __init__(self, setup: _Setup) -> None:
        self.s = setup
        self.trainings: list[dict[str, Any]] = []
        self.evaluations: list[dict[str, Any]] = []
        self.flops_per_row: Optional[float] = None
        self.ends = partition_ends(setup.history.starts)
        self.triggers = trigger_conf(setup.conf.triggers)
        self.drift = DriftConf(**dict(setup.conf.drift))
        self.strategy = strategy_for(setup.conf, setup.cell.strategy)
        self.metric, self.direction = scored_metric(setup.workload, setup.conf)

    # ---- scoring

    def score(self, served: Served, s: int) -> None:
        h, excluded = self.s.history, s in self.s.excluded
        scored = (not excluded or self.s.conf.score_excluded) and s not in h.unreadable
        value, note = None, None
        if scored:
            result = score_rows(served.workload, h.frames[s], self.metric)
            value, note = result.metric, result.note
        self.evaluations.append({
            "window": s, "start": h.starts[s].isoformat(), "model": served.name, "trained_at": served.trained_at,
            "staleness": s - served.trained_at - 1, self.metric: value, "rows": int(len(h.frames[s])),
            "excluded": excluded, "scored": scored, **({"note": note} if note else {})})

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
        training is labelled, so its metric and drift are judged over all of them, not window s alone."""
        h = self.s.history
        rows = h.rows(self._new_parts(served, s))
        drift = None
        if self.triggers.drift.enabled:
            columns = input_columns(served.workload.signature.to_dict()) or list(h.features)
            drift = detect_drift(served.reference[columns], rows[columns], features=columns, conf=self.drift)
        scores = score_rows(served.workload, rows, self.metric)
        return TriggerState(now=self.ends[s], last_trained_at=self.ends[served.trained_at],
                            train_rows=served.train_rows, new_rows=len(rows), metric_at_promotion=served.baseline,
                            metric_now=scores.metric, labelled_rows=scores.labelled, errors=scores.errors,
                            drift=drift, metric=self.metric, direction=self.direction)

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
        plan = None
        if served is not None and decision.mode == "stateful":
            try:
                plan = self._stateful_plan(window, served, self.s.workload.fit.seed + s)
            except CannotContinue as exc:
                decision = Decision("stateless", f"model {served.name} {exc}: retrain from scratch")
        if plan is None:
            plan = self._stateless_plan(window)
        new, fit = self._fit(plan, decision, s, served)
        self._record(plan, decision, new, fit, why, triggers)
        return new

    def _stateless_plan(self, window: list[int]) -> _Plan:
        import pytorch_lightning as pl

        from cl_hpc.learn.workload import Workload, data_from, model_for

        frame = self.s.history.rows(window)
        data = data_from(self.s.workload.datamodule)
        data.fit_state(frame)
        # Seeded before it is built: a fresh model's initial weights are part of the seed, not of
        # whatever the previous cell's fits left in torch's generator.
        pl.seed_everything(self.s.workload.fit.seed, workers=True, verbose=False)
        model, built = model_for(self.s.workload.model, data)
        return _Plan(Workload(model, data, built, self.s.workload.datamodule), frame, window)

    def _stateful_plan(self, window: list[int], served: Served, seed: int) -> _Plan:
        """The window's partitions the model has not seen, plus a replay sample of those it has, through
        the config's data module carrying the serving model's state moved by the new rows."""
        from cl_hpc.learn.workload import Workload, data_from, model_for

        h, targets = self.s.history, self.s.workload
        new = [i for i in window if i > served.trained_at]
        seen = [i for i in window if i <= served.trained_at]
        fresh, old = h.rows(new), h.rows(seen)
        data = data_from(targets.datamodule)
        data.load_state_dict(served.workload.datamodule.state_dict())
        data.update_state(fresh)
        try:
            model, built = model_for(targets.model, data)
            model.load_state_dict(served.workload.model.state_dict())
        except (ContractError, RuntimeError) as exc:  # the data now asks for another architecture
            raise CannotContinue(f"cannot take over its weights ({exc})") from None
        replay = old.iloc[replay_index(len(old), len(fresh), self.strategy.replay_fraction, seed)]
        frame = pd.concat([fresh, replay], ignore_index=True)
        return _Plan(Workload(model, data, built, targets.datamodule), frame, new, seen if len(replay) else [],
                     int(len(replay)))

    def _fit(self, plan: _Plan, decision: Decision, s: int, served: Optional[Served]) -> tuple[Served, Any]:
        from cl_hpc.learn.training import fit  # torch and Lightning: only once a cell runs
        from cl_hpc.learn.workload import check_batches

        stateful = decision.mode == "stateful" and served is not None
        check_batches(plan.workload, plan.frame)  # a data module that does not fit the model fails here
        result = fit(plan.workload, plan.frame, self.s.workload.fit, self.s.root, threads=self.s.conf.threads,
                     lr_scale=self.strategy.fine_tune_lr_scale if stateful else 1.0,
                     max_epochs=self.strategy.fine_tune_epochs if stateful else None)
        self._count_flops(plan)
        if stateful and served is not None:  # a fine-tune of the served model: X.(Y+1)
            version = (served.version[0], served.version[1] + 1)
        else:
            version = ((served.version[0] + 1) if served else 1, 0)
        baseline = score_rows(plan.workload, plan.frame, self.metric).metric  # in eval mode, after training
        return Served(plan.workload, s, version, baseline, plan.frame, len(plan.frame)), result

    def _count_flops(self, plan: _Plan) -> None:
        """FLOPs per training row, counted once: every cell trains one architecture on one feature set."""
        if self.flops_per_row is not None:
            return
        from cl_hpc.profile.flops import flops_per_step

        data = plan.workload.datamodule
        rows = max(1, min(len(plan.frame), int(getattr(data, "batch_size", len(plan.frame)))))
        batch = data.to_batch(plan.frame.iloc[:rows])  # (inputs, targets): what the loader yields
        self.flops_per_row = flops_per_step(plan.workload.model, batch, batch_size=rows).flops / rows

    def _record(self, plan: _Plan, decision: Decision, new: Served, fit: Any, why: str,
                triggers: list[dict[str, Any]]) -> None:
        rows_seen = len(plan.frame) * fit.epochs  # = steps x batch, the last short batch at its own size
        self.trainings.append({
            "version": new.name, "at": new.trained_at, "mode": decision.mode, "reason": decision.reason,
            "why": why, "triggers": triggers, "partitions": sorted({*plan.new, *plan.replayed}),
            "new_partitions": plan.new, "replay_partitions": plan.replayed, "rows": int(len(plan.frame)),
            "replay_rows": plan.replay_rows, "epochs": fit.epochs, "steps": fit.steps,
            "flops": float(rows_seen * (self.flops_per_row or 0.0)), "seconds": fit.seconds,
            f"train_{self.metric}": new.baseline})
