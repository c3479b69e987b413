"""`python -m cl_hpc.cancel [RUN]`: stop a run; every unfinished unit ends CANCELLED."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cl_hpc.errors import ClHpcError
from cl_hpc.execute import make_executor
from cl_hpc.rundir.layout import resolve_run
from cl_hpc.status import _Backend


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cl_hpc.cancel", description=__doc__)
    parser.add_argument("run", nargs="?", help="run id, id prefix, or path (default: the newest run)")
    parser.add_argument("--run-root", type=Path, default=Path("runs"))
    args = parser.parse_args(argv)
    try:
        run = resolve_run(args.run_root, args.run)
        make_executor(_Backend(run.meta().get("backend", "local"))).cancel(run)
    except ClHpcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"cancel requested for run {run.run_id}; check with: python -m cl_hpc.status {run.run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
