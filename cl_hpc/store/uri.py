"""SQLite URIs for paths: the one way the project opens a database read-only.

A path pasted raw into ``file:{path}?mode=ro`` breaks on a ``?`` or ``#`` in it (SQLite reads the
rest as the query or fragment and opens another file, creating it empty) and on ``%`` (read as an
escape). ``Path.as_uri`` percent-encodes every such character, and SQLite decodes them.
"""

from __future__ import annotations

from pathlib import Path


def sqlite_uri(path: Path | str, mode: str = "ro") -> str:
    """``file:///abs/path?mode=ro`` for ``sqlite3.connect(..., uri=True)``, whatever the path holds."""
    return f"{Path(path).absolute().as_uri()}?mode={mode}"
