"""`python -m cl_hpc.features list|describe [VIEW] [--catalog DIR] [--json]`: the feature catalog.

list: every view of the catalog, a line each: its version and digest, entities, feature count, TTL,
owner and tags. describe VIEW: the whole documented view, feature by feature.

The catalog is a folder of view files (default: the bundled conf/features/, see
cl_hpc/features/definitions.py for every key). Exit code: 0, or 2 on a bad catalog, with the reason.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Sequence

from cl_hpc.errors import ClHpcError
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cl_hpc.features", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("list", "every view of the catalog, a line each"),
                       ("describe", "one view, feature by feature")):
        cmd = sub.add_parser(name, help=text, description=text)
        if name == "describe":
            cmd.add_argument("view", help="the view's name (python -m cl_hpc.features list)")
        cmd.add_argument("--catalog", default=None, help="a folder of view files (default: the bundled conf/features)")
        cmd.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return parser


_COMMANDS: dict[str, Callable[[Catalog, argparse.Namespace], int]] = {"list": _list, "describe": _describe}

if __name__ == "__main__":
    sys.exit(main())
