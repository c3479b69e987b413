"""Incremental materialization: a view's source partitions -> feature rows in the offline store (Parquet,
append-only batches) and the latest values in the online store (SQLite).

Only what is new is computed: a partition file never materialized, a file whose size or modification
time changed since (a backfill), and the partitions after such a file within the view's ``lookback``
(their windows reach into the changed rows). Each one is computed from its own rows plus the
``lookback`` of rows before it, with dask over partitions, and only its own events are kept.

When a value became known (``_created_ts``), so that a training set never sees a value before it
existed (the leak of Feast's created_timestamp, which only breaks ties):
  - a row of an on-time partition arrived at its event time (or at ``source.created_col`` if the view
    names one);
  - a row of a backfill (a file that changed) or of late data (a new file older than the newest one
    already materialized) arrived when the file did: its modification time;
  - a feature row is known once every source row of its entity at or before its event, in the computed
    frame, had arrived: the running maximum of their arrivals. Conservative: a value may be hidden a
    little longer than needed, never shown early.

Layout under ``<store>/features``: ``offline/<view>/<ident>/batch-<n>.parquet`` and ``_state.json`` (which
files went into which batches, written last and atomically: a batch not listed there was never
committed and is ignored), and ``online.sqlite``. A crash leaves the last committed state; rerunning
computes the same batches again.
"""

from __future__ import annotations

import bisect
import dataclasses
import io
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from cl_hpc.atomic import read_json, write_bytes_atomic, write_json_atomic
from cl_hpc.data.partitions import Partition, list_partitions, utc_naive
from cl_hpc.errors import DataError
from cl_hpc.features.definitions import FeatureView, check_bump
from cl_hpc.features.online import CREATED, EVENT, OnlineStore

BATCH = "_batch"
STATE = "_state.json"
_KINDS: dict[str, Callable[[Any], bool]] = {"float64": pd.api.types.is_float_dtype,
                                            "int64": pd.api.types.is_integer_dtype, "bool": pd.api.types.is_bool_dtype}


@dataclasses.dataclass(frozen=True)
class Work:
    """One source partition to compute into one batch."""

    part: Partition
    fingerprint: str  # size and mtime: what changes when the file is rewritten
    arrived: Optional[pd.Timestamp]  # None: on time; else when a backfill or late file landed
    batch: int


@dataclasses.dataclass(frozen=True)
class Report:
    view: str
    ident: str
    partitions: int  # in the source
    computed: list[str]  # the partition files computed by this run
    rows: int  # feature rows written
    entities: int  # online rows offered


def offline_dir(root: Path, view: FeatureView) -> Path:
    return root / "offline" / view.name / view.ident


def online_path(root: Path) -> Path:
    return root / "online.sqlite"


def read_state(folder: Path) -> dict[str, Any]:
    return read_json(folder / STATE) or {"files": {}, "batches": {}, "next_batch": 1, "newest": None}


def source_partitions(view: FeatureView) -> list[Partition]:
    root = Path(view.source.landing_dir).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"feature view {view.name!r} ({view.path}): its source zone {root} does not exist; "
                        f"generate or land data there first (python -m cl_hpc.data ...), or fix source.landing_dir")
    return list_partitions(root, view.source.timestamp_col)


def plan(view: FeatureView, state: dict[str, Any], parts: list[Partition]) -> list[Work]:
    """The partitions to compute: new, changed, and those whose lookback reaches a changed one."""
    files, newest = state["files"], state.get("newest")
    changed: list[pd.Timestamp] = []
    work: list[Work] = []
    for part in parts:
        entry, fingerprint = files.get(part.path.name), _fingerprint(part.path)
        if entry is not None and entry["fingerprint"] == fingerprint:
            continue
        late = entry is not None or (newest is not None and part.start < pd.Timestamp(newest))
        arrived = _mtime(part.path) if late else None
        if late:
            changed.append(part.start)
        work.append(Work(part, fingerprint, arrived, state["next_batch"] + len(work)))
    lookback = pd.Timedelta(view.lookback)
    chosen = {w.part.path for w in work}
    for part in parts:  # downstream of a backfill, within the lookback: recompute with the late rows
        if part.path not in chosen and any(s < part.start <= s + lookback + _span(parts, s) for s in changed):
            entry = files[part.path.name]
            work.append(Work(part, entry["fingerprint"], _arrival_of(entry), state["next_batch"] + len(work)))
    return work


