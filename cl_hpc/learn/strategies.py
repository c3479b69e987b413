"""Retraining strategies: stateless (from scratch), stateful (fine-tune the champion on new data), and
hybrid (stateful by default, stateless every K updates or when drift is severe). Pure decisions plus
the feature statistics that a stateful model carries forward.

Feature statistics: a stateful update keeps the scaling its parent was trained with and moves it
with the new data, by merging (count, mean, M2) moments (Chan et al.'s parallel update), so the
fine-tuned network sees inputs on the scale it learned, and the statistics are versioned with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from cl_hpc.errors import ConfigError

KINDS = ("stateless", "stateful", "hybrid")


@dataclass(frozen=True)
class StrategyConf:
    kind: str = "hybrid"  # stateless | stateful | hybrid
    hybrid_every_k: int = 4  # hybrid: a stateless retrain after this many stateful updates in a row
    replay_fraction: float = 0.2  # stateful: rows of older data mixed in, as a share of the new rows
    fine_tune_epochs: Optional[int] = None  # stateful: epochs over the new data; None = fit.max_epochs
    # stateful: learning rate x this. Lower keeps closer to the parent, but after an abrupt concept
    # change 0.3 adapted too little in the backtests (scripts/bench_continual.py): the default is 1.
    fine_tune_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        problems = []
        if self.kind not in KINDS:
            problems.append(f"kind={self.kind!r} is not one of {', '.join(KINDS)}")
        if self.hybrid_every_k < 1:
            problems.append(f"hybrid_every_k={self.hybrid_every_k} must be >= 1")
        if not 0 <= self.replay_fraction <= 10:
            problems.append(f"replay_fraction={self.replay_fraction} must be in [0, 10]")
        if not 0 < self.fine_tune_lr_scale <= 1:
            problems.append(f"fine_tune_lr_scale={self.fine_tune_lr_scale} must be in (0, 1]")
        if problems:
            raise ConfigError("strategy: " + "; ".join(problems) + " (conf/pipeline/continual.yaml, train params)")


def strategy_conf(params: Optional[Mapping[str, Any]]) -> StrategyConf:
    known = StrategyConf.__dataclass_fields__
    unknown = sorted(set(params or {}) - set(known))
    if unknown:
        raise ConfigError(f"strategy: unknown key(s) {unknown}; valid: {', '.join(known)}")
    return StrategyConf(**dict(params or {}))


@dataclass(frozen=True)
class Decision:
    mode: str  # "stateless" or "stateful": what this run does
    reason: str


def decide(conf: StrategyConf, champion: Optional[str], updates_since_stateless: int, drift_severe: bool,
           fine_tune_block: Optional[str] = None) -> Decision:
    """What the next training run does. ``champion``: its version, or None (cold start)."""
    if champion is None:
        return Decision("stateless", "no champion yet: the first model is trained from scratch")
    if conf.kind == "stateless":
        return Decision("stateless", "strategy stateless")
    if fine_tune_block:
        return Decision("stateless", f"champion {champion} cannot be fine-tuned ({fine_tune_block}): retrain")
    if conf.kind == "stateful":
        return Decision("stateful", f"strategy stateful: fine-tune champion {champion}")
    if drift_severe:
        return Decision("stateless", f"hybrid: severe drift, retrain from scratch instead of fine-tuning {champion}")
    if updates_since_stateless >= conf.hybrid_every_k:
        return Decision("stateless", f"hybrid: {updates_since_stateless} stateful updates since the last "
                                     f"stateless model (every {conf.hybrid_every_k}): retrain from scratch")
    return Decision("stateful", f"hybrid: fine-tune champion {champion} "
                                f"(update {updates_since_stateless + 1} of {conf.hybrid_every_k})")


# ---------------------------------------------------------------- feature statistics

@dataclass(frozen=True)
class Moments:
    """Per-feature count, mean and M2 (sum of squared deviations): mergeable without the data."""

    count: float
    mean: tuple[float, ...]
    m2: tuple[float, ...]

    @classmethod
    def from_std(cls, count: float, mean: Sequence[float], std: Sequence[float],
                 constant: Sequence[bool] = ()) -> "Moments":
        """From a sample mean and (n-1) standard deviation, as the features task computes them.
        ``constant``: features the task found constant (it stores std 1.0 for them, to centre
        without dividing by zero); their true spread, 0, is what merges forward."""
        m2 = np.square(np.asarray(std, dtype=float)) * max(count - 1, 0)
        if len(constant):
            m2 = np.where(np.asarray(constant, dtype=bool), 0.0, m2)
        return cls(float(count), tuple(map(float, mean)), tuple(map(float, m2)))

    def merge(self, other: "Moments") -> "Moments":
        n = self.count + other.count
        if n == 0:
            return self
        a_mean, b_mean = np.asarray(self.mean), np.asarray(other.mean)
        delta = b_mean - a_mean
        mean = a_mean + delta * other.count / n
        m2 = np.asarray(self.m2) + np.asarray(other.m2) + delta ** 2 * self.count * other.count / n
        return Moments(n, tuple(map(float, mean)), tuple(map(float, m2)))

    @property
    def std(self) -> tuple[float, ...]:
        var = np.asarray(self.m2) / max(self.count - 1, 1)
        return tuple(float(s) if s > 0 else 1.0 for s in np.sqrt(var))  # constant: centre, never divide by 0

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "mean": list(self.mean), "m2": list(self.m2)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Moments":
        return cls(float(data["count"]), tuple(data["mean"]), tuple(data["m2"]))


def replay_index(n_old: int, n_new: int, fraction: float, seed: int) -> np.ndarray:
    """Positions of a seeded uniform sample of ``n_old`` older rows, ``fraction`` x the new rows (at
    most all of them), in their original order: mixed into a fine-tune, it keeps the model from
    forgetting what it knew. The data module turns them into batches like any other rows."""
    n = min(n_old, int(round(n_new * fraction)))
    idx = np.random.default_rng(seed).choice(n_old, size=n, replace=False) if n else np.empty(0, dtype=int)
    return np.sort(idx)
