"""Joining logged predictions with late outcomes into labelled partitions (``python -m cl_hpc.labels``).

- :func:`cl_hpc.labels.join.join`: one run of the label join (config: cl_hpc/config/labels.py);
- :func:`cl_hpc.labels.accuracy.served_accuracy`: per served version, how often its answer matched the label.
"""
