"""The experiment statistics (cl_hpc.rollout.stats / sequential / judge) against scipy and statsmodels on known data."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy import integrate, stats
from statsmodels.stats.power import NormalIndPower, TTestIndPower
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_effectsize, proportions_ztest
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from cl_hpc.errors import ConfigError, DataError
from cl_hpc.rollout.judge import (
    Direction,
    MetricSpec,
    MetricStatus,
    Thresholds,
    Verdict,
    hodges_lehmann,
    judge,
    judge_metric,
    kth_pairwise_difference,
    mann_whitney,
)
from cl_hpc.rollout.sequential import MSPRT, StreamKind, log_mixture_lr
from cl_hpc.rollout.stats import (
    Side,
    TestName,
    count_wins,
    power_binary,
    power_continuous,
    sample_ratio_mismatch,
    sample_size_binary,
    sample_size_continuous,
    sign_test,
    two_proportion_ztest,
    welch_ttest,
)

A = np.array([12.1, 9.8, 11.4, 10.2, 13.0, 8.7, 10.9, 11.8, 9.5, 12.6, 10.1, 11.1])
B = np.array([13.2, 12.5, 11.9, 14.1, 12.8, 13.7, 10.8, 12.2, 13.9, 12.0])


# -- two-proportion z and Welch's t --------------------------------------------------------------------


def test_ztest_matches_statsmodels_and_the_pooled_formula():
    res = two_proportion_ztest(120, 1000, 150, 1000, metric="ctr")
    z, p = proportions_ztest([150, 120], [1000, 1000])
    low, high = confint_proportions_2indep(150, 1000, 120, 1000, method="newcomb", compare="diff")
    pooled = 270 / 2000
    z_hand = (0.15 - 0.12) / math.sqrt(pooled * (1 - pooled) * (2 / 1000))
    assert res.test is TestName.TWO_PROPORTION_Z and (res.n_a, res.n_b) == (1000, 1000)
    assert res.estimate == pytest.approx(0.03)
    assert res.statistic == pytest.approx(z) == pytest.approx(z_hand)
    assert res.p_value == pytest.approx(p) == pytest.approx(2 * stats.norm.sf(z_hand))
    assert (res.ci_low, res.ci_high) == (pytest.approx(low), pytest.approx(high))
    assert res.ci_low < res.estimate < res.ci_high and res.significant  # p = 0.0496, just in


def test_ztest_direction_is_challenger_minus_champion_and_significant_when_far():
    res = two_proportion_ztest(200, 1000, 120, 1000)
    assert res.estimate == pytest.approx(-0.08) and res.statistic < 0 and res.significant and res.ci_high < 0


def test_ztest_with_no_successes_anywhere_is_no_evidence_not_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = two_proportion_ztest(0, 500, 0, 400)
    assert (res.estimate, res.statistic, res.p_value) == (0.0, 0.0, 1.0) and math.isfinite(res.ci_low)


@pytest.mark.parametrize("counts", [(5, 0, 1, 10), (11, 10, 1, 10), (-1, 10, 1, 10), (1, 10, 3, 2)])
def test_ztest_rejects_impossible_counts(counts):
    with pytest.raises(DataError, match="successes <= trials"):
        two_proportion_ztest(*counts)


def test_welch_matches_scipy_and_statsmodels_compare_means():
    res = welch_ttest(A, B, metric="latency", alpha=0.1)
    ref = stats.ttest_ind(B, A, equal_var=False)
    low, high = CompareMeans(DescrStatsW(B), DescrStatsW(A)).tconfint_diff(alpha=0.1, usevar="unequal")
    assert res.test is TestName.WELCH_T and res.estimate == pytest.approx(B.mean() - A.mean())
    assert (res.statistic, res.p_value) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue))
    assert (res.ci_low, res.ci_high) == (pytest.approx(low), pytest.approx(high))


def test_welch_drops_and_counts_nan_and_handles_constant_arms():
    res = welch_ttest(np.append(A, [np.nan, np.inf]), np.append(B, np.nan))
    assert (res.n_a, res.n_b, res.dropped) == (A.size, B.size, 3)
    assert res.p_value == pytest.approx(stats.ttest_ind(B, A, equal_var=False).pvalue)
    same = welch_ttest([2.0, 2.0, 2.0], [2.0, 2.0])
    moved = welch_ttest([2.0, 2.0, 2.0], [3.0, 3.0])
    assert (same.p_value, same.estimate, moved.p_value, moved.ci_low) == (1.0, 0.0, 0.0, 1.0)
    with pytest.raises(DataError, match="at least 2 finite values"):
        welch_ttest([1.0, np.nan], [1.0, 2.0])


# -- power and minimum sample size ----------------------------------------------------------------------


def test_sample_size_binary_matches_statsmodels_and_reaches_the_power():
    plan = sample_size_binary(0.10, 0.02, alpha=0.05, power=0.8)
    n = NormalIndPower().solve_power(proportion_effectsize(0.12, 0.10), alpha=0.05, power=0.8, ratio=1.0)
    assert plan.n_a == plan.n_b == math.ceil(n) == 3835 and plan.total == 7670
    assert power_binary(0.10, 0.02, plan.n_a) >= 0.8 > power_binary(0.10, 0.02, plan.n_a - 50)
    assert "3835 champion" in plan.summary()
    skewed = sample_size_binary(0.10, 0.02, ratio=0.25)  # a 20 % canary: 4 champion units per challenger unit
    assert skewed.n_b == math.ceil(skewed.n_a * 0.25) and skewed.n_a > plan.n_a


def test_sample_size_continuous_is_the_textbook_64_per_arm_for_half_a_sd():
    plan = sample_size_continuous(0.5)
    assert plan.n_a == plan.n_b == 64
    assert plan.n_a == math.ceil(TTestIndPower().solve_power(0.5, alpha=0.05, power=0.8))
    assert power_continuous(0.5, 64) == pytest.approx(TTestIndPower().power(0.5, 64, 0.05))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"baseline": 0.0, "mde": 0.01}, "baseline rate"),
        ({"baseline": 1.0, "mde": 0.01}, "baseline rate"),
        ({"baseline": 1.3, "mde": 0.01}, "baseline rate"),
        ({"baseline": 0.1, "mde": 0.0}, "minimum detectable effect"),
        ({"baseline": 0.1, "mde": -0.02}, "minimum detectable effect"),
        ({"baseline": 0.95, "mde": 0.05}, "below 1"),
        ({"baseline": 0.1, "mde": 0.02, "power": 1.0}, "power"),
        ({"baseline": 0.1, "mde": 0.02, "power": 0.0}, "power"),
        ({"baseline": 0.1, "mde": 0.02, "alpha": 1.5}, "alpha"),
        ({"baseline": 0.1, "mde": 0.02, "ratio": 0.0}, "ratio"),
    ],
)
def test_impossible_power_inputs_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        sample_size_binary(**kwargs)


def test_impossible_continuous_inputs_are_config_errors():
    for bad in (0.0, -0.3, math.nan, math.inf):
        with pytest.raises(ConfigError, match="Cohen's d"):
            sample_size_continuous(bad)
    with pytest.raises(ConfigError, match="integer >= 2"):
        power_continuous(0.5, 1)


# -- mSPRT ------------------------------------------------------------------------------------------------


def _direct_lambda(a: np.ndarray, b: np.ndarray, tau2: float) -> float:
    """Johari et al. (2022): Lambda = sqrt(V/(V+tau2)) exp(tau2 theta^2 / (2 V (V+tau2))), V = s_a^2/n_a + s_b^2/n_b."""
    theta = b.mean() - a.mean()
    v = a.var(ddof=1) / a.size + b.var(ddof=1) / b.size
    return math.sqrt(v / (v + tau2)) * math.exp(tau2 * theta**2 / (2 * v * (v + tau2)))


def test_mixture_lr_is_the_normal_mixture_integral():
    """The closed form is the mixture's definition: int N(theta_hat; t, V) N(t; 0, tau2) dt / N(theta_hat; 0, V)."""
    theta_hat, v, tau2 = 0.37, 0.04, 0.09
    mixed, _ = integrate.quad(lambda t: stats.norm.pdf(theta_hat, t, math.sqrt(v)) * stats.norm.pdf(t, 0, 0.3),
                              -5, 5)
    assert math.exp(log_mixture_lr(theta_hat, v, tau2)) == pytest.approx(mixed / stats.norm.pdf(theta_hat, 0, 0.2))
    marginal = stats.norm.pdf(theta_hat, 0, math.sqrt(v + tau2)) / stats.norm.pdf(theta_hat, 0, math.sqrt(v))
    assert math.exp(log_mixture_lr(theta_hat, v, tau2)) == pytest.approx(marginal)


