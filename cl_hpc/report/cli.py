"""`python -m cl_hpc.report efficiency|html ...`: the report named first.

    python -m cl_hpc.report efficiency [RUN]            a terminal table: used vs requested, the next run's sizes
    python -m cl_hpc.report html [RUN]                  a run's page: DAG, Gantt, profiles, efficiency, failures
    python -m cl_hpc.report html --model NAME           a model's page: lineage, aliases, metrics, triggers
                                 [--backtest DIR]       ... with a backtest's freshness curve
    python -m cl_hpc.report html --experiment ID        an experiment's page: traffic, intervals, ramp, decisions

``html`` writes one self-contained file (inline SVG and CSS, nothing loaded from anywhere) and prints its
path: a run's into its run directory (report.html), a model's or an experiment's under
<store.root>/reports/ (model-NAME.html, experiment-ID.html); --out puts it elsewhere. A run or an
experiment still going gets a page of what is known, which says so. The model page reads the registry
under --store-root (default: store), the watch log under --run-root (or --watch-log) and the backtest
that --backtest names; the experiment page the experiment store, the prediction log (--log-dir, default
<store.root>/predictions) and the joined labels (--labels, repeatable; default: data/landing/served
where it exists, the label join's labels.out_dir). Exit code 0, or 2 with the reason
(an unknown run, model or experiment).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from cl_hpc.cli import run_parser
from cl_hpc.errors import ClHpcError
from cl_hpc.ui import make_console

RUN_PAGE = "report.html"


def html_main(argv: Sequence[str]) -> int:
    parser = run_parser("python -m cl_hpc.report html", __doc__)
    parser.add_argument("--store-root", type=Path, default=None,
                        help="the store holding profiles, the registry and experiments (default: the run's, or store)")
    parser.add_argument("--out", type=Path, default=None, help="write the page here instead")
    parser.add_argument("--model", default=None, help="a registry model's page instead of a run's")
    parser.add_argument("--backtest", type=Path, default=None,
                        help="with --model: a python -m cl_hpc.backtest --out folder (or its backtest.json)")
    parser.add_argument("--watch-log", type=Path, default=None,
                        help="with --model: the watch's log (default: <run-root>/watch.log.jsonl)")
    parser.add_argument("--experiment", type=int, default=None, help="an experiment's page (its id) instead")
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="with --experiment: the prediction log (default: <store-root>/predictions)")
    parser.add_argument("--labels", type=Path, action="append", default=None,
                        help="with --experiment: a labelled zone of the label join (repeatable)")
    args = parser.parse_args(list(argv))
    if args.model is None and (args.backtest or args.watch_log):
        parser.error("--backtest and --watch-log go with --model NAME")
    if args.experiment is None and (args.log_dir or args.labels):
        parser.error("--log-dir and --labels go with --experiment ID")
    chosen = [what for what, given in (("a run", args.run), ("--model", args.model is not None),
                                        ("--experiment", args.experiment is not None)) if given]
    if len(chosen) > 1:
        parser.error(f"give one page at a time: {' and '.join(chosen)} were given")
    console = make_console()
    try:
        started = time.perf_counter()
        page = _model_page if args.model is not None else _experiment_page if args.experiment is not None else _run_page
        path, note = page(args)
    except ClHpcError as exc:
        console.print(f"error: {exc}", style="red", highlight=False)
        return 2
    print(path)
    size = path.stat().st_size
    print(f"{note}; {size / 1e6:.2f} MB in {time.perf_counter() - started:.2f} s", file=sys.stderr)
    return 0


def _run_page(args: Any) -> tuple[Path, str]:
    from cl_hpc.report.pages import render_run, write_page
    from cl_hpc.report.run_data import run_report
    from cl_hpc.rundir.layout import resolve_run

    run = resolve_run(args.run_root, args.run)
    report = run_report(run, args.store_root)
    path = write_page(args.out or run.path / RUN_PAGE, render_run(report))
    state = report.state if report.finished else f"{report.state}, still going"
    return path, f"run {report.run_id} ({state}): {len(report.attempts)} attempts"


def _model_page(args: Any) -> tuple[Path, str]:
    from cl_hpc.report.model_page import model_report, render_model
    from cl_hpc.report.pages import write_page

    store = (args.store_root or Path("store")).expanduser().resolve()
    report = model_report(store, args.model, args.run_root, args.backtest, watch_log=args.watch_log)
    path = write_page(args.out or store / "reports" / f"model-{args.model}.html", render_model(report))
    return path, f"model {args.model}: {len(report.versions)} versions"


DEFAULT_LABELS = (Path("data/landing/served"),)  # where the label join writes by default (labels.out_dir)


def _experiment_page(args: Any) -> tuple[Path, str]:
    from cl_hpc.report.experiment_page import experiment_report, render_experiment
    from cl_hpc.report.pages import write_page

    store = (args.store_root or Path("store")).expanduser().resolve()
    labels = args.labels or [d for d in DEFAULT_LABELS if d.is_dir()]
    report = experiment_report(store, args.experiment, args.log_dir, [d.expanduser().resolve() for d in labels])
    path = write_page(args.out or store / "reports" / f"experiment-{args.experiment}.html", render_experiment(report))
    return path, f"experiment {args.experiment} ({report.state})"


def _efficiency(argv: Sequence[str]) -> int:
    from cl_hpc.report.efficiency import main

    return main(list(argv))


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {"efficiency": _efficiency, "html": html_main}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        if argv[:1] in (["-h"], ["--help"]):
            print(__doc__)
            return 0
        got = f" (got {argv[0]!r})" if argv else ""
        print(f"error: name the report first: {' | '.join(COMMANDS)}{got}", file=sys.stderr)
        print(__doc__, file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:])
