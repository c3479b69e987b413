"""cluster=slurm: the whole DAG handed to Slurm, chained by its own dependencies."""
