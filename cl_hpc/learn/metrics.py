"""Classification metrics in numpy (no sklearn): pure functions of (probabilities, labels)."""

from __future__ import annotations

from typing import Any

import numpy as np

_EPS = 1e-7  # clip probabilities so one confident mistake gives a large, finite log-loss


def accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    return float((probs.argmax(axis=1) == y).mean())


def log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class."""
    p = np.clip(probs[np.arange(len(y)), y], _EPS, 1.0)
    return float(-np.log(p).mean())


def _average_ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank (as scipy.stats.rankdata's default)."""
    order = np.argsort(scores, kind="mergesort")
    _, inverse, counts = np.unique(scores[order], return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mean_rank = ends - (counts - 1) / 2.0
    ranks = np.empty(len(scores))
    ranks[order] = mean_rank[inverse]
    return ranks


def roc_auc(scores: np.ndarray, y: np.ndarray) -> float | None:
    """Binary ROC AUC via the Mann-Whitney U statistic; None when only one class is present."""
    pos = y == 1
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    rank_sum = _average_ranks(scores)[pos].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def macro_f1(pred: np.ndarray, y: np.ndarray, n_classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes that occur in y or in the predictions."""
    scores = []
    for c in range(n_classes):
        tp = int(((pred == c) & (y == c)).sum())
        denom = int((pred == c).sum()) + int((y == c).sum())
        if denom:
            scores.append(2.0 * tp / denom)
    return float(np.mean(scores)) if scores else 0.0


def classification_metrics(probs: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Accuracy, log-loss, macro-F1, and ROC AUC (of class 1) when there are two classes."""
    n_classes = probs.shape[1]
    return {
        "accuracy": accuracy(probs, y),
        "log_loss": log_loss(probs, y),
        "macro_f1": macro_f1(probs.argmax(axis=1), y, n_classes),
        "roc_auc": roc_auc(probs[:, 1], y) if n_classes == 2 else None,
        "rows": int(len(y)),
    }
