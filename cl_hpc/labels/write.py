"""The labelled partitions the join appends to a landing zone, and its side files.

A partition ``part-<YYYYmmddTHHMMSS>.parquet`` (cl_hpc/data/landing.py's names) holds the
predictions of ``freq`` of prediction time, sorted by time, with these columns:

- the prediction time (``timestamp_col``), every input of the version that served, without its
  ``input.`` prefix (the features), and the label (``label_col``);
- metadata, every name starting with ``_`` so the landing-zone readers never take it for a feature:
  ``_request_id``, ``_row``, ``_unit``, ``_model``, ``_version`` (the version that served),
  ``_experiment`` and ``_arm`` (the experiment that routed it, if one ran),
  ``_defaulted`` (no outcome came: the label is ``default_label``), ``_label_delay_s`` (outcome time
  - prediction time), ``_reward`` (of the labelling outcome), and ``_output.<name>`` per logged
  output (e.g. the served class), so the served accuracy per version needs no rescoring.

Each file is written once, under the zone's lock, atomically (temporary name, fsync, rename); its
footer names the run that wrote it. The label column has one type per file: bool, int64, float64
or string when every label is of that kind (integers with floats give float64), else the labels'
JSON text.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cl_hpc.atomic import write_bytes_atomic
from cl_hpc.data.landing import partition_name
from cl_hpc.data.predictions import INPUT_PREFIX, OUTPUT_PREFIX
from cl_hpc.errors import DataError

META = b"cl_hpc.labels"
OUTPUT_META_PREFIX = "_output."


class PartitionState(enum.Enum):
    NEW = "new"  # no file yet: this run writes it
    ADOPTED = "adopted"  # written by a run that crashed before its ledger entry: kept as it is
    DONE = "done"  # written by an earlier, complete run (or not by the join): never touched


@dataclass(frozen=True)
class LabelValues:
    """The label of each output row, as codes into ``values`` (few distinct labels: each decoded once)."""

    codes: np.ndarray
    values: list[Any]


@dataclass(frozen=True)
class Naming:
    timestamp_col: str
    label_col: str


def name_of(start_us: int) -> str:
    return partition_name(pd.Timestamp(start_us, unit="us"))


def partition_state(path: Path, complete_runs: frozenset[str]) -> PartitionState:
    if not path.exists():
        return PartitionState.NEW
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return PartitionState.DONE  # not readable: not ours to judge or replace
    run = json.loads(meta[META]).get("run") if META in meta else None
    return PartitionState.ADOPTED if run is not None and run not in complete_runs else PartitionState.DONE


def labelled_table(live: pa.Table, rows: np.ndarray, labels: LabelValues, extra: dict[str, pa.Array],
                   naming: Naming) -> pa.Table:
    """The output rows (``rows`` of the live predictions, already in time order) in the zone's layout,
    except the label column, which :func:`write_partitions` types per file. ``extra``: the ``_``
    columns computed by the join (defaulted, delay, reward), aligned with ``rows``."""
    picked = live.take(pa.array(rows))
    columns: dict[str, pa.ChunkedArray | pa.Array] = {naming.timestamp_col: picked.column("ts")}
    for name in picked.column_names:
        if name.startswith(INPUT_PREFIX):
            columns[_feature(name, naming, live)] = picked.column(name)
    columns["_label"] = pa.array(labels.codes)
    for name in ("request_id", "row", "unit", "model", "version", "experiment", "arm"):
        if name in picked.column_names:  # experiment, arm: not in shards logged before experiments existed
            columns[f"_{name}"] = picked.column(name)
    columns.update(extra)
    for name in picked.column_names:
        if name.startswith(OUTPUT_PREFIX):
            columns[OUTPUT_META_PREFIX + name[len(OUTPUT_PREFIX):]] = picked.column(name)
    return pa.table(columns)


def write_partitions(table: pa.Table, starts: np.ndarray, labels: LabelValues, out_dir: Path, naming: Naming,
                     meta: dict[str, Any]) -> list[str]:
    """One file per distinct start (``table`` sorted by time, so each partition is one slice); a
    name that exists by now is left alone. Returns the names written."""
    written: list[str] = []
    if not len(starts):
        return written
    bounds = np.flatnonzero(np.diff(starts)) + 1
    for low, high in zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(starts)]])):
        name = name_of(int(starts[low]))
        path = out_dir / name
        if path.exists():
            continue
        part = finish(table.slice(low, high - low), labels, naming, {**meta, "rows": int(high - low)})
        write_bytes_atomic(path, parquet_bytes(part))
        written.append(name)
    return written


def finish(part: pa.Table, labels: LabelValues, naming: Naming, meta: dict[str, Any]) -> pa.Table:
    """The slice with its label codes replaced by the typed label column, and the run in its footer.
    Only the labels this file holds are typed (a regression's labels may be as many as its rows)."""
    codes = np.asarray(part.column("_label").to_numpy())
    used = np.flatnonzero(np.bincount(codes, minlength=len(labels.values)))
    local = np.zeros(len(labels.values), dtype=np.int64)
    local[used] = np.arange(len(used))
    typed = pc.take(label_array([labels.values[i] for i in used]), pa.array(local[codes]))
    part = part.set_column(part.schema.get_field_index("_label"), naming.label_col, typed)
    return part.replace_schema_metadata({META: json.dumps(meta).encode()})


def label_array(values: Sequence[Any]) -> pa.Array:
    """``values`` as one array of one type: bool, int64, float64 or string when they are all of that
    kind (None is null in any), else their JSON text."""
    kind = _kind(values)
    if kind == pa.string() and not all(isinstance(v, str) for v in values if v is not None):  # mixed kinds
        return pa.array([None if v is None else json.dumps(v) for v in values], pa.string())
    return pa.array(values, kind)


def side_file(out_dir: Path, folder: str, stamp: str, table: pa.Table) -> Optional[Path]:
    """``<out_dir>/<folder>/<stamp>.parquet``, or nothing when ``table`` is empty."""
    if table.num_rows == 0:
        return None
    path = out_dir / folder / f"{stamp}.parquet"
    write_bytes_atomic(path, parquet_bytes(table))
    return path


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return bytes(sink.getvalue().to_pybytes())


def _kind(values: Sequence[Any]) -> pa.DataType:
    values = [v for v in values if v is not None]  # "no label" (a late prediction's): null in any type
    if values and all(isinstance(v, bool) for v in values):
        return pa.bool_()
    if any(isinstance(v, bool) for v in values):
        return pa.string()
    if all(isinstance(v, int) for v in values):
        return pa.int64()
    if all(isinstance(v, (int, float)) for v in values):
        return pa.float64()
    return pa.string()


def _feature(name: str, naming: Naming, live: pa.Table) -> str:
    feature = name[len(INPUT_PREFIX):]
    if feature in (naming.timestamp_col, naming.label_col) or feature.startswith("_"):
        versions = sorted(set(live.column("version").to_pylist()))
        raise DataError(f"input {feature!r} of version(s) {versions} clashes with the landing zone's "
                        f"{'metadata (names starting with _)' if feature.startswith('_') else 'time or label'} "
                        f"column; set labels.timestamp_col / labels.label_col to other names")
    return feature
