"""Data: the landing zone of time-partitioned Parquet files and the windows read from it.

- ``landing``: layout, idempotent and lock-protected generation from river drift generators;
- ``windows``: partitions in time order, train/eval window choice, validation, dask reads;
- ``tables``: feature tables (written by the ``features`` task) as numpy arrays.

Nothing heavy is imported here; import the submodule you need.
"""
