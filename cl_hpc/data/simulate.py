"""Data that keeps arriving: append partitions of a bundled river drift stream to a landing zone.

The zone is the one :mod:`cl_hpc.data.landing` generates, so the pipeline and this simulator write
the same files for the same settings, and appending continues the same stream: partition ``i``
always holds rows ``i * rows_per_partition`` onwards. A zone keeps the settings it was first
generated with (its ``_manifest.json``); an option that contradicts them is an error, never a
silent second stream.

Concept drift: SEA and Agrawal change their labelling rule abruptly at the partitions in
``drift_at`` (river's ConceptDriftStream; ``drift_width`` rows blend the change in); the rotating
Hyperplane drifts gradually, moving ``n_drift_features`` weights by ``mag_change`` per row (and
reversing direction with probability ``sigma``).

Deliberate damage for tests and the gate's demo (``corrupt``): the damaged partition is still a
valid Parquet file with every column, so only a check of its values can catch it, except
``string-in-numeric``, which a schema check catches.
"""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Iterator, Mapping, Optional

import pandas as pd

from cl_hpc.config.ml import DataConf, data_conf
from cl_hpc.data.landing import (
    MANIFEST,
    Corruption,
    OnPartition,
    StreamCursor,
    append_partitions,
    check_settings,
    generation_spec,
    parse_time,
    read_manifest,
    resolve_dir,
    spec_changes,
)
from cl_hpc.errors import ConfigError

SIMULATED = ("sea", "hyperplane", "agrawal", "tokens")
# Settings of a new zone per generator: those of conf/data/<generator>.yaml (a test keeps them
# equal), so `simulate` and `python -m cl_hpc.launch data=<generator>` write the same files.
PRESETS: dict[str, dict[str, Any]] = {
    "sea": {"generator": "sea"},  # DataConf's defaults: SEA variants 0 -> 2 -> 3 at partitions 6, 12
    "agrawal": {"generator": "agrawal"},  # Agrawal functions 0 -> 2 -> 3 at partitions 6, 12
    "hyperplane": {"generator": "hyperplane", "noise": 0.05, "concepts": [0], "drift_at": [],
                   "generator_params": {"n_features": 10, "n_drift_features": 2, "mag_change": 0.001,
                                        "sigma": 0.1}},
    # Markov-chain token sequences for the GPT workload (cl_hpc/data/tokens.py): no label column
    "tokens": {"generator": "tokens", "noise": 0.05, "concepts": [0, 1, 2], "rows_per_partition": 256,
               "label_col": None, "generator_params": {"vocab_size": 256, "seq_len": 32, "branching": 4}},
}
# The command-line option that sets each generation setting, for error messages.
OPTIONS = {"generator": "--generator", "noise": "--noise", "concepts": "--concepts", "drift_at": "--drift-at",
           "drift_width": "--drift-width", "seed": "--seed", "rows_per_partition": "--rows",
           "start": "--start", "freq": "--freq", "generator_params": "--mag-change/--sigma/--param"}


def zone_conf(landing_dir: str, options: Mapping[str, Any]) -> DataConf:
    """The settings to append with: the zone's own if it has a manifest, else the preset of
    ``options["generator"]`` (default sea); ``options`` (None = not given) override either."""
    root = resolve_dir(landing_dir)
    manifest = read_manifest(root) if root.is_dir() else None
    given = {k: v for k, v in options.items() if v is not None}
    base = dict(manifest["spec"]) if manifest else {**PRESETS.get(given.get("generator", "sea"), {})}
    params = {**base.pop("generator_params", {}), **given.pop("generator_params", {})}
    try:
        conf = DataConf(**{**base, **given, "generator_params": params, "landing_dir": str(root)})
    except TypeError as exc:
        raise ConfigError(f"{root / MANIFEST} holds settings this version does not know ({exc}); "
                          f"simulate into a new --landing-dir") from exc
    if manifest:
        _check_unchanged(root, manifest["spec"], conf)
    _check(conf)
    return conf


def _check_unchanged(root: Path, spec: dict[str, Any], conf: DataConf) -> None:
    changed = spec_changes(spec, generation_spec(conf))
    if changed:
        diff = "; ".join(f"{OPTIONS.get(k, k)} gives {k}={new!r}, the zone has {old!r}"
                         for k, (old, new) in changed.items())
        raise ConfigError(f"landing zone {root} was generated with other settings ({diff}). A zone keeps the "
                          f"settings in its {MANIFEST} so that it stays one stream: leave those options out "
                          f"(the zone's settings apply), or simulate into a new --landing-dir")


def _check(conf: DataConf) -> None:
    if conf.generator not in SIMULATED:
        raise ConfigError(f"generator {conf.generator!r} cannot be simulated; valid: {list(SIMULATED)}")
    if conf.generator != "hyperplane" and {"mag_change", "sigma"} & set(conf.generator_params):
        raise ConfigError(f"--mag-change and --sigma set river's Hyperplane gradual drift; {conf.generator} "
                          f"drifts abruptly at --drift-at (use --generator hyperplane for gradual drift)")
    # A growing zone may hold drifts still in its future, so check against a horizon past them.
    horizon = max([2, *(d + 1 for d in conf.drift_at)])
    data_conf({**vars(conf), "n_partitions": horizon, "train_window": 1, "eval_window": 1})
    check_settings(conf)


def partitions_in(conf: DataConf) -> int:
    """How many partitions the zone's manifest lists (0 for a new zone)."""
    manifest = read_manifest(resolve_dir(conf.landing_dir))
    return len(manifest["partitions"]) if manifest else 0


