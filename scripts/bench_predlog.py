"""The prediction log's sustained write capacity and its SIGTERM loss (issue 13), side by side with SQLite.

Every option gets the same rows: single-row requests of the tabular model's shape (8 float64
features in; a class and 2 probabilities out), made by one producer thread as fast as it can for
``--seconds``, and counted until every row is on disk. Every option makes each write durable the
same way: a shard is fsynced before its rename, a SQLite commit is fsynced (WAL, synchronous=FULL).

- parquet shards:       cl_hpc.serve.predlog.PredictionLog, a queue drained by a writer thread every
                        1 s into one zstd Parquet shard per flush (the choice; why: cl_hpc/data/predictions.py)
- sqlite batched:       the same queue and writer thread, one ``executemany`` transaction per flush
                        (one REAL column per feature and probability: SQLite's best case)
- sqlite commit/row:    an INSERT and a COMMIT per request on the producer's thread, FULL and NORMAL
                        (NORMAL in WAL skips the fsync: it survives kill -9 but not a power cut)

A producer that runs ahead of a background writer waits while 200k rows are pending, so a number
is what the writer sustains, not how fast a queue grows. Then a real subprocess logs at full speed,
takes SIGTERM (its handler calls close()) and the rows it acknowledged are counted on disk.

    python scripts/bench_predlog.py            # ~50 s: 2 rounds of 5 s per option
    python scripts/bench_predlog.py --seconds 2

``run(seconds)`` returns the numbers as a dict (scripts/bench_serve.py imports it). A benchmark:
it prints and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cl_hpc.data.predictions import PredictionBatch, Role, Stream, list_shards  # noqa: E402
from cl_hpc.serve.predlog import PredictionLog  # noqa: E402

FEATURES = [f"x{i}" for i in range(8)]
BACKLOG_ROWS = 200_000  # a producer ahead of the writer waits here (memory stays small)
FLUSH_S = 1.0
PER_ROW_MAX_S = 3.0  # commit-per-row options run at most this long: their rate is flat
TARGET_ROWS_S = 50_000
COLUMNS = ["request_id", "row", "unit", "ts", "model", "version", "role", "latency_ms", *FEATURES, "class", "p0", "p1"]
INSERT = f"INSERT INTO predictions VALUES ({', '.join('?' * len(COLUMNS))})"


class Rows:
    """Answered single-row requests, as the server hands them to the log: fresh arrays per request
    (as parsed from its JSON and returned by the model), over 2**16 distinct rows (a small pool
    would flatter the compression)."""

    def __init__(self, pool: int = 1 << 16, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.x = rng.normal(size=(pool, 8)).tolist()
        self.probs = rng.dirichlet([1.0, 1.0], size=pool).astype(np.float32)

    def batch(self, i: int) -> PredictionBatch:
        k = i % len(self.x)
        x, probs = self.x[k], self.probs[k:k + 1].copy()
        return PredictionBatch(f"req-{i:010d}", time.time(), "tabular", "1.0", Role.LIVE, 0.8,
                               {f: np.array(x[j:j + 1]) for j, f in enumerate(FEATURES)},
                               {"class": probs.argmax(axis=1), "probs": probs}, unit=f"user-{k}")


def produce(rows: Rows, sink: Callable[[PredictionBatch], Any], pending: Callable[[], int], seconds: float) -> int:
    """Log requests for ``seconds``; return how many."""
    end, i = time.perf_counter() + seconds, 0
    while True:
        if i % 1024 == 0:
            if time.perf_counter() >= end:
                return i
            while pending() > BACKLOG_ROWS:
                time.sleep(0.005)
        sink(rows.batch(i))
        i += 1


@dataclass(frozen=True)
class Result:
    option: str
    rows: int  # logged
    on_disk: int
    seconds: float  # from the first row logged to the last one on disk
    busy_s: float  # of which the writer spent writing (sharing the CPU and the GIL with the producer)
    bytes: int

    @property
    def rows_s(self) -> float:
        """End to end: the producer's cost included."""
        return self.on_disk / self.seconds if self.seconds else 0.0

    @property
    def writer_rows_s(self) -> float:
        """The writer's capacity: rows on disk per second of writing."""
        return self.on_disk / self.busy_s if self.busy_s else 0.0


# ---- the options --------------------------------------------------------------------------------


def bench_parquet(folder: Path, seconds: float) -> Result:
    plog = PredictionLog(folder, flush_interval_s=FLUSH_S, max_pending_rows=10 * BACKLOG_ROWS).start()
    started = time.perf_counter()
    n = produce(Rows(), plog.log, lambda: plog.stats().pending_rows, seconds)
    plog.close()
    took = time.perf_counter() - started
    shards = list_shards(folder, Stream.PREDICTIONS)
    on_disk = sum(pq.read_metadata(p).num_rows for p in shards)
    return Result("parquet shards (PredictionLog)", n, on_disk, took, plog.stats().busy_s,
                  sum(p.stat().st_size for p in shards))


