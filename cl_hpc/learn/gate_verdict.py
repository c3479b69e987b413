"""The gate's configuration, its verdict records, and how a verdict is assembled and explained.

Shared by the gate's two paths (cl_hpc/learn/gate.py: per-row values of any model;
cl_hpc/learn/gate_classifier.py: class probabilities). Pure, no I/O; callers import from
cl_hpc.learn.gate, which re-exports what is public here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

import numpy as np

from cl_hpc.errors import ConfigError, DataError
from cl_hpc.learn.contract import Direction
from cl_hpc.learn.gate_stats import Significance

# Classifier metrics the gate computes from class probabilities -> higher is better; roc_auc needs two
# classes (it scores class 1). Any other metric is judged from the model's per-row values.
METRICS: dict[str, bool] = {"accuracy": True, "macro_f1": True, "roc_auc": True, "log_loss": False}
TESTS = ("auto", "mcnemar", "bootstrap")
_TOL = 1e-12  # 0.81 - 0.80 is 0.0099999...; a float rounding must not fail a margin that was met


@dataclass
class GateConf:
    """How high the bar is. Metric units throughout (accuracy 0.01 = one point, a loss in its units)."""

    # any metric the model reports (its `metrics` attribute, which also says which way it improves);
    # the caller checks it against the model (contract.require_metric)
    metric: str = "accuracy"
    margin: float = 0.01  # improvement the challenger needs on the new window, >= 0
    alpha: float = 0.05  # significance level: the test's p-value must be below it
    # mcnemar (0/1 per-row values only) | bootstrap | auto = mcnemar where every per-row value of the
    # metric is 0 or 1 (correctness), the paired bootstrap otherwise
    test: str = "auto"
    bootstrap_samples: int = 2000  # paired bootstrap resamples; the CI is at level 1 - alpha
    seed: int = 0  # bootstrap RNG seed: the same predictions always give the same verdict
    # below this many discordant pairs McNemar uses the exact binomial test; at or above, chi2 with
    # continuity correction (the usual rule of thumb: the chi2 approximation needs b + c >= 25)
    mcnemar_exact_below: int = 25
    max_forgetting: float = 0.02  # most the challenger may trail the champion by on the previous window
    max_slice_drop: float = 0.05  # most the challenger may trail the reference by in any one slice
    min_slice_rows: int = 50  # slices with fewer rows are skipped (and reported): too noisy to judge
    slices: list[str] = field(default_factory=list)  # slice columns; each value of one is a slice

    def __post_init__(self) -> None:
        if _conf_problems(self):
            raise ConfigError("invalid gate config: " + "; ".join(_conf_problems(self)))

    @property
    def resolved_test(self) -> str:
        """``mcnemar`` or ``bootstrap``: what ``auto`` means on the classifier path (:func:`decide`).
        The per-row path looks at the values instead (:func:`row_significance`)."""
        return self.test if self.test != "auto" else "mcnemar" if self.metric == "accuracy" else "bootstrap"


def _conf_problems(c: GateConf) -> list[str]:
    checks = [
        (isinstance(c.metric, str) and bool(c.metric.strip()),
         f"metric={c.metric!r}; give a metric the model reports (its `metrics` attribute), e.g. 'accuracy' or 'loss'"),
        (c.test in TESTS, f"test={c.test!r}; valid: {list(TESTS)}"),
        (c.test != "mcnemar" or c.metric not in METRICS or c.metric == "accuracy",
         f"test='mcnemar' compares per-row 0/1 correctness, so among the classifier metrics it needs "
         f"metric='accuracy', got {c.metric!r}; use test='bootstrap' or 'auto'"),
        (c.margin >= 0, f"margin={c.margin} must be >= 0"),
        (0 < c.alpha < 1, f"alpha={c.alpha} must be in (0, 1)"),
        (c.bootstrap_samples >= 100 and c.mcnemar_exact_below >= 0, f"bootstrap_samples="
         f"{c.bootstrap_samples} must be >= 100 and mcnemar_exact_below={c.mcnemar_exact_below} >= 0"),
        (c.max_forgetting >= 0 and c.max_slice_drop >= 0,
         f"max_forgetting={c.max_forgetting} and max_slice_drop={c.max_slice_drop} must be >= 0"),
        (c.min_slice_rows >= 1, f"min_slice_rows={c.min_slice_rows} must be >= 1"),
    ]
    return [message for ok, message in checks if not ok]


def gate_conf(params: Optional[Mapping[str, Any]] = None) -> GateConf:
    """A config mapping (e.g. the ``gate`` group as a dict) as a checked GateConf; None = defaults."""
    raw = dict(params or {})
    names = [f.name for f in dataclasses.fields(GateConf)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ConfigError(f"unknown gate key(s) {unknown}; valid keys: {names}")
    return GateConf(**raw)


@dataclass(frozen=True)
class Comparison:
    """The metric of the challenger and of the reference (champion or baseline) on some rows."""

    rows: int
    challenger: Optional[float]  # None where some value is not finite
    reference: Optional[float]  # None where some value is not finite, or there is no bar
    improvement: Optional[float]  # positive = the challenger is better; None where either is None
    required: float  # least improvement that passes: +margin, or -max_forgetting / -max_slice_drop
    passed: bool
    non_finite: tuple[int, int] = (0, 0)  # rows whose challenger / reference value is NaN or inf


@dataclass(frozen=True)
class SliceResult:
    """One value of one slice column, judged like the whole window but with -max_slice_drop as the bar."""
    column: str
    value: Any  # the slice's value of that column (str, int, float or bool)
    rows: int
    passed: bool  # a skipped slice passes: it has too few rows to judge
    comparison: Optional[Comparison]  # None = skipped
    skipped: Optional[str] = None  # why, when skipped


@dataclass(frozen=True)
class Verdict:
    """The gate's decision with every number behind it. Only ``passed`` promotes."""

    passed: bool
    metric: str
    direction: str  # "higher" or "lower": which way the metric improves
    cold_start: bool  # no champion: the reference is the baseline, or there is none (no bar)
    reference: str  # "champion", the baseline it was, or none
    new_window: Comparison  # required = margin
    margin: float
    test: Optional[Significance]  # None = not run: no bar, or values that are not finite (see reasons)
    forgetting: Optional[Comparison]  # previous window; None = skipped (see reasons)
    max_forgetting: float
    slices: tuple[SliceResult, ...]
    max_slice_drop: float
    reasons: tuple[str, ...]  # one line per check: what was compared, the numbers, passed or failed

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)  # plain JSON types: tuples become lists, numpy scalars Python ones, NaN None


