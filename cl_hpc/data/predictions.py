"""The prediction log's on-disk format: what the server writes, the label join reads, and nothing else.

Two streams live under one log folder (``serve.log_dir``), each as hive-style hourly partitions of
immutable Parquet shards:

    <log_dir>/predictions/date=2026-12-05/hour=07/<writer>-<seq>.parquet
    <log_dir>/outcomes/date=2026-12-05/hour=07/<writer>-<seq>.parquet

Why Parquet shards, not a SQLite table: a shard is written once (temporary name, fsync, rename)
and never touched again, so several servers (Slurm jobs on other nodes) log into one folder on a
shared file system without a lock between them (SQLite's locking is unreliable over NFS and
Lustre), a crash leaves whole shards or none, and the join reads columns, not rows.
``scripts/bench_serve.py`` measures both.

A predictions shard holds the rows of one (model, version, role): the fixed columns of
:data:`PREDICTION_COLUMNS`, then one ``input.<name>`` column per input of the version's signature
and one ``output.<name>`` column per output (a tensor output is a list column). One row is one row
of a request: a request of n rows gives n log rows with the same ``request_id`` and ``row``
0..n-1 (a ``POST /rank`` answer: one row per shown item, ``row`` its position; an interleaved one
logs each team's items under its own arm and version). An outcomes shard has the columns of
:data:`OUTCOME_SCHEMA`; the label is JSON text, so a class label keeps its type (1, "cat", true)
across the log.

This module is light (numpy, pandas, pyarrow): the server imports it on its hot path's side.
"""

from __future__ import annotations

import enum
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cl_hpc.atomic import write_bytes_atomic
from cl_hpc.errors import DataError

INPUT_PREFIX, OUTPUT_PREFIX = "input.", "output."
SHARD_SUFFIX = ".parquet"


class Stream(enum.Enum):
    """The two folders of a prediction log."""

    PREDICTIONS = "predictions"
    OUTCOMES = "outcomes"


class Role(enum.Enum):
    """Whose answer a logged prediction is: the one the client got, a shadow's (not returned), or none."""

    LIVE = "live"
    SHADOW = "shadow"
    # a live request the model's own code failed on (the client got a 500): logged with its inputs, latency,
    # experiment and arm but no outputs, so an experiment's error rate per arm is read from the log; every
    # reader of answers filters on live or shadow and never sees it
    FAILED = "failed"


_TS = pa.timestamp("us", tz="UTC")
# The fixed columns of every predictions shard, before its input.* and output.* columns.
PREDICTION_COLUMNS = pa.schema([
    ("request_id", pa.string()), ("row", pa.int32()), ("unit", pa.string()), ("ts", _TS),
    ("model", pa.string()), ("version", pa.string()), ("role", pa.string()), ("latency_ms", pa.float32()),
    # the experiment that routed the request and the arm that answered (cl_hpc/rollout/); null outside one
    ("experiment", pa.int64()), ("arm", pa.string()),
])
OUTCOME_SCHEMA = pa.schema([
    ("ts", _TS),  # when the outcome arrived
    ("request_id", pa.string()),  # the prediction it labels; null when it names a unit
    ("row", pa.int32()),  # which row of that request; null = every row of it
    ("unit", pa.string()),  # a user or session: labels the unit's latest prediction before ``ts``
    ("label", pa.string()),  # JSON text of the label (null when only a reward came)
    ("reward", pa.float64()),
])


@dataclass(frozen=True)
class PredictionBatch:
    """One answered request of ``n`` rows, as the server hands it to the log (off the hot path)."""

    request_id: str
    at: float  # unix seconds when it was answered
    model: str
    version: str  # "X.Y"
    role: Role
    latency_ms: float
    inputs: Mapping[str, np.ndarray]  # signature input name -> n values
    outputs: Mapping[str, np.ndarray]  # output name -> n values (n x k for a tensor output)
    unit: Optional[str] = None
    experiment: Optional[int] = None  # the experiment that routed it (None: no experiment ran)
    arm: Optional[str] = None  # the experiment's arm that answered
    # The rows' numbers within the request (None: 0..n-1). An interleaved ranking logs each team's items
    # as its own batch (its arm and version), at the positions they were shown: row = shown position.
    positions: Optional[np.ndarray] = None

    @property
    def rows(self) -> int:
        return len(next(iter(self.inputs.values()))) if self.inputs else 0

    @property
    def group(self) -> tuple[Any, ...]:
        """Batches of one group share a shard schema and its constant columns."""
        return (self.model, self.version, self.role.value, self.experiment, self.arm, tuple(self.inputs),
                tuple(self.outputs), self.positions is None)