def bench_producer(seconds: float) -> Result:
    """The producer alone (requests made, then thrown away): the ceiling of every option above."""
    started = time.perf_counter()
    n = produce(Rows(), lambda b: None, lambda: 0, min(seconds, PER_ROW_MAX_S))
    took = time.perf_counter() - started
    return Result("producer alone (no log)", n, n, took, took, 0)


def connect(path: Path, synchronous: str) -> sqlite3.Connection:
    con = sqlite3.connect(path, check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(f"PRAGMA synchronous={synchronous}")
    columns = ", ".join(f'"{c}"' for c in COLUMNS)
    con.execute(f"CREATE TABLE predictions ({columns})")
    con.commit()
    return con


def tuples(b: PredictionBatch) -> list[tuple[Any, ...]]:
    xs, cls, probs = [b.inputs[f] for f in FEATURES], b.outputs["class"], b.outputs["probs"]
    return [(b.request_id, r, b.unit, b.at, b.model, b.version, b.role.value, b.latency_ms,
             *[float(x[r]) for x in xs], int(cls[r]), *[float(v) for v in probs[r]]) for r in range(b.rows)]


class SqliteBatchedLog:
    """PredictionLog's shape on SQLite: a queue, a writer thread, one transaction per flush."""

    def __init__(self, path: Path, synchronous: str = "FULL") -> None:
        self.con, self.queue, self.inflight, self.busy_s = connect(path, synchronous), deque[PredictionBatch](), 0, 0.0
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def pending(self) -> int:
        return len(self.queue) + self.inflight

    def _run(self) -> None:
        while not self.stop.wait(FLUSH_S):
            self.flush()

    def flush(self) -> None:
        with self.lock:
            started = time.perf_counter()
            batches = [self.queue.popleft() for _ in range(len(self.queue))]
            self.inflight = len(batches)
            with self.con:  # one transaction
                self.con.executemany(INSERT, [t for b in batches for t in tuples(b)])
            self.inflight = 0
            self.busy_s += time.perf_counter() - started

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.flush()


def bench_sqlite_batched(path: Path, seconds: float) -> Result:
    slog = SqliteBatchedLog(path)
    started = time.perf_counter()
    n = produce(Rows(), slog.queue.append, slog.pending, seconds)
    slog.close()
    took = time.perf_counter() - started
    return Result("sqlite batched (WAL, FULL)", n, count(slog.con), took, slog.busy_s, sqlite_bytes(path))


def bench_sqlite_per_row(path: Path, seconds: float, synchronous: str) -> Result:
    con, busy = connect(path, synchronous), [0.0]

    def commit(b: PredictionBatch) -> None:
        started = time.perf_counter()
        con.executemany(INSERT, tuples(b))
        con.commit()
        busy[0] += time.perf_counter() - started

    started = time.perf_counter()
    n = produce(Rows(), commit, lambda: 0, min(seconds, PER_ROW_MAX_S))
    took = time.perf_counter() - started
    return Result(f"sqlite commit per row (WAL, {synchronous})", n, count(con), took, busy[0], sqlite_bytes(path))


def count(con: sqlite3.Connection) -> int:
    total = int(con.execute("SELECT count(*) FROM predictions").fetchone()[0])
    con.close()
    return total


def sqlite_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


# ---- SIGTERM ------------------------------------------------------------------------------------


def sigterm_child(folder: Path) -> None:
    """A process that logs at full speed until SIGTERM, whose handler closes the log (as the server does)."""
    plog = PredictionLog(folder, flush_interval_s=FLUSH_S).start()
    acked, rows = [0], Rows()

    def stop(signum: int, frame: Any) -> None:
        plog.close()
        print(json.dumps({"acked": acked[0], **asdict(plog.stats())}), flush=True)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    print("ready", flush=True)
    while True:
        plog.log(rows.batch(acked[0]))
        acked[0] += 1


def bench_sigterm(folder: Path, hold_s: float = 1.5) -> dict[str, Any]:
    """SIGTERM a child after ``hold_s`` of logging (past one periodic flush); count its rows on disk."""
    proc = subprocess.Popen([sys.executable, __file__, "--sigterm-child", str(folder)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            return {"error": proc.communicate(timeout=60)[1][-2000:]}
        time.sleep(hold_s)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    if proc.returncode != 0 or not out.strip():
        return {"error": f"child exited {proc.returncode}: {err[-2000:]}"}
    child = json.loads(out.splitlines()[-1])
    ids = [pq.read_table(p, columns=["request_id"]).column(0) for p in list_shards(folder, Stream.PREDICTIONS)]
    on_disk = {s for column in ids for s in column.to_pylist()}
    acked = {f"req-{i:010d}" for i in range(child["acked"])}
    return {"acked": child["acked"], "logged": child["rows_logged"], "on_disk": len(on_disk),
            "lost": len(acked - on_disk), "shards": child["shards_written"], "dropped": child["rows_dropped"]}


# ---- the run ------------------------------------------------------------------------------------


def run(seconds: float = 5.0, work: Optional[Path] = None, rounds: int = 2) -> dict[str, Any]:
    """Every option for ``seconds`` (the commit-per-row ones at most 3 s), in ``rounds`` interleaved
    rounds, each option's best round kept (the one the machine's other work disturbed least); then
    the SIGTERM test."""
    best: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="bench_predlog-", dir=work) as tmp:
        for n in range(rounds):
            root = Path(tmp) / f"round{n}"
            root.mkdir()
            for r in (bench_parquet(root / "parquet", seconds), bench_sqlite_batched(root / "batched.db", seconds),
                      bench_sqlite_per_row(root / "per_row_full.db", seconds, "FULL"),
                      bench_sqlite_per_row(root / "per_row_normal.db", seconds, "NORMAL"), bench_producer(seconds)):
                if r.option not in best or r.rows_s > best[r.option].rows_s:
                    best[r.option] = r
        sigterm = bench_sigterm(Path(tmp) / "sigterm")
    *results, ceiling = best.values()
    parquet = results[0]

    def ratio(mine: float, theirs: float) -> Optional[float]:
        return round(mine / theirs, 2) if theirs else None

    return {
        "options": [{**asdict(r), "rows_s": round(r.rows_s), "writer_rows_s": round(r.writer_rows_s),
                     "bytes_per_row": round(r.bytes / max(r.on_disk, 1), 1)} for r in results],
        "ratios": {r.option: {"rows_s": ratio(parquet.rows_s, r.rows_s),
                              "writer_rows_s": ratio(parquet.writer_rows_s, r.writer_rows_s)} for r in results[1:]},
        "parquet_rows_s": round(parquet.rows_s), "parquet_writer_rows_s": round(parquet.writer_rows_s),
        "producer_rows_s": round(ceiling.rows_s), "target_rows_s": TARGET_ROWS_S, "sigterm": sigterm,
        "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2), "rounds": rounds,
    }


def show(out: dict[str, Any]) -> None:
    print(f"{'':38} {'':9} {'':9} {'':6} {'end to end':>17} {'writer capacity':>17}")
    print(f"{'option':38} {'rows':>9} {'on disk':>9} {'s':>6} {'rows/s':>9} {'parquet':>7} "
          f"{'rows/s':>9} {'parquet':>7} {'B/row':>6}")
    for r in out["options"]:
        ratios = out["ratios"].get(r["option"], {})
        cells = [f"{ratios[k]:6.2f}x" if ratios.get(k) else f"{'':7}" for k in ("rows_s", "writer_rows_s")]
        print(f"{r['option']:38} {r['rows']:9d} {r['on_disk']:9d} {r['seconds']:6.2f} {r['rows_s']:9d} {cells[0]} "
              f"{r['writer_rows_s']:9d} {cells[1]} {r['bytes_per_row']:6.1f}")
    print(f"{'producer alone (the ceiling)':38} {'':9} {'':9} {'':6} {out['producer_rows_s']:9d}")
    print(f"(parquet x: how many times the parquet log's rate; the best of {out['rounds']} rounds; "
          f"{out['cpus']} cpus, load {out['load_avg_1m']})")
    target = out["target_rows_s"]
    verdict = "PASS" if out["parquet_writer_rows_s"] >= target else "FAIL"
    print(f"parquet log: writer capacity {out['parquet_writer_rows_s']} rows/s, end to end "
          f"{out['parquet_rows_s']} rows/s, target {target} rows/s: {verdict}")
    term = out["sigterm"]
    if "error" in term:
        print(f"SIGTERM: the child failed: {term['error']}")
    else:
        print(f"SIGTERM: {term['acked']} rows acknowledged, {term['on_disk']} on disk in {term['shards']} shards, "
              f"{term['lost']} lost, {term['dropped']} dropped: {'PASS' if term['lost'] == 0 else 'FAIL'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="how long each option is fed (default 5)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds, best kept (default 2)")
    parser.add_argument("--dir", type=Path, default=None, help="where the scratch files go (default: the temp dir)")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON too")
    parser.add_argument("--sigterm-child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sigterm_child:
        sigterm_child(args.sigterm_child)
        return
    out = run(args.seconds, args.dir, args.rounds)
    show(out)
    if args.json:
        print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