# --- deliberate damage ----------------------------------------------------------------------------


def _features(frame: pd.DataFrame, conf: DataConf) -> list[str]:
    return [c for c in frame.columns if c not in (conf.timestamp_col, conf.label_col)]


def _nan_column(frame: pd.DataFrame, conf: DataConf) -> tuple[pd.DataFrame, str]:
    feats = _features(frame, conf)
    floats = [c for c in feats if pd.api.types.is_float_dtype(frame[c])]
    column = (floats or feats)[0]  # a float column keeps its type, so only a value check can see it
    return frame.assign(**{column: float("nan")}), f"nan-column: every value of {column!r} is NaN"


def _flipped_labels(frame: pd.DataFrame, conf: DataConf) -> tuple[pd.DataFrame, str]:
    if conf.label_col is None:
        raise ConfigError(f"--corrupt flipped-labels needs a label column; the {conf.generator} stream has none "
                          f"(try nan-column or string-in-numeric)")
    counts = frame[conf.label_col].value_counts()
    target = min(counts.index, key=lambda v: (counts[v], v))  # the rarest class: the largest shift
    note = f"flipped-labels: all {len(frame)} labels set to {target!r}, the partition's rarest class"
    return frame.assign(**{conf.label_col: target}), note


def _string_in_numeric(frame: pd.DataFrame, conf: DataConf) -> tuple[pd.DataFrame, str]:
    column = _features(frame, conf)[0]
    text = frame[column].astype(str).where(frame.index != frame.index[0], "n/a")
    return frame.assign(**{column: text}), f"string-in-numeric: {column!r} stored as text, first row 'n/a'"


CORRUPTIONS: dict[str, Callable[[pd.DataFrame, DataConf], tuple[pd.DataFrame, str]]] = {
    "nan-column": _nan_column,
    "flipped-labels": _flipped_labels,
    "string-in-numeric": _string_in_numeric,
}


def corruption(kind: str, conf: DataConf) -> Corruption:
    if kind not in CORRUPTIONS:
        raise ConfigError(f"unknown corruption {kind!r}; valid: {list(CORRUPTIONS)}")
    return lambda frame: CORRUPTIONS[kind](frame, conf)


# --- what was written -----------------------------------------------------------------------------


def concept_of(conf: DataConf, index: int) -> str:
    """The concept partition ``index`` follows, and the drift it shows."""
    k = sum(1 for d in conf.drift_at if d <= index)
    text = f"concept {conf.concepts[k]}"
    if index in conf.drift_at:
        text = f"concept {conf.concepts[k - 1]} -> {conf.concepts[k]} (abrupt drift)"
    mag = conf.generator_params.get("mag_change", 0.0) if conf.generator == "hyperplane" else 0.0
    return f"{text}, gradual drift (mag_change={mag})" if mag else text


def describe(conf: DataConf, entry: Mapping[str, Any], frame: pd.DataFrame) -> str:
    """One line per written partition: file, rows, time span, concept, damage."""
    start = pd.Timestamp(entry["start"])
    index = int((start - parse_time(conf.start, "start")) / pd.Timedelta(conf.freq))
    times = frame[conf.timestamp_col]
    line = (f"{entry['file']}  {entry['rows']} rows  {times.min():%Y-%m-%d %H:%M:%S} .. "
            f"{times.max():%Y-%m-%d %H:%M:%S}  {concept_of(conf, index)}")
    return f"{line}  CORRUPT {entry['corrupt']}" if entry.get("corrupt") else line


def settings_line(conf: DataConf) -> str:
    params = "".join(f", {k}={v}" for k, v in sorted(conf.generator_params.items()))
    drift = f", drift_at={conf.drift_at}" if conf.drift_at else ""
    return (f"{conf.generator} (seed={conf.seed}, noise={conf.noise}, {conf.rows_per_partition} rows per "
            f"{conf.freq}, concepts={conf.concepts}{drift}{params})")


# --- appending ------------------------------------------------------------------------------------


def append(conf: DataConf, count: int, corrupt: Optional[str] = None, on_partition: Optional[OnPartition] = None,
           cursor: Optional[StreamCursor] = None) -> list[dict[str, Any]]:
    """Append ``count`` partitions (damaged when ``corrupt`` names a kind); their manifest entries."""
    if count < 1:
        raise ConfigError(f"--partitions={count} must be >= 1")
    damage = corruption(corrupt, conf) if corrupt else None
    return append_partitions(conf, count, damage, on_partition, cursor)


class GracefulStop:
    """Ctrl-C (SIGINT) or SIGTERM ends a loop: at once while it sleeps, after the partition being
    written otherwise (a second signal does not wait); files are written atomically either way."""

    def __init__(self) -> None:
        self.requested = False
        self._busy = False

    def install(self) -> None:
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        again, self.requested = self.requested, True
        if not self._busy or again:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        self._busy = True
        try:
            yield
        finally:
            self._busy = False


def loop(conf: DataConf, every_s: float, count: int, on_partition: OnPartition, stop: GracefulStop) -> int:
    """Append ``count`` partitions every ``every_s`` seconds until stopped; the number appended."""
    if every_s <= 0:
        raise ConfigError(f"--every={every_s} must be > 0 seconds")
    cursor, total = StreamCursor(conf), 0  # one cursor: each tick generates only its own rows
    try:
        while not stop.requested:
            with stop.busy():
                total += len(append(conf, count, on_partition=on_partition, cursor=cursor))
            if not stop.requested:
                time.sleep(every_s)
    except KeyboardInterrupt:
        pass
    return total
