"""`python -m cl_hpc.report efficiency|html ...` (cl_hpc/report/cli.py)."""

import sys

from cl_hpc.report.cli import main

if __name__ == "__main__":
    sys.exit(main())
