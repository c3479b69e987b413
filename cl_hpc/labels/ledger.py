"""The join's memory between runs: which log shards it has seen, and how far in time it has got.

A shard of the prediction log is immutable, so one look at it is enough: the ledger records each
shard the first time a run reads it, with the time of its newest row. A run's *watermark* W is the
end of the newest mature partition: every prediction before W is in a written partition (or was
dropped), and every outcome that could label one has been read. So the next run reads

- shards it has never seen, whole (they may be late: a server that flushed long after, or a file
  of labels copied in for old predictions);
- the rows at or after W of shards it has seen whose newest row is at or after W;
- nothing else (a shard whose rows all lie before W is done).

Outcome rows at or after W that were already accounted (they labelled, or came late for, a
prediction before W) would be read again; the ledger lists them (``skip``) until W passes them.

Layout: one append-only file per run that changed anything, ``<out_dir>/_ledger/<stamp>.parquet``
(the landing-zone readers skip names starting with ``_``). The newest file holds the watermark and
the full skip list; every file adds the shards its run saw first. A run is *complete* once its
ledger file exists: partitions written by a run without one (it crashed before the end) are
adopted by the next run rather than counted as late.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cl_hpc.atomic import write_bytes_atomic
from cl_hpc.errors import DataError

LEDGER_DIR = "_ledger"
_SEEN, _SKIP = "seen", "skip"
_SCHEMA = pa.schema([("kind", pa.string()), ("shard", pa.string()), ("max_us", pa.int64()),
                     ("row", pa.int32()), ("ts_us", pa.int64())])
_WATERMARK = b"watermark_us"
# A shard that holds no rows is done at once: its newest row is "before every watermark".
EMPTY_MAX = np.iinfo(np.int64).min


@dataclass(frozen=True)
class Skip:
    """Outcome rows already accounted but at or after the watermark, so read again: by shard key,
    the row numbers within the shard and their times."""

    rows: Mapping[str, np.ndarray] = field(default_factory=dict)
    times: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(r) for r in self.rows.values())


@dataclass(frozen=True)
class Ledger:
    seen: Mapping[str, int]  # shard key (its path under the log dir) -> time of its newest row, us
    watermark_us: Optional[int]  # the last run's watermark; None before the first run
    skip: Skip
    runs: frozenset[str]  # stamps of the complete runs

    def done(self, key: str) -> bool:
        newest = self.seen.get(key)
        return newest is not None and self.watermark_us is not None and newest < self.watermark_us


def read_ledger(out_dir: Path) -> Ledger:
    files = sorted((out_dir / LEDGER_DIR).glob("*.parquet"))
    files = [f for f in files if not f.name.startswith(".")]
    if not files:
        return Ledger({}, None, Skip(), frozenset())
    seen: dict[str, int] = {}
    for path in files:
        table = _read(path)
        rows = table.filter(pc.equal(table.column("kind"), _SEEN))
        seen.update(zip(rows.column("shard").to_pylist(), rows.column("max_us").to_pylist()))
    newest = _read(files[-1])
    meta = newest.schema.metadata or {}
    watermark = int(meta[_WATERMARK]) if _WATERMARK in meta else None
    return Ledger(seen, watermark, _skip(newest), frozenset(f.stem for f in files))


def write_ledger(out_dir: Path, stamp: str, new_seen: Mapping[str, int], watermark_us: int, skip: Skip) -> Path:
    """The run's file, written last: its existence marks the run complete."""
    keys = list(new_seen)
    skip_keys = [k for k, rows in skip.rows.items() for _ in range(len(rows))]
    n_seen, n_skip = len(keys), len(skip_keys)
    table = pa.table({
        "kind": [_SEEN] * n_seen + [_SKIP] * n_skip,
        "shard": keys + skip_keys,
        "max_us": pa.array([new_seen[k] for k in keys] + [None] * n_skip, pa.int64()),
        "row": pa.array(np.concatenate([np.full(n_seen, -1, np.int32), *_values(skip.rows, np.int32)]),
                        mask=np.arange(n_seen + n_skip) < n_seen),
        "ts_us": pa.array(np.concatenate([np.zeros(n_seen, np.int64), *_values(skip.times, np.int64)]),
                          mask=np.arange(n_seen + n_skip) < n_seen),
    }, schema=_SCHEMA).replace_schema_metadata({_WATERMARK: str(watermark_us).encode()})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    path = out_dir / LEDGER_DIR / f"{stamp}.parquet"
    write_bytes_atomic(path, sink.getvalue().to_pybytes())
    return path


def carry_skip(previous: Skip, watermark_us: int, added: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Skip:
    """The skip list after a run: the earlier entries still at or after the watermark, and the rows
    this run accounted that lie at or after it (``added``: shard -> (rows, times))."""
    rows: dict[str, list[np.ndarray]] = {}
    times: dict[str, list[np.ndarray]] = {}
    sources = [(k, previous.rows[k], previous.times[k]) for k in previous.rows]
    for key, r, t in sources + [(k, r, t) for k, (r, t) in added.items()]:
        keep = t >= watermark_us
        if keep.any():
            rows.setdefault(key, []).append(r[keep])
            times.setdefault(key, []).append(t[keep])
    return Skip({k: np.concatenate(v) for k, v in rows.items()}, {k: np.concatenate(v) for k, v in times.items()})


def _values(by_key: Mapping[str, np.ndarray], dtype: type) -> list[np.ndarray]:
    return [np.asarray(v, dtype=dtype) for v in by_key.values()] or [np.zeros(0, dtype)]


def _skip(table: pa.Table) -> Skip:
    rows = table.filter(pc.equal(table.column("kind"), _SKIP))
    if rows.num_rows == 0:
        return Skip()
    codes, keys = pd.factorize(rows.column("shard").to_numpy(zero_copy_only=False))
    order = np.argsort(codes, kind="stable")
    bounds = np.cumsum(np.bincount(codes, minlength=len(keys)))[:-1]
    row = np.split(rows.column("row").to_numpy()[order], bounds)
    ts = np.split(rows.column("ts_us").to_numpy()[order], bounds)
    return Skip(dict(zip(keys, row)), dict(zip(keys, ts)))


def _read(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(f"label join ledger {path} is unreadable ({exc}); restore it from a backup, or remove "
                        f"the whole {path.parent.parent} to join the log again from the start") from exc
