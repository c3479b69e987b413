"""The SQLite store: an index over run directories (db.py) and how it is filled from them (sync.py)."""

from cl_hpc.store.db import DB_NAME, MIGRATIONS, Store
from cl_hpc.store.sync import rebuild, run_state, sync_run, sync_unit

__all__ = ["DB_NAME", "MIGRATIONS", "Store", "rebuild", "run_state", "sync_run", "sync_unit"]