@dataclass(frozen=True)
class Outcome:
    """A label or reward for a logged prediction, by ``request_id`` (and ``row``) or by ``unit``."""

    at: float
    request_id: Optional[str] = None
    row: Optional[int] = None
    unit: Optional[str] = None
    label: Any = None  # JSON-able: a class label, a number
    reward: Optional[float] = None

    def __post_init__(self) -> None:
        if self.request_id is None and self.unit is None:
            raise ValueError("an outcome names a request_id or a unit")
        if self.label is None and self.reward is None:
            raise ValueError("an outcome carries a label or a reward")


# ---- writing (called by the log's background writer, never per request) ---------------------------


def predictions_table(batches: Iterable[PredictionBatch]) -> pa.Table:
    """The batches of one group as one table in the shard layout. Built column by column with numpy,
    never row by row: a flush of a second's traffic is ~10^5 one-row batches (scripts/bench_predlog.py)."""
    batches = list(batches)
    values: dict[str, list[Any]] = {}  # input.<name> / output.<name> -> one array per batch
    for prefix, part in ((INPUT_PREFIX, "inputs"), (OUTPUT_PREFIX, "outputs")):
        maps = [getattr(b, part) for b in batches]
        values.update({prefix + name: [m[name] for m in maps] for name in getattr(batches[0], part)})
    # rows per batch: the length of its first input (PredictionBatch.rows), with len as a C loop
    lengths = next(iter(values.values())) if batches[0].inputs else [()] * len(batches)
    counts = np.fromiter(map(len, lengths), dtype=np.int64, count=len(batches))
    arrays = _fixed_columns(batches, counts) + [_arrow_column(np.concatenate(v)) for v in values.values()]
    return pa.Table.from_arrays(arrays, names=list(PREDICTION_COLUMNS.names) + list(values))


def _fixed_columns(batches: list[PredictionBatch], counts: np.ndarray) -> list[pa.Array]:
    """The columns of PREDICTION_COLUMNS: a batch's values repeated over its ``counts`` rows."""
    total, first = int(counts.sum()), batches[0]

    def repeated(values: list[Any], dtype: Any) -> np.ndarray:
        return np.repeat(np.array(values, dtype=dtype), counts)

    if first.positions is None:  # (a group's batches all give positions or none: PredictionBatch.group)
        rows = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    else:
        rows = np.concatenate([np.asarray(b.positions, dtype=np.int64) for b in batches])
    columns = {
        "request_id": pa.array(repeated([b.request_id for b in batches], object), pa.string()),
        "row": pa.array(rows.astype(np.int32)),
        "unit": pa.array(repeated([b.unit for b in batches], object), pa.string()),
        "ts": _timestamps(repeated([b.at for b in batches], np.float64)),
        "model": pa.repeat(pa.scalar(first.model, pa.string()), total),
        "version": pa.repeat(pa.scalar(first.version, pa.string()), total),
        "role": pa.repeat(pa.scalar(first.role.value, pa.string()), total),
        "latency_ms": pa.array(repeated([b.latency_ms for b in batches], np.float32)),
        "experiment": pa.repeat(pa.scalar(first.experiment, pa.int64()), total),
        "arm": pa.repeat(pa.scalar(first.arm, pa.string()), total),
    }
    return [columns[name] for name in PREDICTION_COLUMNS.names]


def outcomes_table(outcomes: Iterable[Outcome]) -> pa.Table:
    rows = list(outcomes)
    return pa.Table.from_arrays([
        _timestamps(np.array([o.at for o in rows], dtype=np.float64)),
        pa.array([o.request_id for o in rows], pa.string()),
        pa.array([o.row for o in rows], pa.int32()),
        pa.array([o.unit for o in rows], pa.string()),
        pa.array([None if o.label is None else json.dumps(o.label) for o in rows], pa.string()),
        pa.array([o.reward for o in rows], pa.float64()),
    ], schema=OUTCOME_SCHEMA)