def test_msprt_two_sample_matches_the_formula_look_by_look():
    rng = np.random.default_rng(3)
    a, b = rng.normal(10, 2, 600), rng.normal(10.4, 2, 600)
    test, p = MSPRT(StreamKind.TWO_SAMPLE, tau2=0.25), 1.0
    for end in range(100, 601, 100):
        got = test.update(a[end - 100:end], b[end - 100:end])
        p = min(p, 1.0 / _direct_lambda(a[:end], b[:end], 0.25))
        assert got == pytest.approx(p) and test.log_lambda() == pytest.approx(math.log(_direct_lambda(a[:end],
                                                                                                      b[:end], 0.25)))
    assert test.looks == 6 and test.a.n == test.b.n == 600


def test_msprt_paired_and_bernoulli_use_their_variances():
    rng = np.random.default_rng(4)
    a, b = rng.normal(0, 1, 300), rng.normal(0.1, 1, 300)
    paired = MSPRT(StreamKind.PAIRED, tau2=0.04)
    paired.update(a, b)
    d = b - a
    assert paired.log_lambda() == pytest.approx(log_mixture_lr(d.mean(), d.var(ddof=1) / d.size, 0.04))
    ya, yb = (rng.random(400) < 0.1).astype(float), (rng.random(500) < 0.14).astype(float)
    rates = MSPRT(StreamKind.BERNOULLI, tau2=0.02**2)
    rates.update(ya, yb)
    pooled = (ya.sum() + yb.sum()) / 900
    v = pooled * (1 - pooled) * (1 / 400 + 1 / 500)
    assert rates.p_value == pytest.approx(min(1.0, math.exp(-log_mixture_lr(yb.mean() - ya.mean(), v, 0.02**2))))


