"""A user's own workload, outside cl_hpc: see my_models/churn.py and cl_hpc's README (Bring your own model)."""
