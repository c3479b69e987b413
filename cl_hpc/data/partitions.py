"""The partition files of a landing zone: which files, in what time order, and whether each one is
fit to read. Every check reads Parquet footers only, never rows, and every bad file is reported in
one error, so one look shows all that must be fixed.

Which files: every ``*.parquet`` directly in the landing folder; names that start with ``_`` or
``.`` (the manifest, Spark's ``_SUCCESS``, temporary files) are skipped. Which columns: those of
data.features, or when it is empty every column but the time, the label and the metadata (column
names that start with ``_``, such as the label join's ``_version``).

Time order: a file named ``part-<YYYYmmddTHHMMSS>.parquet`` (what the generator writes) starts at
the time in its name, which costs no I/O. Any other name (your own files, e.g. Spark's
``part-00000-<uuid>.snappy.parquet``) starts at the smallest value of its timestamp column, taken
from the footer's statistics (the column is read only when the writer stored none). Equal starts
keep name order. A time zone-aware column is compared in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cl_hpc.config.ml import DataConf
from cl_hpc.data.landing import NAME_PREFIX, NAME_SUFFIX, parse_partition_name
from cl_hpc.errors import DataError


@dataclass(frozen=True)
class Partition:
    path: Path
    start: pd.Timestamp


@dataclass(frozen=True)
class Columns:
    """The columns a window is read with, and the Arrow type each must have in every file."""

    timestamp: str
    label: Optional[str]  # None: the rows carry no label (a token stream)
    features: tuple[str, ...]
    types: dict[str, pa.DataType]
    # True when data.features was empty: every column but the label, the time and the metadata (names
    # starting with "_") is a feature, and every file must have each of them (a file that lacks one is
    # malformed, not a reason to drop it).
    every_column: bool = False

    @property
    def names(self) -> list[str]:
        return [self.timestamp, *self.features, *([self.label] if self.label is not None else [])]


# --- listing --------------------------------------------------------------------------------------


def list_partitions(root: Path, timestamp_col: Optional[str] = None) -> list[Partition]:
    """Every partition file of the zone, oldest first.

    Without ``timestamp_col`` only generated names (``part-<YYYYmmddTHHMMSS>.parquet``) are
    accepted; with it, any ``*.parquet`` name is ordered by its smallest timestamp.
    """
    if not root.is_dir():
        raise DataError(f"landing zone {root} does not exist (data.landing_dir)")
    parts, problems = [], []
    for path in sorted(root.glob(f"*{NAME_SUFFIX}")):
        if path.name.startswith(("_", ".")):
            continue
        try:
            parts.append(Partition(path, _start(path, timestamp_col)))
        except DataError as exc:
            problems.append(str(exc))
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        raise DataError(f"cannot order the partition files of {root} by time:\n{lines}\n"
                        f"Fix or remove these files, or set data.timestamp_col to their time column.")
    return sorted(parts, key=lambda p: p.start)  # stable: equal starts keep name order


def _start(path: Path, timestamp_col: Optional[str]) -> pd.Timestamp:
    named = parse_partition_name(path.name)
    if named is not None:
        return named
    if timestamp_col is None:
        raise DataError(f"{path.name}: not a partition name; expected {NAME_PREFIX}<YYYYmmddTHHMMSS>{NAME_SUFFIX} "
                        f"(move other files out of {path.parent})")
    return utc_naive(_min_time(path, timestamp_col))


def _min_time(path: Path, column: str) -> pd.Timestamp:
    meta = _read_metadata(path)
    schema = meta.schema.to_arrow_schema()
    if column not in schema.names:
        raise DataError(f"{path.name}: timestamp column {column!r} is missing, so the file cannot be placed in "
                        f"time; the file has {schema.names} (data.timestamp_col)")
    if not pa.types.is_timestamp(schema.field(column).type):
        raise DataError(f"{path.name}: timestamp column {column!r} has type {schema.field(column).type}; "
                        f"it must be a Parquet timestamp (data.timestamp_col)")
    if meta.num_rows == 0:
        raise DataError(f"{path.name}: no rows, so no time to order it by; remove the empty file")
    found = _stats_min(meta, schema.get_field_index(column))
    if found is None:  # the writer stored no statistics: read the one column
        found = pc.min(pq.read_table(path, columns=[column]).column(0)).as_py()
    if found is None:
        raise DataError(f"{path.name}: timestamp column {column!r} holds only nulls; every row needs a time")
    return pd.Timestamp(found)


def _stats_min(meta: pq.FileMetaData, index: int) -> Optional[object]:
    """The smallest value over the row groups' statistics; None if any row group has none."""
    values = []
    for group in range(meta.num_row_groups):
        stats = meta.row_group(group).column(index).statistics
        if stats is None or not stats.has_min_max:
            return None
        values.append(stats.min)
    return min(values) if values else None


def utc_naive(values: Any) -> Any:
    """Timestamps (a Series or one Timestamp) in UTC without a zone, as partitions are ordered:
    files may carry a zone or not, and a zoned and a naive time cannot be compared."""
    if isinstance(values, pd.Series):
        return values.dt.tz_convert("UTC").dt.tz_localize(None) if values.dt.tz is not None else values
    return values.tz_convert("UTC").tz_localize(None) if values.tzinfo is not None else values


# --- checking -------------------------------------------------------------------------------------