def test_msprt_confidence_sequence_ends_are_where_lambda_crosses_one_over_alpha():
    rng = np.random.default_rng(5)
    test = MSPRT(StreamKind.TWO_SAMPLE, tau2=0.1, alpha=0.05)
    test.update(rng.normal(0, 1, 400), rng.normal(0.5, 1, 400))
    theta, v = test.estimate()
    for end in (test.ci_low, test.ci_high):
        assert log_mixture_lr(theta, v, 0.1, theta0=end) == pytest.approx(math.log(20))
    assert test.ci_low < theta < test.ci_high


def test_msprt_aa_false_positive_rate_with_peeking_after_every_batch_stays_below_alpha():
    rng = np.random.default_rng(20240614)
    runs, looks, batch, alpha = 300, 30, 50, 0.05
    msprt_fp = naive_fp = 0
    for _ in range(runs):
        test, naive = MSPRT(StreamKind.TWO_SAMPLE, tau2=0.2**2, alpha=alpha), False
        data = rng.normal(size=(2, looks, batch))
        for k in range(looks):
            test.update(data[0, k], data[1, k])
            theta, v = test.estimate()
            naive = naive or abs(theta / math.sqrt(v)) > 1.96
        msprt_fp += test.rejected
        naive_fp += naive
    bound = alpha + 2 * math.sqrt(alpha * (1 - alpha) / runs)
    assert msprt_fp / runs <= bound
    assert naive_fp / runs > bound  # the same peeking inflates the fixed-horizon z-test: the test has teeth


