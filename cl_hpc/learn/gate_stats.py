"""The gate's significance tests on paired rows (the same rows scored by both models), from scipy.stats.

- McNemar's test where every row is scored 0 or 1 (right or wrong): it counts the rows only one
  model got right.
- A paired bootstrap otherwise: rows are resampled (the same rows for both models) and the
  improvement is recomputed on each resample.

Pure functions, no I/O. cl_hpc/learn/gate.py chooses the test and reads its result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np
from scipy import stats

from cl_hpc.errors import DataError

_BATCH_INDICES = 2 ** 22  # row indices per bootstrap batch (32 MiB of int64): bounds memory on big windows


@dataclass(frozen=True)
class Significance:
    """The significance test of the improvement on the new window."""

    name: str  # mcnemar_exact | mcnemar_chi2 | paired_bootstrap
    statistic: float  # McNemar: min(b, c) (exact) or the chi2 statistic; bootstrap: the observed improvement
    p_value: float  # two-sided
    alpha: float
    ci: Optional[tuple[float, float]]  # bootstrap: (1 - alpha) percentile CI of the improvement
    # McNemar: (rows only the reference got right, rows only the challenger got right)
    discordant: Optional[tuple[int, int]]
    passed: bool  # p < alpha and the challenger is the better one


def is_binary(values: np.ndarray) -> bool:
    """Every value is 0 or 1: per-row correctness, which McNemar's test takes."""
    return bool(np.isin(values, (0.0, 1.0)).all())


def mcnemar(gain: np.ndarray, alpha: float, exact_below: int) -> Significance:
    """McNemar's test on per-row improvements in {-1, 0, +1}: 0/1 values, challenger minus reference
    when higher is better (reference minus challenger when lower is)."""
    b, c = int((gain < 0).sum()), int((gain > 0).sum())
    name, statistic, p = mcnemar_test(b, c, exact_below)
    return Significance(name, statistic, p, alpha, None, (b, c), c > b and p < alpha)


def mcnemar_test(b: int, c: int, exact_below: int = 25) -> tuple[str, float, float]:
    """(name, statistic, two-sided p) of McNemar's test on the discordant counts b and c: the exact
    binomial test of c in b + c trials at p = 0.5 while b + c < exact_below, else chi2 (1 dof) with
    Edwards' continuity correction, (|b - c| - 1)^2 / (b + c)."""
    n = b + c
    if n == 0:
        return "mcnemar_exact", 0.0, 1.0  # the two models agree on every row: no evidence either way
    if n < exact_below:
        return "mcnemar_exact", float(min(b, c)), float(stats.binomtest(c, n, 0.5).pvalue)
    statistic = max(abs(b - c) - 1, 0) ** 2 / n
    return "mcnemar_chi2", float(statistic), float(stats.chi2.sf(statistic, df=1))


def mean_gain_statistic(gain: np.ndarray) -> Callable[..., Any]:
    """The mean improvement of a batch of row-index resamples: one fancy index for the whole batch."""
    return lambda idx, axis=-1: gain[idx].mean(axis=axis)


def paired_bootstrap(statistic: Callable[..., Any], vectorized: bool, rows: int, samples: int, alpha: float,
                     seed: int) -> Significance:
    """Resample ``rows`` row indices (the same rows for both models) ``samples`` times; ``statistic``
    maps a resample of indices to the improvement. The CI is the (1 - alpha) percentile interval."""
    if rows < 2:
        raise DataError(f"the paired bootstrap needs at least 2 rows in the new window, got {rows}")
    res = stats.bootstrap((np.arange(rows),), statistic, n_resamples=samples, vectorized=vectorized,
                          batch=max(1, _BATCH_INDICES // rows), method="percentile", confidence_level=1 - alpha,
                          rng=np.random.default_rng(seed))
    dist = res.bootstrap_distribution[np.isfinite(res.bootstrap_distribution)]
    observed = float(statistic(np.arange(rows)))
    lo, hi = np.quantile(dist, [alpha / 2, 1 - alpha / 2])
    # two-sided p by inverting the percentile CI; +1 so a finite sample never claims p = 0
    tail = min(int((dist <= 0).sum()), int((dist >= 0).sum()))
    p = min(1.0, 2 * (tail + 1) / (len(dist) + 1))
    return Significance("paired_bootstrap", observed, p, alpha, (float(lo), float(hi)), None,
                        observed > 0 and p < alpha)
