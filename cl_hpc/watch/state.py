"""What the retraining triggers need to know, gathered from the registry's champion and the landing zone.

- The champion: alias ``champion`` of the model (named after the pipeline). Its ``created`` time
  is the last training; ``metrics[<metric>]`` is its level at promotion; ``window_partitions``
  names the partitions it trained on, and their rows are its training set (``metrics["train_rows"]``
  wins when the registering task recorded it). Its window ends at the newest of those partitions'
  starts and ``metrics["window_end"]`` (the newest row it trained on).
- The new partitions: those of the landing zone that start after every partition the champion
  saw: its window, and the eval window it was gated on (``metrics["eval_partitions"]`` when the
  registering task recorded it, else ``eval_partitions`` in the ingest outputs of the champion's
  run dir, ``<run_root>/<run_id>``). Its metric at promotion was measured on that eval window, and
  those rows had landed before it was trained, so they are neither new nor newly labelled. In this
  project rows land with their labels, so the new partitions are both the new data (volume
  trigger) and the newly labelled data (performance trigger).
- The champion on those partitions: the registry rebuilds its recorded model and data module
  (``load_model``: sha256 checked before anything is unpickled), and :func:`cl_hpc.learn.monitor.score_rows`
  scores it on their raw rows through the one scoring path (its own preprocessing, never a copy):
  the trigger's metric (``trigger.performance.metric``; null = the model's primary metric), judged
  against its level at promotion (``metrics[<metric>]``) in the metric's own direction, and the 0/1
  error stream, oldest first, that a river detector replays (from per-row ``correct``, where the
  model reports it). A label the champion never saw counts as an error; rows it cannot score at
  all give a note, not a crash.
- Drift from the champion's window to the new partitions (:func:`cl_hpc.learn.drift.window_drift`)
  on its input columns: its signature's inputs when they are plain columns (the features a
  first-format version recorded); without a label column (a token stream) only the inputs.

No champion: an empty state, in which the time trigger fires ("never trained"): a bootstrap run.
Every step is a function of explicit inputs, so each is testable without the command line;
:func:`gather` only wires them together.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cl_hpc.atomic import read_json
from cl_hpc.config.ml import DataConf
from cl_hpc.data.landing import resolve_dir
from cl_hpc.data.partitions import utc_naive
from cl_hpc.data.windows import Partition, list_partitions
from cl_hpc.errors import ConfigError, DataError
from cl_hpc.learn.contract import Direction, Signature
from cl_hpc.learn.drift import DatasetDrift, DriftConf, window_drift
from cl_hpc.learn.monitor import RowScores, input_columns, resolve_metric, score_rows
from cl_hpc.learn.triggers import TriggerConf, TriggerState
from cl_hpc.registry import ModelRegistry, ModelVersion
from cl_hpc.store.db import DB_NAME

FIRST_FORMAT_CLASS = "cl_hpc.learn.tabular.TabularClassifier"  # what a version without model_class is


@dataclass(frozen=True)
class Champion:
    """The serving model, as the triggers see it."""

    label: str  # "<model> X.Y"
    trained_at: datetime  # when it was registered (UTC): the last training
    metric: Optional[float]  # the trigger metric at promotion; None when it was not recorded
    window: tuple[Partition, ...]  # the partitions of its window still present in the landing zone
    window_end: Optional[pd.Timestamp]  # the newest time it trained on (UTC, no zone); None = not recorded
    seen_end: Optional[pd.Timestamp]  # the newest time it trained or was gated on: later partitions are new
    train_rows: Optional[int]  # rows it learnt from; None = unknown


@dataclass(frozen=True)
class Source:
    """Where the champion is: the registry's store, the model and alias, and the run dirs."""

    store_root: Path
    model: str
    alias: str = "champion"
    run_root: Optional[Path] = None  # where its run dir may still be (for its eval window)
    store_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Gathered:
    state: TriggerState
    champion: Optional[Champion]
    new: tuple[Partition, ...]
    notes: tuple[str, ...] = ()  # what could not be known, and why (printed with the triggers)
    drift: Optional[DatasetDrift] = field(default=None, compare=False)

    def summary(self, model: str) -> str:
        if self.champion is None:
            return f"model {model!r}: no champion yet"
        c = self.champion
        return (f"champion {c.label}, trained {c.trained_at:%Y-%m-%d %H:%M:%S} UTC on {c.train_rows} rows; "
                f"{self.state.new_rows} new rows in {len(self.new)} partition(s) after its window")


