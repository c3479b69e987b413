"""Fixed-horizon statistics of an experiment: the tests, the power plan, sample-ratio mismatch, the sign test.

Arm A is always the champion (control) and arm B the challenger, so every estimate is B minus A.
The sequential (always-valid) test lives in :mod:`cl_hpc.rollout.sequential`, the Mann–Whitney
judge of a canary in :mod:`cl_hpc.rollout.judge`. Every computation is delegated to scipy or
statsmodels; this module only validates the inputs, handles the degenerate cases those libraries
answer with NaN, and returns one typed record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special, stats
from statsmodels.stats.power import NormalIndPower, TTestIndPower
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_effectsize, proportions_ztest

from cl_hpc.errors import ConfigError, DataError


class TestName(str, Enum):
    """Which test produced a :class:`TestResult`."""

    __test__ = False  # not a pytest class, despite the name

    TWO_PROPORTION_Z = "two-proportion z"
    WELCH_T = "welch t"
    MANN_WHITNEY_U = "mann-whitney u"
    MSPRT = "msprt"  # statistic: log of the mixture likelihood ratio; interval: the confidence sequence


@dataclass(frozen=True)
class TestResult:
    """One metric compared between champion (A) and challenger (B); the estimate is B minus A."""

    __test__ = False

    metric: str
    test: TestName
    n_a: int  # observations used in arm A (NaN dropped)
    n_b: int
    estimate: float  # difference of proportions / of means / Hodges–Lehmann shift, B - A
    ci_low: float  # two-sided (1 - alpha) confidence interval of the estimate
    ci_high: float
    statistic: float  # z, t or U
    p_value: float  # two-sided
    alpha: float
    dropped: int = 0  # non-finite values dropped from both arms together

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha


def check_probability(name: str, value: float) -> float:
    """``value`` strictly inside (0, 1), else a ConfigError naming ``name``."""
    if not (isinstance(value, (int, float)) and 0.0 < float(value) < 1.0):
        raise ConfigError(f"{name} must be a number strictly between 0 and 1, got {value!r}")
    return float(value)


def finite(values: ArrayLike) -> tuple[NDArray[np.float64], int]:
    """The finite values of one arm as float64, and how many NaN/inf were dropped."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    keep = np.isfinite(arr)
    return arr[keep], int(arr.size - keep.sum())


# -- binary metric: two-proportion z-test ------------------------------------------------------------


def _check_counts(metric: str, arm: str, successes: int, trials: int) -> None:
    if trials <= 0 or successes < 0 or successes > trials:
        raise DataError(
            f"metric {metric!r}, arm {arm}: need 0 <= successes <= trials and trials > 0, "
            f"got successes={successes}, trials={trials}"
        )


def two_proportion_ztest(
    successes_a: int, trials_a: int, successes_b: int, trials_b: int, *, metric: str = "rate", alpha: float = 0.05
) -> TestResult:
    """Pooled two-proportion z-test of p_B - p_A, with Newcombe's hybrid-score interval (statsmodels).

    When both arms have all or no successes the pooled variance is zero and statsmodels answers NaN:
    there is then no evidence of a difference, so z = 0 and p = 1.
    """
    check_probability("alpha", alpha)
    _check_counts(metric, "A", successes_a, trials_a)
    _check_counts(metric, "B", successes_b, trials_b)
    estimate = successes_b / trials_b - successes_a / trials_a
    pooled = (successes_a + successes_b) / (trials_a + trials_b)
    if pooled in (0.0, 1.0):
        z, p = 0.0, 1.0
    else:
        z_raw, p_raw = proportions_ztest([successes_b, successes_a], [trials_b, trials_a])
        z, p = float(z_raw), float(p_raw)
    low, high = confint_proportions_2indep(
        successes_b, trials_b, successes_a, trials_a, method="newcomb", compare="diff", alpha=alpha
    )
    return TestResult(metric, TestName.TWO_PROPORTION_Z, trials_a, trials_b, estimate, float(low), float(high), z, p,
                      alpha)


