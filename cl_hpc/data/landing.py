"""The landing zone: time-partitioned Parquet files, one per time slice, that new data lands in.

Layout: ``<landing_dir>/part-<YYYYmmddTHHMMSS>.parquet`` (the partition's start time in the name,
a real timestamp column inside), plus ``_manifest.json`` and ``.lock``. Readers ignore names that
start with ``_`` or ``.``.

With a river generator configured, the first user fills an empty zone. Generation is idempotent
and safe when several task processes (Slurm jobs, local subprocesses) start at once: one holds an
``fcntl`` lock while the others wait, every file is written under a temporary name and renamed into
place, and the manifest is written last, so a zone without one is never taken as complete. The
same settings with a larger ``n_partitions`` append the new partitions (data "arrives").
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import math
import threading
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from cl_hpc.config.ml import DataConf
from cl_hpc.atomic import write_bytes_atomic
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
    _check_settings(conf)
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / LOCK):
        # Another process may have finished the zone while this one waited for the lock.
        if _is_complete(root, spec, conf.n_partitions):
            return _summary(root, False)
        _generate(root, conf, spec)
    return _summary(root, True)


def _check_settings(conf: DataConf) -> None:
    """Bad generation settings fail here, before any folder or file is made."""
    _stream(conf)
    _freq(conf)
    parse_time(conf.start, "data.start")


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
    """True when the manifest covers ``n_partitions`` of the same spec; a different spec is an error."""
    manifest = read_manifest(root)
    if manifest is None:
        return False
    changed = sorted(k for k in set(spec) | set(manifest["spec"]) if spec.get(k) != manifest["spec"].get(k))
    if changed:
        diff = ", ".join(f"{k}: {manifest['spec'].get(k)!r} -> {spec.get(k)!r}" for k in changed)
        raise ConfigError(f"landing zone {root} was generated with other settings ({diff}); point "
                          f"data.landing_dir at a new folder, or delete {root} to regenerate it")
    have = len(manifest["partitions"])
    if have > n_partitions:
        raise ConfigError(f"landing zone {root} holds {have} partitions but data.n_partitions={n_partitions}; "
                          f"a zone only grows: raise n_partitions, or use data.as_of to look at an earlier time")
    return have == n_partitions


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


def _generate(root: Path, conf: DataConf, spec: dict[str, Any]) -> None:
    manifest = read_manifest(root)
    # Partitions an earlier, complete manifest already lists are kept; everything else is rewritten.
    keep = {p["file"]: p for p in manifest["partitions"]} if manifest else {}
    frame = generate_frame(conf)
    rows, entries = conf.rows_per_partition, []
    for i in range(conf.n_partitions):
        start = parse_time(conf.start, "data.start") + i * _freq(conf)
        name = partition_name(start)
        if name not in keep:
            keep[name] = _write_partition(root / name, frame.iloc[i * rows:(i + 1) * rows], start)
        entries.append(keep[name])
    payload = {"format": 1, "spec": spec, "partitions": entries}
    write_bytes_atomic(root / MANIFEST, json.dumps(payload, indent=1).encode())


def _write_partition(path: Path, part: pd.DataFrame, start: pd.Timestamp) -> dict[str, Any]:
    buffer = io.BytesIO()
    part.to_parquet(buffer, index=False)
    data = buffer.getvalue()
    write_bytes_atomic(path, data)
    return {"file": path.name, "start": start.isoformat(), "rows": len(part), "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()}


def _freq(conf: DataConf) -> pd.Timedelta:
    try:
        step = pd.Timedelta(conf.freq)
    except ValueError as exc:
        raise ConfigError(f"data.freq={conf.freq!r} is not a fixed duration; use e.g. '1h', '15min', '1D'") from exc
    if step <= pd.Timedelta(0):
        raise ConfigError(f"data.freq={conf.freq!r} must be positive")
    return step


def generate_frame(conf: DataConf) -> pd.DataFrame:
    """All ``n_partitions * rows_per_partition`` rows of the configured drifting stream, with timestamps."""
    total = conf.n_partitions * conf.rows_per_partition
    rows = list(_stream(conf).take(total))
    columns = [k if isinstance(k, str) else f"x{k}" for k in rows[0][0]]
    frame = pd.DataFrame([list(x.values()) for x, _ in rows], columns=columns)
    if conf.label_col in frame.columns or conf.timestamp_col in frame.columns:
        raise ConfigError(f"data.label_col / data.timestamp_col clash with a generated feature {columns}")
    frame[conf.label_col] = [int(y) for _, y in rows]  # SEA yields bools: store a plain integer class
    step = _freq(conf) / conf.rows_per_partition
    frame.insert(0, conf.timestamp_col, pd.date_range(parse_time(conf.start, "data.start"), periods=total, freq=step))
    return frame


def _stream(conf: DataConf) -> Any:
    """Concepts chained by river's ConceptDriftStream: concept k+1 takes over at drift_at[k]."""
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