# --- the champion ---------------------------------------------------------------------------------


def find_champion(source: Source) -> Optional[ModelVersion]:
    """The version the alias points at; None when the store, the model or the alias does not exist yet.
    A missing store is not created: a watch that only looks must leave nothing behind."""
    if not (source.store_root / DB_NAME).is_file():
        return None
    with ModelRegistry.open(source.store_root, **dict(source.store_options)) as registry:
        if source.model not in registry.names() or source.alias not in registry.aliases(source.model):
            return None
        return registry.get(source.model, source.alias)


def gated_on(record: ModelVersion, run_root: Optional[Path]) -> list[str]:
    """The partitions of the eval window the champion was gated on (names; [] when unknown)."""
    recorded = record.metrics.get("eval_partitions")
    if isinstance(recorded, list):
        return [str(p) for p in recorded]
    if run_root is None or not record.run_id:
        return []
    try:
        outputs = read_json(run_root / record.run_id / "tasks" / "ingest" / "outputs.json")
    except (OSError, ValueError):
        return []
    return [str(p) for p in (outputs or {}).get("eval_partitions") or []]


def champion_from(record: ModelVersion, parts: Sequence[Partition], metric: Optional[str],
                  gated: Sequence[str] = ()) -> Champion:
    """``metric``: the trigger's (None: performance off, no level at promotion)."""
    window = _named(parts, record.window_partitions)
    ends = [p.start for p in window] + [_recorded_time(record.metrics.get("window_end"))]
    window_end = max((e for e in ends if e is not None), default=None)
    seen = [p.start for p in _named(parts, gated)]
    return Champion(label=record.label, trained_at=datetime.fromtimestamp(record.created, tz=timezone.utc),
                    metric=_number(record.metrics.get(metric)) if metric else None, window=window,
                    window_end=window_end,
                    seen_end=max(seen + [window_end]) if window_end is not None else None,
                    train_rows=_train_rows(record, window))


def _named(parts: Sequence[Partition], names: Sequence[str]) -> tuple[Partition, ...]:
    wanted = {Path(n).name for n in names}  # ingest records file names; full paths work too
    return tuple(p for p in parts if p.path.name in wanted)


def _recorded_time(value: Any) -> Optional[pd.Timestamp]:
    """A recorded time as the landing zone orders partitions: UTC without a zone (None if absent)."""
    if not value:
        return None
    return utc_naive(pd.Timestamp(value))


def _train_rows(record: ModelVersion, window: Sequence[Partition]) -> Optional[int]:
    recorded = _number(record.metrics.get("train_rows"))
    if recorded is not None:
        return int(recorded)
    if not window or len(window) < len(record.window_partitions):
        return None  # some of its files are gone: a partial count would overstate the new share
    return count_rows(window)


def _number(value: Any) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def new_partitions(parts: Sequence[Partition], seen_end: Optional[pd.Timestamp]) -> list[Partition]:
    """The partitions that start after what the champion saw (none when that is unknown)."""
    return [] if seen_end is None else [p for p in parts if p.start > seen_end]


def count_rows(parts: Sequence[Partition]) -> int:
    """Rows of the files, from their Parquet footers (no rows are read)."""
    return sum(pq.ParquetFile(p.path).metadata.num_rows for p in parts)


# --- the champion on the new rows ------------------------------------------------------------------


