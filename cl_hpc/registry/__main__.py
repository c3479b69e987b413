"""`python -m cl_hpc.registry list|show|promote|rollback|tag|diff|history`: the model registry.

Examples:
  python -m cl_hpc.registry list --name retrain
  python -m cl_hpc.registry show champion
  python -m cl_hpc.registry promote 2.3 --alias champion --reason "beats 2.2 on last week's window"
  python -m cl_hpc.registry rollback --reason "accuracy dropped in production"
  python -m cl_hpc.registry diff 2.2 2.3
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from cl_hpc.errors import ClHpcError
from cl_hpc.registry.diff import diff_versions
from cl_hpc.registry.store import UNCHECKED, ModelRegistry
from cl_hpc.registry.versions import RegistryError
from cl_hpc.registry.view import event_line, events_table, print_diff, version_table, versions_table
from cl_hpc.store.db import DB_NAME
from cl_hpc.ui import make_console


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        db = Path(args.store_root) / DB_NAME
        if not db.is_file():
            raise RegistryError(f"no store at {db}: pass --store-root (it is created by the first run or registration)")
        with ModelRegistry.open(args.store_root) as registry:
            return int(_COMMANDS[args.command](registry, args) or 0)
    except ClHpcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    # --store-root/--name go before or after the command; SUPPRESS keeps a subcommand's unset copy
    # from overwriting the value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--store-root", default=argparse.SUPPRESS, help="folder of cl_hpc.db (default: store)")
    common.add_argument("--name", default=argparse.SUPPRESS, help="model name (default: the only one registered)")
    parser = argparse.ArgumentParser(prog="python -m cl_hpc.registry", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store-root", default="store", help="folder of cl_hpc.db (default: store)")
    parser.add_argument("--name", default=None, help="model name (default: the only one registered)")
    sub = parser.add_subparsers(dest="command", required=True)
    _add(sub, common, "list", "versions with aliases, metrics, created", json_flag=True)
    _add(sub, common, "show", "every field of one version", json_flag=True).add_argument("ref", help="X.Y or alias")
    promote = _add(sub, common, "promote", "point an alias at a verified version")
    promote.add_argument("ref", help="X.Y (or an alias, e.g. challenger)")
    promote.add_argument("--expect", default=None, metavar="X.Y",
                         help="move only if the alias still points at X.Y (what you compared against)")
    _alias_args(promote)
    rollback = _add(sub, common, "rollback", "undo the alias's latest change, or move it --to a version")
    rollback.add_argument("--to", default=None, help="X.Y to point at (default: undo the latest change)")
    _alias_args(rollback)
    tag = _add(sub, common, "tag", "add tags to a version")
    tag.add_argument("ref", help="X.Y or alias")
    tag.add_argument("tags", nargs="+")
    diff = _add(sub, common, "diff", "config, metrics, window, code and dependency differences", json_flag=True)
    diff.add_argument("a", help="X.Y or alias")
    diff.add_argument("b", help="X.Y or alias")
    _add(sub, common, "history", "the append-only alias log", json_flag=True).add_argument(
        "--alias", default=None, help="one alias only")
    return parser


def _add(sub: Any, common: argparse.ArgumentParser, name: str, help_text: str,
         json_flag: bool = False) -> argparse.ArgumentParser:
    cmd = sub.add_parser(name, help=help_text, parents=[common])
    if json_flag:
        cmd.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return cmd


def _alias_args(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument("--alias", default="champion", help="alias to move (default: champion)")
    cmd.add_argument("--reason", required=True, help="why; kept in the alias log")
    cmd.add_argument("--actor", default=None, help="who (default: user@host)")


def _model(registry: ModelRegistry, name: str | None) -> str:
    if name:
        return name
    names = registry.names()
    if len(names) == 1:
        return names[0]
    if not names:
        raise RegistryError(f"no model is registered in {registry.store.path}")
    raise RegistryError(f"{len(names)} models are registered ({', '.join(names)}): pass --name")


def _list(registry: ModelRegistry, args: argparse.Namespace) -> None:
    names = [registry.require_model(args.name)] if args.name else registry.names()
    if args.json:
        print(json.dumps({n: {"aliases": {a: str(v) for a, v in registry.aliases(n).items()},
                              "versions": [r.to_json() for r in registry.versions(n)]} for n in names}, indent=1))
        return
    console = make_console()
    for name in names:
        console.print(versions_table(name, registry.versions(name), registry.aliases(name)))
    if not names:
        console.print(f"no model is registered in {registry.store.path}")


def _show(registry: ModelRegistry, args: argparse.Namespace) -> None:
    name = _model(registry, args.name)
    record = registry.get(name, args.ref)
    if args.json:
        aliases = [a for a, v in registry.aliases(name).items() if v == record.version]
        print(json.dumps({**record.to_json(), "aliases": aliases}, indent=1))
        return
    make_console().print(version_table(record, registry.aliases(name), registry.events(name)))


def _promote(registry: ModelRegistry, args: argparse.Namespace) -> None:
    name = _model(registry, args.name)
    expect = UNCHECKED if args.expect is None else args.expect
    event = registry.promote(name, args.ref, args.alias, reason=args.reason, actor=args.actor, expect=expect)
    if event is None:
        print(f"{args.alias} of {name} already points at {registry.resolve(name, args.alias)}; nothing changed")
    else:
        print(f"{name}: {event_line(event)} (event #{event.id})")


def _rollback(registry: ModelRegistry, args: argparse.Namespace) -> None:
    name = _model(registry, args.name)
    event = registry.rollback(name, args.alias, to=args.to, reason=args.reason, actor=args.actor)
    print(f"{name}: {event_line(event)} (event #{event.id})")


def _tag(registry: ModelRegistry, args: argparse.Namespace) -> None:
    name = _model(registry, args.name)
    record = registry.tag(name, args.ref, args.tags)
    print(f"{record.label} tags: {', '.join(record.tags)}")


def _diff(registry: ModelRegistry, args: argparse.Namespace) -> None:
    name = _model(registry, args.name)
    diff = diff_versions(registry.get(name, args.a), registry.get(name, args.b))
    if args.json:
        print(json.dumps(diff, indent=1))
    else:
        print_diff(make_console(), diff)


def _history(registry: ModelRegistry, args: argparse.Namespace) -> None:
    name = _model(registry, args.name)
    if args.alias and args.alias not in registry.aliases(name):
        registry.resolve(name, args.alias)  # raises, listing the aliases that exist
    events = registry.events(name, args.alias)
    if args.json:
        print(json.dumps([e.to_json() for e in events], indent=1))
    else:
        make_console().print(events_table(name, events))


_COMMANDS: dict[str, Callable[[ModelRegistry, argparse.Namespace], None]] = {
    "list": _list, "show": _show, "promote": _promote, "rollback": _rollback, "tag": _tag, "diff": _diff,
    "history": _history,
}


if __name__ == "__main__":
    sys.exit(main())
