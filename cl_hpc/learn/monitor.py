"""A serving model scored on newly labelled rows, as the watch's performance trigger and the
backtest's prequential replay see it: one code path through :func:`cl_hpc.learn.scoring.evaluate`
(the data module's own preprocessing), never a copy of it.

- The metric is the one asked for, in the model's own direction (:func:`resolve_metric`: None means
  the model's primary metric).
- The 0/1 error stream a river detector replays comes from the evaluation's per-row ``correct``;
  a model that reports none (a language model's per-token loss) gives an empty stream.
- A label the model never saw counts as an error: a classifier's data module that maps labels to
  class indices (``class_index(labels, unknown=...)``, as TabularData does) marks those rows, the
  evaluation runs on the others, and a correctness metric (per-row values equal to ``correct``)
  counts them as wrong; other metrics, which need a probability for the true class, are computed on
  the known labels only.
- Rows the model cannot score at all (a data error in its preprocessing, or any error its own code
  raises on them) give no metric and a note that says why, not a crash: the watch reports it with
  the triggers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from cl_hpc.learn.contract import (
    Direction,
    Evaluation,
    Signature,
    class_path,
    require_metric,
    with_primary_metric,
)

_NO_ERRORS = np.zeros(0, dtype=np.int64)


@dataclass(frozen=True)
class RowScores:
    """The model's metric and 0/1 errors on labelled rows."""

    metric: Optional[float]  # the metric on them; None when no row could be scored
    labelled: int  # rows judged (those with a label the model never saw included)
    errors: np.ndarray = field(default_factory=lambda: _NO_ERRORS)  # 0/1 per row, oldest first; empty: no `correct`
    note: Optional[str] = None  # why the rows could not be scored, for a person


def resolve_metric(metric: Optional[str], model: Any, where: str) -> tuple[str, Direction]:
    """(name, direction) of ``metric`` for ``model`` (an instance or its class); None = its primary
    metric. A metric the model does not report is a ContractError naming those it does."""
    name = str(with_primary_metric({"metric": metric}, model)["metric"])
    return name, require_metric(model, name, where)


def score_rows(workload: Any, frame: pd.DataFrame, metric: str) -> RowScores:
    """``metric`` and the 0/1 errors of ``workload`` (a cl_hpc.learn.workload.Workload) on the raw,
    labelled rows ``frame`` (oldest first)."""
    if frame.empty:
        return RowScores(None, 0)
    known = known_labels(workload.datamodule, frame)
    unseen = 0 if known is None else int((~known).sum())
    scored = frame if known is None else frame[known]
    evaluation: Optional[Evaluation] = None
    if len(scored):
        from cl_hpc.learn.scoring import evaluate  # torch: only once rows are scored

        try:
            evaluation = evaluate(workload, scored)
        except Exception as exc:  # user code too (to_batch on a column of strings): a note, never a crash
            return RowScores(None, 0, note=f"{class_path(workload.model)} cannot score {len(frame)} new rows: "
                                           f"{type(exc).__name__}: {exc}")
    value = _metric(evaluation, metric)
    errors = _errors(evaluation, known, len(frame))
    if not unseen:
        return RowScores(value, len(frame), errors)
    note = f"{unseen} of {len(frame)} new rows carry a label the model never saw: counted as errors"
    if _is_correctness(evaluation, metric) and errors.size:
        value = 1.0 - float(errors.mean())
    else:
        note += f"; {metric} is computed on the other {len(frame) - unseen}"
    return RowScores(value, len(frame), errors, note)


def _errors(evaluation: Optional[Evaluation], known: Optional[np.ndarray], rows: int) -> np.ndarray:
    """1 where the model was wrong or never saw the label; empty when it reports no ``correct``."""
    correct = evaluation.correct if evaluation is not None else None
    if correct is None and (known is None or known.any()):
        return _NO_ERRORS
    errors = np.ones(rows, dtype=np.int64)
    if correct is not None:
        errors[known if known is not None else slice(None)] = (np.asarray(correct) == 0).astype(np.int64)
    return errors


def known_labels(datamodule: Any, frame: pd.DataFrame) -> Optional[np.ndarray]:
    """Which rows carry a label the classifier knows; None when the data module maps no labels."""
    index, label = getattr(datamodule, "class_index", None), getattr(datamodule, "label_col", None)
    if not callable(index) or not label or label not in frame.columns:
        return None
    return np.asarray(index(frame[label], unknown=-1)) >= 0


def _metric(evaluation: Optional[Evaluation], metric: str) -> Optional[float]:
    value = evaluation.metrics.get(metric) if evaluation is not None else None
    return None if value is None else float(value)


def _is_correctness(evaluation: Optional[Evaluation], metric: str) -> bool:
    """A metric whose per-row values are the 0/1 ``correct`` (accuracy): a row it cannot judge is wrong."""
    if evaluation is None or evaluation.correct is None:
        return metric == "accuracy"  # every label unseen: nothing evaluated to compare with
    values = evaluation.per_row.get(metric)
    return values is not None and np.array_equal(np.asarray(values), np.asarray(evaluation.correct))


def input_columns(signature: Optional[Mapping[str, Any]], fallback: Sequence[str] = ()) -> Optional[list[str]]:
    """The raw input columns a version takes (for drift): its signature's inputs when every one is a
    plain column (one value per row); ``fallback`` (an old version's recorded features) when it has
    no signature; None when its inputs are tensors, which a per-column drift test cannot compare."""
    if not signature:
        return list(fallback) or None
    inputs = Signature.from_dict(signature).inputs
    if not inputs or any(spec.shape for spec in inputs):
        return None
    return [spec.name for spec in inputs]