def passes(improvement: float, required: float) -> bool:
    """At least the required improvement, up to float rounding."""
    return improvement >= required - _TOL


def judge_slices(conf: GateConf, given: Mapping[str, np.ndarray], rows: int,
                 judge: Callable[[np.ndarray], Optional[Comparison]]) -> list[SliceResult]:
    """Each value of each slice column, judged by ``judge`` on its row mask (None: undefined there)."""
    results = []
    for column in conf.slices:
        if column not in given:
            raise DataError(f"gate slice column {column!r} has no values in the scored window; "
                            f"given: {sorted(given)} (gate.slices names the columns to check)")
        values = np.asarray(given[column])
        if len(values) != rows:
            raise DataError(f"slice column {column!r} has {len(values)} values for {rows} rows")
        for value in np.unique(values):
            mask, plain = values == value, _plain(value)
            n = int(mask.sum())
            if n < conf.min_slice_rows:
                results.append(SliceResult(column, plain, n, True, None, f"{n} rows < min_slice_rows "
                                                                         f"{conf.min_slice_rows}"))
                continue
            result = judge(mask)
            results.append(SliceResult(column, plain, n, True, None, f"{conf.metric} is undefined on it (one class)")
                           if result is None else SliceResult(column, plain, n, result.passed, result))
    return results


def verdict(conf: GateConf, higher: bool, cold: bool, reference: str, main: Comparison,
            test: Optional[Significance], forgetting: Optional[Comparison], slices: tuple[SliceResult, ...],
            no_bar: bool = False) -> Verdict:
    """The verdict of these checks (it passes when every check run passes) with one reason per check.
    ``no_bar``: a cold start without baseline values, where only the challenger's own values are checked."""
    checks: list[Comparison | Significance | SliceResult] = [main, *([test] if test else []),
                                                             *([forgetting] if forgetting else []), *slices]
    reasons = _no_bar_reasons(conf, higher, main) if no_bar else \
        _reasons(conf, higher, cold, reference, main, test, forgetting, slices)
    return Verdict(all(c.passed for c in checks), conf.metric, (Direction.HIGHER if higher else Direction.LOWER).value,
                   cold, reference, main, conf.margin, test, forgetting, conf.max_forgetting, slices,
                   conf.max_slice_drop, tuple(reasons))