def compute(view: FeatureView, work: Work, parts: list[Partition], arrivals: dict[str, Optional[str]]) -> pd.DataFrame:
    """The feature rows of one partition's own events, with their event and created times."""
    ts = view.source.timestamp_col
    own = _read(work.part.path, ts, work.arrived, view)
    if own.empty:
        return _empty(view)
    first, last = own[ts].min(), own[ts].max()
    context = _context(view, parts, work.part, first, arrivals)
    frame = pd.concat([context, own], ignore_index=True) if len(context) else own
    out = _checked(view, view.function()(frame.drop(columns=["_arrived"]), **view.params), work.part)
    out = out[(out[EVENT] >= first) & (out[EVENT] <= last)]
    out = _with_created(view, out, frame)
    out[BATCH] = np.int64(work.batch)
    return out[[*view.entities, EVENT, CREATED, BATCH, *view.feature_names]].reset_index(drop=True)


@dataclasses.dataclass(frozen=True)
class Pending:
    """What one materialization computes, planned once: every shard of a Slurm array plans the same."""

    view: FeatureView
    parts: list[Partition]
    works: list[Work]
    arrivals: dict[str, Optional[str]]  # file -> when it landed (None: on time), for the context rows


def pending(view: FeatureView, root: Path, online: OnlineStore) -> Pending:
    """Plan a materialization. A changed definition without a version bump fails here, before any work;
    its digest is recorded only when the batches commit, so a failing transformation never claims it."""
    check_bump(view, online.recorded_digest(view))
    state, parts = read_state(offline_dir(root, view)), source_partitions(view)
    works = plan(view, state, parts)
    arrivals = {name: entry.get("arrived") for name, entry in state["files"].items()}
    arrivals.update({w.part.path.name: None if w.arrived is None else w.arrived.isoformat() for w in works})
    return Pending(view, parts, works, arrivals)


def compute_batches(todo: Pending, root: Path, shard: int = 0, shards: int = 1,
                    cpus: Optional[int] = None) -> list[dict[str, Any]]:
    """Compute this shard's share of the works (every ``shards``-th) with dask threads and write each as a
    batch file; nothing counts until :func:`commit`. Returns one entry per batch."""
    import dask

    mine = todo.works[shard::shards]
    tasks = [dask.delayed(compute)(todo.view, w, todo.parts, todo.arrivals) for w in mine]
    with dask.config.set(scheduler="threads", num_workers=cpus):
        results = dask.compute(*tasks)
    return [_write_batch(root, todo.view, w, rows) for w, rows in zip(mine, results)]


def commit(root: Path, view: FeatureView, entries: list[dict[str, Any]], online: OnlineStore) -> int:
    """Record the batches: the online values first, then the state (last: it is what makes them count)."""
    folder = offline_dir(root, view)
    state = read_state(folder)
    stale = [e["source"] for e in entries if str(e["batch"]) in state["batches"]]
    if stale:
        raise DataError(f"feature view {view.name!r}: batches for {stale} were committed meanwhile by another "
                        f"materialization; run it again to compute what is still new")
    online.register(view)
    if entries:
        rows = pq.read_table([str(folder / e["file"]) for e in entries]).to_pandas()
        offered = online.write(view, rows)
    for e in entries:
        state["batches"][str(e["batch"])] = {"file": e["file"], "source": e["source"], "rows": e["rows"]}
        state["files"][e["source"]] = {"fingerprint": e["fingerprint"], "start": e["start"], "arrived": e["arrived"]}
    if not entries:
        return 0
    state["next_batch"] = max(int(e["batch"]) for e in entries) + 1
    state["newest"] = max(pd.Timestamp(f["start"]) for f in state["files"].values()).isoformat()
    write_json_atomic(folder / STATE, state)
    return offered


def materialize(view: FeatureView, root: Path, online: OnlineStore, cpus: Optional[int] = None) -> Report:
    """Compute every pending partition of ``view`` in this process (dask threads) and commit them."""
    todo = pending(view, root, online)
    entries = compute_batches(todo, root, cpus=cpus)
    offered = commit(root, view, entries, online)
    return Report(view.name, view.ident, len(todo.parts), [e["source"] for e in entries],
                  sum(e["rows"] for e in entries), offered)


def load_offline(root: Path, view: FeatureView, columns: Optional[list[str]] = None) -> pd.DataFrame:
    """Every committed batch of the view version as one frame (never a batch the state does not list)."""
    folder = offline_dir(root, view)
    state = read_json(folder / STATE)
    if state is None:
        raise DataError(f"feature view {view.name!r} {view.ident} was never materialized under {root}; run "
                        f"python -m cl_hpc.features materialize {view.name}")
    files = [str(folder / b["file"]) for b in state["batches"].values()]
    return pq.read_table(files, columns=columns).to_pandas() if files else _empty(view)


# ---- helpers --------------------------------------------------------------------------------------------


