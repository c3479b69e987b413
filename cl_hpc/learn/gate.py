"""Champion/challenger gate: may a newly trained model (the challenger) replace the serving one?

Pure functions over scores, no I/O, for any model of the contract (cl_hpc/learn/contract.py). The
challenger must beat the reference on the newest labelled window it did not train on, by ``margin``
and significantly. It must not pay for that with the past (the previous window) or with a group of
rows (a slice). The reference is the champion. With no champion yet (a cold start) it is the data
module's trivial predictor. With neither there is no bar: the challenger passes on finite values
alone, so that the first model of a user's workload is registered and promoted. The caller
promotes on ``Verdict.passed`` alone; the rest of the verdict is there to be logged, stored and read.

One entry point, :func:`decide_evaluations`, takes the models' contract Evaluations and picks a path:

- **per-row** (any model, this module): the gate's metric is the mean of the per-row values the
  model reports (``evaluate_batch``), in the direction the model declares (``metrics``). The test
  is McNemar's where every value is 0 or 1 (per-row correctness), else a paired bootstrap of the
  mean. A NaN or inf value fails the check it is in, and the reason says how many rows.
  :func:`decide_rows` is this path on plain arrays.
- **classifier** (cl_hpc/learn/gate_classifier.py): macro_f1 and roc_auc are not means of rows, so
  they are recomputed from the class probabilities both models carry. :func:`decide` is that path
  on plain arrays (labels and probabilities); its cold-start bar is a constant class-prior predictor.

Every difference is an *improvement*: positive when the challenger is better, whichever direction
the metric runs (for a loss it is reference minus challenger). The configuration and the verdict
records are in cl_hpc/learn/gate_verdict.py, the tests in cl_hpc/learn/gate_stats.py; import them
all from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional

import numpy as np

from cl_hpc.errors import ConfigError, DataError
from cl_hpc.learn.contract import ContractError, Direction, Evaluation
from cl_hpc.learn.gate_classifier import Scored, decide, metric_value, significance
from cl_hpc.learn.gate_stats import (
    Significance,
    is_binary,
    mcnemar,
    mcnemar_test,
    mean_gain_statistic,
    paired_bootstrap,
)
from cl_hpc.learn.gate_verdict import (
    METRICS,
    TESTS,
    Comparison,
    GateConf,
    SliceResult,
    Verdict,
    gate_conf,
    judge_slices,
    passes,
    verdict,
    way,
)

__all__ = ["METRICS", "TESTS", "GateConf", "gate_conf", "Scored", "RowScored", "Comparison", "Significance",
           "SliceResult", "Verdict", "decide_evaluations", "decide_rows", "decide", "row_significance",
           "significance", "metric_value", "mcnemar_test"]

_BASELINE = "baseline (the data module's trivial predictor)"
_NO_BAR = "none (no champion and no baseline values: no bar)"


@dataclass(frozen=True)
class RowScored:
    """One window's per-row values of the gate's metric (the window's value is their mean); row i of
    each array is the same row."""

    challenger: np.ndarray  # float [rows]; 0/1 rows (correctness) make McNemar's test apply
    # the same rows scored by the champion; at a cold start by the baseline; None = no bar (cold start only)
    reference: Optional[np.ndarray]
    slices: Mapping[str, np.ndarray] = field(default_factory=dict)  # slice column -> its value per row


def decide_evaluations(conf: GateConf, direction: Direction, new: Evaluation, reference: Optional[Evaluation] = None,
                       previous: Optional[tuple[Evaluation, Evaluation]] = None,
                       slices: Optional[Mapping[str, np.ndarray]] = None) -> Verdict:
    """Judge the challenger from the models' Evaluations (cl_hpc/learn/scoring.py evaluate).

    ``new``: the challenger on the new window. ``reference``: the champion on the same rows; None =
    a cold start, where the bar is ``new.baseline``'s values of the metric, or none. ``previous``:
    (challenger, champion) on the previous window, for the forgetting guardrail (ignored at a cold
    start). ``slices``: slice column -> its value per row of the new window. ``direction``: the
    model's for ``conf.metric`` (contract.require_metric).

    A metric with per-row values in ``new`` takes the per-row path; macro_f1 and roc_auc (not means
    of rows) take the classifier path on class probabilities, whose cold-start bar is the new
    window's own class prior, the highest constant bar.
    """
    metric, cuts = conf.metric, dict(slices or {})
    if metric in new.per_row:
        ref = new.baseline.get(metric) if reference is None else _rows_of(reference, metric, "champion")
        before = None if previous is None or reference is None else \
            RowScored(_rows_of(previous[0], metric, "challenger"), _rows_of(previous[1], metric, "champion"))
        return decide_rows(conf, direction, RowScored(new.per_row[metric], ref, cuts), before,
                           cold_start=reference is None)
    if metric in METRICS and new.probs is not None and new.y is not None:
        if direction.higher_is_better != METRICS[metric]:
            raise ContractError(f"the model declares {metric!r} {direction.value}-is-better, but the gate computes "
                                f"{metric} from class probabilities, where {way(METRICS[metric])}; fix the "
                                f"model's `metrics` attribute")
        champ = None if reference is None else _probs_of(reference, "champion")
        before_scored = None if previous is None or reference is None else \
            Scored(_labels_of(previous[0]), _probs_of(previous[0], "challenger"), _probs_of(previous[1], "champion"))
        return decide(conf, Scored(new.y, new.probs, champ, cuts), before_scored)
    usable = sorted({*new.per_row, *(METRICS if new.probs is not None and new.y is not None else ())})
    raise ConfigError(f"gate metric {metric!r}: the challenger's evaluation has no per-row values of it, and it is "
                      f"not a classifier metric computed from class probabilities ({list(METRICS)}); the gate "
                      f"judges means of per-row values (evaluate_batch returns them), so choose gate.metric "
                      f"among {usable}")


def decide_rows(conf: GateConf, direction: Direction, new: RowScored, previous: Optional[RowScored] = None, *,
                cold_start: bool = False) -> Verdict:
    """Judge the challenger on per-row values of ``conf.metric`` (its window value is their mean).

    ``cold_start``: there is no champion; ``new.reference`` is the baseline's values, or None (no
    bar: the challenger passes if all its values are finite) and ``previous`` is not used. Else
    ``new.reference`` and ``previous.reference`` are the champion's values.
    """
    higher = direction.higher_is_better
    chal = _as_rows(new.challenger, "challenger", "new window")
    if new.reference is None:
        if not cold_start:
            raise DataError("the new window has no champion values; give the champion's per-row values, or "
                            "cold_start=True for a first model (then the bar is the baseline's values, or none)")
        bad = int((~np.isfinite(chal)).sum())
        main = Comparison(len(chal), None if bad else float(chal.mean()), None, None, conf.margin, not bad, (bad, 0))
        return verdict(conf, higher, True, _NO_BAR, main, None, None, (), no_bar=True)
    ref = _as_rows(new.reference, "baseline" if cold_start else "champion", "new window", len(chal))
    main = _row_compare(higher, chal, ref, conf.margin)
    test = None if any(main.non_finite) else row_significance(conf, direction, chal, ref)
    forgetting = None if cold_start or previous is None else _row_forgetting(conf, higher, previous)
    slices = judge_slices(conf, new.slices, len(chal),
                          lambda mask: _row_compare(higher, chal[mask], ref[mask], -conf.max_slice_drop))
    return verdict(conf, higher, cold_start, _BASELINE if cold_start else "champion", main, test, forgetting,
                   tuple(slices))


def row_significance(conf: GateConf, direction: Direction, chal: np.ndarray, ref: np.ndarray) -> Significance:
    """McNemar's test where every value is 0 or 1 (test=auto or mcnemar), else the paired bootstrap of
    the mean improvement. test=mcnemar on other values is a ConfigError naming the metric."""
    gain = chal - ref if direction.higher_is_better else ref - chal
    binary = is_binary(chal) and is_binary(ref)
    if conf.test == "mcnemar" and not binary:
        who, odd = ("challenger", chal) if not is_binary(chal) else ("reference", ref)
        row = int(np.flatnonzero(~np.isin(odd, (0.0, 1.0)))[0])
        raise ConfigError(f"gate test='mcnemar' compares per-row 0/1 values (correctness), but metric "
                          f"{conf.metric!r} has other values (e.g. {odd[row]:.6g} in row {row} of the {who}'s); "
                          f"use test='bootstrap' or 'auto'")
    if binary and conf.test != "bootstrap":
        return mcnemar(gain, conf.alpha, conf.mcnemar_exact_below)
    return paired_bootstrap(mean_gain_statistic(gain), True, len(gain), conf.bootstrap_samples, conf.alpha,
                            conf.seed)


def _row_compare(higher: bool, chal: np.ndarray, ref: np.ndarray, required: float) -> Comparison:
    bad = (int((~np.isfinite(chal)).sum()), int((~np.isfinite(ref)).sum()))
    if any(bad):
        return Comparison(len(chal), None, None, None, required, False, bad)
    c, r = float(chal.mean()), float(ref.mean())
    gain = c - r if higher else r - c
    return Comparison(len(chal), c, r, gain, required, passes(gain, required))


def _row_forgetting(conf: GateConf, higher: bool, previous: RowScored) -> Comparison:
    if previous.reference is None:
        raise DataError("the previous window has no champion values, but the new window has: score the "
                        "champion on both windows (or neither, for a cold start)")
    chal = _as_rows(previous.challenger, "challenger", "previous window")
    ref = _as_rows(previous.reference, "champion", "previous window", len(chal))
    return _row_compare(higher, chal, ref, -conf.max_forgetting)


def _as_rows(values: np.ndarray, who: str, where: str, rows: Optional[int] = None) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or len(arr) == 0 or arr.dtype.kind not in "biuf" or (rows is not None and len(arr) != rows):
        want = f"{rows} numbers, one per row of the challenger's" if rows is not None else "a non-empty 1-D array"
        raise DataError(f"the {who}'s per-row values on the {where} have shape {arr.shape} and dtype {arr.dtype}; "
                        f"expected {want} (per-row values of the gate's metric)")
    return arr.astype(float)


def _rows_of(evaluation: Evaluation, metric: str, who: str) -> np.ndarray:
    values = evaluation.per_row.get(metric)
    if values is None:
        raise DataError(f"the {who}'s evaluation has no per-row values of metric {metric!r} (it has "
                        f"{sorted(evaluation.per_row)}); both models must report the gate's metric per row")
    return values


def _probs_of(evaluation: Evaluation, who: str) -> np.ndarray:
    if evaluation.probs is None:
        raise DataError(f"the {who}'s evaluation has no class probabilities; the gate computes classifier "
                        f"metrics {list(METRICS)} from them, for both models")
    return evaluation.probs


def _labels_of(evaluation: Evaluation) -> np.ndarray:
    if evaluation.y is None:
        raise DataError("the challenger's evaluation of the previous window has no labels (y); the classifier "
                        "metrics need them")
    return evaluation.y
