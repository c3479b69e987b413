"""What the run-reading commands (status, cancel, report) share on their command line."""

from __future__ import annotations

import argparse
from pathlib import Path


def run_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """A parser with the positional RUN and ``--run-root``, as every command that reads a run takes them."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", nargs="?", help="run id, id prefix, or path (default: the newest run)")
    parser.add_argument("--run-root", type=Path, default=Path("runs"), help="where run directories are (default: runs)")
    return parser
