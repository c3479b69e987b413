"""The landing zone: time-partitioned Parquet files, one per time slice, that new data lands in.

Layout: ``<landing_dir>/part-<YYYYmmddTHHMMSS>.parquet`` (the partition's start time in the name,
a real timestamp column inside), plus ``_manifest.json`` and ``.lock``. Readers ignore names that
start with ``_`` or ``.``.

With a river generator configured, the first user fills an empty zone. Generation is idempotent
and safe when several task processes (Slurm jobs, local subprocesses) start at once: one holds an
``fcntl`` lock while the others wait, every file is written under a temporary name and renamed into
place, and the manifest is written last, so a zone without one is never taken as complete. The
same settings with a larger ``n_partitions`` append the new partitions (data "arrives"), and so does
:func:`append_partitions` (``python -m cl_hpc.data simulate``); ``n_partitions`` is the least a
zone holds, so one that has grown past it is read as it is, newest windows first. Partition ``i`` always holds rows
``i * rows_per_partition`` onwards of one seeded river stream, so appending k then m partitions
writes the same files as generating k + m at once.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import hashlib
import io
import itertools
import json
import math
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pandas as pd

from cl_hpc.atomic import write_bytes_atomic
from cl_hpc.config.ml import DataConf
from cl_hpc.errors import ConfigError, DataError

MANIFEST = "_manifest.json"
LOCK = ".lock"
NAME_PREFIX, NAME_SUFFIX, NAME_TIME = "part-", ".parquet", "%Y%m%dT%H%M%S"
# river class, the keyword that selects its concept (None: a concept is a new random seed), and
# the keyword that takes data.noise.
_GENERATORS = {"sea": ("SEA", "variant", "noise"),
               "agrawal": ("Agrawal", "classification_function", "perturbation"),
               "hyperplane": ("Hyperplane", None, "noise_percentage")}
# ConceptDriftStream computes exp(4 * (position - i) / width); math.exp overflows above ~709.
_MAX_EXP = 700.0
# Settings that do not change the generated files, so changing them keeps the zone.
_NOT_SPEC = {"landing_dir", "features", "train_window", "eval_window", "as_of", "n_partitions"}
# A deliberate damage for tests and demos: clean partition -> (damaged partition, what was done).
Corruption = Callable[[pd.DataFrame], tuple[pd.DataFrame, str]]
# Called after each new partition is written, with its manifest entry and its rows.
OnPartition = Callable[[dict[str, Any], pd.DataFrame], None]


def partition_name(start: pd.Timestamp) -> str:
    return f"{NAME_PREFIX}{start.strftime(NAME_TIME)}{NAME_SUFFIX}"


def parse_partition_name(name: str) -> pd.Timestamp | None:
    """The start time encoded in a partition file name; None if the name does not follow the layout."""
    if not (name.startswith(NAME_PREFIX) and name.endswith(NAME_SUFFIX)):
        return None
    stamp = name[len(NAME_PREFIX):-len(NAME_SUFFIX)]
    try:
        return pd.Timestamp(pd.to_datetime(stamp, format=NAME_TIME))
    except ValueError:
        return None


def parse_time(value: str, key: str) -> pd.Timestamp:
    try:
        return pd.Timestamp(value)
    except ValueError as exc:
        raise ConfigError(f"{key}={value!r} is not a timestamp; use ISO 8601, e.g. 2026-01-01T00:00:00") from exc


def resolve_dir(landing_dir: str) -> Path:
    """Relative paths are taken from the process's cwd (the launcher makes them absolute first)."""
    return Path(landing_dir).expanduser().resolve()


def ensure_landing_zone(conf: DataConf) -> dict[str, Any]:
    """Make sure the landing zone exists; generate it (once, under a lock) when it does not."""
    root = resolve_dir(conf.landing_dir)
    if conf.generator == "none":
        if not root.is_dir():
            raise DataError(f"landing zone {root} does not exist; data.generator=none expects your own "
                            f"{NAME_PREFIX}<YYYYmmddTHHMMSS>{NAME_SUFFIX} files there (or set data.generator=sea)")
        return {"landing_dir": str(root), "generated": False, "partitions": None}
    spec = generation_spec(conf)
    if _is_complete(root, spec, conf.n_partitions):
        return _summary(root, False)
    check_settings(conf)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / LOCK):
        # Another process may have finished the zone while this one waited for the lock.
        if _is_complete(root, spec, conf.n_partitions):
            return _summary(root, False)
        _generate(root, conf, spec)
    return _summary(root, True)


def check_settings(conf: DataConf) -> None:
    """Bad generation settings fail here, before any folder or file is made."""
    _stream(conf)
    _freq(conf)
    parse_time(conf.start, "data.start")


