"""The champion/challenger gate on tables of synthetic prediction sets (fixed seeds).

Most cases fix the exact discordant counts (rows only one model gets right), so every statistic is
known in advance; the bootstrap cases draw predictions from known accuracies instead. The first part
is the classifier path (labels and class probabilities), the second the per-row path any model takes
(per-row values of its metric, in its direction) and the Evaluation entry point that picks a path.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from scipy import stats

from cl_hpc.errors import ConfigError, DataError
from cl_hpc.learn.contract import ContractError, Direction, Evaluation
from cl_hpc.learn.gate import (
    GateConf,
    RowScored,
    Scored,
    Verdict,
    decide,
    decide_evaluations,
    decide_rows,
    gate_conf,
    mcnemar_test,
    metric_value,
)
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
    assert set(data) == {"passed", "metric", "direction", "cold_start", "reference", "new_window", "margin", "test",
                         "forgetting", "max_forgetting", "slices", "max_slice_drop", "reasons"}
    assert set(data["new_window"]) == {"rows", "challenger", "reference", "improvement", "required", "passed",
                                       "non_finite"}
    assert set(data["test"]) == {"name", "statistic", "p_value", "alpha", "ci", "discordant", "passed"}
    assert data["test"]["discordant"] == [20, 80] and data["slices"][0]["value"] == "a"
    assert data["passed"] is True and len(data["reasons"]) == 5


@pytest.mark.parametrize("params,needle", [
    ({"metric": ""}, "metric=''"),
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


# --- the per-row path: any metric, either direction -------------------------------------------------

LOWER, HIGHER = Direction.LOWER, Direction.HIGHER


def shifted(n: int, shift: float, seed: int, spread: float = 0.3) -> RowScored:
    """Per-row losses of a champion (shared row difficulty plus noise) and a challenger whose loss is
    the champion's plus ``shift`` plus zero-mean noise: the mean difference is exactly ``shift``."""
    rng = np.random.default_rng(seed)
    champion = rng.gamma(4.0, 0.5, n)
    noise = rng.normal(0.0, spread, n)
    return RowScored(champion + shift + noise - noise.mean(), champion)


# name, direction, shift of the challenger's mean (metric units), margin, passed, failed checks
ROW_CASES = [
    ("loss clearly lower", LOWER, -0.2, 0.05, True, set()),
    ("loss clearly higher", LOWER, 0.2, 0.05, False, {"margin", "significance"}),
    ("loss equal", LOWER, 0.0, 0.0, False, {"significance"}),
    ("loss lower by chance only", LOWER, -0.01, 0.0, False, {"significance"}),
    ("loss lower, below the margin", LOWER, -0.05, 0.1, False, {"margin"}),
    ("score clearly higher", HIGHER, 0.2, 0.05, True, set()),
    ("score clearly lower", HIGHER, -0.2, 0.05, False, {"margin", "significance"}),
]


@pytest.mark.parametrize("name,direction,shift,margin,passed,failed", ROW_CASES, ids=[c[0] for c in ROW_CASES])
def test_per_row_decisions_in_either_direction(name: str, direction: Direction, shift: float, margin: float,
                                               passed: bool, failed: set[str]) -> None:
    conf = GateConf(metric="loss", margin=margin, bootstrap_samples=500)
    verdict = decide_rows(conf, direction, shifted(800, shift, seed=11))
    assert verdict.passed is passed, verdict.reasons
    assert failed_checks(verdict) == failed
    gain = -shift if direction is LOWER else shift  # positive when the challenger is better
    assert verdict.new_window.improvement == pytest.approx(gain, abs=1e-12)
    assert verdict.test is not None and verdict.test.name == "paired_bootstrap"
    assert verdict.test.statistic == pytest.approx(gain, abs=1e-12)
    way = "lower is better" if direction is LOWER else "higher is better"
    assert verdict.direction == direction.value
    assert verdict.reasons[0].startswith(f"margin: challenger loss ({way}) ")


