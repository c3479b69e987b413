"""The backtest's own settings (``backtest.*`` on the command line), the workload it replays (the
config's ``model:``/``datamodule:`` ``_target_``s and ``fit:``), its grid of cells, and the corrupted
periods it leaves out.

No torch here: the Slurm submit side imports it on the login node.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

import pandas as pd

from cl_hpc.config.ml import FitConf, fit_conf
from cl_hpc.errors import ConfigError
from cl_hpc.learn.contract import Target
from cl_hpc.learn.strategies import KINDS, StrategyConf

TRIGGER = "trigger"


@dataclass
class BacktestConf:
    """What to replay. Data and model come from the project's config groups (data=..., model=..., model.*=...,
    datamodule.*=..., fit.*=...)."""

    # the metric every window is scored on, and the trigger cadence judges; None = the model's primary
    # metric (accuracy for the bundled MLP, per-token loss for the GPT), compared in its own direction
    metric: Optional[str] = None
    # retrain every N windows (an int), or "trigger": when a trigger fires on the window just scored
    cadences: List[Any] = field(default_factory=lambda: [1, 2, 4, 8, TRIGGER])
    strategies: List[str] = field(default_factory=lambda: list(KINDS))  # stateless | stateful | hybrid
    # corrupted periods, never trained on: a partition index (5), an inclusive index range ("5-7"),
    # or a time range ("2026-01-01T05:00/2026-01-01T08:00": every partition overlapping [start, end))
    exclude: List[Any] = field(default_factory=list)
    # score the excluded windows too; off by default, since their labels are as suspect as their features
    score_excluded: bool = False
    tolerance: float = 0.01  # recommend the cheapest cell with mean accuracy >= best x (1 - tolerance)
    # StrategyConf fields but `kind` (hybrid_every_k, replay_fraction, fine_tune_epochs, fine_tune_lr_scale)
    strategy: Dict[str, Any] = field(default_factory=dict)
    # cl_hpc.learn.triggers.trigger_conf params for the "trigger" cadence. Time and volume are off:
    # the fixed cadences already cover "every N windows"
    triggers: Dict[str, Any] = field(default_factory=lambda: {"time": {"enabled": False},
                                                              "volume": {"enabled": False}})
    drift: Dict[str, Any] = field(default_factory=dict)  # cl_hpc.learn.drift.DriftConf params
    threads: int = 1  # torch threads per cell; a small MLP only loses from more (thread overhead)
    workers: int = 1  # local mode: cells run in this many processes at once (1 = in this process)
    slurm_mem_gb: float = 4.0  # --slurm: memory of each cell's job
    slurm_time_min: float = 60.0  # --slurm: time limit of each cell's job (and of the merge job)

    def __post_init__(self) -> None:
        problems = [p for p in (_cadence_problem(c) for c in self.cadences) if p]
        problems += [f"strategy {s!r} is not one of {list(KINDS)}" for s in self.strategies if s not in KINDS]
        if not self.cadences or not self.strategies:
            problems.append("cadences and strategies must each name at least one value")
        if not 0 <= self.tolerance < 1:
            problems.append(f"tolerance={self.tolerance} must be in [0, 1)")
        if self.threads < 1 or self.workers < 1:
            problems.append(f"threads={self.threads} and workers={self.workers} must be >= 1")
        if self.metric is not None and not (isinstance(self.metric, str) and self.metric.strip()):
            problems.append(f"metric={self.metric!r} must name a metric the model reports, or be null")
        if "kind" in self.strategy:
            problems.append("strategy.kind is set per cell by backtest.strategies; remove it")
        if problems:
            raise ConfigError("backtest: " + "; ".join(problems) + " (see cl_hpc/backtest/conf.py)")
        # bad strategy, trigger and drift params fail now, not in cell 7 on a compute node
        from cl_hpc.learn.drift import DriftConf
        from cl_hpc.learn.triggers import trigger_conf

        strategy_for(self, "hybrid")
        trigger_conf(self.triggers)
        try:
            DriftConf(**dict(self.drift))
        except TypeError as exc:
            raise ConfigError(f"backtest.drift: {exc}; the keys are cl_hpc.learn.drift.DriftConf's") from None


@dataclass(frozen=True)
class WorkloadConf:
    """What every cell trains: the model and data module ``_target_`` configs, and how to fit them."""

    model: Target
    datamodule: Target
    fit: FitConf

    def meta(self) -> dict[str, Any]:
        """As the config gave it: stored with every cell, checked again when merging."""
        return {"model": {"_target_": self.model.path, **self.model.args},
                "datamodule": {"_target_": self.datamodule.path, **self.datamodule.args},
                "fit": dataclasses.asdict(self.fit)}


def workload_conf(model: Optional[Mapping[str, Any]], datamodule: Optional[Mapping[str, Any]],
                  fit: Optional[Mapping[str, Any]] = None) -> WorkloadConf:
    """From the config's ``model:``, ``datamodule:`` and ``fit:`` (plain or OmegaConf mappings)."""
    return WorkloadConf(Target.from_config(model, "model"), Target.from_config(datamodule, "datamodule"),
                        fit_conf(fit))