def append_partitions(conf: DataConf, count: int, corrupt: Optional[Corruption] = None,
                      on_partition: Optional[OnPartition] = None,
                      cursor: Optional[StreamCursor] = None) -> list[dict[str, Any]]:
    """Append ``count`` partitions after the newest one of a generated zone (made if absent).

    ``conf.n_partitions`` is ignored: the manifest says how many there are. Returns the new
    partitions' manifest entries. ``corrupt`` damages each new partition (recorded in the manifest).
    """
    root = resolve_dir(conf.landing_dir)
    check_settings(conf)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / LOCK):
        manifest = read_manifest(root)
        if manifest is None:
            _refuse_foreign_files(root)
        else:
            check_spec(root, manifest, generation_spec(conf))
        have = len(manifest["partitions"]) if manifest else 0
        grown = dataclasses.replace(conf, n_partitions=have + count)
        return _generate(root, grown, generation_spec(conf), corrupt, on_partition, cursor)


def _refuse_foreign_files(root: Path) -> None:
    """Without a manifest, Parquet files here may be someone's own data: never overwrite them."""
    found = sorted(p.name for p in root.glob(f"*{NAME_SUFFIX}") if not p.name.startswith(("_", ".")))
    if found:
        shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        raise DataError(f"{root} holds {len(found)} Parquet files ({shown}) but no {MANIFEST}, so it is not a "
                        f"generated landing zone (or its first generation was interrupted); choose an empty or "
                        f"new folder, or delete those files")


def generation_spec(conf: DataConf) -> dict[str, Any]:
    """The settings that determine the generated files' contents."""
    items = vars(conf).items()
    return {k: v for k, v in items if k not in _NOT_SPEC}


def read_manifest(root: Path) -> dict[str, Any] | None:
    path = root / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DataError(f"landing zone manifest {path} is unreadable ({exc}); delete it to regenerate") from exc


def _is_complete(root: Path, spec: dict[str, Any], n_partitions: int) -> bool:
    """True when the manifest covers at least ``n_partitions`` of the same spec; a different spec is
    an error. A zone holding more has grown (``python -m cl_hpc.data simulate`` appended to it, or a
    run with a larger n_partitions did): it is complete, and the windows are the newest partitions
    (or those before data.as_of); nothing is generated or removed."""
    manifest = read_manifest(root)
    if manifest is None:
        return False
    check_spec(root, manifest, spec)
    return len(manifest["partitions"]) >= n_partitions


def spec_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Setting -> (old, new) for every generation setting that differs."""
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def check_spec(root: Path, manifest: dict[str, Any], spec: dict[str, Any]) -> None:
    """A zone keeps the settings it was generated with: other settings would splice two streams."""
    changed = spec_changes(manifest["spec"], spec)
    if changed:
        diff = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise ConfigError(f"landing zone {root} was generated with other settings ({diff}); point "
                          f"data.landing_dir at a new folder, or delete {root} to regenerate it")


def _summary(root: Path, generated: bool) -> dict[str, Any]:
    manifest = read_manifest(root) or {"partitions": []}
    return {"landing_dir": str(root), "generated": generated, "partitions": len(manifest["partitions"])}


# POSIX locks belong to a process, so threads of one process (the inprocess executor) also need this.
_THREAD_LOCK = threading.Lock()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive POSIX (fcntl) lock: it works over NFS and dies with its process, so a killed
    job never leaves it held."""
    with _THREAD_LOCK, open(path, "a+") as handle:
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX)
        except OSError as exc:
            raise DataError(f"cannot lock {path} ({exc}): its filesystem does not support file locks "
                            f"(Lustre needs the 'flock' mount option); move data.landing_dir") from exc
        try:
            yield
        finally:
            fcntl.lockf(handle, fcntl.LOCK_UN)


def _generate(root: Path, conf: DataConf, spec: dict[str, Any], corrupt: Optional[Corruption] = None,
              on_partition: Optional[OnPartition] = None,
              cursor: Optional[StreamCursor] = None) -> list[dict[str, Any]]:
    manifest = read_manifest(root)
    # Partitions an earlier, complete manifest already lists are kept; everything else is rewritten.
    keep = {p["file"]: p for p in manifest["partitions"]} if manifest else {}
    cursor = cursor or StreamCursor(conf)
    entries, new = [], []
    for i in range(conf.n_partitions):
        start = parse_time(conf.start, "data.start") + i * _freq(conf)
        name = partition_name(start)
        if name not in keep:
            part, damage = generate_frame(conf, first=i, count=1, cursor=cursor), None
            if corrupt is not None:
                part, damage = corrupt(part)
            keep[name] = _write_partition(root / name, part, start, damage)
            new.append(keep[name])
            if on_partition is not None:
                on_partition(keep[name], part)
        entries.append(keep[name])
    payload = {"format": 1, "spec": spec, "partitions": entries}
    write_bytes_atomic(root / MANIFEST, json.dumps(payload, indent=1).encode())
    return new


def _write_partition(path: Path, part: pd.DataFrame, start: pd.Timestamp, corrupt: Optional[str]) -> dict[str, Any]:
    buffer = io.BytesIO()
    part.to_parquet(buffer, index=False)
    data = buffer.getvalue()
    write_bytes_atomic(path, data)
    entry = {"file": path.name, "start": start.isoformat(), "rows": len(part), "bytes": len(data),
             "sha256": hashlib.sha256(data).hexdigest()}
    return {**entry, "corrupt": corrupt} if corrupt else entry