def test_msprt_detects_a_real_effect_and_covers_it():
    rng = np.random.default_rng(6)
    for _ in range(10):
        test = MSPRT(StreamKind.TWO_SAMPLE, tau2=0.3**2)
        for _ in range(20):
            test.update(rng.normal(0, 1, 100), rng.normal(0.3, 1, 100))
        assert test.rejected and test.ci_low < 0.3 < test.ci_high and test.ci_low > 0
    res = test.result("latency")
    assert res.test is TestName.MSPRT and (res.n_a, res.n_b) == (2000, 2000) and res.significant
    assert (res.estimate, res.ci_low, res.p_value) == (test.estimate()[0], test.ci_low, test.p_value)


def test_msprt_state_round_trips_through_json_and_resumes_identically():
    rng = np.random.default_rng(7)
    batches = [(rng.normal(0, 1, 80), rng.normal(0.2, 1, 80)) for _ in range(6)]
    whole = MSPRT(StreamKind.TWO_SAMPLE, tau2=0.05)
    for a, b in batches:
        whole.update(a, b)
    first = MSPRT(StreamKind.TWO_SAMPLE, tau2=0.05)
    for a, b in batches[:3]:
        first.update(a, b)
    resumed = MSPRT.from_dict(json.loads(json.dumps(first.to_dict())))
    for a, b in batches[3:]:
        resumed.update(a, b)
    assert resumed.a.n == whole.a.n and resumed.b.mean == pytest.approx(whole.b.mean)
    assert (resumed.ci_low, resumed.ci_high) == (pytest.approx(whole.ci_low), pytest.approx(whole.ci_high))
    assert resumed.p_value == pytest.approx(whole.p_value) and resumed.looks == whole.looks == 6
    fresh = MSPRT.from_dict(json.loads(json.dumps(MSPRT(StreamKind.PAIRED, tau2=1.0).to_dict())))
    assert fresh.ci_low == -math.inf and fresh.p_value == 1.0 and fresh.kind is StreamKind.PAIRED


def test_msprt_bad_config_and_batches_are_clear_errors():
    with pytest.raises(ConfigError, match="tau2"):
        MSPRT(StreamKind.TWO_SAMPLE, tau2=0.0)
    with pytest.raises(ConfigError, match="not a saved mSPRT state"):
        MSPRT.from_dict({"kind": "two_sample"})
    with pytest.raises(DataError, match="equal length"):
        MSPRT(StreamKind.PAIRED, tau2=1.0).update([1.0, 2.0], [1.0])
    with pytest.raises(DataError, match="0/1"):
        MSPRT(StreamKind.BERNOULLI, tau2=0.01).update([0, 1, 2], [0, 1])
    with pytest.raises(DataError, match="finite"):
        MSPRT(StreamKind.TWO_SAMPLE, tau2=1.0).update([1.0, np.nan], [1.0, 2.0])
    early = MSPRT(StreamKind.TWO_SAMPLE, tau2=1.0)
    assert early.update([1.0], [50.0]) == 1.0 and early.looks == 0  # one value per arm: no variance, no evidence


# -- Mann–Whitney and Hodges–Lehmann --------------------------------------------------------------------


def _brute_hl(a: np.ndarray, b: np.ndarray, alpha: float) -> tuple[float, float, float]:
    d = np.sort([y - x for x in a for y in b])
    m, n = a.size, b.size
    k = math.floor(m * n / 2 - stats.norm.ppf(1 - alpha / 2) * math.sqrt(m * n * (m + n + 1) / 12))
    return float(np.median(d)), float(d[k - 1]), float(d[m * n - k])


