"""The prediction log's background writer: the server hands it every answer; a daemon thread writes them.

``log(batch)`` and ``outcome(o)`` append to an in-memory queue and return: no disk, no commit and
no wait on a write, so the event loop calls them on the request path. Every ``flush_interval_s``
the writer thread drains the queue and writes one Parquet shard per (model, version, role, hour)
and one outcomes shard per hour, in the format of :mod:`cl_hpc.data.predictions` (why Parquet
shards and not SQLite: that module's docstring; ``scripts/bench_predlog.py`` measures both).

What survives what:

- ``close()`` (shutdown, a SIGTERM handler) writes every row logged before it: nothing is lost.
- ``kill -9`` (or a node crash) loses the rows logged since the writer's last flush began: at most
  one flush interval of traffic (1 s by default), plus the time a flush takes. A shard is written
  under a temporary name, fsynced and renamed, so a crash leaves whole shards, never half of one.
- A failed write (full disk, permissions, a file where a folder should be) keeps its rows in
  memory; they are retried every interval and written once the cause is gone. Past
  ``max_pending_rows`` new rows are dropped and counted, so memory stays bounded while the disk
  refuses them. Rows whose data cannot form a table at all are dropped, counted and logged too.

``stats()`` gives the counters for ``/metrics`` and the health check.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Optional, Sequence, TypeVar, Union

import pyarrow as pa

from cl_hpc.data.predictions import (
    Outcome,
    PredictionBatch,
    Stream,
    outcomes_table,
    predictions_table,
    shard_path,
    write_shard,
    writer_id,
)
from cl_hpc.errors import ConfigError

log = logging.getLogger(__name__)

Item = TypeVar("Item", PredictionBatch, Outcome)
_MAX_DISTINCT_ERRORS = 64  # distinct error messages logged; past it, errors are only counted


@dataclass(frozen=True)
class PredictionLogStats:
    """The log's counters. Rows are prediction rows (one per row of a request); outcomes count one each."""

    rows_logged: int  # prediction rows accepted by log()
    rows_written: int  # prediction rows in shards on disk
    shards_written: int  # shards of both streams
    outcomes_written: int
    write_errors: int  # shard writes that failed (their rows stay pending and are retried)
    rows_dropped: int  # prediction rows and outcomes refused (pending bound, after close) or unwritable data
    pending_rows: int  # prediction rows and outcomes accepted and not yet on disk
    last_error: Optional[str]  # the last write error, None before the first
    outcomes_logged: int = 0
    last_write_at: Optional[float] = None  # clock time of the last shard written
    busy_s: float = 0.0  # wall seconds spent in flushes that had rows: its growth rate is the writer's load