def _freq(conf: DataConf) -> pd.Timedelta:
    try:
        step = pd.Timedelta(conf.freq)
    except ValueError as exc:
        raise ConfigError(f"data.freq={conf.freq!r} is not a fixed duration; use e.g. '1h', '15min', '1D'") from exc
    if step <= pd.Timedelta(0):
        raise ConfigError(f"data.freq={conf.freq!r} must be positive")
    return step


class StreamCursor:
    """A river stream read forward. Reading partition i needs every row before it (the generators
    are sequential), so a long-running appender keeps one cursor and pays only for its new rows."""

    def __init__(self, conf: DataConf) -> None:
        self._stream = _stream(conf)
        self._rows = iter(self._stream)
        self.position = 0  # index of the next row the iterator yields

    def take(self, first: int, count: int) -> list[tuple[dict[Any, Any], Any]]:
        """Rows ``first .. first + count - 1`` of the stream."""
        if first < self.position:
            self._rows, self.position = iter(self._stream), 0  # river restarts from its seed on iter()
        collections.deque(itertools.islice(self._rows, first - self.position), maxlen=0)
        rows = list(itertools.islice(self._rows, count))
        self.position = first + len(rows)
        return rows


def generate_frame(conf: DataConf, first: int = 0, count: Optional[int] = None,
                   cursor: Optional[StreamCursor] = None) -> pd.DataFrame:
    """Partitions ``first .. first + count - 1`` (default: up to ``n_partitions``) of the configured
    drifting stream, with timestamps: the same rows whichever slice is asked for."""
    if conf.generator == "tokens":  # not a river stream: each partition is drawn from its own seed
        from cl_hpc.data.tokens import token_frame

        return token_frame(conf, first, count)
    if conf.generator == "users":  # nor this one: each partition is drawn from its own seed
        from cl_hpc.data.users import users_frame

        return users_frame(conf, first, count)
    per = conf.rows_per_partition
    count = conf.n_partitions - first if count is None else count
    rows = (cursor or StreamCursor(conf)).take(first * per, count * per)
    if not rows:
        raise ConfigError(f"no rows to generate for partitions {first}..{first + count - 1}; count must be >= 1")
    columns = [k if isinstance(k, str) else f"x{k}" for k in rows[0][0]]
    frame = pd.DataFrame([list(x.values()) for x, _ in rows], columns=columns)
    if conf.label_col in frame.columns or conf.timestamp_col in frame.columns:
        raise ConfigError(f"data.label_col / data.timestamp_col clash with a generated feature {columns}")
    frame[conf.label_col] = [int(y) for _, y in rows]  # SEA yields bools: store a plain integer class
    step = _freq(conf) / per
    begin = parse_time(conf.start, "data.start") + first * per * step
    frame.insert(0, conf.timestamp_col, pd.date_range(begin, periods=len(rows), freq=step))
    return frame


def _stream(conf: DataConf) -> Any:
    """Concepts chained by river's ConceptDriftStream: concept k+1 takes over at drift_at[k]."""
    if conf.generator == "tokens":
        from cl_hpc.data.tokens import token_params

        token_params(conf)  # checks the settings; generate_frame draws token partitions without a stream
        return ()
    if conf.generator == "users":
        from cl_hpc.data.users import users_params

        users_params(conf)  # checks the settings; generate_frame draws user partitions without a stream
        return ()
    from river.datasets.synth import ConceptDriftStream  # river is only needed to generate

    stream = _concept(conf, 0)
    for k, part in enumerate(conf.drift_at, start=1):
        position = part * conf.rows_per_partition
        stream = ConceptDriftStream(stream, _concept(conf, k), position=position,
                                    width=_drift_width(conf, position), seed=conf.seed + k)
    return stream


def _concept(conf: DataConf, k: int) -> Any:
    from river.datasets import synth

    class_name, concept_key, noise_key = _GENERATORS[conf.generator]
    cls = getattr(synth, class_name)
    concept = conf.concepts[k]
    kwargs = {noise_key: conf.noise, **conf.generator_params}
    if concept_key is not None:
        kwargs[concept_key] = concept
    seed = conf.seed + 1000 * k + (concept if concept_key is None else 0)  # distinct rows per segment
    try:
        return cls(seed=seed, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"river {class_name}({kwargs}) rejected data.generator_params / data.concepts: {exc}; "
                          f"see https://riverml.xyz/latest/api/datasets/synth/{class_name}/") from exc


def _drift_width(conf: DataConf, position: int) -> int:
    narrowest = max(1, math.ceil(4 * position / _MAX_EXP))
    if conf.drift_width is None:
        return narrowest
    if conf.drift_width < narrowest:
        raise ConfigError(f"data.drift_width={conf.drift_width} is too narrow for a drift at row {position}: "
                          f"river's ConceptDriftStream needs >= {narrowest} there; raise it or set it to null")
    return conf.drift_width