def recorded_class(record: ModelVersion) -> type:
    """The version's model class (imported, not built): its ``metrics`` say which way each improves."""
    from cl_hpc.learn.workload import import_class

    return import_class(record.model_class or FIRST_FORMAT_CLASS, f"model {record.label}: recorded model")


def trigger_metric(record: ModelVersion, conf: TriggerConf) -> tuple[str, Direction]:
    """The performance trigger's metric for this version and which way it improves: the configured one,
    or the model's primary metric (null); a metric the model does not report is a ContractError."""
    return resolve_metric(conf.performance.metric, recorded_class(record),
                          f"trigger.performance.metric (model {record.label})")


def read_new(parts: Sequence[Partition], required: Sequence[str], label: Optional[str],
             timestamp: Optional[str]) -> pd.DataFrame:
    """Every column of the new partitions' rows, oldest first (stable within equal times), without
    the rows that lack a label (when the data has a label column) or one of ``required``: those
    cannot be scored. Whole rows: a data module may need more than its inputs (a language model's
    next tokens)."""
    frames = []
    for part in parts:
        try:
            frame = pq.read_table(part.path).to_pandas()
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{part.path}: cannot read the rows the champion is scored on ({exc}); "
                            f"fix or move the file") from exc
        if timestamp and timestamp in frame.columns:
            frame[timestamp] = utc_naive(frame[timestamp])
        frames.append(frame)
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if timestamp and timestamp in rows.columns:
        rows = rows.sort_values(timestamp, kind="mergesort", ignore_index=True)
    needed = [c for c in [*required, *([label] if label else [])] if c in rows.columns]
    return rows.dropna(subset=needed).reset_index(drop=True)


def drift_between(data: DataConf, features: Sequence[str], label: Optional[str], reference: Sequence[Partition],
                  current: Sequence[Partition], conf: DriftConf) -> DatasetDrift:
    """Drift of the champion's input columns from its window to the new partitions (a label-less
    stream has no label column to check)."""
    return window_drift(dataclasses.replace(data, features=list(features), label_col=label),
                        list(reference), list(current), conf)


# --- wiring -------------------------------------------------------------------------------------


def gather(source: Source, data: DataConf, conf: TriggerConf, drift_conf: DriftConf, now: datetime) -> Gathered:
    record = find_champion(source)
    if record is None:
        return Gathered(TriggerState(now=now), None, (), (f"no {source.alias!r} of model {source.model!r} in "
                                                          f"{source.store_root / DB_NAME}: a first model is due",))
    parts = list_partitions(resolve_dir(data.landing_dir), data.timestamp_col)
    metric, direction = trigger_metric(record, conf) if conf.performance.enabled else (None, None)
    champion = champion_from(record, parts, metric, gated_on(record, source.run_root))
    new = new_partitions(parts, champion.seen_end)
    notes = _window_notes(record, champion, data)
    scores, drift = RowScores(None, 0), None
    if new and (conf.performance.enabled or conf.drift.enabled):
        scores, drift, more = _judge_new(source, record, champion, new, data, conf, drift_conf, metric)
        notes += more
    # Without its window the new rows are unknown: no row count, so the volume trigger says so.
    train_rows = champion.train_rows if champion.window_end is not None else None
    state = TriggerState(now=now, last_trained_at=champion.trained_at, train_rows=train_rows,
                         new_rows=count_rows(new), metric_at_promotion=champion.metric, metric_now=scores.metric,
                         labelled_rows=scores.labelled, errors=scores.errors,
                         drift=drift.to_dict() if drift is not None else None, metric=metric, direction=direction)
    return Gathered(state, champion, tuple(new), tuple(notes), drift)


