"""Champion/challenger gate: may a newly trained model (the challenger) replace the serving one?

Pure functions over predictions, no I/O. The challenger must beat the champion on the newest
labelled window it did not train on, by ``margin`` and significantly (McNemar's test or a paired
bootstrap, both from scipy.stats). It must not pay for that with the past (the previous window) or
with a group of rows (a slice). With no champion yet (cold start) the bar is a constant predictor:
the class prior, whose argmax is the majority class. The caller promotes on ``Verdict.passed``
alone; the rest of the verdict is there to be logged, stored and read by a person.

Every difference below is an *improvement*: positive when the challenger is better, whichever
direction the metric runs (for log-loss it is reference minus challenger).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
from scipy import stats

from cl_hpc.errors import ConfigError, DataError
from cl_hpc.learn.metrics import _EPS, accuracy, log_loss, macro_f1, roc_auc

# metric -> higher is better; roc_auc needs two classes (it scores class 1)
METRICS: dict[str, bool] = {"accuracy": True, "macro_f1": True, "roc_auc": True, "log_loss": False}
TESTS = ("auto", "mcnemar", "bootstrap")
_TOL = 1e-12  # 0.81 - 0.80 is 0.0099999...; a float rounding must not fail a margin that was met
_BATCH_INDICES = 2 ** 22  # row indices per bootstrap batch (32 MiB of int64): bounds memory on big windows


@dataclass
class GateConf:
    """How high the bar is. Metric units throughout (accuracy 0.01 = one point)."""

    metric: str = "accuracy"  # accuracy | macro_f1 | log_loss | roc_auc (binary only)
    margin: float = 0.01  # improvement the challenger needs on the new window, >= 0
    alpha: float = 0.05  # significance level: the test's p-value must be below it
    # mcnemar (accuracy only) | bootstrap | auto = mcnemar for accuracy, bootstrap for other metrics
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
        """``mcnemar`` or ``bootstrap``: what ``auto`` means for this metric."""
        return self.test if self.test != "auto" else "mcnemar" if self.metric == "accuracy" else "bootstrap"


def _conf_problems(c: GateConf) -> list[str]:
    checks = [
        (c.metric in METRICS, f"metric={c.metric!r}; valid: {list(METRICS)}"),
        (c.test in TESTS, f"test={c.test!r}; valid: {list(TESTS)}"),
        (c.test != "mcnemar" or c.metric == "accuracy",
         f"test='mcnemar' compares per-row correctness, so it needs metric='accuracy', got {c.metric!r}; "
         "use test='bootstrap' or 'auto'"),
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
class Scored:
    """One labelled window and each model's predictions on it (row i of each is the same row)."""

    y: np.ndarray  # true class index per row, int [rows]
    challenger: np.ndarray  # class probabilities [rows, classes], or the predicted class per row [rows]
    champion: Optional[np.ndarray] = None  # as challenger; None = no champion yet (cold start)
    slices: Mapping[str, np.ndarray] = field(default_factory=dict)  # slice column -> its value per row


@dataclass(frozen=True)
class Comparison:
    """The metric of the challenger and of the reference (champion or baseline) on some rows."""

    rows: int
    challenger: float
    reference: float
    improvement: float  # positive = the challenger is better
    required: float  # least improvement that passes: +margin, or -max_forgetting / -max_slice_drop
    passed: bool


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
    cold_start: bool  # no champion: the reference is the class-prior baseline
    reference: str  # "champion" or "baseline (class prior, majority class K)"
    new_window: Comparison  # required = margin
    margin: float
    test: Significance
    forgetting: Optional[Comparison]  # previous window; None = skipped (see reasons)
    max_forgetting: float
    slices: tuple[SliceResult, ...]
    max_slice_drop: float
    reasons: tuple[str, ...]  # one line per check: what was compared, the numbers, passed or failed

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)  # plain JSON types: tuples become lists, numpy scalars Python ones