@pytest.mark.parametrize("sizes", [(12, 10), (9, 7), (30, 31)])
def test_hodges_lehmann_matches_brute_force_order_statistics(sizes):
    rng = np.random.default_rng(sum(sizes))
    a, b = rng.normal(0, 1, sizes[0]), rng.normal(0.5, 1, sizes[1])
    assert hodges_lehmann(a, b, alpha=0.05) == pytest.approx(_brute_hl(a, b, 0.05))
    assert hodges_lehmann(a, b, alpha=0.05, max_pairs=0) == pytest.approx(_brute_hl(a, b, 0.05))  # bisection path
    ties_a, ties_b = rng.integers(0, 5, sizes[0]).astype(float), rng.integers(1, 6, sizes[1]).astype(float)
    assert hodges_lehmann(ties_a, ties_b, max_pairs=0) == pytest.approx(_brute_hl(ties_a, ties_b, 0.05))


def test_kth_pairwise_difference_by_bisection_on_large_samples():
    rng = np.random.default_rng(8)
    a, b = rng.lognormal(3, 1, 700), rng.lognormal(3.1, 1, 800)
    d = np.sort((b[None, :] - a[:, None]).ravel())
    for k in (1, 17, 280_000, 559_999, 560_000):
        assert kth_pairwise_difference(a, b, k, max_pairs=0) == pytest.approx(d[k - 1], rel=1e-12)


def _exact_u_cdf(m: int, n: int) -> np.ndarray:
    """P(U <= u) under H0 without ties, by the counting recursion f(u; m, n) = f(u - n; m - 1, n) + f(u; m, n - 1)."""
    f = {(0, j): np.array([1.0]) for j in range(n + 1)}
    for i in range(1, m + 1):
        f[(i, 0)] = np.array([1.0])
        for j in range(1, n + 1):
            out = np.zeros(i * j + 1)
            out[j:j + f[(i - 1, j)].size] += f[(i - 1, j)]
            out[:f[(i, j - 1)].size] += f[(i, j - 1)]
            f[(i, j)] = out
    counts = f[(m, n)]
    return np.cumsum(counts) / counts.sum()


def test_hl_interval_rank_agrees_with_the_exact_mann_whitney_critical_value():
    cdf = _exact_u_cdf(10, 10)
    exact_k = int(np.searchsorted(cdf, 0.025, side="right"))  # largest k with P(U <= k - 1) <= alpha / 2
    assert exact_k == 24
    a, b = np.arange(10.0), np.arange(10.0) + 0.5
    d = np.sort((b[None, :] - a[:, None]).ravel())
    _, low, high = hodges_lehmann(a, b)
    assert (low, high) == (d[exact_k - 1], d[100 - exact_k])


def test_hl_interval_covers_the_true_shift_at_the_nominal_rate():
    rng = np.random.default_rng(9)
    covered = sum(lo <= 1.0 <= hi for _, lo, hi in
                  (hodges_lehmann(rng.exponential(1, 15), rng.exponential(1, 20) + 1.0) for _ in range(400)))
    assert covered / 400 >= 0.95 - 2 * math.sqrt(0.05 * 0.95 / 400)


def test_mann_whitney_matches_scipy_and_drops_nan():
    res = mann_whitney(np.append(A, np.nan), B, metric="latency")
    ref = stats.mannwhitneyu(B, A, alternative="two-sided")
    assert res is not None and res.test is TestName.MANN_WHITNEY_U and res.dropped == 1
    assert (res.statistic, res.p_value) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue))
    assert res.estimate == pytest.approx(np.median(np.subtract.outer(B, A)))
    assert mann_whitney([np.nan], B) is None


# -- the judge ---------------------------------------------------------------------------------------------


LATENCY = MetricSpec("latency_p99", Direction.LOWER_IS_BETTER, tolerance=0.10)
ERRORS = MetricSpec("error_rate", Direction.LOWER_IS_BETTER, tolerance=0.005, relative=False)
ACCURACY = MetricSpec("accuracy", Direction.HIGHER_IS_BETTER, tolerance=0.01, relative=False)


def _windows(rng: np.random.Generator, latency: float, errors: float, accuracy: float) -> dict[str, np.ndarray]:
    """Per-window aggregates, as Kayenta judges them."""
    return {"latency_p99": rng.normal(latency, 2.0, 40), "error_rate": rng.normal(errors, 0.002, 40).clip(0),
            "accuracy": rng.normal(accuracy, 0.005, 40)}


