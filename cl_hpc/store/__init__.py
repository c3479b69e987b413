"""The SQLite store: an index over run directories (db.py) and how it is filled from them (sync.py)."""
