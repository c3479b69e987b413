"""A/B and shadow experiments: one look at the decision metric, then promote, reject or wait.

The metric (``experiment.metric``) is ``accuracy``, per answer 0/1 against its joined label (higher
is better), or ``latency_ms``, per request (lower is better). Each arm's values come from the
prediction log and the label zones: for an A/B test, the live answers of each arm; for a shadow, the
champion's live answers against the challenger's logged copies (join the copies with
``labels.role=shadow`` into a zone of their own and pass both zones).

- A/B only: the sample ratio of the units since the split is off (chi-square, p < srm_alpha): HALT.
- Fewer than ``min_samples`` values on an arm: WAIT (no test runs on a handful of rows).
- ``sequential: true`` (the default): the always-valid mSPRT (cl_hpc/rollout/sequential.py; mixture
  variance ``mde**2``), so any look may decide without inflating false positives. Not yet rejected:
  WAIT, however long; a challenger equal to the champion runs until stopped.
- ``sequential: false``: the fixed-horizon test (two-proportion z or Welch's t), read only once both
  arms hold the planned sample size (``mde``, ``power``, ``alpha``); a look before it waits, since a
  fixed-horizon p-value read early is not valid.
- Significantly better: PROMOTE through the registry. Significantly worse, or (fixed horizon) no
  significant gain at the planned size: REJECT (the challenger is tagged rejected; the champion stays).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from cl_hpc.errors import ConfigError
from cl_hpc.rollout.records import Experiment, ExperimentEvent, ExperimentKind, current_split
from cl_hpc.rollout.report import answers, labelled_in, logged_rows, srm_check, unit_keys
from cl_hpc.rollout.sequential import MSPRT, StreamKind
from cl_hpc.rollout.stats import (
    PowerPlan,
    SrmResult,
    TestResult,
    sample_size_binary,
    sample_size_continuous,
    two_proportion_ztest,
    welch_ttest,
)
from cl_hpc.rollout.steps import CHALLENGER, CHAMPION, Decision, Sources, Step, all_champion, halted

HIGHER_IS_BETTER = {"accuracy": True, "latency_ms": False}  # the metrics a test can decide on


def ab_step(experiment: Experiment, events: Sequence[ExperimentEvent], sources: Sources) -> Step:
    """The decision of an A/B or shadow experiment at this look (nothing written)."""
    if experiment.kind not in (ExperimentKind.AB, ExperimentKind.SHADOW):
        raise ValueError(f"experiment {experiment.id} is a {experiment.kind.value}, not an ab or shadow")
    config = experiment.config
    metric = str(config.get("metric", "accuracy"))
    if metric not in HIGHER_IS_BETTER:
        raise ConfigError(f"experiment {experiment.id}: experiment.metric={metric!r} cannot decide a test; valid: "
                          f"{', '.join(HIGHER_IS_BETTER)} (cl_hpc/config/experiment.py)")
    split = current_split(events)
    weights = dict(split.weights)
    logged = logged_rows(experiment, sources.log_dir)
    live = logged[logged["role"] == "live"] if len(logged) else logged
    srm = srm_check(experiment, split, live, float(config.get("srm_alpha", 0.001)), [])
    if srm is not None and srm.mismatch:
        return halted(srm, weights)
    values, binary = _values(experiment, metric, logged, sources)
    counts = {arm: int(v.size) for arm, v in values.items()}
    need = int(config.get("min_samples", 500))
    if min(counts.values()) < need:
        return Step(Decision.WAIT, f"{metric}: {counts[CHAMPION]} champion and {counts[CHALLENGER]} challenger values "
                                   f"(units: {experiment.unit.value}) of the {need} per arm needed before a test "
                                   f"(experiment.min_samples)",
                    weights, srm=srm, samples=counts)
    if bool(config.get("sequential", True)):
        return sequential_look(experiment, metric, values, weights, srm, counts, binary)
    return fixed_horizon_look(experiment, metric, values, weights, srm, counts, binary)


def _values(experiment: Experiment, metric: str, logged: pd.DataFrame,
            sources: Sources) -> tuple[dict[str, np.ndarray], bool]:
    """Per arm, one value per randomization unit: the mean of its answers' 0/1 hits on matured labels
    (accuracy) or of its requests' latencies. Rows of one user are correlated, and a test that took
    them for independent samples would find effects that are not there (the unit of analysis is the
    unit of randomization). Also whether every unit holds one 0/1 value (a Bernoulli stream)."""
    roles = {CHAMPION: "live", CHALLENGER: "shadow" if experiment.kind is ExperimentKind.SHADOW else "live"}
    if metric == "accuracy":
        labelled = labelled_in(experiment, sources.label_dirs, sources.label_col, sources.output)
        groups = {arm: labelled[labelled["arm"] == arm].groupby("unit")["hit"] for arm in roles}
        single = all(int(g.size().max()) <= 1 for g in groups.values() if g.ngroups)
        return {arm: g.mean().to_numpy(dtype=float) for arm, g in groups.items()}, single
    out = {}
    predicted = answers(logged)
    for arm, role in roles.items():
        rows = predicted[(predicted["arm"] == arm) & (predicted["role"] == role)] if len(predicted) else predicted
        requests = rows.drop_duplicates("request_id")
        out[arm] = (requests.groupby(unit_keys(experiment.unit, requests))["latency_ms"].mean().to_numpy(dtype=float)
                    if len(requests) else np.zeros(0))
    return out, False


def sequential_look(experiment: Experiment, metric: str, values: dict[str, np.ndarray], weights: dict[str, float],
                    srm: Optional[SrmResult], counts: dict[str, int], binary: Optional[bool] = None) -> Step:
    """``binary``: every value a 0/1 (default: the metric is accuracy); else means of units, Welch's variance."""
    config = experiment.config
    binary = metric == "accuracy" if binary is None else binary
    kind = StreamKind.BERNOULLI if binary else StreamKind.TWO_SAMPLE
    # The mixture variance is the square of the effect worth detecting (Johari et al., section 4.3).
    test = MSPRT(kind, float(config.get("mde", 0.02)) ** 2, alpha=float(config.get("alpha", 0.05)))
    test.update(values[CHAMPION], values[CHALLENGER])
    result = test.result(metric)
    if not test.rejected:
        return Step(Decision.WAIT, f"{metric}: no decision yet, {_shown(result)} (always valid: look again any time)",
                    weights, srm=srm, samples=counts, detail={"test": _json(result)})
    return _verdict(experiment, metric, result, weights, srm, counts, None)