def test_judge_passes_an_equal_challenger_and_fails_a_worse_one_per_direction():
    rng = np.random.default_rng(10)
    champion = _windows(rng, 50.0, 0.01, 0.90)
    equal = judge([LATENCY, ERRORS, ACCURACY], champion, _windows(rng, 50.0, 0.01, 0.90))
    assert equal.verdict is Verdict.PASS and equal.score == 100.0
    slower = judge([LATENCY, ERRORS, ACCURACY], champion, _windows(rng, 65.0, 0.01, 0.90))
    assert [m.status for m in slower.metrics] == [MetricStatus.FAIL, MetricStatus.PASS, MetricStatus.PASS]
    assert slower.verdict is Verdict.FAIL and slower.score == pytest.approx(200 / 3) and "latency_p99" in slower.reason
    worse_acc = judge_metric(ACCURACY, champion["accuracy"], _windows(rng, 50, 0.01, 0.85)["accuracy"])
    better_acc = judge_metric(ACCURACY, champion["accuracy"], _windows(rng, 50, 0.01, 0.95)["accuracy"])
    assert (worse_acc.status, better_acc.status) == (MetricStatus.FAIL, MetricStatus.PASS)


def test_judge_tolerance_absorbs_a_small_significant_worsening():
    rng = np.random.default_rng(11)
    champion, challenger = rng.normal(50.0, 0.5, 200), rng.normal(52.0, 0.5, 200)  # 4 % slower, clearly significant
    assert judge_metric(LATENCY, champion, challenger).status is MetricStatus.PASS  # within 10 %
    strict = MetricSpec("latency_p99", Direction.LOWER_IS_BETTER, tolerance=0.01)
    verdict = judge_metric(strict, champion, challenger)
    assert verdict.status is MetricStatus.FAIL and verdict.margin == pytest.approx(0.01 * np.median(champion))


def test_no_traffic_is_no_data_never_a_pass():
    """argo-rollouts#1905: an analysis with no data was reported successful."""
    rng = np.random.default_rng(12)
    champion = _windows(rng, 50.0, 0.01, 0.90)
    silent = judge([LATENCY, ERRORS, ACCURACY], champion, {})
    assert silent.verdict is Verdict.NO_DATA and silent.score == 0.0
    assert all(m.status is MetricStatus.NO_DATA and m.result is None for m in silent.metrics)
    partial = dict(_windows(rng, 50.0, 0.01, 0.90), accuracy=np.array([]))  # labels not matured yet
    one_missing = judge([LATENCY, ERRORS, ACCURACY], champion, partial)
    assert one_missing.verdict is Verdict.NO_DATA and one_missing.metrics[2].status is MetricStatus.NO_DATA
    too_few = judge_metric(LATENCY, champion["latency_p99"], champion["latency_p99"][:3], min_samples=10)
    assert too_few.status is MetricStatus.NO_DATA and "need 10" in too_few.reason


def test_too_few_windows_for_an_interval_are_no_data_never_a_pass():
    """3 windows an arm give no Hodges-Lehmann interval at alpha 0.05 (k < 1): an unbounded interval was
    read as 'not worse', so a challenger 90 points less accurate passed; 4 windows an arm decide."""
    champion, challenger = [0.95, 0.96, 0.94, 0.95], [0.05, 0.04, 0.06, 0.05]
    three = judge([ACCURACY], {"accuracy": champion[:3]}, {"accuracy": challenger[:3]}, min_samples=3)
    assert three.verdict is Verdict.NO_DATA and three.metrics[0].status is MetricStatus.NO_DATA
    assert "too few for a 95% Hodges-Lehmann interval" in three.reason
    four = judge([ACCURACY], {"accuracy": champion}, {"accuracy": challenger}, min_samples=3)
    assert four.verdict is Verdict.FAIL and math.isfinite(four.metrics[0].result.ci_high)
    same = judge_metric(ACCURACY, champion, champion, min_samples=3)
    assert same.status is MetricStatus.PASS