def _no_bar_reasons(conf: GateConf, higher: bool, main: Comparison) -> list[str]:
    m = _label(conf.metric, higher)
    values = (f"values: challenger {m} {main.challenger:.4f} on {main.rows} rows, all finite: passed"
              if main.challenger is not None else f"values: {_not_finite(main, m, 'baseline')}: failed")
    return [f"cold start: no champion, and the data module gives no baseline values of {conf.metric} "
            f"(baseline_rows): there is no bar, so the challenger passes if all its values are finite", values,
            "significance: not tested, no bar to test against", "forgetting: skipped, no champion to compare with",
            *(["slices: skipped, no bar to compare with"] if conf.slices else [])]


def _reasons(conf: GateConf, higher: bool, cold: bool, reference: str, main: Comparison,
             test: Optional[Significance], forgetting: Optional[Comparison],
             slices: tuple[SliceResult, ...]) -> list[str]:
    m, ref = _label(conf.metric, higher), "baseline" if cold else "champion"
    lines = [f"cold start: no champion; the challenger is compared with the {reference}"] if cold else []
    formula = f"challenger - {ref}" if higher else f"{ref} - challenger"
    lines += [_line("margin", m, ref, main, "margin", f" ({formula})"),
              _test_line(test, conf.metric, ref, conf.bootstrap_samples) if test is not None
              else "significance: not tested, the values are not all finite"]
    if forgetting is None:
        lines.append("forgetting: skipped, " + ("no champion to compare with" if cold else "no previous window given"))
    else:
        lines.append(_line("forgetting (previous window)", m, "champion", forgetting, "-max_forgetting"))
    for s in slices:
        name = f"slice {s.column}={s.value!r} ({s.rows} rows)"
        lines.append(f"{name}: skipped, {s.skipped}" if s.comparison is None
                     else _line(name, m, ref, s.comparison, "-max_slice_drop"))
    return lines


def _label(metric: str, higher: bool) -> str:
    return f"{metric} ({way(higher)})"


def way(higher: bool) -> str:
    """How a reason names a direction."""
    return "higher is better" if higher else "lower is better"


def _line(check: str, metric: str, ref: str, c: Comparison, bound: str, formula: str = "") -> str:
    if c.challenger is None or c.reference is None or c.improvement is None:
        return f"{check}: {_not_finite(c, metric, ref)}, so the two cannot be compared: failed"
    return (f"{check}: challenger {metric} {c.challenger:.4f} vs {ref} {c.reference:.4f}, improvement{formula} "
            f"{c.improvement:+.4f} {'>=' if c.passed else '<'} {c.required:+.4f} ({bound}): {_verb(c.passed)}")


def _not_finite(c: Comparison, metric: str, ref: str) -> str:
    (a, b), n = c.non_finite, c.rows
    parts = [*([f"{a} of {n} challenger values"] if a else []), *([f"{b} of {n} {ref} values"] if b else [])]
    return f"{' and '.join(parts)} of {metric} are not finite (NaN or inf)"


def _test_line(t: Significance, metric: str, ref: str, samples: int) -> str:
    cmp = f"p={t.p_value:.4g} {'<' if t.p_value < t.alpha else '>='} alpha {t.alpha}"
    if t.discordant is not None:
        b, c = t.discordant
        kind = "exact binomial" if t.name == "mcnemar_exact" else f"chi2={t.statistic:.4f}"
        text, better = f"McNemar ({kind}), {c} rows only the challenger got right vs {b} only the {ref}", c > b
    else:
        lo, hi = t.ci or (np.nan, np.nan)
        text = (f"paired bootstrap ({samples} resamples) of the {metric} improvement {t.statistic:+.4f}, "
                f"{1 - t.alpha:.0%} CI [{lo:+.4f}, {hi:+.4f}]")
        better = t.statistic > 0
    worse = "" if better else f", and the challenger does not beat the {ref}"
    return f"significance: {text}, {cmp}{worse}: {_verb(t.passed)}"


def _verb(ok: bool) -> str:
    return "passed" if ok else "failed"


def _plain(value: Any) -> Any:
    value = value.item() if isinstance(value, np.generic) else value
    if isinstance(value, float) and not math.isfinite(value):
        return None  # strict JSON has no NaN or inf
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return _plain(obj)
