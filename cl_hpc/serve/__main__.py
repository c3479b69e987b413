"""`python -m cl_hpc.serve [status | loadgen] [options] [hydra overrides]`: serve the registry's model.

    python -m cl_hpc.serve                                  # the only registered model's champion, port 8000
    python -m cl_hpc.serve serve.model=continual serve.port=0 store.root=/shared/store
    python -m cl_hpc.serve status                           # the live servers of this store (discovery files)
    python -m cl_hpc.serve loadgen --requests 2000 --outcome-delay 2s   # replay the landing zone as traffic

Serving binds ``serve.host`` (127.0.0.1 by default) and prints its URL; ``/docs`` lists the
endpoints. SIGTERM or Ctrl-C drains the requests in flight, flushes the prediction log and exits 0.
Every other argument is a Hydra override of the config the launcher composes (cl_hpc/config/,
conf/serve/default.yaml).

Exit code: 0 after a clean stop (or a listing / load run); 2 on bad input, nothing started.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from cl_hpc.errors import ClHpcError

COMMANDS = ("serve", "status", "loadgen")
WHERE = "The serve keys are in cl_hpc/config/serving.py (values: conf/serve/default.yaml)."


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    argv = list(argv)
    command = argv.pop(0) if argv and argv[0] in COMMANDS else "serve"
    parser = argparse.ArgumentParser(prog=f"python -m cl_hpc.serve{'' if command == 'serve' else ' ' + command}",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    if command == "status":
        parser.add_argument("--json", action="store_true", help="one JSON object per server")
        parser.add_argument("--prune", action="store_true", help="delete the files of servers that do not answer")
    if command == "loadgen":
        from cl_hpc.serve.loadgen import add_arguments

        add_arguments(parser)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. store.root=/shared/store serve.port=0")
    args, unknown = parser.parse_known_intermixed_args(argv)
    if unknown:
        parser.error(f"unrecognized arguments {unknown}; the options are listed above, everything else is a "
                     f"Hydra override (key=value)")
    args.command = command
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "serve":  # before the config and its imports: a signal now must not kill the job
        from cl_hpc.serve.run import catch_early

        catch_early()
    try:
        from cl_hpc.config.compose import compose_config

        cfg = compose_config(args.overrides, WHERE)
        if args.command == "status":
            return status(cfg, args)
        if args.command == "loadgen":
            from cl_hpc.serve.loadgen import run_loadgen

            return run_loadgen(cfg, args)
        from cl_hpc.serve.run import serve

        return serve(cfg)
    except ClHpcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def status(cfg: Any, args: argparse.Namespace) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from cl_hpc.serve import discovery

    store_root = Path(str(cfg.store.root)).expanduser().resolve()
    rows = []
    for path, record in discovery.listed(store_root):
        found = discovery.probe(record)
        if args.prune and not found["reachable"]:
            discovery.withdraw(path)
        rows.append({**record.__dict__, **found, "file": str(path)})
    if args.json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
        return 0
    console = Console(markup=False)
    if not rows:
        console.print(f"no servers in {store_root / discovery.SERVERS_DIR}; start one with python -m cl_hpc.serve")
        return 0
    table = Table("url", "model", "alias", "serving", "ready", "job", "host", "pid", "note")
    for row in rows:
        note = "" if row["reachable"] and row["ready"] else row["reason"][:80]
        if args.prune and not row["reachable"]:
            note = f"pruned: {note}"
        table.add_row(row["url"], row["model"] or "(only)", row["alias"], row["serving"] or "-",
                      "yes" if row["ready"] else ("no" if row["reachable"] else "unreachable"), row["job_id"] or "-",
                      row["hostname"], str(row["pid"]), note)
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
