"""The champion/challenger gate on tables of synthetic prediction sets (fixed seeds).

Most cases fix the exact discordant counts (rows only one model gets right), so every statistic is
known in advance; the bootstrap cases draw predictions from known accuracies instead.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from scipy import stats

from cl_hpc.errors import ConfigError, DataError
from cl_hpc.learn.gate import GateConf, Scored, Verdict, decide, gate_conf, mcnemar_test, metric_value
from cl_hpc.learn.metrics import log_loss


def probs_for(y: np.ndarray, ok: np.ndarray, k: int = 2, confidence: float = 0.8) -> np.ndarray:
    """Class probabilities that put `confidence` on the true class where ok, else on the next class."""
    pred = np.where(ok, y, (y + 1) % k)
    probs = np.full((len(y), k), (1 - confidence) / (k - 1))
    probs[np.arange(len(y)), pred] = confidence
    return probs


def paired(both: int, champ_only: int, chal_only: int, neither: int, seed: int = 0) -> Scored:
    """A window of exactly these counts of (champion right, challenger right) rows, shuffled."""
    champ_ok = np.repeat([True, True, False, False], [both, champ_only, chal_only, neither])
    chal_ok = np.repeat([True, False, True, False], [both, champ_only, chal_only, neither])
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(champ_ok))
    y = rng.integers(0, 2, len(champ_ok))
    return Scored(y, probs_for(y, chal_ok[order]), probs_for(y, champ_ok[order]))


def failed_checks(verdict: Verdict) -> set[str]:
    return {r.split(":")[0] for r in verdict.reasons if r.endswith(": failed")}


# name, (both right, champion only, challenger only, neither), margin, passed, failed checks
CASES = [
    ("genuinely better", (700, 20, 80, 200), 0.01, True, set()),
    ("equal", (750, 30, 30, 190), 0.01, False, {"margin", "significance"}),
    ("better by chance only", (750, 40, 55, 155), 0.0, False, {"significance"}),
    ("significant but below the margin", (700, 20, 60, 220), 0.05, False, {"margin"}),
    ("worse", (700, 80, 20, 200), 0.01, False, {"margin", "significance"}),
    ("better, few discordant rows (exact test)", (900, 1, 14, 85), 0.01, True, set()),
]


@pytest.mark.parametrize("name,counts,margin,passed,failed", CASES, ids=[c[0] for c in CASES])
def test_gate_decisions_on_paired_predictions(name: str, counts: tuple[int, int, int, int], margin: float,
                                              passed: bool, failed: set[str]) -> None:
    verdict = decide(GateConf(margin=margin), paired(*counts))
    assert verdict.passed is passed, verdict.reasons
    assert failed_checks(verdict) == failed
    both, b, c, neither = counts
    assert verdict.new_window.improvement == pytest.approx((c - b) / sum(counts))
    assert verdict.test.discordant == (b, c)


def test_the_challenger_that_forgets_the_previous_window_fails() -> None:
    new = paired(700, 20, 80, 200)
    forgets = paired(700, 100, 10, 190, seed=1)  # champion 0.80, challenger 0.71 on the previous window
    verdict = decide(GateConf(), new, previous=forgets)
    assert not verdict.passed and failed_checks(verdict) == {"forgetting (previous window)"}
    assert verdict.forgetting is not None
    assert verdict.forgetting.improvement == pytest.approx(-0.09)
    assert verdict.forgetting.required == -0.02
    mild = decide(GateConf(), new, previous=paired(700, 25, 15, 260, seed=1))  # -0.01, within max_forgetting
    assert mild.passed and mild.forgetting is not None and mild.forgetting.passed


def test_a_slice_regression_fails_and_small_slices_are_skipped() -> None:
    big, regressed = paired(500, 10, 150, 140, seed=2), paired(150, 30, 0, 20, seed=3)  # 300 + 200 rows
    y = np.concatenate([big.y, regressed.y, regressed.y[:10]])
    chal = np.concatenate([big.challenger, regressed.challenger, regressed.challenger[:10]])
    champ = np.concatenate([big.champion, regressed.champion, regressed.champion[:10]])
    region = np.array(["north"] * 800 + ["south"] * 200 + ["tiny"] * 10)
    conf = GateConf(slices=["region"], min_slice_rows=50)
    verdict = decide(conf, Scored(y, chal, champ, slices={"region": region}))
    assert verdict.new_window.passed and verdict.test.passed
    assert not verdict.passed and failed_checks(verdict) == {"slice region='south' (200 rows)"}
    by_value = {s.value: s for s in verdict.slices}
    assert by_value["north"].passed and by_value["south"].comparison is not None
    assert by_value["south"].comparison.improvement == pytest.approx(-30 / 200)
    assert by_value["tiny"].comparison is None and "10 rows < min_slice_rows 50" in (by_value["tiny"].skipped or "")
    assert any(r.startswith("slice region='tiny' (10 rows): skipped") for r in verdict.reasons)


@pytest.mark.parametrize("accuracy,passed", [(0.85, True), (0.66, False)])
def test_cold_start_compares_with_the_majority_class_baseline(accuracy: float, passed: bool) -> None:
    rng = np.random.default_rng(4)
    y = (rng.random(2000) < 0.65).astype(int)  # majority class 1, 65% of rows
    chal = probs_for(y, rng.random(2000) < accuracy)
    verdict = decide(GateConf(), Scored(y, chal))
    assert verdict.cold_start and verdict.passed is passed
    assert verdict.new_window.reference == pytest.approx(y.mean())
    assert verdict.reference == "baseline (class prior, majority class 1)"
    assert verdict.reasons[0].startswith("cold start: no champion")
    assert verdict.forgetting is None and "forgetting: skipped, no champion to compare with" in verdict.reasons


def test_cold_start_baseline_from_given_class_counts() -> None:
    y = np.array([0, 1] * 100)
    verdict = decide(GateConf(), Scored(y, probs_for(y, np.ones(200, bool))), prior=[30, 70])
    assert verdict.new_window.reference == 0.5 and verdict.reference.endswith("majority class 1)")
    assert verdict.passed


@pytest.mark.parametrize("b,c", [(3, 12), (12, 3), (0, 7), (10, 14), (0, 0), (40, 60), (60, 40), (25, 25), (5, 95)])
def test_mcnemar_p_values_equal_scipys(b: int, c: int) -> None:
    name, statistic, p = mcnemar_test(b, c, exact_below=25)
    if b + c < 25:
        assert name == "mcnemar_exact" and statistic == min(b, c)
        assert p == pytest.approx(stats.binomtest(c, b + c, 0.5).pvalue if b + c else 1.0)
    else:
        expected = max(abs(b - c) - 1, 0) ** 2 / (b + c)
        assert name == "mcnemar_chi2" and statistic == pytest.approx(expected)
        assert p == pytest.approx(stats.chi2.sf(expected, df=1))


def test_the_gate_reports_the_same_mcnemar_p_as_scipy() -> None:
    verdict = decide(GateConf(), paired(700, 20, 80, 200))
    assert verdict.test.name == "mcnemar_chi2"
    assert verdict.test.p_value == pytest.approx(stats.chi2.sf(59 ** 2 / 100, df=1))
    exact = decide(GateConf(), paired(900, 1, 14, 85))
    assert exact.test.name == "mcnemar_exact"
    assert exact.test.p_value == pytest.approx(stats.binomtest(14, 15, 0.5).pvalue)


def independent(n: int, chal_acc: float, champ_acc: float, seed: int) -> Scored:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return Scored(y, probs_for(y, rng.random(n) < chal_acc), probs_for(y, rng.random(n) < champ_acc))


def test_bootstrap_ci_contains_the_true_difference() -> None:
    conf = GateConf(test="bootstrap", margin=0.0)
    verdict = decide(conf, independent(3000, 0.85, 0.80, seed=5))
    lo, hi = verdict.test.ci or (np.nan, np.nan)
    assert verdict.test.name == "paired_bootstrap" and lo < 0.05 < hi and lo > 0
    assert verdict.test.statistic == pytest.approx(verdict.new_window.improvement)
    assert verdict.passed
    assert decide(conf, independent(3000, 0.85, 0.80, seed=5)).test == verdict.test  # fixed seed, same CI


def test_bootstrap_ci_coverage_is_near_its_level() -> None:
    conf = GateConf(test="bootstrap", bootstrap_samples=500, alpha=0.1)
    covered = 0
    for seed in range(40):
        lo, hi = decide(conf, independent(600, 0.80, 0.75, seed=100 + seed)).test.ci or (np.nan, np.nan)
        covered += lo <= 0.05 <= hi
    assert covered >= 32  # a 90% CI: 36 expected, 32 or fewer has probability < 5%


@pytest.mark.parametrize("metric", ["log_loss", "macro_f1", "roc_auc"])
def test_other_metrics_use_the_bootstrap(metric: str) -> None:
    scored = independent(1000, 0.85, 0.80, seed=6)
    verdict = decide(GateConf(metric=metric, bootstrap_samples=300), scored)
    assert verdict.test.name == "paired_bootstrap" and verdict.passed
    chal, champ = (metric_value(metric, p, scored.y) for p in (scored.challenger, scored.champion))
    assert chal is not None and champ is not None
    expected = champ - chal if metric == "log_loss" else chal - champ
    assert verdict.new_window.improvement == pytest.approx(expected)
    assert verdict.test.statistic == pytest.approx(expected)


def test_log_loss_improvement_is_the_drop_in_loss() -> None:
    scored = independent(500, 0.9, 0.7, seed=7)
    verdict = decide(GateConf(metric="log_loss", bootstrap_samples=200), scored)
    assert scored.champion is not None
    assert verdict.new_window.improvement == pytest.approx(log_loss(scored.champion, scored.y)
                                                           - log_loss(scored.challenger, scored.y))


def test_bootstrap_of_equal_models_is_not_significant() -> None:
    verdict = decide(GateConf(test="bootstrap", margin=0.0), paired(750, 30, 30, 190))
    assert not verdict.passed and failed_checks(verdict) == {"significance"}
    lo, hi = verdict.test.ci or (np.nan, np.nan)
    assert lo < 0 < hi and verdict.test.p_value > 0.5


def test_hard_labels_give_the_same_verdict_as_probabilities() -> None:
    scored = paired(700, 20, 80, 200)
    assert scored.champion is not None
    hard = Scored(scored.y, scored.challenger.argmax(axis=1), scored.champion.argmax(axis=1))
    assert decide(GateConf(), hard).new_window == decide(GateConf(), scored).new_window


def test_verdict_is_json_with_every_number() -> None:
    new = paired(700, 20, 80, 200)
    region = np.where(np.arange(1000) < 500, "a", "b")
    verdict = decide(GateConf(slices=["region"]), Scored(new.y, new.challenger, new.champion, {"region": region}),
                     previous=paired(700, 25, 15, 260, seed=1))
    data: dict[str, Any] = json.loads(json.dumps(verdict.to_dict()))
    assert set(data) == {"passed", "metric", "cold_start", "reference", "new_window", "margin", "test",
                         "forgetting", "max_forgetting", "slices", "max_slice_drop", "reasons"}
    assert set(data["new_window"]) == {"rows", "challenger", "reference", "improvement", "required", "passed"}
    assert set(data["test"]) == {"name", "statistic", "p_value", "alpha", "ci", "discordant", "passed"}
    assert data["test"]["discordant"] == [20, 80] and data["slices"][0]["value"] == "a"
    assert data["passed"] is True and len(data["reasons"]) == 5


@pytest.mark.parametrize("params,needle", [
    ({"metric": "f2"}, "metric='f2'"),
    ({"test": "mcnemar", "metric": "log_loss"}, "needs metric='accuracy'"),
    ({"alpha": 1.5}, "alpha=1.5"),
    ({"margin": -0.1}, "margin=-0.1"),
    ({"marging": 0.1}, "unknown gate key(s) ['marging']"),
])
def test_bad_gate_config_is_a_config_error(params: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        gate_conf(params)
    assert needle in str(info.value)


@pytest.mark.parametrize("scored,conf,needle", [
    (Scored(np.array([0, 1]), np.zeros((3, 2))), GateConf(), "shape (3, 2)"),
    (Scored(np.array([0, 1]), np.eye(2), np.eye(2)), GateConf(slices=["region"]), "slice column 'region'"),
    (Scored(np.array([1, 1]), np.eye(2), np.eye(2)), GateConf(metric="roc_auc"), "undefined on the new window"),
    (Scored(np.array([], dtype=int), np.zeros((0, 2))), GateConf(), "non-empty"),
])
def test_bad_inputs_are_data_errors(scored: Scored, conf: GateConf, needle: str) -> None:
    with pytest.raises(DataError) as info:
        decide(conf, scored)
    assert needle in str(info.value)


def test_previous_window_without_champion_is_a_data_error() -> None:
    new, previous = paired(700, 20, 80, 200), paired(700, 20, 80, 200, seed=1)
    with pytest.raises(DataError, match="previous window has no champion"):
        decide(GateConf(), new, previous=Scored(previous.y, previous.challenger))
