"""cl_hpc: keep ML models fresh on Slurm clusters."""

__version__ = "0.1.0"