def decide(conf: GateConf, new: Scored, previous: Optional[Scored] = None,
           prior: Optional[Sequence[float]] = None) -> Verdict:
    """Judge the challenger on ``new`` (the newest labelled window it did not train on).

    ``previous``: the window before, for the forgetting guardrail (needs a champion). ``prior``:
    class counts or proportions of the cold-start baseline; None = the new window's own label
    frequencies, the best constant predictor in hindsight and so the highest constant bar.
    """
    k = _n_classes(new, previous, prior)
    y, chal = _labels(new.y), _as_probs(new.challenger, k, "challenger", len(new.y))
    cold = new.champion is None
    ref = _prior_probs(prior, y, k) if new.champion is None else _as_probs(new.champion, k, "champion", len(y))
    main = _must_compare(conf.metric, y, chal, ref, conf.margin, "new window")
    test = significance(conf, y, chal, ref)
    forgetting = None if cold or previous is None else _forgetting(conf, previous, k)
    slices = tuple(_slices(conf, new, y, chal, ref))
    checks: list[Comparison | Significance | SliceResult] = [main, test, *([forgetting] if forgetting else []), *slices]
    reference = "champion" if not cold else f"baseline (class prior, majority class {int(ref[0].argmax())})"
    reasons = _reasons(conf, cold, reference, main, test, forgetting, slices)
    return Verdict(all(c.passed for c in checks), conf.metric, cold, reference, main, conf.margin, test,
                   forgetting, conf.max_forgetting, slices, conf.max_slice_drop, tuple(reasons))


def metric_value(metric: str, probs: np.ndarray, y: np.ndarray) -> Optional[float]:
    """The metric on these rows; None where it is undefined (roc_auc with one class present)."""
    if metric == "accuracy":
        return accuracy(probs, y)
    if metric == "log_loss":
        return log_loss(probs, y)
    if metric == "macro_f1":
        return macro_f1(probs.argmax(axis=1), y, probs.shape[1])
    return roc_auc(probs[:, 1], y)


def _improvement(metric: str, challenger: float, reference: float) -> float:
    return challenger - reference if METRICS[metric] else reference - challenger


def _compare(metric: str, y: np.ndarray, chal: np.ndarray, ref: np.ndarray,
             required: float) -> Optional[Comparison]:
    """None where the metric is undefined on these rows."""
    c, r = metric_value(metric, chal, y), metric_value(metric, ref, y)
    if c is None or r is None:
        return None
    gain = _improvement(metric, c, r)
    return Comparison(len(y), c, r, gain, required, gain >= required - _TOL)


def _must_compare(metric: str, y: np.ndarray, chal: np.ndarray, ref: np.ndarray, required: float,
                  where: str) -> Comparison:
    """A whole window must be judged: an undefined metric there is a DataError, not a skip."""
    result = _compare(metric, y, chal, ref, required)
    if result is None:
        raise DataError(f"metric {metric!r} is undefined on the {where} ({len(y)} rows, classes "
                        f"{sorted(set(y.tolist()))}); roc_auc needs both classes present")
    return result


def significance(conf: GateConf, y: np.ndarray, chal: np.ndarray, ref: np.ndarray) -> Significance:
    """McNemar on per-row correctness, or a paired bootstrap of the metric's improvement."""
    if conf.resolved_test == "bootstrap":
        return paired_bootstrap(conf, y, chal, ref)
    chal_ok, ref_ok = chal.argmax(axis=1) == y, ref.argmax(axis=1) == y
    b, c = int((ref_ok & ~chal_ok).sum()), int((chal_ok & ~ref_ok).sum())
    name, statistic, p = mcnemar_test(b, c, conf.mcnemar_exact_below)
    return Significance(name, statistic, p, conf.alpha, None, (b, c), c > b and p < conf.alpha)


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