def zero_one(both: int, ref_only: int, chal_only: int, neither: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(challenger, reference) 0/1 rows with exactly these counts of (reference 1, challenger 1), shuffled."""
    ref = np.repeat([1.0, 1.0, 0.0, 0.0], [both, ref_only, chal_only, neither])
    chal = np.repeat([1.0, 0.0, 1.0, 0.0], [both, ref_only, chal_only, neither])
    order = np.random.default_rng(seed).permutation(len(ref))
    return chal[order], ref[order]


def test_zero_one_rows_take_mcnemar_with_the_classifier_paths_p_value() -> None:
    chal, ref = zero_one(700, 20, 80, 200)
    rows = decide_rows(GateConf(metric="correct"), HIGHER, RowScored(chal, ref))
    probs = decide(GateConf(), paired(700, 20, 80, 200))
    assert rows.test is not None and probs.test is not None
    assert rows.test.name == "mcnemar_chi2" and rows.test.discordant == (20, 80)
    assert rows.test.p_value == pytest.approx(probs.test.p_value)
    assert rows.new_window.improvement == pytest.approx(probs.new_window.improvement) and rows.passed


def test_zero_one_rows_of_a_lower_is_better_metric_count_the_challengers_zeros() -> None:
    chal, ref = zero_one(100, 80, 20, 800)  # an error indicator: the challenger errs on 120 rows, the champion 180
    verdict = decide_rows(GateConf(metric="error"), LOWER, RowScored(chal, ref))
    assert verdict.test is not None and verdict.test.name == "mcnemar_chi2"
    assert verdict.test.discordant == (20, 80)  # (rows only the champion was better on, only the challenger)
    assert verdict.new_window.improvement == pytest.approx(0.06) and verdict.passed


def test_a_share_per_row_takes_the_bootstrap_and_test_choices_are_obeyed() -> None:
    chal, ref = zero_one(700, 20, 80, 200)
    shares = RowScored(chal * 0.5 + 0.25, ref * 0.5 + 0.25)  # token accuracy: a share per row, not 0/1
    auto = decide_rows(GateConf(metric="token_accuracy", bootstrap_samples=300), HIGHER, shares)
    assert auto.test is not None and auto.test.name == "paired_bootstrap" and auto.passed
    forced = decide_rows(GateConf(metric="correct", test="bootstrap", bootstrap_samples=300), HIGHER,
                         RowScored(chal, ref))
    assert forced.test is not None and forced.test.name == "paired_bootstrap"
    with pytest.raises(ConfigError, match=r"test='mcnemar'.*metric 'token_accuracy' has other values \(e\.g\. 0\.75"):
        decide_rows(GateConf(metric="token_accuracy", test="mcnemar"), HIGHER, shares)


@pytest.mark.parametrize("shift,passed", [(0.3, False), (0.01, True)])
def test_per_row_forgetting_guardrail(shift: float, passed: bool) -> None:
    conf = GateConf(metric="loss", margin=0.05, max_forgetting=0.05, bootstrap_samples=300)
    verdict = decide_rows(conf, LOWER, shifted(800, -0.2, seed=12), previous=shifted(400, shift, seed=13))
    assert verdict.forgetting is not None and verdict.forgetting.improvement == pytest.approx(-shift, abs=1e-12)
    assert verdict.passed is passed
    assert failed_checks(verdict) == (set() if passed else {"forgetting (previous window)"})


def test_per_row_slices_catch_a_regressed_group_and_skip_small_ones() -> None:
    good, bad = shifted(600, -0.3, seed=14), shifted(200, 0.2, seed=15)
    assert good.reference is not None and bad.reference is not None
    new = RowScored(np.concatenate([good.challenger, bad.challenger]),
                    np.concatenate([good.reference, bad.reference]),
                    {"region": np.array(["north"] * 600 + ["south"] * 190 + ["tiny"] * 10)})
    conf = GateConf(metric="loss", slices=["region"], bootstrap_samples=300)
    verdict = decide_rows(conf, LOWER, new)
    assert verdict.new_window.passed and verdict.test is not None and verdict.test.passed
    assert failed_checks(verdict) == {"slice region='south' (190 rows)"} and not verdict.passed
    by_value = {s.value: s for s in verdict.slices}
    assert by_value["north"].passed and by_value["tiny"].comparison is None


# name, baseline rows (None = the data module has none), challenger rows, passed, first reason starts with
COLD = [
    ("beats the baseline", np.full(200, 2.0), np.full(200, 1.0) + np.linspace(-0.1, 0.1, 200), True,
     "cold start: no champion; the challenger is compared with the baseline"),
    ("worse than the baseline", np.full(200, 1.0), np.full(200, 2.0) + np.linspace(-0.1, 0.1, 200), False,
     "cold start: no champion; the challenger is compared with the baseline"),
    ("no baseline: no bar", None, np.full(200, 9.0), True, "cold start: no champion, and the data module gives no"),
    ("no baseline, a NaN row", None, np.r_[np.full(199, 1.0), np.nan], False,
     "cold start: no champion, and the data module gives no"),
]


@pytest.mark.parametrize("name,baseline,chal,passed,first", COLD, ids=[c[0] for c in COLD])
def test_cold_start_on_per_row_values(name: str, baseline: np.ndarray | None, chal: np.ndarray, passed: bool,
                                      first: str) -> None:
    conf = GateConf(metric="loss", bootstrap_samples=300, slices=["region"] if baseline is None else [])
    verdict = decide_rows(conf, LOWER, RowScored(chal, baseline), cold_start=True)
    assert verdict.cold_start and verdict.passed is passed, verdict.reasons
    assert verdict.reasons[0].startswith(first)
    assert "forgetting: skipped, no champion to compare with" in verdict.reasons
    if baseline is None:
        assert verdict.test is None and verdict.new_window.reference is None
        assert "there is no bar" in verdict.reasons[0] and "slices: skipped, no bar to compare with" in verdict.reasons
        assert verdict.reasons[1].startswith("values: ")
        assert verdict.reasons[1].endswith("1 of 200 challenger values of loss (lower is better) are not finite "
                                           "(NaN or inf): failed" if not passed else "all finite: passed")
        json.dumps(verdict.to_dict(), allow_nan=False)


# where the non-finite values are, the check that fails, its reason's words
NON_FINITE = [
    ("challenger", "margin", "3 of 300 challenger values of loss (lower is better) are not finite"),
    ("champion", "margin", "3 of 300 champion values of loss (lower is better) are not finite"),
    ("previous", "forgetting (previous window)", "3 of 300 challenger values of loss"),
]


@pytest.mark.parametrize("where,check,words", NON_FINITE, ids=[c[0] for c in NON_FINITE])
def test_non_finite_values_fail_with_the_row_count(where: str, check: str, words: str) -> None:
    new, previous = shifted(300, -0.3, seed=16), shifted(300, 0.0, seed=17)
    broken = new.challenger if where == "challenger" else new.reference if where == "champion" else \
        previous.challenger
    assert broken is not None
    broken[[3, 50, 90]] = [np.nan, np.inf, -np.inf]
    verdict = decide_rows(GateConf(metric="loss", bootstrap_samples=300), LOWER, new, previous)
    assert not verdict.passed
    assert check in failed_checks(verdict)
    assert any(r.startswith(check) and words in r for r in verdict.reasons), verdict.reasons
    if where != "previous":
        assert verdict.test is None and "significance: not tested, the values are not all finite" in verdict.reasons
    data = json.loads(json.dumps(verdict.to_dict(), allow_nan=False))  # strict JSON: no NaN anywhere
    assert data["passed"] is False


@pytest.mark.parametrize("new,previous,cold,needle", [
    (RowScored(np.zeros(3), np.zeros(4)), None, False, "champion's per-row values on the new window have shape (4,)"),
    (RowScored(np.zeros(0), np.zeros(0)), None, False, "challenger's per-row values on the new window"),
    (RowScored(np.zeros(3), None), None, False, "no champion values"),
    (RowScored(np.zeros(3), np.zeros(3)), RowScored(np.zeros(3), None), False, "previous window has no champion"),
])
def test_bad_per_row_inputs_are_data_errors(new: RowScored, previous: RowScored | None, cold: bool,
                                            needle: str) -> None:
    with pytest.raises(DataError) as info:
        decide_rows(GateConf(metric="loss"), LOWER, new, previous, cold_start=cold)
    assert needle in str(info.value)


# --- the Evaluation entry point --------------------------------------------------------------------


def classifier_evaluation(y: np.ndarray, probs: np.ndarray, prior: list[float] | None = None) -> Evaluation:
    """What scoring.evaluate gives for the bundled classifier, with its class-prior baseline rows."""
    correct = (probs.argmax(axis=1) == y).astype(float)
    nll = -np.log(np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0))
    baseline = {}
    if prior is not None:
        right = (y == int(np.argmax(prior))).astype(float)
        baseline = {"correct": right, "accuracy": right, "log_loss": -np.log(np.asarray(prior)[y])}
    return Evaluation(len(y), {"accuracy": float(correct.mean())},
                      {"correct": correct, "accuracy": correct, "log_loss": nll}, probs, y, baseline)


@pytest.mark.parametrize("metric", ["accuracy", "log_loss", "macro_f1", "roc_auc"])
def test_classifier_evaluations_give_the_classifier_paths_verdict(metric: str) -> None:
    scored = independent(1000, 0.85, 0.80, seed=6)
    assert scored.champion is not None
    conf = GateConf(metric=metric, bootstrap_samples=300)
    direction = HIGHER if metric != "log_loss" else LOWER
    verdict = decide_evaluations(conf, direction, classifier_evaluation(scored.y, scored.challenger),
                                 classifier_evaluation(scored.y, scored.champion))
    expected = decide(conf, scored)
    assert verdict.new_window.improvement == pytest.approx(expected.new_window.improvement)
    assert verdict.test is not None and expected.test is not None
    assert verdict.test.name == expected.test.name and verdict.test.p_value == pytest.approx(expected.test.p_value)
    assert verdict.passed is expected.passed


def test_evaluations_of_a_language_model_take_the_per_row_path_and_its_forgetting() -> None:
    new, old = shifted(500, -0.2, seed=18), shifted(300, 0.5, seed=19)

    def lm(loss: np.ndarray) -> Evaluation:
        return Evaluation(len(loss), {"loss": float(loss.mean())}, {"loss": loss, "token_accuracy": 1 / (1 + loss)})

    assert new.reference is not None and old.reference is not None
    conf = GateConf(metric="loss", margin=0.05, max_forgetting=0.1, bootstrap_samples=300)
    verdict = decide_evaluations(conf, LOWER, lm(new.challenger), lm(new.reference),
                                 (lm(old.challenger), lm(old.reference)))
    assert verdict.metric == "loss" and verdict.direction == "lower" and verdict.reference == "champion"
    assert failed_checks(verdict) == {"forgetting (previous window)"}
    assert verdict.new_window.improvement == pytest.approx(0.2)


def test_cold_start_evaluations_use_the_baseline_rows_or_no_bar() -> None:
    rng = np.random.default_rng(4)
    y = (rng.random(2000) < 0.65).astype(int)
    chal = classifier_evaluation(y, probs_for(y, rng.random(2000) < 0.85), prior=[0.35, 0.65])
    verdict = decide_evaluations(GateConf(), HIGHER, chal)
    assert verdict.cold_start and verdict.passed and verdict.reference.startswith("baseline")
    assert verdict.new_window.reference == pytest.approx(y.mean())  # majority-class accuracy
    lm = Evaluation(10, {"loss": 2.0}, {"loss": np.full(10, 2.0)})  # a workload without baseline_rows
    first = decide_evaluations(GateConf(metric="loss"), LOWER, lm)
    assert first.passed and first.cold_start and first.test is None and "no bar" in first.reasons[0]


def test_evaluation_errors_name_the_metric() -> None:
    lm = Evaluation(10, {"loss": 2.0, "perplexity": 7.4}, {"loss": np.full(10, 2.0)})
    with pytest.raises(ConfigError, match=r"gate metric 'perplexity'.*among \['loss'\]"):
        decide_evaluations(GateConf(metric="perplexity"), LOWER, lm)
    other = Evaluation(10, {}, {"token_accuracy": np.ones(10)})
    with pytest.raises(DataError, match=r"champion's evaluation has no per-row values of metric 'loss'"):
        decide_evaluations(GateConf(metric="loss"), LOWER, lm, other)
    y = np.array([0, 1] * 50)
    clf = classifier_evaluation(y, probs_for(y, np.ones(100, bool)))
    with pytest.raises(ContractError, match="declares 'roc_auc' lower-is-better"):
        decide_evaluations(GateConf(metric="roc_auc"), LOWER, clf, clf)
    with pytest.raises(ConfigError, match=r"decide\(\) computes the metric from class probabilities"):
        decide(GateConf(metric="loss"), paired(700, 20, 80, 200))
