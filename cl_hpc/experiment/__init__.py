"""`python -m cl_hpc.experiment`: start, list and stop experiments (testing in production)."""
