"""Task ``ingest``: the newest train window and the later eval window, checked and copied.

Every partition's schema is checked before any row is read, and the values (nulls/NaN) while the
copy is written into a staging folder; only a window that passed every check is moved into the
task dir, so a failure never leaves half an ingest behind.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping, Optional

import dask
import pandas as pd

from cl_hpc.config.ml import data_conf
from cl_hpc.context import TaskContext
from cl_hpc.data.files import publish, staging_dir
from cl_hpc.data.landing import ensure_landing_zone
from cl_hpc.data.windows import (
    Columns,
    Partition,
    check_windows,
    dask_threads,
    find_nulls,
    list_partitions,
    read_window,
    select_windows,
    window_digest,
)
from cl_hpc.errors import DataError
from cl_hpc.tasks._common import cpus

WINDOWS = ("train", "eval")


def run(ctx: TaskContext, data: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """``data``: the data config group as a dict (``cl_hpc.config.ml.DataConf``; None = defaults)."""
    conf = data_conf(data)
    ctx.progress(0, 3, "landing zone")
    zone = ensure_landing_zone(conf)
    # Any *.parquet name: files not named part-<time> are placed by their first timestamp.
    train, held_out = select_windows(list_partitions(Path(zone["landing_dir"]), conf.timestamp_col), conf)
    windows = dict(zip(WINDOWS, (train, held_out)))
    cols = check_windows(windows, conf)  # every file of both windows; one error names each bad one
    ctx.progress(1, 3, "reading windows")
    with staging_dir(ctx.task_dir / ".ingest-staging") as staging:
        with dask_threads(cpus(ctx)):
            counts = _copy_windows(windows, cols, staging)
        for name, parts in windows.items():
            _check_values(parts, counts[name])
        paths = publish(staging, ctx.task_dir, list(WINDOWS))
    ctx.progress(3, 3, "ingested", force=True)
    return _outputs(zone, windows, cols, counts, paths)


def _copy_windows(windows: dict[str, list[Partition]], cols: Columns, staging: Path) -> dict[str, Any]:
    """Write each window to ``staging`` and count rows, nulls and labels (when the rows carry one), in
    one pass over the files."""
    work = {}
    for name, parts in windows.items():
        frame = read_window(parts, cols)
        work[name] = {
            "write": frame.to_parquet(staging / name, write_index=False, compute=False),
            "nulls": frame.isna().sum(),
            "rows": frame.index.size,
            "labels": frame[cols.label].value_counts() if cols.label is not None else None,
        }
    (done,) = dask.compute(work)
    return done


def _check_values(parts: list[Partition], counts: Mapping[str, Any]) -> None:
    nulls: pd.Series = counts["nulls"]
    for column, n in nulls[nulls > 0].items():
        where = find_nulls(parts, str(column)) or parts[0].path.parent
        raise DataError(f"{where}: column {column!r} has null/NaN values ({int(n)} in the window); "
                        f"fix or drop those rows in the landing zone, or leave the column out of data.features")


def _outputs(zone: Mapping[str, Any], windows: dict[str, list[Partition]], cols: Columns,
             counts: Mapping[str, Any], paths: Mapping[str, Path]) -> dict[str, Any]:
    digests = {name: window_digest(parts) for name, parts in windows.items()}
    out: dict[str, Any] = {
        "landing_dir": zone["landing_dir"],
        "generated": zone["generated"],
        "features": list(cols.features),
        "label_col": cols.label,
        "timestamp_col": cols.timestamp,
        "digest": hashlib.sha256("".join(digests.values()).encode()).hexdigest(),
    }
    for name, parts in windows.items():
        labels: Optional[pd.Series] = counts[name]["labels"]
        out[f"{name}_path"] = str(paths[name])
        out[f"{name}_rows"] = int(counts[name]["rows"])
        out[f"{name}_partitions"] = [p.path.name for p in parts]
        out[f"{name}_start"] = parts[0].start.isoformat()
        out[f"{name}_digest"] = digests[name]
        # {} without a label column: a token stream's targets are its own next tokens
        out[f"{name}_labels"] = {str(k): int(v) for k, v in sorted(labels.items())} if labels is not None else {}
    return out