# -- continuous metric: Welch's t ---------------------------------------------------------------------


def welch_ttest(a: ArrayLike, b: ArrayLike, *, metric: str = "value", alpha: float = 0.05) -> TestResult:
    """Welch's unequal-variance t-test of mean(B) - mean(A), with its Welch–Satterthwaite interval (scipy).

    NaN/inf are dropped and counted. Each arm needs two finite values. Two constant arms (zero variance,
    where scipy answers NaN) give a degenerate but defined result: the exact difference, p = 1 if the
    means agree, else p = 0.
    """
    check_probability("alpha", alpha)
    xa, da = finite(a)
    xb, db = finite(b)
    if xa.size < 2 or xb.size < 2:
        raise DataError(
            f"metric {metric!r}: Welch's t needs at least 2 finite values per arm, got A={xa.size}, B={xb.size} "
            f"({da + db} non-finite dropped)"
        )
    diff = float(xb.mean() - xa.mean())
    if np.ptp(xa) == 0 and np.ptp(xb) == 0:
        stat = 0.0 if diff == 0 else math.copysign(math.inf, diff)
        return TestResult(metric, TestName.WELCH_T, xa.size, xb.size, diff, diff, diff, stat, float(diff == 0),
                          alpha, da + db)
    res = stats.ttest_ind(xb, xa, equal_var=False)
    ci = res.confidence_interval(confidence_level=1.0 - alpha)
    return TestResult(metric, TestName.WELCH_T, xa.size, xb.size, diff, float(ci.low), float(ci.high),
                      float(res.statistic), float(res.pvalue), alpha, da + db)


# -- power and minimum sample size -------------------------------------------------------------------


@dataclass(frozen=True)
class PowerPlan:
    """The samples an A/B test needs to detect an effect with the wanted power (print it up front)."""

    kind: str  # "binary" or "continuous"
    effect_size: float  # Cohen's h (binary) or d (continuous)
    alpha: float
    power: float
    ratio: float  # n_b / n_a
    n_a: int  # champion samples needed
    n_b: int  # challenger samples needed

    @property
    def total(self) -> int:
        return self.n_a + self.n_b

    def summary(self) -> str:
        return (f"{self.kind} metric: effect size {self.effect_size:.4g}, alpha {self.alpha:g}, power {self.power:g} "
                f"-> need {self.n_a} champion + {self.n_b} challenger = {self.total} samples")


def _check_alpha_ratio(alpha: float, ratio: float) -> None:
    check_probability("alpha", alpha)
    if not (isinstance(ratio, (int, float)) and math.isfinite(ratio) and ratio > 0):
        raise ConfigError(f"ratio (challenger samples per champion sample) must be a finite number > 0, got {ratio!r}")


def _binary_effect(baseline: float, mde: float) -> float:
    check_probability("baseline rate", baseline)
    if not (isinstance(mde, (int, float)) and mde > 0):
        raise ConfigError(f"minimum detectable effect must be an absolute rate difference > 0, got {mde!r}")
    if baseline + mde >= 1.0:
        raise ConfigError(f"baseline {baseline} + minimum detectable effect {mde} must stay below 1")
    return float(abs(proportion_effectsize(baseline + mde, baseline)))


def _check_effect(effect_size: float) -> float:
    if not (isinstance(effect_size, (int, float)) and math.isfinite(effect_size) and effect_size > 0):
        raise ConfigError(f"standardized effect size (Cohen's d) must be a finite number > 0, got {effect_size!r}")
    return float(effect_size)


def _plan(kind: str, effect: float, alpha: float, power: float, ratio: float, n_a: float) -> PowerPlan:
    n_a_int = math.ceil(n_a)
    return PowerPlan(kind, effect, alpha, power, ratio, n_a_int, math.ceil(n_a_int * ratio))


