"""`python -m cl_hpc.store rebuild|backup`: re-index run dirs into SQLite, or copy the store safely.

    python -m cl_hpc.store rebuild [--run-root runs] [--store-root store]
    python -m cl_hpc.store backup DEST [--keep N] [--store-root store]   # DEST: a file, or a directory/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cl_hpc.errors import ClHpcError
from cl_hpc.store.db import DB_NAME


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cl_hpc.store", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("rebuild", help="drop and re-index every run found under --run-root "
                                         "(the registry's tables are kept)")
    cmd.add_argument("--run-root", default="runs", type=Path)
    cmd.add_argument("--store-root", default="store", type=Path)
    cmd = sub.add_parser("backup", help="a consistent copy of the store, safe while others write to it "
                                        "(the registry cannot be rebuilt from run dirs: back it up)")
    cmd.add_argument("dest", help="the copy's path; a directory (or a path ending in /) gets "
                                             "cl_hpc-<UTC time>.db; an existing file is never replaced")
    cmd.add_argument("--keep", type=int, metavar="N", help="with a directory: then remove all but the "
                                                          "newest N time-stamped copies in it")
    cmd.add_argument("--store-root", default="store", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "backup":
            return _backup(args.store_root, args.dest, args.keep)
        return _rebuild(args.run_root, args.store_root)
    except ClHpcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _rebuild(run_root: Path, store_root: Path) -> int:
    from cl_hpc.store.db import Store
    from cl_hpc.store.sync import rebuild

    with Store(store_root) as store:
        count = rebuild(store, run_root)
    print(f"indexed {count} runs from {run_root} into {store.path}")
    return 0


def _backup(store_root: Path, dest: str, keep: int | None) -> int:
    from cl_hpc.store.backup import backup

    result = backup(store_root / DB_NAME, dest, keep=keep)
    counts = ", ".join(f"{n} {table}" for table, n in result.rows.items())
    print(f"backed up {store_root / DB_NAME} to {result.path} ({result.size_bytes / 1e6:.2f} MB, "
          f"schema v{result.schema_version}: {counts})")
    if result.pruned:
        print(f"removed {len(result.pruned)} older copies (--keep {keep}): {', '.join(p.name for p in result.pruned)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
