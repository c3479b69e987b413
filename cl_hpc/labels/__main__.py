"""`python -m cl_hpc.labels join|accuracy [--json] [KEY=VALUE ...]`: the label join, and the served accuracy.

join: joins the prediction log's predictions with the outcomes that arrived within a waiting window
and appends the labelled partitions to a landing zone the continual pipeline reads (data.landing_dir
= out_dir). A partition is written once, when it is mature (its span + window lies before now);
rerunning adds nothing twice, so run it from cron or scrontab as often as you like. The same join
runs as a pipeline task: `python -m cl_hpc.launch pipeline=labels labels.log_dir=... labels.out_dir=...`.

accuracy: per served version, how often the answer it gave (`_output.<name>`) equalled the label.

Settings are KEY=VALUE (or labels.KEY=VALUE), typed and documented in cl_hpc/config/labels.py:

    python -m cl_hpc.labels join log_dir=store/predictions out_dir=data/landing/served window=30min
    python -m cl_hpc.labels join log_dir=logs out_dir=zone missing=default default_label=0 --json
    python -m cl_hpc.labels join log_dir=logs out_dir=zone now=2026-12-05T12:00:00     # a backtest's clock
    python -m cl_hpc.labels accuracy out_dir=data/landing/served

Exit code: 0 after a run (whether it wrote anything or not); 2 on bad input (settings, log, zone),
with nothing written.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Sequence

from cl_hpc.config.labels import LabelsConf
from cl_hpc.errors import ClHpcError, ConfigError
from cl_hpc.ui import make_console

PREFIX = "labels."


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)  # KEY=VALUE may come after an option, e.g. join --json k=v
    flags = [r for r in rest if r.startswith("-")]
    if flags:
        parser.error(f"unrecognized arguments: {' '.join(flags)}")
    args.overrides += rest
    try:
        settings = overrides_to_dict(args.overrides)
        return _COMMANDS[args.command](settings, args)
    except ClHpcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def overrides_to_dict(overrides: Sequence[str]) -> dict[str, Any]:
    """KEY=VALUE overrides merged into LabelsConf with OmegaConf, which types the values as the
    launcher's Hydra overrides are typed (window=30min is a string, default_label=0 an int)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from cl_hpc.config.compose import explain

    bad = [o for o in overrides if "=" not in o or not o.split("=", 1)[0]]
    if bad:
        raise ConfigError(f"{bad[0]!r} is not KEY=VALUE, e.g. window=30min (the keys: cl_hpc/config/labels.py)")
    dotlist = [o[len(PREFIX):] if o.startswith(PREFIX) else o for o in overrides]
    try:
        merged = OmegaConf.merge(OmegaConf.structured(LabelsConf), OmegaConf.from_dotlist(dotlist))
        return dict(OmegaConf.to_container(merged, resolve=True))  # type: ignore[arg-type]
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{explain(exc, dotlist)}\nthe keys and their types are in cl_hpc/config/labels.py") from exc


def _join(settings: dict[str, Any], args: argparse.Namespace) -> int:
    from cl_hpc.labels.join import join
    from cl_hpc.labels.report import summary_table

    report = join(settings)
    if args.json:
        print(json.dumps(report.to_json(), indent=1))
    else:
        make_console().print(summary_table(report))
    return 0


def _accuracy(settings: dict[str, Any], args: argparse.Namespace) -> int:
    from rich.table import Table

    from cl_hpc.labels.accuracy import served_accuracy

    table = served_accuracy(settings["out_dir"], settings["label_col"], args.output)
    if args.json:
        print(json.dumps(table.to_dict(orient="records"), indent=1))
        return 0
    view = Table(title=f"served accuracy · {settings['out_dir']} · _output.{args.output} vs {settings['label_col']}",
                 title_justify="left")
    for column in table.columns:
        view.add_column(str(column), justify="left" if column == "version" else "right")
    for row in table.itertuples(index=False):
        view.add_row(str(row.version), str(row.rows), str(row.correct), f"{row.accuracy:.3f}")
    make_console().print(view if len(table) else "no labelled rows with a served answer yet")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cl_hpc.labels", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("join", "join predictions with their outcomes; append the mature partitions"),
                       ("accuracy", "accuracy of the served answers per version, from the labelled zone")):
        cmd = sub.add_parser(name, help=text, description=text)
        cmd.add_argument("--json", action="store_true", help="print JSON instead of a table")
        cmd.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="settings (cl_hpc/config/labels.py)")
        if name == "accuracy":
            cmd.add_argument("--output", default="class", help="the logged output compared (default: class)")
    return parser


_COMMANDS: dict[str, Callable[[dict[str, Any], argparse.Namespace], int]] = {"join": _join, "accuracy": _accuracy}

if __name__ == "__main__":
    sys.exit(main())
