"""`python -m cl_hpc.report efficiency|html ...`: the report named first (see cl_hpc/report/__init__.py)."""

import sys

from cl_hpc.report.efficiency import main

if __name__ == "__main__":
    sys.exit(main())
