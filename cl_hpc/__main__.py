"""`python -m cl_hpc` is `python -m cl_hpc.launch`."""

from cl_hpc.launch import main

main()