_KINDS: dict[str, tuple[str, Callable[[pa.DataType], bool]]] = {
    "timestamp": ("a timestamp", pa.types.is_timestamp),
    "label": ("integer, bool or string", lambda t: pa.types.is_integer(t) or pa.types.is_boolean(t)
              or pa.types.is_string(t) or pa.types.is_large_string(t)),
    "feature": ("numeric (integer, float or bool)", lambda t: pa.types.is_integer(t)
                or pa.types.is_floating(t) or pa.types.is_boolean(t)),
}


def check_partitions(parts: Sequence[Partition], spec: DataConf | Columns) -> tuple[Columns, dict[Path, int]]:
    """Check every file's footer (readable, columns present, their kinds, the same types in every
    file) before any row is read. ``spec`` is the data config (columns resolved from the files) or
    already resolved columns. Returns the columns and each file's row count."""
    if not parts:
        raise DataError("no partition files to check; add data or widen the window")
    metas, unreadable = _footers(parts)
    cols = spec if isinstance(spec, Columns) else _resolve(metas, spec)
    roles = _roles(cols, metas)
    types = {**_reference_types(metas, roles), **cols.types}
    problems: list[tuple[Path, str]] = []
    for part in parts:
        if part.path in unreadable:
            problems.append((part.path, unreadable[part.path]))
        else:
            schema = metas[part.path].schema.to_arrow_schema()
            problems += [(part.path, p) for p in _file_problems(part.path, schema, roles, types)]
    _raise_all(problems, parts)
    return cols, {path: meta.num_rows for path, meta in metas.items()}


def _resolve(metas: dict[Path, pq.FileMetaData], conf: DataConf) -> Columns:
    """The columns of ``conf``, typed after the files; empty features = the union of the others."""
    base = Columns(conf.timestamp_col, conf.label_col, tuple(conf.features), {}, every_column=not conf.features)
    roles = _roles(base, metas)
    features = tuple(name for name, role in roles.items() if role == "feature")
    if metas and (not features or set(features) & {conf.label_col, conf.timestamp_col}):
        raise DataError(f"{next(iter(metas)).parent}: features {list(features)} must be non-empty and exclude "
                        f"the label {conf.label_col!r} and the timestamp {conf.timestamp_col!r} (data.features)")
    return Columns(base.timestamp, base.label, features, _reference_types(metas, roles), base.every_column)


def _roles(cols: Columns, metas: dict[Path, pq.FileMetaData]) -> dict[str, str]:
    """Column -> timestamp | feature | label, in read order; with ``every_column``, any other column
    of any of these files is a feature too, except metadata: a name starting with ``_`` (the label
    join's ``_request_id``, ``_version``, ``_output.class``, ... in cl_hpc/labels/write.py) is never
    taken for a feature unless data.features names it."""
    features = list(cols.features)
    if cols.every_column:
        for meta in metas.values():
            features += [n for n in meta.schema.to_arrow_schema().names
                         if n not in (cols.timestamp, cols.label) and n not in features and not n.startswith("_")]
    label = {cols.label: "label"} if cols.label is not None else {}
    return {cols.timestamp: "timestamp", **{f: "feature" for f in features}, **label}


def _footers(parts: Sequence[Partition]) -> tuple[dict[Path, pq.FileMetaData], dict[Path, str]]:
    """Each readable file's footer, and why each other file is unreadable."""
    metas, unreadable = {}, {}
    for part in parts:
        try:
            metas[part.path] = _read_metadata(part.path)
        except DataError as exc:
            unreadable[part.path] = str(exc)
    return metas, unreadable


def _read_metadata(path: Path) -> pq.FileMetaData:
    try:
        return pq.read_metadata(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path.name}: unreadable Parquet file ({exc}); replace or remove it") from exc


def _reference_types(metas: dict[Path, pq.FileMetaData], roles: dict[str, str]) -> dict[str, pa.DataType]:
    """Per column, the type of the first file where it has a valid kind: what the others must match."""
    types: dict[str, pa.DataType] = {}
    for meta in metas.values():
        schema = meta.schema.to_arrow_schema()
        for name, role in roles.items():
            if name not in types and name in schema.names and _KINDS[role][1](schema.field(name).type):
                types[name] = schema.field(name).type
    return types


def _file_problems(path: Path, schema: pa.Schema, roles: dict[str, str],
                   types: dict[str, pa.DataType]) -> list[str]:
    problems = []
    for name, role in roles.items():
        if name not in schema.names:
            problems.append(f"{path.name}: {role} column {name!r} is missing; the file has {schema.names}")
            continue
        found = schema.field(name).type
        valid, ok = _KINDS[role]
        if not ok(found):
            problems.append(f"{path.name}: {role} column {name!r} has type {found}; it must be {valid}")
        elif found != types[name]:
            problems.append(f"{path.name}: {role} column {name!r} has type {found}, but {types[name]} in the "
                            f"window's other files; every partition must use the same types")
    return problems


def _raise_all(problems: list[tuple[Path, str]], parts: Sequence[Partition]) -> None:
    """One error for every problem of the window, file by file."""
    if problems:
        root = parts[0].path.parent
        bad = len({path for path, _ in problems})
        lines = "\n".join(f"  - {message}" for _, message in problems)
        raise DataError(f"{bad} of {len(parts)} partition files in {root} are malformed; nothing was read:\n"
                        f"{lines}\nFix or remove these files, or change data.features / data.label_col / "
                        f"data.timestamp_col to match them.")
