"""Data: the landing zone of time-partitioned Parquet files and the windows read from it.

- ``landing``: layout, idempotent and lock-protected generation from river drift generators;
- ``partitions``: which files are partitions, their time order, footer checks of every file;
- ``windows``: train/eval window choice, validation, dask reads;
- ``simulate``: data that keeps arriving (``python -m cl_hpc.data simulate``), deliberate damage;
- ``tables``: feature tables (written by the ``features`` task) as numpy arrays.

Nothing heavy is imported here; import the submodule you need.
"""
