"""The gate's classifier path: labels and class probabilities, for the metrics that are not means of
rows (macro_f1, roc_auc) and for callers that hold probabilities (:func:`decide`).

At a cold start its bar is a constant predictor: the class prior, whose argmax is the majority
class. The verdict is the one the per-row path gives (cl_hpc/learn/gate_verdict.py). Pure, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from cl_hpc.errors import ConfigError, DataError
from cl_hpc.learn.gate_stats import Significance, mcnemar, mean_gain_statistic, paired_bootstrap
from cl_hpc.learn.gate_verdict import METRICS, Comparison, GateConf, Verdict, judge_slices, passes, verdict
from cl_hpc.learn.metrics import _EPS, accuracy, log_loss, macro_f1, roc_auc


@dataclass(frozen=True)
class Scored:
    """One labelled window and each model's predictions on it (row i of each is the same row)."""

    y: np.ndarray  # true class index per row, int [rows]
    challenger: np.ndarray  # class probabilities [rows, classes], or the predicted class per row [rows]
    champion: Optional[np.ndarray] = None  # as challenger; None = no champion yet (cold start)
    slices: Mapping[str, np.ndarray] = field(default_factory=dict)  # slice column -> its value per row


def decide(conf: GateConf, new: Scored, previous: Optional[Scored] = None,
           prior: Optional[Sequence[float]] = None) -> Verdict:
    """Judge the challenger on ``new`` (the newest labelled window it did not train on) from labels
    and class probabilities; ``conf.metric`` must be a classifier metric (METRICS).

    ``previous``: the window before, for the forgetting guardrail (needs a champion). ``prior``:
    class counts or proportions of the cold-start baseline; None = the new window's own label
    frequencies, the best constant predictor in hindsight and so the highest constant bar.
    """
    if conf.metric not in METRICS:
        raise ConfigError(f"decide() computes the metric from class probabilities, so it must be one of "
                          f"{list(METRICS)}, got {conf.metric!r}; other metrics take decide_rows or decide_evaluations")
    k = _n_classes(new, previous, prior)
    y, chal = _labels(new.y), _as_probs(new.challenger, k, "challenger", len(new.y))
    cold = new.champion is None
    ref = _prior_probs(prior, y, k) if new.champion is None else _as_probs(new.champion, k, "champion", len(y))
    main = _must_compare(conf.metric, y, chal, ref, conf.margin, "new window")
    test = significance(conf, y, chal, ref)
    forgetting = None if cold or previous is None else _forgetting(conf, previous, k)
    slices = judge_slices(conf, new.slices, len(y),
                          lambda mask: _compare(conf.metric, y[mask], chal[mask], ref[mask], -conf.max_slice_drop))
    reference = "champion" if not cold else f"baseline (class prior, majority class {int(ref[0].argmax())})"
    return verdict(conf, METRICS[conf.metric], cold, reference, main, test, forgetting, tuple(slices))


def metric_value(metric: str, probs: np.ndarray, y: np.ndarray) -> Optional[float]:
    """A classifier metric on these rows; None where it is undefined (roc_auc with one class present)."""
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
    return Comparison(len(y), c, r, gain, required, passes(gain, required))


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
        statistic, vectorized = _bootstrap_statistic(conf.metric, y, chal, ref)
        return paired_bootstrap(statistic, vectorized, len(y), conf.bootstrap_samples, conf.alpha, conf.seed)
    gain = (chal.argmax(axis=1) == y).astype(int) - (ref.argmax(axis=1) == y).astype(int)
    return mcnemar(gain, conf.alpha, conf.mcnemar_exact_below)


def _bootstrap_statistic(metric: str, y: np.ndarray, chal: np.ndarray,
                         ref: np.ndarray) -> tuple[Callable[..., Any], bool]:
    """(statistic of a row-index sample, vectorised?). Accuracy and log-loss are means of a per-row
    value, so a whole batch of resamples is one fancy index; the others are recomputed per sample."""
    if metric in ("accuracy", "log_loss"):
        gain = _class_row_values(metric, chal, y) - _class_row_values(metric, ref, y)
        return mean_gain_statistic(gain if METRICS[metric] else -gain), True  # log-loss: lower is better
    if metric == "macro_f1":  # argmax once, not once per resample
        pc, pr, k = chal.argmax(axis=1), ref.argmax(axis=1), chal.shape[1]
        return (lambda idx: macro_f1(pc[idx], y[idx], k) - macro_f1(pr[idx], y[idx], k)), False

    def one(idx: np.ndarray) -> float:
        c, r = metric_value(metric, chal[idx], y[idx]), metric_value(metric, ref[idx], y[idx])
        return np.nan if c is None or r is None else _improvement(metric, c, r)
    return one, False


def _class_row_values(metric: str, probs: np.ndarray, y: np.ndarray) -> np.ndarray:
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