def _judge_new(source: Source, record: ModelVersion, champion: Champion, new: list[Partition], data: DataConf,
               conf: TriggerConf, drift_conf: DriftConf,
               metric: Optional[str]) -> tuple[RowScores, Optional[DatasetDrift], list[str]]:
    served = conf.performance.source == "served"
    with ModelRegistry.open(source.store_root, **dict(source.store_options)) as registry:
        # sha256 verified before anything is unpickled; the recorded classes rebuilt with their states
        rescore = conf.performance.enabled and not served
        workload = registry.load_model(record.name, record.version) if rescore else None
        columns = _input_columns(registry, record, workload)
    label = getattr(workload.datamodule, "label_col", None) if workload is not None else None
    label = label or data.label_col
    scores, notes = RowScores(None, 0), []
    if served and conf.performance.enabled and metric is not None:
        scores = served_scores(new, record, label, conf.performance.served_output, metric, data.timestamp_col)
        notes += [f"{champion.label}: {scores.note}"] if scores.note else []
    if workload is not None and metric is not None:
        scores = score_rows(workload, read_new(new, columns or (), label, data.timestamp_col), metric)
        notes += [f"{champion.label}: {scores.note}"] if scores.note else []
    if not conf.drift.enabled:
        return scores, None, notes
    if columns is None:
        return scores, None, [*notes, f"{champion.label} takes tensor inputs ({_signature_text(record)}), "
                                      f"not plain columns; drift not measured"]
    if not champion.window:
        return scores, None, [*notes, f"{champion.label}: none of its window's partitions is in the landing zone "
                                      f"any more; drift not measured"]
    return scores, drift_between(data, columns, data.label_col, champion.window, new, drift_conf), notes


def served_scores(new: Sequence[Partition], record: ModelVersion, label: Optional[str], output: str, metric: str,
                  timestamp: str) -> RowScores:
    """The champion's accuracy on the traffic it served (trigger.performance.source=served): its logged
    answers against the labels the join added, in the label zone's new partitions; nothing is rescored."""
    from cl_hpc.labels.accuracy import served_hits

    if not metric.endswith("accuracy"):
        raise ConfigError(f"trigger.performance.source=served compares the answers served with their labels, an "
                          f"accuracy; the trigger's metric is {metric!r}: set trigger.performance.metric to the "
                          f"model's accuracy metric, or source=rescore")
    if label is None:
        raise ConfigError("trigger.performance.source=served needs the label zone's label column: set data.label_col")
    hits = served_hits([p.path for p in new], label, output, str(record.version), timestamp)
    if not hits.size:
        return RowScores(None, 0, note=f"no labelled row in the new partitions was served by {record.version} with "
                                       f"an answer _output.{output} (data.landing_dir is python -m cl_hpc.labels "
                                       f"join's out_dir?)")
    return RowScores(float(hits.mean()), int(hits.size), (1 - hits).astype(np.int64))


def _input_columns(registry: ModelRegistry, record: ModelVersion, workload: Optional[Any]) -> Optional[list[str]]:
    """The champion's raw input columns: its recorded signature's, else (a version from before
    signatures were recorded) its checkpoint's, else the features its data module recorded."""
    if record.signature:
        return input_columns(record.signature)
    if workload is not None:
        return input_columns(workload.signature.to_dict())
    payload = registry.load_payload(record.name, record.version)
    state = payload.get("datamodule_state") or {}
    return input_columns(payload.get("signature"), [str(f) for f in state.get("features") or ()])


def _signature_text(record: ModelVersion) -> str:
    return Signature.from_dict(record.signature).describe() if record.signature else "no recorded signature"


def _window_notes(record: ModelVersion, champion: Champion, data: DataConf) -> list[str]:
    if champion.window_end is None:
        return [f"{record.label} records no landing-zone partitions (window_partitions="
                f"{record.window_partitions[:3]}); new data, its metric and drift are unknown"]
    missing = len(record.window_partitions) - len(champion.window)
    if missing:
        return [f"{missing} of the {len(record.window_partitions)} partitions of {record.label}'s window are not "
                f"in {resolve_dir(data.landing_dir)}; its training-set size is unknown unless recorded"]
    return []
