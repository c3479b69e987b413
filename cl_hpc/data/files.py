"""File helpers with no heavy imports: checksums and staged folder publishing."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path
from typing import Iterator


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def staging_dir(path: Path) -> Iterator[Path]:
    """An empty folder for outputs in the making, removed again if anything fails inside."""
    shutil.rmtree(path, ignore_errors=True)  # a killed earlier attempt may have left one behind
    path.mkdir(parents=True)
    try:
        yield path
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise


def publish(staging: Path, target_dir: Path, names: list[str]) -> dict[str, Path]:
    """Move finished outputs out of ``staging`` into ``target_dir``, replacing an earlier attempt's."""
    placed = {}
    for name in names:
        target = target_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(staging / name, target)
        placed[name] = target
    shutil.rmtree(staging, ignore_errors=True)
    return placed