def test_missing_metrics_cannot_rescue_a_judgement_already_failed():
    rng = np.random.default_rng(13)
    champion = _windows(rng, 50.0, 0.01, 0.90)
    bad = _windows(rng, 80.0, 0.05, 0.90)
    del bad["accuracy"]
    assert judge([LATENCY, ERRORS, ACCURACY], champion, bad).verdict is Verdict.FAIL


def test_nan_is_dropped_and_counted_and_zero_or_nan_baselines_give_finite_scores():
    """kayenta#799: a NaN or zero control made the score NaN (division by the baseline)."""
    rng = np.random.default_rng(14)
    zeros = np.zeros(40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flat = judge([ERRORS, MetricSpec("timeouts", Direction.LOWER_IS_BETTER, tolerance=0.2)],
                     {"error_rate": zeros, "timeouts": zeros}, {"error_rate": zeros, "timeouts": zeros})
        rising = judge_metric(MetricSpec("timeouts", Direction.LOWER_IS_BETTER, tolerance=0.2),
                              zeros, rng.uniform(1, 2, 40))
        nan_base = judge([LATENCY], {"latency_p99": np.full(40, np.nan)}, {"latency_p99": rng.normal(50, 2, 40)})
    assert flat.verdict is Verdict.PASS and flat.score == 100.0
    assert rising.status is MetricStatus.FAIL and rising.margin == 0.0 and math.isfinite(rising.result.estimate)
    assert nan_base.verdict is Verdict.NO_DATA and math.isfinite(nan_base.score) and nan_base.metrics[0].dropped == 40
    holey = judge_metric(LATENCY, np.append(rng.normal(50, 2, 40), [np.nan] * 5), rng.normal(50, 2, 40))
    assert holey.dropped == 5 and holey.result is not None and holey.result.n_a == 40


def test_score_weights_thresholds_and_critical_metrics():
    rng = np.random.default_rng(15)
    specs = [MetricSpec(f"m{i}", Direction.LOWER_IS_BETTER) for i in range(20)]
    champion = {s.name: rng.normal(10, 1, 40) for s in specs}
    challenger = {s.name: rng.normal(10, 1, 40) for s in specs}
    challenger["m0"] = rng.normal(20, 1, 40)
    one_of_20 = judge(specs, champion, challenger)
    assert one_of_20.score == pytest.approx(95.0) and one_of_20.verdict is Verdict.PASS
    assert judge(specs[:5], champion, challenger).verdict is Verdict.MARGINAL  # 80
    assert judge(specs[:5], champion, challenger, thresholds=Thresholds(90, 85)).verdict is Verdict.FAIL
    weighted = [MetricSpec("m0", Direction.LOWER_IS_BETTER, weight=3.0)] + specs[1:2]
    assert judge(weighted, champion, challenger).score == pytest.approx(25.0)
    critical = [MetricSpec("m0", Direction.LOWER_IS_BETTER, critical=True)] + specs[1:]
    assert judge(critical, champion, challenger).verdict is Verdict.FAIL


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Thresholds(pass_score=70, marginal_score=75), "marginal <= pass"),
        (lambda: Thresholds(pass_score=101), "marginal <= pass"),
        (lambda: MetricSpec("x", Direction.LOWER_IS_BETTER, tolerance=-0.1), "tolerance"),
        (lambda: MetricSpec("x", Direction.LOWER_IS_BETTER, weight=0), "weight"),
        (lambda: MetricSpec("x", "sideways"), "sideways"),
        (lambda: judge([], {}, {}), "at least one metric"),
        (lambda: judge([LATENCY, LATENCY], {}, {}), "unique"),
    ],
)
def test_judge_configuration_errors(build, message):
    with pytest.raises((ConfigError, ValueError), match=message):
        build()


# -- sample-ratio mismatch and the sign test ---------------------------------------------------------------


