"""What code and which dependencies made a model: the git state of a checkout and package versions.

Both are best effort: a model trained outside a git checkout, or without git installed, records
None rather than failing its registration.
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path

# Distribution names whose versions change what a checkpoint means or how it loads.
KEY_PACKAGES = ("torch", "pytorch-lightning", "lightning", "numpy", "pandas", "river", "scikit-learn", "cl_hpc")


def git_state(workdir: Path, timeout_s: float = 5.0) -> tuple[str | None, bool | None]:
    """(HEAD commit, whether the working tree differs from it); (None, None) outside a checkout."""
    head = _git(workdir, ["rev-parse", "HEAD"], timeout_s)
    if head is None:
        return None, None
    porcelain = _git(workdir, ["status", "--porcelain"], timeout_s)
    return head.strip(), None if porcelain is None else bool(porcelain.strip())


def _git(workdir: Path, args: list[str], timeout_s: float) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(workdir), *args], capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired):  # no git binary, or a hung network filesystem
        return None
    return proc.stdout if proc.returncode == 0 else None


def python_version() -> str:
    return platform.python_version()


def package_versions(names: tuple[str, ...] = KEY_PACKAGES) -> dict[str, str]:
    """Installed versions of ``names``; packages that are not installed are left out."""
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    if "cl_hpc" in names and "cl_hpc" not in found:  # run from a checkout on PYTHONPATH, not installed
        import cl_hpc
        found["cl_hpc"] = cl_hpc.__version__
    return found