def sample_size_binary(
    baseline: float, mde: float, *, alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0
) -> PowerPlan:
    """Samples to detect a rise of the rate from ``baseline`` to ``baseline + mde`` (two-sided z-test, Cohen's h)."""
    _check_alpha_ratio(alpha, ratio)
    check_probability("power", power)
    h = _binary_effect(baseline, mde)
    n_a = NormalIndPower().solve_power(effect_size=h, alpha=alpha, power=power, ratio=ratio)
    return _plan("binary", h, alpha, power, ratio, float(n_a))


def sample_size_continuous(
    effect_size: float, *, alpha: float = 0.05, power: float = 0.8, ratio: float = 1.0
) -> PowerPlan:
    """Samples to detect a standardized mean difference ``effect_size`` (two-sided t-test)."""
    _check_alpha_ratio(alpha, ratio)
    check_probability("power", power)
    d = _check_effect(effect_size)
    n_a = TTestIndPower().solve_power(effect_size=d, alpha=alpha, power=power, ratio=ratio)
    return _plan("continuous", d, alpha, power, ratio, float(n_a))


def _check_n(n_a: int) -> None:
    if not (isinstance(n_a, int) and n_a >= 2):
        raise ConfigError(f"champion sample count must be an integer >= 2, got {n_a!r}")


def power_binary(baseline: float, mde: float, n_a: int, *, alpha: float = 0.05, ratio: float = 1.0) -> float:
    """The power that ``n_a`` champion (and ``n_a * ratio`` challenger) samples give against ``mde``."""
    _check_alpha_ratio(alpha, ratio)
    _check_n(n_a)
    h = _binary_effect(baseline, mde)
    return float(NormalIndPower().power(effect_size=h, nobs1=n_a, alpha=alpha, ratio=ratio))


def power_continuous(effect_size: float, n_a: int, *, alpha: float = 0.05, ratio: float = 1.0) -> float:
    """The power of Welch's / Student's t with ``n_a`` champion samples against ``effect_size``."""
    _check_alpha_ratio(alpha, ratio)
    _check_n(n_a)
    d = _check_effect(effect_size)
    return float(TTestIndPower().power(effect_size=d, nobs1=n_a, alpha=alpha, ratio=ratio))


# -- sample-ratio mismatch ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SrmResult:
    """Chi-square goodness of fit of the units each arm received against the configured weights."""

    counts: tuple[int, ...]
    expected: tuple[float, ...]
    statistic: float
    p_value: float
    threshold: float  # alarm when p_value < threshold

    @property
    def mismatch(self) -> bool:
        return self.p_value < self.threshold


def _check_weights(counts: Sequence[int], weights: Sequence[float]) -> None:
    if len(counts) != len(weights) or len(counts) < 2:
        raise ConfigError(f"sample-ratio check needs one weight per arm and >= 2 arms, "
                          f"got {len(counts)} counts and {len(weights)} weights")
    if any(not math.isfinite(w) or w < 0 for w in weights) or not math.isclose(sum(weights), 1.0, abs_tol=1e-9):
        raise ConfigError(f"arm weights must be >= 0 and sum to 1, got {list(weights)} (sum {sum(weights):.12g})")
    if any(int(c) != c or c < 0 for c in counts):
        raise DataError(f"unit counts per arm must be integers >= 0, got {list(counts)}")


def sample_ratio_mismatch(counts: Sequence[int], weights: Sequence[float], *, threshold: float = 0.001) -> SrmResult:
    """Chi-square test (scipy.stats.chisquare) of ``counts`` per arm against ``weights``; alarm at p < threshold.

    An arm of weight 0 that still received units is a certain mismatch (p = 0); arms of weight 0 and no
    units are left out. No units at all is no evidence (p = 1).
    """
    check_probability("sample-ratio threshold", threshold)
    _check_weights(counts, weights)
    total = int(sum(counts))
    expected = tuple(total * float(w) for w in weights)
    if total == 0:
        return SrmResult(tuple(int(c) for c in counts), expected, 0.0, 1.0, threshold)
    if any(c > 0 and w == 0 for c, w in zip(counts, weights)):
        return SrmResult(tuple(int(c) for c in counts), expected, math.inf, 0.0, threshold)
    used = [i for i, w in enumerate(weights) if w > 0]
    if len(used) < 2:  # everything went to the only arm that may receive units
        return SrmResult(tuple(int(c) for c in counts), expected, 0.0, 1.0, threshold)
    res = stats.chisquare([counts[i] for i in used], [expected[i] for i in used])
    return SrmResult(tuple(int(c) for c in counts), expected, float(res.statistic), float(res.pvalue), threshold)


