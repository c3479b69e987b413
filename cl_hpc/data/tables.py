"""Feature tables as numpy arrays, read with pyarrow alone (no dask) so training starts fast."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cl_hpc.errors import DataError

if TYPE_CHECKING:
    import pandas as pd


def load_xy(path: str | Path, features: list[str], label: str) -> tuple[np.ndarray, np.ndarray]:
    """(X float32 [rows, features], y int64 [rows]) from a Parquet file or folder of parts."""
    try:
        table = pq.read_table(path, columns=[*features, label])
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: cannot read feature table columns {[*features, label]} ({exc}); "
                        f"re-run the task that wrote it") from exc
    x = np.column_stack([table.column(f).to_numpy().astype(np.float32) for f in features])
    y = table.column(label).to_numpy().astype(np.int64)
    return x, y


def load_times(path: str | Path, column: str) -> pd.Series:
    """A table's timestamp column, in UTC without a zone (see partitions.utc_naive). Imported here:
    evaluate reads tables too, and must not pay for pandas."""
    from cl_hpc.data.partitions import utc_naive

    return utc_naive(pq.read_table(path, columns=[column]).column(column).to_pandas())


def load_frame(path: str | Path, timestamp_col: str | None = None) -> pd.DataFrame:
    """A window's raw rows as pandas (what a data module turns into batches), its timestamp column in
    UTC without a zone (see partitions.utc_naive)."""
    from cl_hpc.data.partitions import utc_naive

    try:
        frame = pq.read_table(path).to_pandas()
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: cannot read the window's rows ({exc}); re-run the ingest task") from exc
    if timestamp_col and timestamp_col in frame.columns:
        frame[timestamp_col] = utc_naive(frame[timestamp_col])
    return frame