def _cadence_problem(cadence: Any) -> Optional[str]:
    if cadence == TRIGGER or (isinstance(cadence, int) and not isinstance(cadence, bool) and cadence >= 1):
        return None
    return f"cadence {cadence!r} must be an integer >= 1 (retrain every N windows) or {TRIGGER!r}"


def strategy_for(conf: BacktestConf, kind: str) -> StrategyConf:
    known = {f.name for f in dataclasses.fields(StrategyConf)} - {"kind"}
    unknown = sorted(set(conf.strategy) - known)
    if unknown:
        raise ConfigError(f"backtest.strategy: unknown key(s) {unknown}; valid: {sorted(known)}")
    return StrategyConf(kind=kind, **dict(conf.strategy))


def backtest_conf(params: Optional[Mapping[str, Any]] = None) -> BacktestConf:
    """From a plain mapping (the JSON of a results file, or a test's dict)."""
    known = {f.name for f in dataclasses.fields(BacktestConf)}
    unknown = sorted(set(params or {}) - known)
    if unknown:
        raise ConfigError(f"unknown backtest key(s) {unknown}; valid: {sorted(known)}")
    return BacktestConf(**dict(params or {}))


@dataclass(frozen=True)
class Cell:
    """One element of the grid: a cadence and a strategy, replayed over the whole history."""

    index: int
    cadence: Optional[int]  # retrain every this many windows; None = trigger-driven
    strategy: str

    @property
    def name(self) -> str:
        return f"{f'every-{self.cadence}' if self.cadence else TRIGGER}/{self.strategy}"

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "name": self.name, "cadence": self.cadence or TRIGGER,
                "strategy": self.strategy}


def cells(conf: BacktestConf) -> list[Cell]:
    """Cadence-major, in the order given: cell i is element i of the Slurm job array."""
    grid = [(None if c == TRIGGER else int(c), s) for c in conf.cadences for s in conf.strategies]
    return [Cell(i, cadence, strategy) for i, (cadence, strategy) in enumerate(grid)]


# ---------------------------------------------------------------- corrupted periods


def excluded_partitions(exclude: Sequence[Any], starts: Sequence[pd.Timestamp]) -> set[int]:
    """The partition indices the ``exclude`` items name (see BacktestConf.exclude)."""
    out: set[int] = set()
    for item in exclude:
        out |= _one_item(item, starts)
    return out


def _one_item(item: Any, starts: Sequence[pd.Timestamp]) -> set[int]:
    text = str(item).strip()
    if "/" in text:
        return _time_range(text, starts)
    try:
        first, _, last = text.partition("-")
        lo, hi = int(first), int(last or first)
    except ValueError:
        raise ConfigError(f"backtest.exclude item {item!r} is not a partition index (5), an index range "
                          f"('5-7') or a time range ('2026-01-01T05:00/2026-01-01T08:00')") from None
    if not 0 <= lo <= hi < len(starts):
        raise ConfigError(f"backtest.exclude item {item!r}: partition indices run 0..{len(starts) - 1} "
                          f"(low before high)")
    return set(range(lo, hi + 1))


def _time_range(text: str, starts: Sequence[pd.Timestamp]) -> set[int]:
    try:
        begin, end = (pd.Timestamp(t) for t in text.split("/", 1))
    except ValueError as exc:
        raise ConfigError(f"backtest.exclude time range {text!r}: {exc}; use ISO 8601 START/END") from None
    if end <= begin:
        raise ConfigError(f"backtest.exclude time range {text!r} ends before it starts")
    ends = partition_ends(starts)
    # A partition that overlaps the period at all is suspect: corruption rarely starts on a boundary.
    return {i for i, (s, e) in enumerate(zip(starts, ends)) if s < end and e > begin}


def partition_ends(starts: Sequence[pd.Timestamp]) -> list[pd.Timestamp]:
    """Each partition ends where the next begins; the last one lasts as long as the one before it."""
    if len(starts) < 2:
        return [s + pd.Timedelta(hours=1) for s in starts]
    return [*starts[1:], starts[-1] + (starts[-1] - starts[-2])]
