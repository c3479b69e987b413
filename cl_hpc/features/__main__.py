"""`python -m cl_hpc.features list|describe|materialize|get|check`: the feature catalog and its stores.

list: every view of the catalog, a line each: its version and digest, entities, feature count, TTL,
owner and tags. describe VIEW: the whole documented view, feature by feature.
materialize [VIEW ...]: compute what is new in each view's source (default: every view) into the
offline (Parquet) and online (SQLite) stores under --store (default store/features); rerun it as often
as you like, it computes only new and changed partitions.
get VIEW --entity KEY [--entity KEY ...] [--at TIME]: the online values, as a server reads them; a value
older than the view's TTL at --at (default: now) is missing.
check [--log-dir DIR] [--since TIME] [--until TIME] [--model NAME]: train/serve consistency. Every feature
value a server logged (a version trained on catalog features logs what it fed the model) is recomputed
offline, point in time, at its request time, and the mismatches and missing values are reported per
feature (cl_hpc/features/consistency.py says what each verdict means). Exit 1 when any value is skewed or
missing.

    python -m cl_hpc.features list
    python -m cl_hpc.features describe user_activity
    python -m cl_hpc.features materialize user_activity
    python -m cl_hpc.features get user_activity --entity 17 --entity 42 --at 2026-01-02T00:00:00
    python -m cl_hpc.features check --since 2026-12-06T00:00:00

The catalog is a folder of view files (default: the bundled conf/features/, see
cl_hpc/features/definitions.py for every key). Exit code: 0; 1 when check finds skew or missing values;
2 on bad input (a bad catalog, an unknown view, no log), with the reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from cl_hpc.errors import ClHpcError, ConfigError, DataError
from cl_hpc.features.definitions import Catalog, FeatureView, load_catalog
from cl_hpc.ui import make_console


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](load_catalog(args.catalog), args)
    except ClHpcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def summary(view: FeatureView) -> dict[str, Any]:
    return {"name": view.name, "version": view.version, "ident": view.ident, "entities": list(view.entities),
            "features": len(view.features), "ttl": view.ttl, "owner": view.owner, "tags": list(view.tags),
            "description": view.description, "source": view.source.landing_dir, "path": view.path}


def _list(catalog: Catalog, args: argparse.Namespace) -> int:
    rows = [summary(v) for v in catalog.views.values()]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    from rich.table import Table

    table = Table(title=f"feature catalog · {catalog.root}", title_justify="left")
    for column in ("view", "version", "entities", "features", "ttl", "owner", "tags", "description"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row["ident"], ", ".join(row["entities"]), str(row["features"]),
                      row["ttl"] or "never", row["owner"], ", ".join(row["tags"]), row["description"])
    make_console().print(table if rows else f"no feature views in {catalog.root}")
    return 0


def _describe(catalog: Catalog, args: argparse.Namespace) -> int:
    view = catalog.view(args.view)
    features = [{"name": f.name, "dtype": f.dtype, "default": f.default, "description": f.description}
                for f in view.features]
    if args.json:
        print(json.dumps({**summary(view), "transform": view.transform, "params": dict(view.params),
                          "lookback": view.lookback, "digest": view.digest, "feature_list": features},
                         indent=1, default=str))
        return 0
    from rich.table import Table

    console = make_console()
    console.print(f"{view.name} {view.ident} · owner {view.owner or '-'} · tags {', '.join(view.tags) or '-'}")
    console.print(view.description)
    console.print(f"entities {', '.join(view.entities)} · source {view.source.landing_dir} "
                  f"(time {view.source.timestamp_col}) · ttl {view.ttl or 'never'} · lookback {view.lookback}")
    console.print(f"transform {view.transform} {json.dumps(dict(view.params), default=str)}")
    table = Table(title=f"{len(features)} features · defined in {view.path}", title_justify="left")
    for column in ("feature", "dtype", "default", "description"):
        table.add_column(column)
    for f in features:
        table.add_row(f["name"], f["dtype"], "none" if f["default"] is None else str(f["default"]), f["description"])
    console.print(table)
    return 0


def _materialize(catalog: Catalog, args: argparse.Namespace) -> int:
    from cl_hpc.features.materialize import materialize, online_path
    from cl_hpc.features.online import OnlineStore

    root = Path(args.store).expanduser().resolve()
    views = [catalog.view(name) for name in args.views] or list(catalog.views.values())
    online = OnlineStore(online_path(root))
    reports = []
    for view in views:
        started = time.perf_counter()
        report = materialize(view, root, online, cpus=args.cpus)
        reports.append({**dataclasses.asdict(report), "seconds": round(time.perf_counter() - started, 3)})
    if args.json:
        print(json.dumps(reports, indent=1))
        return 0
    console = make_console()
    for r in reports:
        console.print(f"{r['view']} {r['ident']}: {len(r['computed'])} of {r['partitions']} partitions computed, "
                      f"{r['rows']} feature rows, {r['entities']} entities online, {r['seconds']} s -> {root}")
    return 0


def _get(catalog: Catalog, args: argparse.Namespace) -> int:
    from cl_hpc.features.materialize import online_path
    from cl_hpc.features.online import OnlineStore

    view = catalog.view(args.view)
    root = Path(args.store).expanduser().resolve()
    if not online_path(root).exists():
        raise DataError(f"no online store at {online_path(root)}; run python -m cl_hpc.features materialize first")
    keys = [_key(text, view) for text in args.entity]
    rows = OnlineStore(online_path(root)).read(view, keys, at=args.at)
    found: list[dict[str, Any]] = [
        {"entity": list(k), "values": None if r is None else {f: r[f] for f in view.feature_names}}
        for k, r in zip(keys, rows)]
    if args.json:
        print(json.dumps(found, indent=1))
        return 0
    from rich.table import Table

    title = f"{view.name} {view.ident} · online values as of {args.at or 'now'} · ttl {view.ttl or 'never'}"
    table = Table(title=title, title_justify="left")
    for column in (*view.entities, *view.feature_names):
        table.add_column(column)
    for item in found:
        values = item["values"]
        cells = ["missing"] * len(view.features) if values is None else [_cell(values[f]) for f in view.feature_names]
        table.add_row(*[str(k) for k in item["entity"]], *cells)
    make_console().print(table)
    return 0


def _check(catalog: Catalog, args: argparse.Namespace) -> int:
    import pandas as pd

    from cl_hpc.data.predictions import Stream, read_stream
    from cl_hpc.features.consistency import Verdict, check_log

    root, log_dir = Path(args.store).expanduser().resolve(), Path(args.log_dir).expanduser().resolve()
    since, until = _time(args.since, "--since"), _time(args.until, "--until")
    if args.examples < 0:
        raise ConfigError(f"--examples {args.examples}: the skewed or missing values shown per feature, 0 or more")
    if not (log_dir / Stream.PREDICTIONS.value).is_dir():
        raise DataError(f"no prediction log at {log_dir} (--log-dir; a server writes <store.root>/predictions "
                        f"unless serve.log_dir says otherwise)")
    log = read_stream(log_dir, Stream.PREDICTIONS, since, until).frame
    if since is not None:  # the read skips whole hours only; trim to the exact span
        log = log[log["ts"] >= pd.Timestamp(since, unit="s", tz="UTC")]
    if until is not None:
        log = log[log["ts"] < pd.Timestamp(until, unit="s", tz="UTC")]
    if args.model:
        log = log[log["model"] == args.model]
    if log.empty:
        raise DataError(f"the prediction log at {log_dir} has no rows{' of model ' + args.model if args.model else ''}"
                        f" in [{args.since or 'start'}, {args.until or 'now'})")
    report = check_log(catalog, root, log, tolerance=args.tolerance, examples=args.examples)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1, default=str))
        return 0 if report.ok else 1
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"train/serve consistency · {report.rows} logged rows, {report.first} .. {report.last} · "
                        f"offline {root}", title_justify="left")
    verdicts = list(Verdict)
    for column in ("feature", "view", "rows", *[v.value.replace("_", " ") for v in verdicts], "max |diff|"):
        table.add_column(column, justify="left" if column in ("feature", "view") else "right")
    for f in report.features:
        cells = [Text(str(f.counts[v.value]), style="red" if v.fails and f.counts[v.value] else "") for v in verdicts]
        table.add_row(f.feature, f.view, str(f.rows), *cells, f"{f.max_abs_diff:.4g}")
    console = make_console()
    console.print(table)
    for f in report.features:
        for e in f.examples:
            console.print(f"  {f.feature} {e['verdict']}: entity {e['entity']} at {e['at']} served {e['served']} "
                          f"(event {e['served_event']}), offline {e['offline']} (event {e['offline_event']}), "
                          f"request {e['request_id']}")
    failed = sum(f.failed for f in report.features)
    console.print("consistent: every logged value matches the offline recomputation" if report.ok else
                  Text(f"{failed} logged values are skewed or missing", style="red"))
    return 0 if report.ok else 1


def _time(text: str | None, flag: str) -> float | None:
    if text is None:
        return None
    import pandas as pd

    try:
        stamp = pd.Timestamp(text)
    except ValueError as exc:
        raise ConfigError(f"{flag} {text!r} is not a time: give ISO 8601, e.g. 2026-12-06T08:00:00 (UTC)") from exc
    return float((stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp).timestamp())


def _key(text: str, view: FeatureView) -> tuple[Any, ...]:
    parts = text.split(",")
    if len(parts) != len(view.entities):
        raise ConfigError(f"--entity {text!r}: view {view.name!r} is keyed by {list(view.entities)}; give "
                          f"{len(view.entities)} comma-separated value(s)")
    return tuple(int(p) if p.lstrip("-").isdigit() else p for p in parts)


def _cell(value: Any) -> str:
    return "null" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cl_hpc.features", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("list", "every view of the catalog, a line each"),
                       ("describe", "one view, feature by feature"),
                       ("materialize", "compute what is new into the offline and online stores"),
                       ("get", "a view's online values for some entities"),
                       ("check", "replay the feature values servers logged against the offline store")):
        cmd = sub.add_parser(name, help=text, description=text)
        if name in ("describe", "get"):
            cmd.add_argument("view", help="the view's name (python -m cl_hpc.features list)")
        if name == "materialize":
            cmd.add_argument("views", nargs="*", help="views to materialize (default: every view)")
            cmd.add_argument("--cpus", type=int, default=None, help="dask threads (default: every core)")
        if name == "get":
            cmd.add_argument("--entity", action="append", required=True,
                             help="an entity key; several key columns: comma-separated, in the view's order")
            cmd.add_argument("--at", default=None, help="the time to read as of (default: now); ISO 8601")
        if name == "check":
            cmd.add_argument("--log-dir", default="store/predictions",
                             help="the prediction log (default: store/predictions, where a server logs)")
            cmd.add_argument("--since", default=None, help="check requests from this time on (ISO 8601, UTC)")
            cmd.add_argument("--until", default=None, help="check requests before this time (ISO 8601, UTC)")
            cmd.add_argument("--model", default=None, help="only this registry model's rows")
            cmd.add_argument("--tolerance", type=float, default=1e-9,
                             help="relative difference still counted a match (default 1e-9)")
            cmd.add_argument("--examples", type=int, default=5, help="skewed or missing values shown per feature")
        if name in ("materialize", "get", "check"):
            cmd.add_argument("--store", default="store/features", help="the feature store's folder (default: "
                             "store/features, beside the model store)")
        cmd.add_argument("--catalog", default=None, help="a folder of view files (default: the bundled conf/features)")
        cmd.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return parser


_COMMANDS: dict[str, Callable[[Catalog, argparse.Namespace], int]] = {
    "list": _list, "describe": _describe, "materialize": _materialize, "get": _get, "check": _check}

if __name__ == "__main__":
    sys.exit(main())
