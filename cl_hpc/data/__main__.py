"""`python -m cl_hpc.data simulate|check`: make data arrive in a landing zone, or check a zone's files.

simulate appends partitions of a bundled river drift stream (SEA, Agrawal: abrupt concept drift;
rotating Hyperplane: gradual drift) after the newest one. The same settings always give the same
files, and appending continues the same stream. A zone keeps the settings it was made with: on an
existing zone, give only --landing-dir and --partitions.

Examples:
  python -m cl_hpc.data simulate --landing-dir data/landing/sea --partitions 3
  python -m cl_hpc.data simulate --landing-dir /tmp/sea --generator sea --concepts 0 3 --drift-at 4 --partitions 8
  python -m cl_hpc.data simulate --landing-dir /tmp/hp --generator hyperplane --mag-change 0.01 --sigma 0.1 \\
      --partitions 6
  python -m cl_hpc.data simulate --landing-dir data/landing/sea --every 60        # one partition a minute; Ctrl-C stops
  python -m cl_hpc.data simulate --landing-dir data/landing/sea --corrupt nan-column   # a bad partition, for the gate
  python -m cl_hpc.data check --landing-dir my/partitions --timestamp-col event_time --label-col churned
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any, Callable, Iterator

import pandas as pd

from cl_hpc.config.ml import DataConf
from cl_hpc.data.landing import OnPartition, resolve_dir
from cl_hpc.data.partitions import check_partitions, list_partitions
from cl_hpc.data.simulate import (
    CORRUPTIONS,
    SIMULATED,
    GracefulStop,
    append,
    describe,
    loop,
    partitions_in,
    settings_line,
    zone_conf,
)
from cl_hpc.errors import ClHpcError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "simulate" and args.every is not None and args.corrupt:
        parser.error("--corrupt appends bad partitions once; it does not go with --every")
    try:
        return _COMMANDS[args.command](args)
    except ClHpcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Files are written atomically and the manifest last: the zone is as it was before this call,
        # and partitions already written are rewritten identically by the next one.
        print("interrupted: the zone's manifest was left as it was", file=sys.stderr)
        return 130


# --- simulate -------------------------------------------------------------------------------------


def _simulate(args: argparse.Namespace) -> int:
    conf = zone_conf(args.landing_dir, _options(args))
    print(f"{conf.landing_dir}: {settings_line(conf)}", flush=True)
    if args.every is not None:
        return _loop(conf, args)
    before = partitions_in(conf)
    with _reporter(conf, args.partitions) as report:
        new = append(conf, args.partitions, args.corrupt, on_partition=report)
    print(f"appended {_n(len(new))}: the zone holds {before} -> {partitions_in(conf)}")
    return 0


def _loop(conf: DataConf, args: argparse.Namespace) -> int:
    stop = GracefulStop()
    stop.install()
    print(f"appending {_n(args.partitions)} every {args.every:g} s; Ctrl-C stops", flush=True)
    with _reporter(conf, 0) as report:
        total = loop(conf, args.every, args.partitions, report, stop)
    print(f"stopped after appending {_n(total)}: the zone holds {partitions_in(conf)}", flush=True)
    return 0


def _n(count: int) -> str:
    return f"{count} partition{'' if count == 1 else 's'}"


@contextlib.contextmanager
def _reporter(conf: DataConf, total: int) -> Iterator[OnPartition]:
    """Print each written partition; show a progress bar on a terminal when there are several."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    show = total > 1 and sys.stderr.isatty()
    columns = (TextColumn("appending"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True, disable=not show) as progress:
        task = progress.add_task("append", total=total or None)

        def report(entry: dict[str, Any], frame: pd.DataFrame) -> None:
            print(describe(conf, entry, frame), flush=True)
            progress.advance(task)

        yield report


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """Generation settings given on the command line (None = not given)."""
    params = dict(args.param)
    for key in ("mag_change", "sigma"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    return {"generator": args.generator, "concepts": args.concepts, "drift_at": args.drift_at,
            "drift_width": args.drift_width, "seed": args.seed, "rows_per_partition": args.rows,
            "noise": args.noise, "start": args.start, "freq": args.freq, "generator_params": params or None}


# --- check ----------------------------------------------------------------------------------------


def _check(args: argparse.Namespace) -> int:
    conf = DataConf(landing_dir=args.landing_dir, generator="none", timestamp_col=args.timestamp_col,
                    label_col=args.label_col, features=list(args.features or []))
    parts = list_partitions(resolve_dir(conf.landing_dir), conf.timestamp_col)
    cols, rows = check_partitions(parts, conf)
    print(f"{resolve_dir(conf.landing_dir)}: {len(parts)} partition files, {sum(rows.values())} rows, "
          f"starting {parts[0].start} .. {parts[-1].start}")
    print("columns: " + ", ".join(f"{n} ({cols.types[n]})" for n in cols.names)
          + f"; label {cols.label!r}, time {cols.timestamp!r}")
    return 0


# --- arguments ------------------------------------------------------------------------------------


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{text} must be > 0")
        return value
    return parse


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE, e.g. n_features=10")
    try:
        return key, json.loads(raw)
    except ValueError:
        return key, raw  # a plain string


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cl_hpc.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{simulate,check}")
    _simulate_args(sub.add_parser("simulate", help="append partitions of a drift stream to a landing zone",
                                  description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    check = sub.add_parser("check", help="list a zone's partition files in time order and check their columns")
    check.add_argument("--landing-dir", required=True, metavar="DIR", help="folder of *.parquet partition files")
    check.add_argument("--timestamp-col", default="ts", help="event-time column (default: ts)")
    check.add_argument("--label-col", default="y", help="label column (default: y)")
    check.add_argument("--features", nargs="+", help="feature columns (default: every other column)")
    return parser


def _simulate_args(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--landing-dir", required=True, metavar="DIR", help="the landing zone (created if absent)")
    cmd.add_argument("--generator", choices=SIMULATED, help="river stream of a new zone (default: sea)")
    cmd.add_argument("--partitions", type=_positive(int), default=1, metavar="N",
                     help="partitions to append after the newest (with --every: per interval; default: 1)")
    cmd.add_argument("--every", type=_positive(float), metavar="SECONDS",
                     help="keep appending, once every SECONDS, until Ctrl-C or SIGTERM")
    cmd.add_argument("--corrupt", choices=list(CORRUPTIONS),
                     help="damage the appended partitions: a column of NaN, every label one class, or text in a "
                          "numeric column (for tests and the gate's demo)")
    drift = cmd.add_argument_group("settings of a new zone (an existing zone keeps its own)")
    drift.add_argument("--concepts", type=int, nargs="+", metavar="K",
                       help="concept per segment: SEA variant (0-3), Agrawal function (0-9), Hyperplane seed offset")
    drift.add_argument("--drift-at", type=int, nargs="*", metavar="P",
                       help="partition where each later concept starts (abrupt drift); none: no drift")
    drift.add_argument("--drift-width", type=_positive(int), metavar="ROWS",
                       help="rows over which a drift blends in (river ConceptDriftStream width)")
    drift.add_argument("--mag-change", type=float, metavar="M",
                       help="Hyperplane: weight change per row (gradual drift)")
    drift.add_argument("--sigma", type=float, metavar="S",
                       help="Hyperplane: chance per row that a drift reverses direction")
    drift.add_argument("--param", type=_key_value, action="append", default=[], metavar="KEY=VALUE",
                       help="another keyword of the river generator, e.g. n_features=10 (repeatable)")
    drift.add_argument("--seed", type=int, metavar="N", help="stream seed (default: 42)")
    drift.add_argument("--rows", type=_positive(int), metavar="N", help="rows per partition (default: 2000)")
    drift.add_argument("--noise", type=float, metavar="X",
                       help="label noise (SEA, Hyperplane) or perturbation (Agrawal)")
    drift.add_argument("--start", metavar="TIME", help="time of the first partition (default: 2026-01-01T00:00:00)")
    drift.add_argument("--freq", metavar="SPAN", help="time span of a partition, e.g. 1h, 15min (default: 1h)")


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {"simulate": _simulate, "check": _check}

if __name__ == "__main__":
    sys.exit(main())