def fixed_horizon_look(experiment: Experiment, metric: str, values: dict[str, np.ndarray], weights: dict[str, float],
                       srm: Optional[SrmResult], counts: dict[str, int], binary: Optional[bool] = None) -> Step:
    config = experiment.config
    binary = metric == "accuracy" if binary is None else binary
    alpha, power = float(config.get("alpha", 0.05)), float(config.get("power", 0.8))
    mde = float(config.get("mde", 0.02))
    plan = _plan(binary, values[CHAMPION], mde, alpha, power)
    if min(counts.values()) < max(plan.n_a, plan.n_b):
        return Step(Decision.WAIT, f"{metric}: fixed-horizon test read at {plan.n_a} per arm ({plan.summary()}); "
                                   f"{counts[CHAMPION]} champion and {counts[CHALLENGER]} challenger values so far",
                    weights, srm=srm, samples=counts, detail={"plan": asdict(plan)})
    a, b = values[CHAMPION], values[CHALLENGER]
    if binary:
        result = two_proportion_ztest(int(a.sum()), a.size, int(b.sum()), b.size, metric=metric, alpha=alpha)
    else:
        result = welch_ttest(a, b, metric=metric, alpha=alpha)
    return _verdict(experiment, metric, result, weights, srm, counts, plan)


def _plan(binary: bool, champion: np.ndarray, mde: float, alpha: float, power: float) -> PowerPlan:
    if binary:
        baseline = float(np.clip(champion.mean(), 0.01, 0.99 - mde))  # a perfect or empty champion still plans
        return sample_size_binary(baseline, mde, alpha=alpha, power=power)
    spread = float(np.std(champion, ddof=1)) if champion.size > 1 else 0.0
    return sample_size_continuous(mde / spread if spread > 0 else 1.0, alpha=alpha, power=power)


def _verdict(experiment: Experiment, metric: str, result: TestResult, weights: dict[str, float],
             srm: Optional[SrmResult], counts: dict[str, int], plan: Optional[PowerPlan]) -> Step:
    better = result.estimate > 0 if HIGHER_IS_BETTER[metric] else result.estimate < 0
    detail = {"test": _json(result), **({"plan": asdict(plan)} if plan else {})}
    if result.significant and better:
        return Step(Decision.PROMOTE, f"{metric}: the challenger is better, {_shown(result)}",
                    {CHALLENGER: 1.0, CHAMPION: 0.0}, srm=srm, samples=counts, detail=detail)
    why = "worse" if result.significant else "not significantly better at the planned sample size"
    return Step(Decision.REJECT, f"{metric}: the challenger is {why}, {_shown(result)}", all_champion(weights),
                srm=srm, samples=counts, detail=detail)


def _shown(result: TestResult) -> str:
    return (f"challenger - champion = {result.estimate:+.4g} [{result.ci_low:+.4g}, {result.ci_high:+.4g}], "
            f"{result.test.value} p = {result.p_value:.3g} (alpha {result.alpha:g}; n {result.n_a} / {result.n_b})")


def _json(result: TestResult) -> dict[str, object]:
    return {**asdict(result), "test": result.test.value}