class PredictionLog:
    """A queue of answered requests and outcomes, written as shards by one background thread."""

    def __init__(self, log_dir: Path, flush_interval_s: float = 1.0, max_pending_rows: int = 1_000_000,
                 clock: Callable[[], float] = time.time) -> None:
        if not flush_interval_s > 0:
            raise ConfigError(f"serve.flush_interval_s must be > 0 seconds (got {flush_interval_s!r}); "
                              "it bounds what a kill -9 loses: 1.0 is the default")
        if max_pending_rows < 1:
            raise ConfigError(f"serve.max_pending_rows must be >= 1 (got {max_pending_rows!r}); "
                              "it bounds the memory held while the disk refuses writes")
        self.log_dir, self.flush_interval_s, self.max_pending_rows = Path(log_dir), flush_interval_s, max_pending_rows
        self.writer = writer_id()
        self._clock = clock
        self._batches: deque[PredictionBatch] = deque()
        self._outcomes: deque[Outcome] = deque()
        # Drained but not yet on disk: a failed write leaves its rows here for the next interval.
        self._held: list[PredictionBatch] = []
        self._held_outcomes: list[Outcome] = []
        # Guards the producer counters only, never held during a write. Reentrant: a signal handler
        # calling close() may interrupt log() in the same thread.
        self._accept = threading.RLock()
        # One flush at a time. Reentrant for the same reason; the writer thread only tries it with a
        # timeout, so close() from a handler that interrupted the main thread's flush cannot deadlock.
        self._flushing = threading.RLock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        self._seq = 0
        # producer side (under _accept)
        self._rows_in = self._outcomes_in = self._refused = 0
        # writer side (under _flushing)
        self._rows_out = self._outcomes_out = self._shards = self._errors = self._rejected = 0
        self._last_error: Optional[str] = None
        self._last_write_at: Optional[float] = None
        self._busy_s = 0.0
        self._failing = False
        self._seen_errors: set[str] = set()
        self._refused_reported = 0
        self._refusing_logged = False

    # ---- the request path ----------------------------------------------------------------------

    def log(self, batch: PredictionBatch) -> bool:
        """Queue one answered request; False when refused (pending bound reached, or closed)."""
        return self._accept_item(self._batches, batch, batch.rows, outcome=False)

    def outcome(self, o: Outcome) -> bool:
        """Queue one outcome; False when refused (pending bound reached, or closed)."""
        return self._accept_item(self._outcomes, o, 1, outcome=True)

    def _accept_item(self, queue: deque[Any], item: Any, rows: int, outcome: bool) -> bool:
        with self._accept:
            if self._closed or self._pending() + rows > self.max_pending_rows:
                self._refused += rows
                return False
            queue.append(item)
            if outcome:
                self._outcomes_in += rows
            else:
                self._rows_in += rows
            return True

    def _pending(self) -> int:
        # Read without the writer's lock: a count a few rows stale only moves the bound a few rows.
        done = self._rows_out + self._outcomes_out + self._rejected
        return max(0, self._rows_in + self._outcomes_in - done)

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self) -> PredictionLog:
        """Start the writer thread (once)."""
        if self._closed:
            raise RuntimeError(f"prediction log {self.log_dir} is closed; make a new PredictionLog")
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
            self._thread.start()
            atexit.register(self.close)  # an exit without close() (sys.exit, the end of main) still writes
        return self

    def flush(self) -> int:
        """Write everything pending now, in the caller's thread; return the rows still pending (0: all on disk)."""
        with self._flushing:
            self._flush_now()
        return self._pending()

    def close(self) -> None:
        """Refuse new rows, write every pending one and stop the writer. Idempotent; safe in a signal handler."""
        with self._accept:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        atexit.unregister(self.close)
        left = self.flush()
        if self._thread is not None:
            self._thread.join()
        if left:
            log.error("prediction log: %d rows could not be written to %s before close (%s); they are lost",
                      left, self.log_dir, self._last_error)

    def __enter__(self) -> PredictionLog:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> PredictionLogStats:
        return PredictionLogStats(
            rows_logged=self._rows_in, rows_written=self._rows_out, shards_written=self._shards,
            outcomes_written=self._outcomes_out, write_errors=self._errors,
            rows_dropped=self._refused + self._rejected, pending_rows=self._pending(),
            last_error=self._last_error, outcomes_logged=self._outcomes_in, last_write_at=self._last_write_at,
            busy_s=self._busy_s)

    # ---- the writer ----------------------------------------------------------------------------

    def _run(self) -> None:
        started = time.monotonic()
        # Intervals are counted from each flush's start, so a kill -9 loses about one interval, not more.
        while not self._stop.wait(max(0.0, started + self.flush_interval_s - time.monotonic())):
            started = time.monotonic()
            if self._flushing.acquire(timeout=self.flush_interval_s):
                try:
                    self._flush_now()
                finally:
                    self._flushing.release()

    def _flush_now(self) -> None:
        started = time.perf_counter()
        try:
            for _ in range(len(self._batches)):  # only what is queued now: producers keep appending
                self._held.append(self._batches.popleft())
            for _ in range(len(self._outcomes)):
                self._held_outcomes.append(self._outcomes.popleft())
            if not self._held and not self._held_outcomes:
                return
            if self._held:
                self._held = self._write_stream(Stream.PREDICTIONS, self._held, _prediction_key, predictions_table)
            if self._held_outcomes and not self._held:  # (rows still held: the disk refused them just now)
                self._held_outcomes = self._write_stream(Stream.OUTCOMES, self._held_outcomes, _hour_key,
                                                         outcomes_table)
        except Exception as exc:  # the writer must outlive a bug: the rows stay held and are retried
            self._error(exc)
        finally:
            self._report_refused()
        self._busy_s += time.perf_counter() - started

    def _write_stream(self, stream: Stream, held: list[Item], key: Callable[[Item], Hashable],
                      build: Callable[[list[Item]], pa.Table]) -> list[Item]:
        """Write ``held`` as one shard per key; return the items left unwritten (a write failed)."""
        groups: dict[Hashable, list[Item]] = {}
        for item in held:
            groups.setdefault(key(item), []).append(item)
        kept: list[Item] = []
        for items in groups.values():
            if kept:  # a write failed this round: the rest would fail too; all are retried next interval
                kept.extend(items)
            else:
                kept.extend(self._write_group(stream, items, build))
        return kept

    def _write_group(self, stream: Stream, items: list[Item], build: Callable[[list[Item]], pa.Table]) -> list[Item]:
        parts, bad = _tables(items, build)
        self._reject(stream, bad)
        for index, (part, table) in enumerate(parts):
            try:
                write_shard(shard_path(self.log_dir, stream, part[0].at, self.writer, self._seq), table)
            except OSError as exc:
                self._error(exc)
                return [item for rest, _ in parts[index:] for item in rest]
            except Exception as exc:  # data Parquet cannot hold: retrying would never succeed
                self._reject(stream, [(item, exc) for item in part])
                continue
            self._wrote(stream, table.num_rows)
        return []

    def _wrote(self, stream: Stream, rows: int) -> None:
        self._seq += 1
        self._shards += 1
        if stream is Stream.PREDICTIONS:
            self._rows_out += rows
        else:
            self._outcomes_out += rows
        self._last_write_at = self._clock()
        if self._failing:
            self._failing = False
            log.warning("prediction log: writing to %s again after %d failed writes", self.log_dir, self._errors)

    def _error(self, exc: BaseException) -> None:
        self._errors += 1
        self._failing = True
        self._last_error = _describe(exc)
        if self._last_error in self._seen_errors or len(self._seen_errors) >= _MAX_DISTINCT_ERRORS:
            return
        self._seen_errors.add(self._last_error)
        log.error("prediction log: cannot write a shard under %s (%s); %d rows stay in memory and are retried "
                  "every %.3g s (past serve.max_pending_rows=%d new rows are dropped); free the disk or fix the "
                  "folder's permissions", self.log_dir, exc, self._pending(), self.flush_interval_s,
                  self.max_pending_rows)

    def _reject(self, stream: Stream, bad: Sequence[tuple[Union[PredictionBatch, Outcome], BaseException]]) -> None:
        if not bad:
            return
        rows = sum(item.rows if isinstance(item, PredictionBatch) else 1 for item, _ in bad)
        self._rejected += rows
        self._last_error = _describe(bad[0][1])
        log.error("prediction log: dropped %d %s rows whose data cannot be written (%s); the first is %r",
                  rows, stream.value, bad[0][1], _name(bad[0][0]))

    def _report_refused(self) -> None:
        """One warning when rows start being refused, one when it stops (never from log() itself: no I/O there)."""
        refused = self._refused
        if refused > self._refused_reported and not self._refusing_logged:
            log.warning("prediction log: dropping new rows: %d are pending (serve.max_pending_rows=%d), the disk "
                        "under %s is not taking them (%s)", self._pending(), self.max_pending_rows, self.log_dir,
                        self._last_error)
            self._refusing_logged = True
        elif refused == self._refused_reported and self._refusing_logged:
            log.warning("prediction log: accepting rows again; %d were dropped in all", refused)
            self._refusing_logged = False
        self._refused_reported = refused


