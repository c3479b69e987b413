"""`python -m cl_hpc.cancel [RUN]`: stop a run; every unfinished unit ends CANCELLED."""

from __future__ import annotations

import sys

from cl_hpc.cli import run_parser
from cl_hpc.errors import ClHpcError
from cl_hpc.execute import make_executor
from cl_hpc.rundir.layout import resolve_run
from cl_hpc.status import _Backend


def main(argv: list[str] | None = None) -> int:
    parser = run_parser("python -m cl_hpc.cancel", __doc__)
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
