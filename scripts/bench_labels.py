#!/usr/bin/env python3
"""How long does the label join take for 10^6 predictions and their outcomes? Target: <= 10 s end to end.

    PYTHONPATH=. python scripts/bench_labels.py                 # 1M predictions, 1000 shards, 3 reps
    PYTHONPATH=. python scripts/bench_labels.py --rows 200000 --reps 5

The anchor is Google's Photon (Gupta et al., SIGMOD 2013), which joins a query's clicks with its
ads in under 10 s end to end; here the 10 s is a whole batch run of `cl_hpc.labels.join`.

The log is written with the server's own functions (cl_hpc/data/predictions.py): a tabular model
(8 float inputs; outputs class and a 2-wide probability tensor) answering 1000 rows a second, requests
of 1-4 rows, one predictions shard per second (a 1 s flush), live traffic only. The outcomes, one
shard per second of arrival: every row of 93% of the requests gets one by (request_id, row) after
an exponential delay (mean 60 s), and 5% of those rows a second, later one; 5% of the requests get
one by request_id alone, 2% one by unit; a few arrive after the 1 h window, a few name no logged
request: about as many outcomes as predictions. The clock is set so every partition is mature,
so one run reads, joins and writes everything.

Timed, each rep on a fresh output zone: the whole `join()` call (read the ledger and both streams,
match, write the partitions, the side files and the ledger), and once a second run on the joined
zone, which finds nothing new (the cost of a cron run with no new data); ``--profile`` adds a cProfile of one
more join (its top functions by cumulative time). Printed: seconds (median, min-max), rows/s and
the ratio to the 10 s target. ``run(rows)`` returns the same figures as a dict (for
scripts/bench_serve.py).

Asserts nothing: a benchmark prints, the tests assert behaviour.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from cl_hpc.data.predictions import (
    Outcome,
    PredictionBatch,
    Role,
    Stream,
    outcomes_table,
    predictions_table,
    shard_path,
    write_shard,
)

TARGET_S = 10.0
START = 1_780_000_000.0 - 1_780_000_000.0 % 3600  # an hour boundary (UTC)
RATE = 1000  # rows a second


def make_log(log_dir: Path, rows: int, seed: int = 0) -> dict[str, int]:
    """Write ``rows`` predictions and their outcomes as a server would; return the counts."""
    rng = np.random.default_rng(seed)
    sizes = _request_sizes(rng, rows)
    at = START + np.cumsum(sizes) / RATE  # answered when its rows are done, at RATE rows/s
    batches = [_batch(rng, i, int(n), float(t)) for i, (n, t) in enumerate(zip(sizes, at))]
    second = (at - START).astype(np.int64)
    for k, start in enumerate(np.flatnonzero(np.diff(np.concatenate([[-1], second])))):
        end = np.searchsorted(second, second[start], "right")
        write_shard(shard_path(log_dir, Stream.PREDICTIONS, float(at[start]), "bench", k),
                    predictions_table(batches[start:end]))
    outcomes = _outcomes(rng, sizes, at)
    _write_outcomes(log_dir, outcomes)
    return {"predictions": int(sizes.sum()), "requests": len(sizes), "outcome_rows": len(outcomes),
            "prediction_shards": int(second[-1]) + 1}


def _request_sizes(rng: np.random.Generator, rows: int) -> np.ndarray:
    sizes = rng.integers(1, 5, size=rows)  # more than enough requests; cut at ``rows`` rows
    cut = int(np.searchsorted(np.cumsum(sizes), rows))
    sizes = sizes[:cut + 1]
    sizes[-1] -= int(sizes.sum()) - rows
    return sizes[sizes > 0]


def _batch(rng: np.random.Generator, i: int, n: int, at: float) -> PredictionBatch:
    probs = rng.random((n, 2)).astype(np.float32)
    probs /= probs.sum(axis=1, keepdims=True)
    inputs = {f"x{j}": rng.normal(size=n).astype(np.float32) for j in range(8)}
    return PredictionBatch(f"req-{i:08d}", at, "bench", "1.0", Role.LIVE, 2.5, inputs,
                           {"class": probs.argmax(axis=1), "probs": probs}, unit=f"user-{i % 50_000}")


def _outcomes(rng: np.random.Generator, sizes: np.ndarray, at: np.ndarray) -> list[Outcome]:
    out = []
    delays = rng.exponential(60.0, size=int(sizes.sum()))
    delays[rng.random(len(delays)) < 0.002] += 4000  # after the 1 h window
    k = 0
    for i, (n, t) in enumerate(zip(sizes, at)):
        kind = rng.random()
        if kind < 0.05:  # the whole request
            out.append(Outcome(float(t + delays[k]), f"req-{i:08d}", None, label=int(rng.integers(2))))
        elif kind < 0.07:  # by unit: its latest prediction
            out.append(Outcome(float(t + delays[k]), unit=f"user-{i % 50_000}", label=int(rng.integers(2))))
        else:  # each row; 5% get a second, later one (superseded)
            out += [Outcome(float(t + delays[k + r]), f"req-{i:08d}", r, label=int(rng.integers(2)))
                    for r in range(n)]
            out += [Outcome(float(t + 2 * delays[k + r]), f"req-{i:08d}", r, label=int(rng.integers(2)))
                    for r in range(n) if rng.random() < 0.05]
        k += n
    out += [Outcome(float(START + j), f"unknown-{j}", 0, label=1) for j in range(100)]
    return out


def _write_outcomes(log_dir: Path, outcomes: list[Outcome]) -> None:
    outcomes.sort(key=lambda o: o.at)
    second = np.array([int(o.at - START) for o in outcomes])
    bounds = np.flatnonzero(np.diff(second)) + 1
    for k, (lo, hi) in enumerate(zip(np.concatenate([[0], bounds]), np.concatenate([bounds, [len(second)]]))):
        write_shard(shard_path(log_dir, Stream.OUTCOMES, outcomes[lo].at, "bench", k), outcomes_table(outcomes[lo:hi]))


def join_once(log_dir: Path, out_dir: Path) -> tuple[float, Any]:
    from cl_hpc.labels.join import join

    shutil.rmtree(out_dir, ignore_errors=True)
    now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(START + 6 * 3600))
    begin = time.perf_counter()
    report = join({"log_dir": str(log_dir), "out_dir": str(out_dir), "window": "1h", "freq": "1h", "now": now})
    return time.perf_counter() - begin, report


def run(rows: int = 1_000_000, reps: int = 3) -> dict[str, Any]:
    """Generate the log, join it ``reps`` times into fresh zones; the figures as a dict."""
    with tempfile.TemporaryDirectory(prefix="bench-labels-") as tmp:
        log_dir, out_dir = Path(tmp) / "log", Path(tmp) / "zone"
        begin = time.perf_counter()
        counts = make_log(log_dir, rows)
        generate_s = time.perf_counter() - begin
        times, report = [], None
        for _ in range(reps):
            seconds, report = join_once(log_dir, out_dir)
            times.append(seconds)
        rerun_s = _rerun(log_dir, out_dir)
    assert report is not None
    median = statistics.median(times)
    return {**counts, "generate_s": generate_s, "join_s": times, "median_s": median,
            "rows_per_s": rows / median, "target_s": TARGET_S, "ratio_to_target": median / TARGET_S,
            "labelled": report.labelled, "coverage": report.coverage, "partitions": len(report.written),
            "outcomes": report.outcomes, "rerun_s": rerun_s}


def _rerun(log_dir: Path, out_dir: Path) -> float:
    """A second run on the joined zone: it lists the log, reads the ledger and adds nothing."""
    from cl_hpc.labels.join import join

    now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(START + 6 * 3600))
    begin = time.perf_counter()
    join({"log_dir": str(log_dir), "out_dir": str(out_dir), "window": "1h", "freq": "1h", "now": now})
    return time.perf_counter() - begin


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="predictions to join (default: 10^6)")
    parser.add_argument("--reps", type=int, default=3, help="timed joins, each into a fresh zone (default: 3)")
    parser.add_argument("--profile", action="store_true", help="profile one more join; print the top functions")
    args = parser.parse_args(argv)
    if args.profile:
        return _profile(args.rows)
    r = run(args.rows, args.reps)
    print(f"log: {r['predictions']} predictions in {r['prediction_shards']} shards ({r['requests']} requests), "
          f"{r['outcome_rows']} outcomes; generated in {r['generate_s']:.1f} s")
    print(f"join: median {r['median_s']:.2f} s (min {min(r['join_s']):.2f}, max {max(r['join_s']):.2f}, "
          f"{len(r['join_s'])} reps), {r['rows_per_s']:,.0f} predictions/s")
    print(f"target {r['target_s']:.0f} s: ratio {r['ratio_to_target']:.2f} "
          f"({'within' if r['ratio_to_target'] <= 1 else 'OVER'} the target)")
    print(f"a second run on the joined zone (adds nothing): {r['rerun_s']:.2f} s")
    print(f"result: {r['labelled']} labelled, coverage {r['coverage']:.1%}, {r['partitions']} partitions, "
          f"outcomes {r['outcomes']}")
    return 0


def _profile(rows: int) -> int:
    import cProfile
    import pstats

    with tempfile.TemporaryDirectory(prefix="bench-labels-") as tmp:
        make_log(Path(tmp) / "log", rows)
        profiler = cProfile.Profile()
        profiler.runcall(join_once, Path(tmp) / "log", Path(tmp) / "zone")
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