def _prediction_key(batch: PredictionBatch) -> Hashable:
    return batch.group, int(batch.at // 3600)  # one schema, one hour partition per shard


def _hour_key(item: Outcome) -> Hashable:
    return int(item.at // 3600)


def _tables(items: list[Item], build: Callable[[list[Item]], pa.Table]
            ) -> tuple[list[tuple[list[Item], pa.Table]], list[tuple[Item, BaseException]]]:
    """``items`` as one table, or, when one of them is malformed, as one table per schema of the
    well-formed ones, with the malformed ones and their errors apart."""
    try:
        return [(items, build(items))], []
    except Exception:  # find the item at fault below, item by item
        pass
    by_schema: dict[pa.Schema, tuple[list[Item], list[pa.Table]]] = {}
    bad: list[tuple[Item, BaseException]] = []
    for item in items:
        try:
            table = build([item])
        except Exception as exc:
            bad.append((item, exc))
            continue
        group = by_schema.setdefault(table.schema, ([], []))
        group[0].append(item)
        group[1].append(table)
    return [(part, pa.concat_tables(tables)) for part, tables in by_schema.values()], bad


def _describe(exc: BaseException) -> str:
    """The error without the temporary file's random name, so that one cause is logged once."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: [Errno {exc.errno}] {exc.strerror}"
    return f"{type(exc).__name__}: {exc}"[:300]


def _name(item: Union[PredictionBatch, Outcome]) -> str:
    if isinstance(item, PredictionBatch):
        return f"request {item.request_id} ({item.model} {item.version})"
    return f"outcome for {item.request_id or item.unit}"
