"""Fixtures for the tests against the local Slurm cluster.

Every test in tests/slurm needs the single-node cluster that
scripts/slurm-local-up.sh starts. Without it they skip on a laptop, but fail
under CI=true: there the cluster is part of the job and a skip would hide it,
so under CI=true any skip in tests/slurm is reported as a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

_HERE = Path(__file__).resolve().parent
_UP_HINT = "start it with: sudo scripts/slurm-local-up.sh (logs: /var/log/slurm-local/)"
# A node in these states can take a job now; "mixed" means other jobs run too.
_READY_STATES = {"idle", "mixed"}


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def _find_ready_node() -> tuple[str | None, str]:
    """Return (node name, "") for a ready node, else (None, why not)."""
    if shutil.which("sinfo") is None:
        return None, "sinfo is not installed"
    try:
        proc = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N %T"],
            capture_output=True, text=True, timeout=15, check=False,
        )
    except subprocess.TimeoutExpired:
        return None, "sinfo did not answer within 15 s"
    if proc.returncode != 0:
        return None, f"sinfo failed: {proc.stderr.strip()}"
    for line in proc.stdout.splitlines():
        name, _, state = line.partition(" ")
        if state.strip() in _READY_STATES:
            return name, ""
    return None, f"no idle node in sinfo output {proc.stdout.strip()!r}"


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """Name of the local cluster's idle node; skip (or fail under CI) without it."""
    node, why = _find_ready_node()
    if node is None:
        message = f"local Slurm cluster not available: {why}; {_UP_HINT}"
        if _in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return node


@pytest.fixture(autouse=True)
def _needs_slurm_cluster(slurm_cluster: str) -> None:
    """Apply slurm_cluster to every test in tests/slurm."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/slurm as `slurm`, even if a file forgets."""
    for item in items:
        if _HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.slurm)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[None]:
    """Under CI=true, report a skipped Slurm test as failed (this conftest's
    runtest hooks only see items under tests/slurm)."""
    report: pytest.TestReport = yield
    if report.skipped and not hasattr(report, "wasxfail") and _in_ci():
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        report.outcome = "failed"
        report.longrepr = f"Slurm tests must run under CI=true, but this one skipped: {reason}"
    return report