def paired_bootstrap(conf: GateConf, y: np.ndarray, chal: np.ndarray, ref: np.ndarray) -> Significance:
    """Resample rows (the same rows for both models) and recompute the improvement each time."""
    if len(y) < 2:
        raise DataError(f"the paired bootstrap needs at least 2 rows in the new window, got {len(y)}")
    statistic, vectorized = _bootstrap_statistic(conf.metric, y, chal, ref)
    res = stats.bootstrap((np.arange(len(y)),), statistic, n_resamples=conf.bootstrap_samples,
                          vectorized=vectorized, batch=max(1, _BATCH_INDICES // len(y)), method="percentile",
                          confidence_level=1 - conf.alpha, rng=np.random.default_rng(conf.seed))
    dist = res.bootstrap_distribution[np.isfinite(res.bootstrap_distribution)]
    observed = float(statistic(np.arange(len(y))))
    lo, hi = np.quantile(dist, [conf.alpha / 2, 1 - conf.alpha / 2])
    # two-sided p by inverting the percentile CI; +1 so a finite sample never claims p = 0
    tail = min(int((dist <= 0).sum()), int((dist >= 0).sum()))
    p = min(1.0, 2 * (tail + 1) / (len(dist) + 1))
    return Significance("paired_bootstrap", observed, p, conf.alpha, (float(lo), float(hi)), None,
                      observed > 0 and p < conf.alpha)


def _bootstrap_statistic(metric: str, y: np.ndarray, chal: np.ndarray,
                         ref: np.ndarray) -> tuple[Callable[..., Any], bool]:
    """(statistic of a row-index sample, vectorised?). Accuracy and log-loss are means of a per-row
    value, so a whole batch of resamples is one fancy index; the others are recomputed per sample."""
    if metric in ("accuracy", "log_loss"):
        gain = _row_values(metric, chal, y) - _row_values(metric, ref, y)
        gain = gain if METRICS[metric] else -gain  # log-loss: lower is better
        return (lambda idx, axis=-1: gain[idx].mean(axis=axis)), True
    if metric == "macro_f1":  # argmax once, not once per resample
        pc, pr, k = chal.argmax(axis=1), ref.argmax(axis=1), chal.shape[1]
        return (lambda idx: macro_f1(pc[idx], y[idx], k) - macro_f1(pr[idx], y[idx], k)), False

    def one(idx: np.ndarray) -> float:
        c, r = metric_value(metric, chal[idx], y[idx]), metric_value(metric, ref[idx], y[idx])
        return np.nan if c is None or r is None else _improvement(metric, c, r)
    return one, False


def _row_values(metric: str, probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    if metric == "accuracy":
        return (probs.argmax(axis=1) == y).astype(float)
    return -np.log(np.clip(probs[np.arange(len(y)), y], _EPS, 1.0))  # log_loss, per row


def _forgetting(conf: GateConf, previous: Scored, k: int) -> Comparison:
    if previous.champion is None:
        raise DataError("the previous window has no champion predictions, but the new window has: "
                        "score the champion on both windows (or neither, for a cold start)")
    y = _labels(previous.y)
    chal = _as_probs(previous.challenger, k, "previous challenger", len(y))
    champ = _as_probs(previous.champion, k, "previous champion", len(y))
    return _must_compare(conf.metric, y, chal, champ, -conf.max_forgetting, "previous window")


def _slices(conf: GateConf, new: Scored, y: np.ndarray, chal: np.ndarray,
            ref: np.ndarray) -> list[SliceResult]:
    results = []
    for column in conf.slices:
        if column not in new.slices:
            raise DataError(f"gate slice column {column!r} has no values in the scored window; "
                            f"given: {sorted(new.slices)} (gate.slices names the columns to check)")
        values = np.asarray(new.slices[column])
        if len(values) != len(y):
            raise DataError(f"slice column {column!r} has {len(values)} values for {len(y)} rows")
        for value in np.unique(values):
            results.append(_one_slice(conf, column, value, values == value, y, chal, ref))
    return results


def _one_slice(conf: GateConf, column: str, value: Any, mask: np.ndarray, y: np.ndarray,
               chal: np.ndarray, ref: np.ndarray) -> SliceResult:
    rows, plain = int(mask.sum()), _plain(value)
    if rows < conf.min_slice_rows:
        return SliceResult(column, plain, rows, True, None,
                           f"{rows} rows < min_slice_rows {conf.min_slice_rows}")
    result = _compare(conf.metric, y[mask], chal[mask], ref[mask], -conf.max_slice_drop)
    if result is None:
        return SliceResult(column, plain, rows, True, None, f"{conf.metric} is undefined on it (one class)")
    return SliceResult(column, plain, rows, result.passed, result)


def _n_classes(new: Scored, previous: Optional[Scored], prior: Optional[Sequence[float]]) -> int:
    arrays = [a for s in (new, previous) if s is not None for a in (s.y, s.challenger, s.champion) if a is not None]
    widths = [np.asarray(a).shape[1] if np.ndim(a) == 2 else int(np.max(a, initial=-1)) + 1 for a in arrays]
    return max([*widths, len(prior) if prior is not None else 0, 2])


def _labels(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) == 0:
        raise DataError(f"labels must be a non-empty 1-D array of class indices, got shape {y.shape}")
    return y.astype(np.int64)


def _as_probs(pred: np.ndarray, k: int, name: str, rows: int) -> np.ndarray:
    """Probabilities as given, or one-hot rows for predicted classes."""
    pred = np.asarray(pred)
    if pred.shape[0] != rows or pred.ndim not in (1, 2):
        raise DataError(f"{name} predictions have shape {pred.shape}; expected [{rows}] classes "
                        f"or [{rows}, classes] probabilities, one row per label")
    if pred.ndim == 2:
        if pred.shape[1] < k:
            raise DataError(f"{name} probabilities have {pred.shape[1]} columns but labels reach class {k - 1}")
        return pred.astype(float)
    return np.eye(k)[pred.astype(np.int64)]


def _prior_probs(prior: Optional[Sequence[float]], y: np.ndarray, k: int) -> np.ndarray:
    """Every row predicts the class prior: majority-class accuracy, the prior's entropy as log-loss."""
    weights = np.bincount(y, minlength=k).astype(float) if prior is None else np.asarray(prior, dtype=float)
    if weights.shape != (k,) or weights.min() < 0 or weights.sum() <= 0:
        raise DataError(f"baseline prior {list(weights)} must be {k} non-negative class counts or proportions")
    return np.tile(weights / weights.sum(), (len(y), 1))


def _reasons(conf: GateConf, cold: bool, reference: str, main: Comparison, test: Significance,
             forgetting: Optional[Comparison], slices: tuple[SliceResult, ...]) -> list[str]:
    m, ref = conf.metric, "baseline" if cold else "champion"
    lines = [f"cold start: no champion; the challenger is compared with the {reference}"] if cold else []
    lines += [_line("margin", m, ref, main, "margin"), _test_line(test, m, ref, conf.bootstrap_samples)]
    if forgetting is None:
        lines.append("forgetting: skipped, " + ("no champion to compare with" if cold else "no previous window given"))
    else:
        lines.append(_line("forgetting (previous window)", m, "champion", forgetting, "-max_forgetting"))
    for s in slices:
        name = f"slice {s.column}={s.value!r} ({s.rows} rows)"
        lines.append(f"{name}: skipped, {s.skipped}" if s.comparison is None
                     else _line(name, m, ref, s.comparison, "-max_slice_drop"))
    return lines


def _line(check: str, metric: str, ref: str, c: Comparison, bound: str) -> str:
    return (f"{check}: challenger {metric} {c.challenger:.4f} vs {ref} {c.reference:.4f}, improvement "
            f"{c.improvement:+.4f} {'>=' if c.passed else '<'} {c.required:+.4f} ({bound}): {_verb(c.passed)}")


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
    return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return _plain(obj)
