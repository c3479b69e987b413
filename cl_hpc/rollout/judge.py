"""A Kayenta-like canary judge: Mann–Whitney U with a Hodges–Lehmann interval per metric, then a score.

Per metric the challenger's samples are compared with the champion's (scipy.stats.mannwhitneyu) and the
shift B - A is estimated by Hodges–Lehmann with its distribution-free interval. The metric fails when
the challenger is significantly worse beyond the tolerance: the whole interval lies past the allowed
margin, on the bad side of the metric's direction. The score is 100 times the (weighted) share of metrics
that pass; PASS at >= 95, MARGINAL at >= 75, else FAIL (Kayenta's defaults, configurable).

As in Kayenta, a metric's samples are best per-interval aggregates (the error rate or the p99 latency of
each 10 s window), not raw 0/1 outcomes, whose pairwise differences are mostly 0.

Two bugs of the tools in use are avoided on purpose:
- argo-rollouts#1905: a metric with no data (no traffic in a step) is NO_DATA, never a pass, and a
  judgement that could still pass with the missing metrics is NO_DATA (inconclusive), not PASS;
- kayenta#799: NaN values are dropped and counted; the relative margin multiplies the baseline
  (tolerance * |median|) and nothing is ever divided by it, so a zero baseline gives no NaN score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from cl_hpc.errors import ConfigError
from cl_hpc.rollout.stats import TestName, TestResult, check_probability, finite

Array = NDArray[np.float64]


# -- Hodges–Lehmann shift and its distribution-free interval -----------------------------------------


def _kth_by_bisection(a: Array, b: Array, k: int) -> float:
    """k-th smallest (1-based) of b_j - a_i without forming the m*n differences (a, b sorted).

    Bisection on the value t with count(t) = #{b_j - a_i <= t} = sum_j #{a_i >= b_j - t} (searchsorted);
    then the largest difference <= the final bound. Exact up to the rounding of one subtraction.
    """
    m = a.size

    def count_le(t: float) -> int:
        return int((m - np.searchsorted(a, b - t, side="left")).sum())

    lo, hi = float(b[0] - a[-1]), float(b[-1] - a[0])
    if count_le(lo) >= k:
        return lo
    for _ in range(2200):  # enough to reach adjacent doubles across the whole exponent range
        mid = lo + (hi - lo) / 2.0
        if mid <= lo or mid >= hi:
            break
        lo, hi = (lo, mid) if count_le(mid) >= k else (mid, hi)
    # b_j - hi and b_j - a_i both round (by an ulp of the operands): look one place either side of
    # searchsorted's answer and a few operand ulps past hi
    idx = np.searchsorted(a, b - hi, side="left")
    cand = np.concatenate([b - a[np.clip(idx - 1, 0, m - 1)], b - a[np.clip(idx, 0, m - 1)]])
    slack = 4.0 * float(np.spacing(max(abs(a[0]), abs(a[-1]), abs(b[0]), abs(b[-1]))))
    return float(cand[cand <= hi + slack].max())


def kth_pairwise_difference(a: Array, b: Array, k: int, *, max_pairs: int = 4_000_000) -> float:
    """k-th smallest (1-based) of the m*n differences b_j - a_i: exact (np.partition) up to ``max_pairs``."""
    if a.size * b.size <= max_pairs:
        diffs = (b[None, :] - a[:, None]).ravel()
        return float(np.partition(diffs, k - 1)[k - 1])
    return _kth_by_bisection(np.sort(a), np.sort(b), k)


def hodges_lehmann(
    a: Array, b: Array, *, alpha: float = 0.05, max_pairs: int = 4_000_000
) -> tuple[float, float, float]:
    """(shift, low, high): the median of the pairwise differences b_j - a_i and its (1 - alpha) interval.

    The interval is [D_(k), D_(mn+1-k)] of the ordered differences (Lehmann 1963; Bauer, JASA 67, 1972),
    with k = floor(mn/2 - z_{1-alpha/2} sqrt(mn(m+n+1)/12)), the normal approximation of the Mann–Whitney
    critical value, rounded down (conservative; m = n = 10 gives the exact table's k = 24). Too few samples
    for any k >= 1 give an unbounded interval.
    """
    m, n = a.size, b.size
    pairs = m * n
    half = pairs // 2
    if pairs % 2:
        shift = kth_pairwise_difference(a, b, half + 1, max_pairs=max_pairs)
    else:
        shift = 0.5 * (kth_pairwise_difference(a, b, half, max_pairs=max_pairs)
                       + kth_pairwise_difference(a, b, half + 1, max_pairs=max_pairs))
    z = float(stats.norm.ppf(1.0 - alpha / 2.0))
    k = math.floor(pairs / 2.0 - z * math.sqrt(pairs * (m + n + 1) / 12.0))
    if k < 1:
        return shift, -math.inf, math.inf
    low = kth_pairwise_difference(a, b, k, max_pairs=max_pairs)
    high = kth_pairwise_difference(a, b, pairs + 1 - k, max_pairs=max_pairs)
    return shift, low, high


def _mann_whitney(xa: Array, xb: Array, metric: str, alpha: float, dropped: int) -> TestResult:
    res = stats.mannwhitneyu(xb, xa, alternative="two-sided")
    shift, low, high = hodges_lehmann(xa, xb, alpha=alpha)
    p = float(res.pvalue) if math.isfinite(res.pvalue) else 1.0  # all values equal: no evidence
    return TestResult(metric, TestName.MANN_WHITNEY_U, xa.size, xb.size, shift, low, high, float(res.statistic),
                      p, alpha, dropped)


def mann_whitney(a: ArrayLike, b: ArrayLike, *, metric: str = "value", alpha: float = 0.05) -> TestResult | None:
    """Mann–Whitney U of B against A (scipy) with the Hodges–Lehmann shift; None when an arm has no finite data."""
    check_probability("alpha", alpha)
    xa, da = finite(a)
    xb, db = finite(b)
    if xa.size == 0 or xb.size == 0:
        return None
    return _mann_whitney(xa, xb, metric, alpha, da + db)


# -- the judge ----------------------------------------------------------------------------------------


class Direction(str, Enum):
    """Which way a metric gets better."""

    LOWER_IS_BETTER = "lower"  # error rate, latency
    HIGHER_IS_BETTER = "higher"  # accuracy


class MetricStatus(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    NO_DATA = "no_data"  # no (or too little) finite data in an arm: inconclusive, never a pass


class Verdict(str, Enum):
    PASS = "pass"
    MARGINAL = "marginal"
    FAIL = "fail"
    NO_DATA = "no_data"  # missing metrics could still change the outcome: wait for data


@dataclass(frozen=True)
class MetricSpec:
    """One judged metric."""

    name: str
    direction: Direction
    tolerance: float = 0.0  # how much worse is allowed; a fraction of the champion's median when relative
    relative: bool = True
    weight: float = 1.0
    critical: bool = False  # a failure fails the whole judgement, whatever the score

    def __post_init__(self) -> None:
        object.__setattr__(self, "direction", Direction(self.direction))
        if not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise ConfigError(f"metric {self.name!r}: tolerance must be a finite number >= 0, got {self.tolerance!r}")
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ConfigError(f"metric {self.name!r}: weight must be a finite number > 0, got {self.weight!r}")


@dataclass(frozen=True)
class Thresholds:
    """Score thresholds (Kayenta's defaults)."""

    pass_score: float = 95.0
    marginal_score: float = 75.0

    def __post_init__(self) -> None:
        if not (0.0 <= self.marginal_score <= self.pass_score <= 100.0):
            raise ConfigError(f"judge thresholds need 0 <= marginal <= pass <= 100, "
                              f"got marginal={self.marginal_score}, pass={self.pass_score}")


@dataclass(frozen=True)
class MetricVerdict:
    name: str
    status: MetricStatus
    result: TestResult | None  # None when NO_DATA
    margin: float  # the allowed shift towards worse, in the metric's units
    dropped: int  # non-finite values dropped
    reason: str


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    score: float  # 100 * passing weight / total weight; NO_DATA metrics count as not passing
    metrics: tuple[MetricVerdict, ...]
    reason: str


def _worse_beyond(spec: MetricSpec, res: TestResult, margin: float) -> bool:
    if spec.direction is Direction.LOWER_IS_BETTER:
        return res.ci_low > margin
    return res.ci_high < -margin


def judge_metric(spec: MetricSpec, champion: ArrayLike | None, challenger: ArrayLike | None, *,
                 alpha: float = 0.05, min_samples: int = 10) -> MetricVerdict:
    """PASS, FAIL (significantly worse beyond tolerance) or NO_DATA (fewer than ``min_samples`` finite per arm,
    or too few for a bounded Hodges-Lehmann interval at ``alpha``)."""
    xa, da = finite([] if champion is None else champion)
    xb, db = finite([] if challenger is None else challenger)
    if min(xa.size, xb.size) < max(min_samples, 1):
        return MetricVerdict(spec.name, MetricStatus.NO_DATA, None, math.nan, da + db,
                             f"{spec.name}: {xa.size} champion / {xb.size} challenger finite samples, "
                             f"need {min_samples} each ({da + db} NaN/inf dropped)")
    res = _mann_whitney(xa, xb, spec.name, alpha, da + db)
    if not (math.isfinite(res.ci_low) and math.isfinite(res.ci_high)):
        # Too few samples for any interval at this alpha (3 vs 3 at 0.05): an unbounded interval can never
        # lie past the margin, so calling it a pass would wave through any challenger, however bad.
        return MetricVerdict(spec.name, MetricStatus.NO_DATA, res, math.nan, da + db,
                             f"{spec.name}: {xa.size} champion / {xb.size} challenger samples are too few for a "
                             f"{1 - alpha:.0%} Hodges-Lehmann interval (4 each at alpha 0.05): no evidence yet")
    margin = spec.tolerance * abs(float(np.median(xa))) if spec.relative else spec.tolerance
    worse = _worse_beyond(spec, res, margin)
    sign = "+" if spec.direction is Direction.LOWER_IS_BETTER else "-"
    why = (f"{spec.name}: shift {res.estimate:.4g} [{res.ci_low:.4g}, {res.ci_high:.4g}] (challenger - champion, "
           f"{spec.direction.value} is better), allowed {sign}{margin:.4g}, p={res.p_value:.3g}")
    return MetricVerdict(spec.name, MetricStatus.FAIL if worse else MetricStatus.PASS, res, margin, da + db, why)


def _verdict(metrics: Sequence[MetricVerdict], specs: Sequence[MetricSpec], th: Thresholds) -> tuple[Verdict, float]:
    total = sum(s.weight for s in specs)
    passed = sum(s.weight for s, m in zip(specs, metrics) if m.status is MetricStatus.PASS)
    missing = sum(s.weight for s, m in zip(specs, metrics) if m.status is MetricStatus.NO_DATA)
    score = 100.0 * passed / total
    if any(s.critical and m.status is MetricStatus.FAIL for s, m in zip(specs, metrics)):
        return Verdict.FAIL, score
    if 100.0 * (passed + missing) / total < th.marginal_score:
        return Verdict.FAIL, score  # fails even if every missing metric passed
    if missing > 0:
        return Verdict.NO_DATA, score
    if score >= th.pass_score:
        return Verdict.PASS, score
    return (Verdict.MARGINAL if score >= th.marginal_score else Verdict.FAIL), score


def judge(specs: Sequence[MetricSpec], champion: Mapping[str, ArrayLike], challenger: Mapping[str, ArrayLike], *,
          alpha: float = 0.05, thresholds: Thresholds = Thresholds(), min_samples: int = 10) -> Judgement:
    """Judge every metric in ``specs``; a metric absent from either mapping had no traffic and is NO_DATA."""
    if not specs:
        raise ConfigError("the judge needs at least one metric")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"judged metric names must be unique, got {names}")
    check_probability("alpha", alpha)
    metrics = tuple(judge_metric(s, champion.get(s.name), challenger.get(s.name), alpha=alpha,
                                 min_samples=min_samples) for s in specs)
    verdict, score = _verdict(metrics, specs, thresholds)
    bad = [m.reason for m in metrics if m.status is not MetricStatus.PASS]
    reason = f"{verdict.value}: score {score:.1f}" + ("; " + "; ".join(bad) if bad else "")
    return Judgement(verdict, score, metrics, reason)
