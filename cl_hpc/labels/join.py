"""The label join: logged predictions + the outcomes that arrived within a waiting window ->
labelled partitions appended to a landing zone, exactly once.

One run, under the zone's lock:

1. the clock gives the *watermark* W = the end of the newest partition [H, H + freq) with
   H + freq + window <= now: no outcome still to come can label a prediction before W;
2. the ledger (ledger.py) says which log rows are still open; only those are read (read.py);
3. outcomes are matched with predictions (match.py), and predictions before W go to partitions:
   a partition with no file yet is written (labelled rows, and unlabelled ones with
   missing=default); one whose file exists is never rewritten;
4. every outcome whose predictions all lie before W is decided once (report.OutcomeStatus);
   those that label nothing go to ``_outcomes/<run>.parquet`` with their status, and predictions
   that came after their partition was written to ``_late/<run>.parquet``: counted, never lost;
5. the run's ledger entry is written last; a crash before it leaves partitions the next run
   adopts as they are.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cl_hpc.config.labels import LabelsConf, Missing, Value, labels_conf
from cl_hpc.data.landing import LOCK, _locked
from cl_hpc.data.predictions import OUTCOME_SCHEMA, Stream, decode_label
from cl_hpc.errors import DataError
from cl_hpc.labels import write
from cl_hpc.labels.ledger import LEDGER_DIR, Ledger, carry_skip, read_ledger, write_ledger
from cl_hpc.labels.match import NONE, Keys, Match, candidates, encode, match
from cl_hpc.labels.read import SHARD, SHARD_ROW, Rows, micros, read_done, read_open
from cl_hpc.labels.report import Delays, JoinReport, OutcomeStatus
from cl_hpc.labels.write import LabelValues, Naming, PartitionState

LATE_DIR, OUTCOMES_DIR = "_late", "_outcomes"
_KEY_COLUMNS = ["request_id", "row", "unit", "ts", "role"]
_OUTCOMES = list(OUTCOME_SCHEMA.names)
_STATUS = list(OutcomeStatus)


@dataclass(frozen=True)
class Settings:
    """The checked config, in the units the join computes in (microseconds since the epoch, UTC)."""

    log_dir: Path
    out_dir: Path
    window_us: int
    freq_us: int
    lookback_us: int
    now_us: int
    missing: Missing
    value: Value
    default_label: Any
    role: str
    naming: Naming


def settings(conf: LabelsConf | Mapping[str, Any]) -> Settings:
    """Every setting checked, and the log found, before anything is written."""
    c = labels_conf(dataclasses.asdict(conf) if isinstance(conf, LabelsConf) else conf)
    log_dir = Path(c.log_dir).expanduser().resolve()
    if not log_dir.is_dir():
        raise DataError(f"prediction log {log_dir} does not exist (labels.log_dir); point it at the server's "
                        f"log folder, the one holding {Stream.PREDICTIONS.value}/ and {Stream.OUTCOMES.value}/")
    now = pd.Timestamp.now(tz="UTC") if c.now is None else pd.Timestamp(c.now)
    now = now.tz_localize("UTC") if now.tzinfo is None else now.tz_convert("UTC")
    return Settings(log_dir, Path(c.out_dir).expanduser().resolve(), _us(c.window), _us(c.freq), _us(c.lookback),
                    now.value // 1000, Missing(c.missing), Value(c.value), c.default_label, c.role,
                    Naming(c.timestamp_col, c.label_col))


def join(conf: LabelsConf | Mapping[str, Any]) -> JoinReport:
    """One run of the join (see the module's doc). Safe to run again, or from several hosts at once."""
    s = settings(conf)
    s.out_dir.mkdir(parents=True, exist_ok=True)
    with _locked(s.out_dir / LOCK):
        return _join(s, read_ledger(s.out_dir))


@dataclass(frozen=True)
class _Joined:
    """One run's matching, before anything is written."""

    watermark: int
    live: pa.Table  # the open predictions of the role
    outs: Rows  # the open outcomes
    keys: Keys  # of ``live``
    match: Match
    starts: np.ndarray  # per live prediction: the start of its partition, us
    states: dict[int, PartitionState]  # per mature partition start
    status: np.ndarray  # per outcome: index into _STATUS

    def mature_in(self, *states: PartitionState) -> np.ndarray:
        """Per live prediction: mature, in a partition of one of ``states``."""
        chosen = [k for k, v in self.states.items() if v in states]
        return np.isin(self.starts, chosen) & (self.keys.ts < self.watermark)


def _join(s: Settings, ledger: Ledger) -> JoinReport:
    preds = read_open(s.log_dir, Stream.PREDICTIONS, ledger)
    j = _match(s, ledger, _watermark(s, ledger), preds, read_open(s.log_dir, Stream.OUTCOMES, ledger, _OUTCOMES))
    stamp = f"run-{len(ledger.runs) + 1:06d}"
    meta = {"run": stamp, "now": _iso(s.now_us), "window_s": s.window_us / 1e6}
    labels = _label_values(s, j.outs.table, j.match.label_of)
    new = j.mature_in(PartitionState.NEW)
    kept = new & ((j.match.label_of != NONE) | (s.missing is Missing.DEFAULT))
    rows = _in_time_order(np.flatnonzero(kept), j.keys.ts)
    table = write.labelled_table(j.live, rows, _codes(labels, rows, j.match), _extra(rows, j.match, j.outs.table),
                                 s.naming)
    written = write.write_partitions(table, j.starts[rows], labels, s.out_dir, s.naming, meta)
    files = _side_files(s, stamp, j, labels, meta)
    files += _close(s, ledger, stamp, j.watermark, preds, j.outs, j.status)
    return _report(s, j, stamp if any(f.startswith(LEDGER_DIR) for f in files) else None, new, kept, written, files)


def _match(s: Settings, ledger: Ledger, watermark: int, preds: Rows, outs: Rows) -> _Joined:
    live = preds.table.filter(pc.equal(preds.table.column("role"), s.role))
    p, o = encode(live, outs.table, micros(live.column("ts")), outs.ts_us)
    has_value = _has_value(outs.table, s.value)
    m = match(p, o, has_value, s.window_us, s.lookback_us)
    matched, target = _older_targets(s, ledger, outs, o, m, has_value)
    starts = p.ts - p.ts % s.freq_us
    states = _states(s, ledger, starts[p.ts < watermark])
    now_starts = np.array([k for k, v in states.items() if v is not PartitionState.DONE], dtype=np.int64)
    status = _statuses(m, matched, target, has_value, watermark, now_starts, s.freq_us)
    return _Joined(watermark, live, outs, p, m, starts, states, status)


def _report(s: Settings, j: _Joined, run: Optional[str], new: np.ndarray, kept: np.ndarray, written: list[str],
            files: list[str]) -> JoinReport:
    labelled = new & (j.match.label_of != NONE)
    return JoinReport(
        run=run, now=_iso(s.now_us), watermark=_iso(j.watermark), log_dir=str(s.log_dir), out_dir=str(s.out_dir),
        written=tuple(written),
        skipped=tuple(write.name_of(k) for k, v in sorted(j.states.items()) if v is not PartitionState.NEW),
        mature=int(new.sum()), labelled=int(labelled.sum()), defaulted=int((kept & ~labelled).sum()),
        dropped=int((new & ~kept).sum()), pending=int((j.keys.ts >= j.watermark).sum()),
        late_predictions=int(j.mature_in(PartitionState.DONE).sum()),
        delays=Delays.of(j.match.delay_us[labelled] / 1e6), outcomes_read=j.outs.table.num_rows,
        outcomes={st.value: int((j.status == i).sum()) for i, st in enumerate(_STATUS)}, files=tuple(files))


def _watermark(s: Settings, ledger: Ledger) -> int:
    """The end of the newest mature partition; never behind the last run's (a clock set back)."""
    edge = s.now_us - s.window_us
    mark = edge - edge % s.freq_us
    return mark if ledger.watermark_us is None else max(mark, ledger.watermark_us)


def _has_value(outcomes: pa.Table, value: Value) -> np.ndarray:
    column = outcomes.column(value.value)
    valid = pc.is_valid(column) if value is Value.LABEL else pc.invert(pc.is_null(column, nan_is_null=True))
    return np.asarray(valid.to_numpy(zero_copy_only=False), dtype=bool)


def _older_targets(s: Settings, ledger: Ledger, outs: Rows, o: Keys, m: Match,
                   has_value: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(matched, target time) per outcome, after looking for the outcomes that matched no open
    prediction among the older ones (done shards): a late outcome, or an unmatched one."""
    matched, target = m.matched.copy(), m.target_us.copy()
    lost = np.flatnonzero(~matched & has_value)
    if not len(lost) or not any(ledger.done(k) for k in ledger.seen):
        return matched, target
    since, until = int(o.ts[lost].min()) - s.lookback_us, int(o.ts[lost].max())
    old = read_done(s.log_dir, Stream.PREDICTIONS, ledger, since, until, _KEY_COLUMNS).table
    old = old.filter(pc.equal(old.column("role"), s.role))
    subset = outs.table.take(pa.array(lost))
    p_old, o_lost = encode(old, subset, micros(old.column("ts")), o.ts[lost])
    o_idx, p_idx = candidates(p_old, o_lost, s.window_us, s.lookback_us)
    latest = np.full(len(lost), np.iinfo(np.int64).min, dtype=np.int64)
    np.maximum.at(latest, o_idx, p_old.ts[p_idx])
    found = np.zeros(len(lost), dtype=bool)
    found[o_idx] = True
    matched[lost[found]], target[lost[found]] = True, latest[found]
    return matched, target


def _states(s: Settings, ledger: Ledger, mature_starts: np.ndarray) -> dict[int, PartitionState]:
    return {int(k): write.partition_state(s.out_dir / write.name_of(int(k)), ledger.runs)
            for k in sorted(pd.unique(mature_starts))}


def _statuses(m: Match, matched: np.ndarray, target: np.ndarray, has_value: np.ndarray, watermark: int,
              now_starts: np.ndarray, freq_us: int) -> np.ndarray:
    """Per outcome, the index of its OutcomeStatus in _STATUS."""
    final = target < watermark
    now = matched & np.isin(target - target % freq_us, now_starts)
    status = np.full(len(target), _STATUS.index(OutcomeStatus.PENDING), dtype=np.int8)
    decided = [
        (final & ~has_value, OutcomeStatus.NO_VALUE),
        (final & has_value & ~matched, OutcomeStatus.UNMATCHED),
        (final & has_value & matched & ~now, OutcomeStatus.LATE),
        (final & has_value & now & m.used, OutcomeStatus.USED),
        (final & has_value & now & ~m.used & m.in_window, OutcomeStatus.SUPERSEDED),
        (final & has_value & now & ~m.used & ~m.in_window, OutcomeStatus.OUTSIDE_WINDOW),
    ]
    for mask, st in decided:
        status[mask] = _STATUS.index(st)
    return status


def _label_values(s: Settings, outcomes: pa.Table, label_of: np.ndarray) -> LabelValues:
    """The distinct labels of the labelling outcomes, decoded once each; then default_label, then
    None (no label: a late prediction without one). ``codes`` are per labelling outcome."""
    picked = np.zeros(outcomes.num_rows, dtype=bool)
    picked[label_of[label_of != NONE]] = True
    chosen = pa.array(np.flatnonzero(picked))
    column = outcomes.column(s.value.value).take(chosen).combine_chunks()
    coded = pc.dictionary_encode(column)
    uniques = coded.dictionary.to_pylist()
    values = [_decode(u) for u in uniques] if s.value is Value.LABEL else [float(u) for u in uniques]
    lookup = np.full(max(outcomes.num_rows, 1), NONE, dtype=np.int64)  # never empty: _codes indexes it
    lookup[chosen.to_numpy()] = coded.indices.to_numpy(zero_copy_only=False)
    default = s.default_label if s.value is Value.LABEL or s.default_label is None else float(s.default_label)
    return LabelValues(lookup, [*values, default, None])


def _codes(labels: LabelValues, rows: np.ndarray, m: Match) -> LabelValues:
    """Per output row: the code of its label (its outcome's, else default_label's)."""
    outcome = m.label_of[rows]
    codes = np.where(outcome != NONE, labels.codes[np.maximum(outcome, 0)], len(labels.values) - 2)
    return LabelValues(codes, labels.values)


def _extra(rows: np.ndarray, m: Match, outcomes: pa.Table) -> dict[str, pa.Array]:
    outcome = m.label_of[rows]
    missing = outcome == NONE
    reward = outcomes.column("reward").take(pa.array(np.maximum(outcome, 0))).combine_chunks() \
        if outcomes.num_rows else pa.nulls(len(rows), pa.float64())
    return {"_defaulted": pa.array(missing), "_label_delay_s": pa.array(m.delay_us[rows] / 1e6, mask=missing),
            "_reward": pc.if_else(pa.array(missing), pa.scalar(None, pa.float64()), reward)}


def _side_files(s: Settings, stamp: str, j: _Joined, labels: LabelValues, meta: dict[str, Any]) -> list[str]:
    """Predictions logged after their partition was written (``_late/``, labelled where an outcome
    came), and the decided outcomes that label nothing (``_outcomes/``, with their status)."""
    files = []
    rows = _in_time_order(np.flatnonzero(j.mature_in(PartitionState.DONE)), j.keys.ts)
    if len(rows):
        outcome = j.match.label_of[rows]
        codes = np.where(outcome != NONE, labels.codes[np.maximum(outcome, 0)], len(labels.values) - 1)
        table = write.labelled_table(j.live, rows, LabelValues(codes, labels.values),
                                     _extra(rows, j.match, j.outs.table), s.naming)
        files.append(write.side_file(s.out_dir, LATE_DIR, stamp, write.finish(table, labels, s.naming, meta)))
    unjoined = np.flatnonzero(np.isin(j.status, [_STATUS.index(st) for st in _UNJOINED]))
    if len(unjoined):
        table = j.outs.table.take(pa.array(unjoined)).drop_columns([SHARD, SHARD_ROW])
        table = table.append_column("_status", pa.array([_STATUS[i].value for i in j.status[unjoined]]))
        table = table.append_column("_shard", pa.array([j.outs.keys[i] for i in _shard_ids(j.outs)[unjoined]]))
        files.append(write.side_file(s.out_dir, OUTCOMES_DIR, stamp, table))
    return [str(Path(f).relative_to(s.out_dir)) for f in files if f is not None]


_UNJOINED = (OutcomeStatus.LATE, OutcomeStatus.OUTSIDE_WINDOW, OutcomeStatus.SUPERSEDED, OutcomeStatus.UNMATCHED,
             OutcomeStatus.NO_VALUE)


def _close(s: Settings, ledger: Ledger, stamp: str, watermark: int, preds: Rows, outs: Rows,
           status: np.ndarray) -> list[str]:
    """The ledger entry, when the run changed anything: the shards it saw first, its watermark, and
    the outcome rows decided now that lie at or after it (read again next run, to be skipped)."""
    decided = (status != _STATUS.index(OutcomeStatus.PENDING)) & (outs.ts_us >= watermark)
    ids, rows, ts = _shard_ids(outs)[decided], _shard_rows(outs)[decided], outs.ts_us[decided]
    order = np.argsort(ids, kind="stable")
    shards, first = np.unique(ids[order], return_index=True)
    added = {outs.keys[i]: pair for i, pair in zip(shards, zip(np.split(rows[order], first[1:]),
                                                                 np.split(ts[order], first[1:])))}
    if not (preds.new_seen or outs.new_seen or added or watermark != ledger.watermark_us):
        return []
    skip = carry_skip(ledger.skip, watermark, added)
    path = write_ledger(s.out_dir, stamp, {**preds.new_seen, **outs.new_seen}, watermark, skip)
    return [str(path.relative_to(s.out_dir))]


def _shard_ids(rows: Rows) -> np.ndarray:
    return np.asarray(rows.table.column(SHARD).to_numpy())


def _shard_rows(rows: Rows) -> np.ndarray:
    return np.asarray(rows.table.column(SHARD_ROW).to_numpy())


def _in_time_order(rows: np.ndarray, ts: np.ndarray) -> np.ndarray:
    return rows[np.argsort(ts[rows], kind="stable")]


def _decode(text: Optional[str]) -> Any:
    try:
        return decode_label(text)
    except ValueError as exc:
        raise DataError(f"an outcome's label {text!r} is not JSON ({exc}); the outcomes stream holds labels as "
                        f"JSON text (cl_hpc/data/predictions.py): fix or move aside the shard that holds it") from exc


def _us(text: str) -> int:
    return int(pd.Timedelta(text).value // 1000)


def _iso(us: int) -> str:
    return pd.Timestamp(us, unit="us", tz="UTC").isoformat()
