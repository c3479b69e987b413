"""Every test in tests/slurm is marked `slurm`, so it gets the `slurm_cluster` fixture from
tests/conftest.py: it skips on a laptop without the cluster and fails under CI=true, where the
cluster is part of the job and a skip would hide it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/slurm as `slurm`, even if a file forgets."""
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.slurm)