def _write_batch(root: Path, view: FeatureView, work: Work, rows: pd.DataFrame) -> dict[str, Any]:
    buffer = io.BytesIO()
    rows.to_parquet(buffer, index=False)
    name = f"batch-{work.batch:06d}.parquet"
    write_bytes_atomic(offline_dir(root, view) / name, buffer.getvalue())
    return {"batch": work.batch, "file": name, "source": work.part.path.name, "rows": len(rows),
            "fingerprint": work.fingerprint, "start": work.part.start.isoformat(),
            "arrived": None if work.arrived is None else work.arrived.isoformat()}


def _fingerprint(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _mtime(path: Path) -> pd.Timestamp:
    return pd.Timestamp(path.stat().st_mtime_ns, unit="ns").floor("us")


def _arrival_of(entry: dict[str, Any]) -> Optional[pd.Timestamp]:
    return None if entry.get("arrived") is None else pd.Timestamp(entry["arrived"])


def _span(parts: list[Partition], start: pd.Timestamp) -> pd.Timedelta:
    """How long the partition starting at ``start`` lasts: until the next one starts (``parts`` in time order)."""
    later = bisect.bisect_right([p.start for p in parts], start)
    return parts[later].start - start if later < len(parts) else pd.Timedelta(0)


def _read(path: Path, ts: str, arrived: Optional[pd.Timestamp], view: FeatureView) -> pd.DataFrame:
    frame = pd.read_parquet(path)
    if ts not in frame.columns:
        raise DataError(f"{path}: no time column {ts!r} (view {view.name!r} source.timestamp_col); "
                        f"the file has {list(frame.columns)}")
    frame[ts] = utc_naive(frame[ts])
    created = view.source.created_col
    base = utc_naive(frame[created]) if created else frame[ts]
    frame["_arrived"] = base if arrived is None else base.clip(lower=arrived)
    return frame


def _context(view: FeatureView, parts: list[Partition], own: Partition, first: pd.Timestamp,
             arrivals: dict[str, Optional[str]]) -> pd.DataFrame:
    """Rows of the earlier partitions within the lookback before ``first``."""
    lookback = pd.Timedelta(view.lookback)
    if lookback <= pd.Timedelta(0):
        return pd.DataFrame()
    ts, frames = view.source.timestamp_col, list[pd.DataFrame]()
    # Walk back from ``own`` while an earlier partition still ends inside the lookback: the cost is the
    # lookback's partitions, never the whole history (``parts`` is in time order).
    index = bisect.bisect_left([p.start for p in parts], own.start)
    for i in range(index - 1, -1, -1):
        if parts[i + 1].start <= first - lookback:
            break
        arrived = arrivals.get(parts[i].path.name)
        rows = _read(parts[i].path, ts, None if arrived is None else pd.Timestamp(arrived), view)
        frames.insert(0, rows[(rows[ts] >= first - lookback) & (rows[ts] < first)])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _checked(view: FeatureView, out: Any, part: Partition) -> pd.DataFrame:
    where = f"feature view {view.name!r}: transform {view.transform} on {part.path.name}"
    if not isinstance(out, pd.DataFrame):
        raise DataError(f"{where} returned {type(out).__name__}; it must return a pandas DataFrame")
    need = [*view.entities, view.source.timestamp_col, *view.feature_names]
    missing = [c for c in need if c not in out.columns]
    if missing:
        raise DataError(f"{where} returned no column(s) {missing}; it returned {list(out.columns)}, and the view "
                        f"declares {need} ({view.path})")
    wrong = {f.name: str(out[f.name].dtype) for f in view.features if not _KINDS[f.dtype](out[f.name].dtype)}
    if wrong:
        declared = {f.name: f.dtype for f in view.features if f.name in wrong}
        raise DataError(f"{where} returned dtypes {wrong}, but the view declares {declared} ({view.path}); "
                        f"cast in the transform or fix the declared dtype")
    return out.rename(columns={view.source.timestamp_col: EVENT})


def _with_created(view: FeatureView, out: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """Each feature row's created time: the latest arrival among its entity's rows at or before it."""
    ts, keys = view.source.timestamp_col, list(view.entities)
    known = frame[[*keys, ts, "_arrived"]].sort_values(ts, kind="stable")
    known["_arrived"] = known.groupby(keys, sort=False)["_arrived"].cummax()
    known = known.rename(columns={ts: EVENT}).drop_duplicates([*keys, EVENT], keep="last")
    out = out.sort_values(EVENT, kind="stable")
    merged = pd.merge_asof(out, known, on=EVENT, by=keys, direction="backward")
    merged[CREATED] = merged["_arrived"].where(merged["_arrived"] > merged[EVENT], merged[EVENT])
    return merged.drop(columns=["_arrived"])


def _empty(view: FeatureView) -> pd.DataFrame:
    return pd.DataFrame(columns=[*view.entities, EVENT, CREATED, BATCH, *view.feature_names])