def shard_path(log_dir: Path, stream: Stream, at: float, writer: str, seq: int) -> Path:
    """Where a shard whose first row has time ``at`` goes (UTC hour partitions)."""
    stamp = time.gmtime(at)
    return (log_dir / stream.value / time.strftime("date=%Y-%m-%d", stamp) / time.strftime("hour=%H", stamp)
            / f"{writer}-{seq:08d}{SHARD_SUFFIX}")


def write_shard(path: Path, table: pa.Table) -> None:
    """One immutable shard: written under a temporary name, fsynced, renamed into place."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    write_bytes_atomic(path, sink.getvalue().to_pybytes())


def writer_id() -> str:
    """Unique per writer process, across hosts: shards of two servers never collide."""
    return f"{socket.gethostname()}-{os.getpid()}-{time.time_ns():x}"


# ---- reading (the label join, the watch, reports) ------------------------------------------------


@dataclass(frozen=True)
class StreamFrame:
    """The rows of one stream, with the shards they came from."""

    frame: pd.DataFrame
    shards: list[Path] = field(default_factory=list)


def list_shards(log_dir: Path, stream: Stream, since: Optional[float] = None,
                until: Optional[float] = None) -> list[Path]:
    """The stream's shards, oldest partition first; hour partitions wholly outside [since, until)
    are skipped without opening a file. Hidden (temporary) files are never listed."""
    root = log_dir / stream.value
    if not root.is_dir():
        return []
    low = None if since is None else _hour_key(since)
    high = None if until is None else _hour_key(until)
    out: list[Path] = []
    for date_dir in sorted(root.glob("date=*")):
        for hour_dir in sorted(date_dir.glob("hour=*")):
            key = f"{date_dir.name[5:]}T{hour_dir.name[5:]}"
            if (low is not None and key < low) or (high is not None and key > high):
                continue
            out.extend(p for p in sorted(hour_dir.glob(f"*{SHARD_SUFFIX}")) if not p.name.startswith((".", "_")))
    return out


def read_stream(log_dir: Path, stream: Stream, since: Optional[float] = None,
                until: Optional[float] = None, columns: Optional[list[str]] = None) -> StreamFrame:
    """Every row of the stream whose partition may hold times in [since, until); shards of other
    schemas (other versions' inputs) are unified, with nulls where a shard lacks a column."""
    shards = list_shards(log_dir, stream, since, until)
    tables = []
    for path in shards:
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise DataError(f"prediction log shard {path} is unreadable ({exc}); move it aside and rerun") from exc
        if columns is not None:
            table = table.select([c for c in columns if c in table.column_names])
        tables.append(table)
    if not tables:
        schema = PREDICTION_COLUMNS if stream is Stream.PREDICTIONS else OUTCOME_SCHEMA
        return StreamFrame(schema.empty_table().to_pandas(), [])
    merged = pa.concat_tables(tables, promote_options="permissive")
    return StreamFrame(merged.to_pandas(), shards)


def decode_label(text: Optional[str]) -> Any:
    """The label of an outcome row; None where only a reward came (pandas may read that null as NaN)."""
    return None if text is None or isinstance(text, float) else json.loads(text)


def _timestamps(seconds: np.ndarray) -> pa.Array:
    micros = np.round(np.asarray(seconds, dtype=np.float64) * 1e6).astype(np.int64)
    return pa.array(micros, type=pa.int64()).cast(_TS)


def _arrow_column(values: np.ndarray) -> pa.Array:
    if values.ndim <= 1:
        return pa.array(values)
    # A variable-size list, not a fixed-size one: versions with other class counts share a stream.
    width = int(np.prod(values.shape[1:]))
    offsets = pa.array(np.arange(len(values) + 1, dtype=np.int32) * width)
    return pa.ListArray.from_arrays(offsets, pa.array(values.reshape(len(values), width).ravel()))


def _hour_key(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H", time.gmtime(at))
