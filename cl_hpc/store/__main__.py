"""`python -m cl_hpc.store rebuild [--run-root runs] [--store-root store]`: re-index run dirs into SQLite."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cl_hpc.errors import ClHpcError
from cl_hpc.store.db import Store
from cl_hpc.store.sync import rebuild


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cl_hpc.store", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("rebuild", help="drop and re-index every run found under --run-root")
    cmd.add_argument("--run-root", default="runs", type=Path)
    cmd.add_argument("--store-root", default="store", type=Path)
    args = parser.parse_args(argv)
    try:
        with Store(args.store_root) as store:
            count = rebuild(store, args.run_root)
    except ClHpcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"indexed {count} runs from {args.run_root} into {store.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