# -- interleaving: the binomial sign test --------------------------------------------------------------


class Side(str, Enum):
    """Which ranker an interleaving comparison prefers."""

    A = "A"
    B = "B"
    NONE = "none"  # no significant preference


@dataclass(frozen=True)
class SignResult:
    """Exact binomial sign test of wins of A against wins of B (ties excluded)."""

    wins_a: int
    wins_b: int
    ties: int
    p_value: float  # two-sided, H0: P(B wins | not a tie) = 1/2
    alpha: float

    @property
    def rejected(self) -> bool:
        return self.p_value < self.alpha

    @property
    def preferred(self) -> Side:
        if self.p_value >= self.alpha or self.wins_a == self.wins_b:
            return Side.NONE
        return Side.B if self.wins_b > self.wins_a else Side.A


def sign_test(wins_a: int, wins_b: int, *, ties: int = 0, alpha: float = 0.05) -> SignResult:
    """scipy.stats.binomtest on the wins of B among the decided comparisons; ties are reported, not tested."""
    check_probability("alpha", alpha)
    if min(wins_a, wins_b, ties) < 0:
        raise DataError(f"win and tie counts must be >= 0, got wins_a={wins_a}, wins_b={wins_b}, ties={ties}")
    decided = wins_a + wins_b
    p = 1.0 if decided == 0 else float(stats.binomtest(wins_b, decided, 0.5).pvalue)
    return SignResult(wins_a, wins_b, ties, p, alpha)


def sign_test_always_valid(wins_a: int, wins_b: int, *, ties: int = 0, alpha: float = 0.05) -> SignResult:
    """The sign test as an always-valid p-value, safe to read at every look (ties are reported, not tested).

    The mixture likelihood ratio of B's wins among n decided comparisons, with a uniform Beta(1, 1)
    mixture over P(B wins) against H0's 1/2, is Lambda_n = B(1 + wins_b, 1 + wins_a) / 2^-n (Robbins'
    mixture; a Bayes factor). It is a martingale under H0, so by Ville's inequality P(Lambda_n >= 1/alpha
    at any n) <= alpha: p = min(1, 1 / Lambda_n) may be read after every impression (the mSPRT's
    argument, cl_hpc/rollout/sequential.py, for a count). It needs more impressions than the exact test
    read once at a fixed n, the price of looking at every poll."""
    check_probability("alpha", alpha)
    if min(wins_a, wins_b, ties) < 0:
        raise DataError(f"win and tie counts must be >= 0, got wins_a={wins_a}, wins_b={wins_b}, ties={ties}")
    log_lambda = float(special.betaln(1 + wins_b, 1 + wins_a)) + (wins_a + wins_b) * math.log(2.0)
    return SignResult(wins_a, wins_b, ties, min(1.0, math.exp(-log_lambda)), alpha)


def count_wins(credit_a: ArrayLike, credit_b: ArrayLike) -> tuple[int, int, int]:
    """(wins of A, wins of B, ties) from per-impression credits (e.g. clicks credited to each team)."""
    ca = np.asarray(credit_a, dtype=np.float64)
    cb = np.asarray(credit_b, dtype=np.float64)
    if ca.shape != cb.shape:
        raise DataError(f"per-impression credits must pair up, got {ca.shape} for A and {cb.shape} for B")
    return int((ca > cb).sum()), int((cb > ca).sum()), int((ca == cb).sum())