def test_srm_matches_scipy_and_detects_an_injected_mismatch():
    fair = sample_ratio_mismatch([5030, 4970], [0.5, 0.5])
    ref = stats.chisquare([5030, 4970], [5000, 5000])
    assert (fair.statistic, fair.p_value) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue))
    assert not fair.mismatch and fair.expected == (5000.0, 5000.0)
    injected = sample_ratio_mismatch([5200, 4800], [0.5, 0.5])  # 4 % of the challenger's units lost
    assert injected.mismatch and injected.p_value < 0.001
    canary = sample_ratio_mismatch([9480, 520], [0.95, 0.05])
    assert not canary.mismatch and canary.p_value == pytest.approx(stats.chisquare([9480, 520], [9500, 500]).pvalue)
    assert sample_ratio_mismatch([5200, 4800], [0.5, 0.5], threshold=1e-6).mismatch is False


def test_srm_edge_cases_and_errors():
    assert sample_ratio_mismatch([0, 0], [0.5, 0.5]).mismatch is False
    assert sample_ratio_mismatch([100, 3], [1.0, 0.0]).mismatch is True  # units in an arm of weight 0
    assert sample_ratio_mismatch([100, 0], [1.0, 0.0]).mismatch is False
    with pytest.raises(ConfigError, match="sum to 1"):
        sample_ratio_mismatch([10, 10], [0.5, 0.6])
    with pytest.raises(ConfigError, match="one weight per arm"):
        sample_ratio_mismatch([10, 10, 10], [0.5, 0.5])
    with pytest.raises(DataError, match="integers >= 0"):
        sample_ratio_mismatch([10, -1], [0.5, 0.5])


def test_sign_test_matches_binomtest_and_names_the_preferred_side():
    res = sign_test(40, 62, ties=900)
    assert res.p_value == pytest.approx(stats.binomtest(62, 102, 0.5).pvalue)
    assert res.preferred is Side.B and res.ties == 900
    assert sign_test(70, 30).preferred is Side.A
    assert sign_test(52, 48).preferred is Side.NONE
    assert sign_test(0, 0, ties=10).p_value == 1.0 and sign_test(0, 0).preferred is Side.NONE
    assert count_wins([1, 0, 2, 0, 1], [0, 0, 3, 1, 1]) == (1, 2, 2)
    with pytest.raises(DataError):
        sign_test(-1, 3)


def test_the_always_valid_sign_test_is_the_beta_mixture_likelihood_ratio() -> None:
    from cl_hpc.rollout.stats import sign_test_always_valid

    for wins_a, wins_b in ((3, 9), (40, 61), (0, 0), (12, 12)):
        n = wins_a + wins_b
        # the uniform mixture of the binomial likelihood over P(B wins), against P = 1/2
        mixed = integrate.quad(lambda p, a=wins_a, b=wins_b: p ** b * (1 - p) ** a, 0, 1)[0]
        expected = min(1.0, 0.5 ** n / mixed)
        assert sign_test_always_valid(wins_a, wins_b).p_value == pytest.approx(expected, rel=1e-6)


def test_the_always_valid_sign_test_holds_alpha_under_peeking_where_the_exact_one_does_not() -> None:
    from cl_hpc.rollout.stats import sign_test, sign_test_always_valid

    rng = np.random.default_rng(5)
    runs, looks = 300, 300
    valid = naive = 0
    for _ in range(runs):
        wins_b = np.cumsum(rng.random(looks) < 0.5)  # A/A: each impression won by B with 1/2
        n = np.arange(1, looks + 1)
        valid += any(sign_test_always_valid(int(k - b), int(b)).rejected for k, b in zip(n[9::10], wins_b[9::10]))
        naive += any(sign_test(int(k - b), int(b)).p_value < 0.05 for k, b in zip(n[9::10], wins_b[9::10]))
    assert valid / runs <= 0.05 + 2 * (0.05 * 0.95 / runs) ** 0.5
    assert naive / runs > 0.1  # the exact test read at every look inflates: why the always-valid one decides
