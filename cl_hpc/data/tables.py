"""Window tables read with pyarrow alone (no dask), so training starts fast."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from cl_hpc.errors import DataError

if TYPE_CHECKING:
    import pandas as pd


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
