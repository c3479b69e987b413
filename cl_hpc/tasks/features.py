"""Task ``features``: standardise every feature with statistics fitted on the train window only.

Fitting on the train window alone keeps the eval window unseen, as it will be in production. The
statistics go to ``stats.json`` (and later into the checkpoint, for serving); labels become class
indices 0..K-1 in the order of ``classes``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional

import dask
import dask.dataframe as dd
import pandas as pd

from cl_hpc.atomic import write_bytes_atomic
from cl_hpc.config.ml import data_conf
from cl_hpc.context import TaskContext
from cl_hpc.data.files import publish, staging_dir
from cl_hpc.data.windows import dask_threads
from cl_hpc.errors import DataError
from cl_hpc.tasks._common import cpus, upstream

_NEEDS = ("train_path", "eval_path", "features", "label_col", "timestamp_col", "digest")


def run(ctx: TaskContext, data: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """``data``: the data config group as a dict (checked here; the columns come from ``ingest``)."""
    data_conf(data)
    ingest = upstream(ctx, "ingest", _NEEDS)
    feats, label = list(ingest["features"]), ingest["label_col"]
    frames = {name: dd.read_parquet(ingest[f"{name}_path"]) for name in ("train", "eval")}
    with dask_threads(cpus(ctx)):
        mean, std, train_labels, eval_labels = dask.compute(
            frames["train"][feats].mean(), frames["train"][feats].std(),
            frames["train"][label].value_counts(), frames["eval"][label].unique())
        classes = _classes(train_labels, eval_labels, ingest)
        scale = std.where(std > 0, 1.0)  # a constant feature is centred, not divided by zero
        paths = _write_scaled(ctx.task_dir, frames, feats, label, ingest["timestamp_col"], mean, scale, classes)
    stats = _stats(feats, mean, scale, std, classes, train_labels, ingest)
    write_bytes_atomic(ctx.task_dir / "stats.json", json.dumps(stats, indent=1).encode())
    return {**stats, "train_path": str(paths["train"]), "eval_path": str(paths["eval"]),
            "stats_path": str(ctx.task_dir / "stats.json"), "label_col": label,
            "timestamp_col": ingest["timestamp_col"], "n_features": len(feats), "n_classes": len(classes)}


def _write_scaled(task_dir: Path, frames: dict[str, dd.DataFrame], feats: list[str], label: str, ts: str,
                  mean: pd.Series, scale: pd.Series, classes: list[Any]) -> dict[str, Path]:
    """Both scaled tables, staged and then moved into the task dir together."""
    with staging_dir(task_dir / ".features-staging") as staging:
        writes = [_scaled(frame, feats, label, ts, mean, scale, classes)
                  .to_parquet(staging / name, write_index=False, compute=False) for name, frame in frames.items()]
        dask.compute(*writes)
        return publish(staging, task_dir, list(frames))


def _classes(train_labels: pd.Series, eval_labels: Any, ingest: Mapping[str, Any]) -> list[Any]:
    """Sorted label values of the train window; the eval window may not bring new ones."""
    classes = sorted(train_labels.index.tolist())
    if len(classes) < 2:
        raise DataError(f"train window {ingest['train_path']} has a single class {classes} in column "
                        f"{ingest['label_col']!r}; a classifier needs two: widen data.train_window")
    unseen = sorted(set(pd.Series(eval_labels).tolist()) - set(classes))
    if unseen:
        raise DataError(f"eval window {ingest['eval_path']} has label values {unseen} in column "
                        f"{ingest['label_col']!r} that the train window {classes} never shows; widen data.train_window")
    return classes


def _scaled(frame: dd.DataFrame, feats: list[str], label: str, ts: str, mean: pd.Series, scale: pd.Series,
            classes: list[Any]) -> dd.DataFrame:
    index = {value: i for i, value in enumerate(classes)}
    meta = pd.DataFrame({**{f: pd.Series(dtype="float32") for f in feats}, label: pd.Series(dtype="int64"),
                         ts: frame[ts]._meta})
    # Per partition in pandas: dask would try to align the pandas stats on their (column-name) index.
    return frame.map_partitions(_scale_part, feats, label, ts, mean, scale, index, meta=meta)


def _scale_part(part: pd.DataFrame, feats: list[str], label: str, ts: str, mean: pd.Series, scale: pd.Series,
                index: dict[Any, int]) -> pd.DataFrame:
    out = ((part[feats] - mean[feats]) / scale[feats]).astype("float32")
    out[label] = part[label].map(index).astype("int64")
    out[ts] = part[ts]
    return out


def _stats(feats: list[str], mean: pd.Series, scale: pd.Series, std: pd.Series, classes: list[Any],
           train_labels: pd.Series, ingest: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "features": feats,
        "fitted_on": "train",
        "mean": [float(mean[f]) for f in feats],
        "std": [float(scale[f]) for f in feats],
        "constant": [f for f in feats if not std[f] > 0],
        "classes": classes,
        "train_class_counts": [int(train_labels[c]) for c in classes],
        "train_rows": int(train_labels.sum()),
        "window_digest": ingest["digest"],
    }
