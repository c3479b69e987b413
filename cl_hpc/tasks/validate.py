"""Task ``validate``: check the ingested train window before anything trains on it.

Schema (the feature and label columns and their kinds), NaN rates, label values outside the known
classes, and the label distribution against the champion's training window (total-variation bound):
a corrupted or poisoned batch fails here with every issue listed, and nothing downstream runs.
Rows without a label (``label_col`` None: a token stream) get the schema and NaN checks only.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import pandas as pd

from cl_hpc.context import TaskContext
from cl_hpc.learn.validation import Expectations, require_valid
from cl_hpc.tasks._common import upstream

_NEEDS = ("train_path", "features", "label_col", "train_labels")


def run(ctx: TaskContext, registry: Optional[Mapping[str, Any]] = None, max_label_tv: float = 0.2,
        max_nan_rate: float = 0.0) -> dict[str, Any]:
    """``max_label_tv``: how far the label distribution may move from the champion's window."""
    ingest = upstream(ctx, "ingest", _NEEDS)
    label = ingest["label_col"]
    labels = [label] if label is not None else []
    frame = pd.read_parquet(ingest["train_path"], columns=[*ingest["features"], *labels])
    reference, classes = _reference(registry, ingest) if label is not None else (None, ())
    expect = Expectations(columns={**{f: "numeric" for f in ingest["features"]}, **{c: "int" for c in labels}},
                          label=label, classes=classes, reference=reference, max_label_tv=max_label_tv,
                          max_nan_rate=max_nan_rate)
    report = require_valid(frame, expect, where=f"train window {ingest['train_path']}")
    return {"passed": report.passed, "rows": report.rows, "label_distribution": report.label_distribution,
            "reference": dict(reference or {}), "classes": list(classes)}


def _reference(registry: Optional[Mapping[str, Any]], ingest: Mapping[str, Any]) -> tuple[Optional[dict], tuple]:
    """The champion's training label counts (and classes); before any champion, the window's own
    classes and no shift check."""
    own = tuple(sorted(int(k) for k in ingest["train_labels"]))
    if not registry:
        return None, own
    from cl_hpc.registry.store import ModelRegistry
    from cl_hpc.tasks._registry import champion, registry_ref

    ref = registry_ref(registry)
    with ModelRegistry.open(ref.root) as reg:
        champ = champion(reg, ref)
    counts = (champ.metrics.get("train_labels") if champ else None) or None
    if not counts:
        return None, own
    # The champion's label space is the known one: a value it never saw is an issue, not a new class.
    return {int(k): v for k, v in counts.items()}, tuple(sorted(int(k) for k in counts))
