#!/usr/bin/env python3
"""The feature store against issue 15's table: materialization, online reads, the point-in-time join, and
whether one new partition costs what that partition costs (not what the history costs).

    PYTHONPATH=. python scripts/bench_features.py                    # the issue's sizes (about a minute on 2 cores)
    PYTHONPATH=. python scripts/bench_features.py --json out.json    # also write every number as JSON
    PYTHONPATH=. python scripts/bench_features.py --quick            # tiny sizes: checks the script, not the goals

The view is the bundled ``user_activity`` (conf/features/user_activity.yaml: 10 windowed aggregates over 1h
and 24h, lookback 24h, ttl 48h), pointed at a scratch landing zone of the bundled simulated users stream
(cl_hpc/data/users.py: ts, user_id, amount, duration, clicked, y; ``--users`` users with heavy-tailed
activity, seed 42). Everything runs in a temp dir
that is removed at the end.

Measured (each as runs, median, min-max, beside the goal):
  - full materialization: ``--rows`` rows in ``--parts`` hourly partitions, a fresh store each run; the
    timed call is ``materialize()`` (plan, compute with dask threads, write batches, online upsert, state);
  - online read, in process: ``OnlineStore.read`` of 1 random entity, and of 100, on the store just built;
  - point-in-time join of ``--queries`` rows (random users, times over the data's span) against the whole
    offline table: ``load_offline`` alone, ``point_in_time`` alone (the table already in memory: this is what
    the 0.3 s goal is judged on, as the issue names the join of 10k rows over 500k), and both in sequence;
  - incrementality: daily partitions of ``--day-rows`` rows, so the 24h lookback reaches one partition back.
    For each history (5, 10, 20 days) the history is materialized in full once, then each run lands the next
    day and materializes it. Printed: the seconds of one new day, the ratio to the full materialization of
    its history, and 1/history (what the ratio would be if the cost were proportional to rows). Flat seconds
    as the history grows mean the cost follows the partition, not the history. Each run adds a day, so run
    i sees a history of H + i days.

Asserts nothing: a benchmark prints, the tests assert behaviour (tests/test_bench_features.py only checks
that ``--quick`` still runs and writes every key).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import pandas as pd

from cl_hpc.config.ml import DataConf
from cl_hpc.data.landing import partition_name
from cl_hpc.data.users import users_frame
from cl_hpc.features.definitions import FeatureView, load_catalog
from cl_hpc.features.materialize import load_offline, materialize, online_path
from cl_hpc.features.online import OnlineStore
from cl_hpc.features.pit import point_in_time

VIEW = "user_activity"
START = pd.Timestamp("2026-01-01")
# issue 15's goals, in seconds (None: judged by the ratio, printed beside 1/history)
GOALS = {"full_materialization": 5.0, "online_read_1": 0.2e-3, "online_read_100": 2e-3, "pit_join": 0.3}


@dataclasses.dataclass(frozen=True)
class Sizes:
    rows: int = 500_000  # source rows of the full materialization
    users: int = 100_000
    parts: int = 10  # hourly partitions of the full materialization
    queries: int = 10_000  # rows of the point-in-time join
    day_rows: int = 50_000  # rows per daily partition, incrementality
    histories: tuple[int, ...] = (5, 10, 20)
    reps: int = 5  # full materializations, join reps, new days per history
    reads: int = 2000  # online reads of 1 entity (100 entities: a fifth of that)


QUICK = Sizes(rows=6000, users=500, parts=3, queries=200, day_rows=1000, histories=(2, 4), reps=2, reads=50)


# ---- data ------------------------------------------------------------------------------------------------


def write_partition(zone: Path, index: int, span: pd.Timedelta, rows: int, users: int) -> Path:
    """Partition ``index`` of the bundled users stream (data.generator: users) with ``span`` per partition;
    each is drawn from its own seed, so partition k is the same rows in every zone."""
    conf = DataConf(landing_dir=str(zone), generator="users", generator_params={"n_users": users},
                    rows_per_partition=rows, start=str(START), freq=str(span))
    path = zone / partition_name(START + index * span)
    users_frame(conf, first=index, count=1).to_parquet(path, index=False)
    return path


def write_zone(zone: Path, count: int, span: pd.Timedelta, rows: int, users: int) -> None:
    zone.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        write_partition(zone, k, span, rows, users)


def view_over(zone: Path) -> FeatureView:
    """The bundled view, reading the scratch zone instead of data/landing/users."""
    bundled = load_catalog().view(VIEW)
    return dataclasses.replace(bundled, source=dataclasses.replace(bundled.source, landing_dir=str(zone)))


# ---- timing ----------------------------------------------------------------------------------------------


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    begin = time.perf_counter()
    out = call()
    return time.perf_counter() - begin, out


def summary(seconds: Sequence[float], goal: Optional[float]) -> dict[str, Any]:
    """Runs, median, min, max (and p99 when there are many runs) beside the goal."""
    out: dict[str, Any] = {"runs": len(seconds), "median_s": statistics.median(seconds),
                           "min_s": min(seconds), "max_s": max(seconds), "goal_s": goal}
    if len(seconds) >= 100:
        out["p99_s"] = float(np.percentile(seconds, 99))
    if goal is not None:
        out["meets_goal"] = out["median_s"] <= goal
    return out


def materialize_fresh(view: FeatureView, root: Path, cpus: Optional[int]) -> tuple[float, Any]:
    """One materialization into an empty store at ``root``."""
    shutil.rmtree(root, ignore_errors=True)
    store = OnlineStore(online_path(root))
    try:
        return timed(lambda: materialize(view, root, store, cpus=cpus))
    finally:
        store.close()


# ---- the measures ----------------------------------------------------------------------------------------


def bench_full(work: Path, sizes: Sizes, cpus: Optional[int]) -> tuple[dict[str, Any], FeatureView, Path]:
    """Full materialization of the hourly zone, ``reps`` times; returns the last store for the reads and join."""
    zone = work / "hourly"
    write_zone(zone, sizes.parts, pd.Timedelta(hours=1), sizes.rows // sizes.parts, sizes.users)
    view = view_over(zone)
    runs = [materialize_fresh(view, work / f"store-{rep}", cpus) for rep in range(sizes.reps)]
    report = runs[-1][1]
    out = summary([spent for spent, _ in runs], GOALS["full_materialization"])
    out.update(source_rows=sizes.parts * (sizes.rows // sizes.parts), feature_rows=report.rows,
               entities=report.entities, partitions=sizes.parts)
    return out, view, work / f"store-{sizes.reps - 1}"


def bench_online(view: FeatureView, root: Path, sizes: Sizes) -> dict[str, Any]:
    """Reads of random user ids as of the data's end (none expired; an id with no events is a miss)."""
    rng = np.random.default_rng(1)
    at = START + sizes.parts * pd.Timedelta(hours=1)
    store = OnlineStore(online_path(root))
    try:
        store.read(view, [0], at)  # the first read prepares the statement: not what a server pays per request
        singles = [[int(k)] for k in rng.integers(0, sizes.users, sizes.reads)]
        batches = [rng.choice(sizes.users, 100, replace=False).tolist() for _ in range(max(sizes.reads // 5, 1))]
        one = [timed(functools.partial(store.read, view, keys, at))[0] for keys in singles]
        hundred = [timed(functools.partial(store.read, view, keys, at))[0] for keys in batches]
        found = sum(r is not None for r in store.read(view, batches[0], at))
    finally:
        store.close()
    return {"online_read_1": summary(one, GOALS["online_read_1"]),
            "online_read_100": {**summary(hundred, GOALS["online_read_100"]), "found_of_100": found},
            "server_lookup_1": bench_server_lookup(view, root, singles, at)}


def bench_server_lookup(view: FeatureView, root: Path, singles: list[list[int]], at: pd.Timestamp) -> dict[str, Any]:
    """What a server adds per request for a version trained on the view: its features for one user, defaults
    filled, as the model's frame and the logged columns (cl_hpc/serve/features.py; no goal, for scale)."""
    from cl_hpc.features.definitions import Catalog, FeatureBinding
    from cl_hpc.learn.contract import Signature, Spec
    from cl_hpc.serve.features import served_features
    from cl_hpc.serve.inputs import RequestError

    catalog = Catalog({view.name: view}, str(root))
    binding = FeatureBinding(tuple(view.feature_names), {view.name: view.ident}, (("user_id", "int64"),), str(root))
    signature = Signature(tuple(Spec(n, f.dtype) for n, f in zip(view.feature_names, view.features)), ())
    served = served_features(binding.to_dict(), signature, "bench", catalog=catalog)
    assert served is not None
    seconds, refused = [], 0
    for keys in singles:
        rows = pd.DataFrame({"user_id": np.array(keys, dtype=np.int64)})
        started = time.perf_counter()
        try:
            served.lookup(rows, at=at)
        except RequestError:  # a user with no events: the 404 path, timed too
            refused += 1
        seconds.append(time.perf_counter() - started)
    served.store.close()
    return {**summary(seconds, None), "refused": refused}


def bench_join(view: FeatureView, root: Path, sizes: Sizes) -> dict[str, Any]:
    rng = np.random.default_rng(2)
    span = int(sizes.parts * pd.Timedelta(hours=1) / pd.Timedelta(microseconds=1))
    queries = pd.DataFrame({"user_id": rng.integers(0, sizes.users, sizes.queries, dtype=np.int64),
                            "ts": START + pd.to_timedelta(rng.integers(0, span, sizes.queries), "us")})

    def join(table: pd.DataFrame) -> pd.DataFrame:
        return point_in_time(queries, table, entities=view.entities, timestamp="ts", features=view.feature_names,
                             ttl=pd.Timedelta(view.ttl))

    table = load_offline(root, view)
    found = int(join(table)["_event_ts"].notna().sum())  # untimed: the first calls warm arrow's memory pool
    loads, joins, together = [], [], []
    for _ in range(sizes.reps):  # interleaved, so a drift in the machine's load hits the three alike
        loads.append(timed(lambda: load_offline(root, view))[0])
        joins.append(timed(lambda: join(table))[0])
        together.append(timed(lambda: join(load_offline(root, view)))[0])
    return {"queries": sizes.queries, "table_rows": len(table), "found": found, "goal_on": "point_in_time",
            "load_offline": summary(loads, None), "point_in_time": summary(joins, GOALS["pit_join"]),
            "together": summary(together, None)}


def bench_incremental(work: Path, sizes: Sizes, cpus: Optional[int]) -> list[dict[str, Any]]:
    return [_one_history(work / f"daily-{h}", h, sizes, cpus) for h in sizes.histories]


def _one_history(folder: Path, history: int, sizes: Sizes, cpus: Optional[int]) -> dict[str, Any]:
    """Materialize ``history`` days in full, then land and materialize one new day at a time."""
    day = pd.Timedelta(days=1)
    zone, root = folder / "zone", folder / "store"
    write_zone(zone, history, day, sizes.day_rows, sizes.users)
    view = view_over(zone)
    full, _ = materialize_fresh(view, root, cpus)
    store, seconds, computed = OnlineStore(online_path(root)), [], []
    try:
        for k in range(history, history + sizes.reps):
            write_partition(zone, k, day, sizes.day_rows, sizes.users)
            spent, report = timed(lambda: materialize(view, root, store, cpus=cpus))
            seconds.append(spent)
            computed.append(len(report.computed))
    finally:
        store.close()
    new = summary(seconds, None)
    return {"history_days": history, "history_rows": history * sizes.day_rows, "full_s": full,
            "new_day": new, "computed_per_run": computed, "ratio": new["median_s"] / full,
            "proportional_ratio": 1.0 / history}


def run(sizes: Sizes, cpus: Optional[int] = None, scratch: Optional[Path] = None) -> dict[str, Any]:
    """Every measure, as one dict (what ``--json`` writes)."""
    work = Path(tempfile.mkdtemp(prefix="bench_features-", dir=scratch))
    try:
        full, view, root = bench_full(work, sizes, cpus)
        out: dict[str, Any] = {"sizes": dataclasses.asdict(sizes), "cpus": cpus or os.cpu_count(),
                               "load_avg_1m": round(os.getloadavg()[0], 2), "full_materialization": full}
        out.update(bench_online(view, root, sizes))
        out["pit_join"] = bench_join(view, root, sizes)
        out["incremental"] = bench_incremental(work, sizes, cpus)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---- output ----------------------------------------------------------------------------------------------


def _ms(seconds: Optional[float]) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3f} ms" if seconds < 0.1 else f"{seconds:.3f} s"


def _row(label: str, m: dict[str, Any]) -> str:
    verdict = {True: "ok", False: "MISSED", None: ""}[m.get("meets_goal")]
    goal = f"<= {_ms(m['goal_s'])}" if m["goal_s"] is not None else "-"
    return (f"{label:38} {m['runs']:5d} {_ms(m['median_s']):>11} {_ms(m['min_s']):>11} - {_ms(m['max_s']):<11} "
            f"{goal:>13} {verdict}")


def show(out: dict[str, Any]) -> None:
    s, full, join = out["sizes"], out["full_materialization"], out["pit_join"]
    print(f"feature view {VIEW}: {full['source_rows']} source rows, {s['users']} users, {out['cpus']} cpus, "
          f"load {out['load_avg_1m']}")
    print(f"{'measure':38} {'runs':>5} {'median':>11} {'min':>11}   {'max':<11} {'goal':>13}")
    print(_row(f"full materialization ({full['partitions']} x 1h parts)", full))
    print(_row("online read, 1 entity", out["online_read_1"]))
    print(_row("online read, 100 entities", out["online_read_100"]))
    print(_row("server lookup, 1 entity (no goal)", out["server_lookup_1"]))
    print(_row(f"load_offline ({join['table_rows']} rows)", join["load_offline"]))
    print(_row(f"point_in_time ({join['queries']} queries)  [goal]", join["point_in_time"]))
    print(_row("load_offline + point_in_time", join["together"]))
    print(f"(online 1-entity p99 {_ms(out['online_read_1'].get('p99_s'))}, 100 entities found "
          f"{out['online_read_100']['found_of_100']} of 100; the join found values for "
          f"{join['found']} of {join['queries']} queries; the goal is judged on point_in_time alone)")
    print("\nincremental: one new daily partition after H days of history (goal: flat in H)")
    print(f"{'H days':>6} {'history rows':>13} {'full H':>10} {'new day median (min-max)':>28} {'ratio':>7} "
          f"{'1/H':>6} computed")
    for h in out["incremental"]:
        n = h["new_day"]
        spread = f"{_ms(n['median_s'])} ({_ms(n['min_s'])}-{_ms(n['max_s'])})"
        print(f"{h['history_days']:6d} {h['history_rows']:13d} {_ms(h['full_s']):>10} {spread:>28} {h['ratio']:7.3f} "
              f"{h['proportional_ratio']:6.3f} {h['computed_per_run']}")
    first, last = out["incremental"][0], out["incremental"][-1]
    growth = last["new_day"]["median_s"] / first["new_day"]["median_s"]
    print(f"history x{last['history_days'] / first['history_days']:.0f}: one new day x{growth:.2f}, "
          f"full x{last['full_s'] / first['full_s']:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = Sizes()
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a check that the script runs)")
    parser.add_argument("--rows", type=int, default=default.rows, help=f"full materialization rows ({default.rows})")
    parser.add_argument("--users", type=int, default=default.users, help=f"entities ({default.users})")
    parser.add_argument("--reps", type=int, default=default.reps, help=f"runs per measure ({default.reps})")
    parser.add_argument("--day-rows", type=int, default=default.day_rows, help=f"rows per day ({default.day_rows})")
    parser.add_argument("--cpus", type=int, default=None, help="dask threads (default: every core)")
    parser.add_argument("--dir", type=Path, default=None, help="where the scratch dir goes (default: the temp dir)")
    parser.add_argument("--json", type=Path, help="also write every number to this JSON file")
    args = parser.parse_args()
    sizes = QUICK if args.quick else dataclasses.replace(default, rows=args.rows, users=args.users, reps=args.reps,
                                                          day_rows=args.day_rows)
    out = run(sizes, args.cpus, args.dir)
    show(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
