"""Executors: one interface (base.Executor), backends local / inprocess, and the job-side runner.

Import a backend through ``make_executor`` so each stays out of the launcher until it is chosen.
"""

from __future__ import annotations

from typing import Any

from cl_hpc.errors import ConfigError
from cl_hpc.execute.base import Executor

BACKENDS = ("local", "inprocess", "slurm")


def make_executor(cluster: Any) -> Executor:
    mode = getattr(cluster, "mode", None)
    if mode == "local":
        from cl_hpc.execute.local import LocalExecutor

        return LocalExecutor(cluster)
    if mode == "inprocess":
        from cl_hpc.execute.inprocess import InProcessExecutor

        return InProcessExecutor(cluster)
    if mode == "slurm":
        from cl_hpc.execute.slurm.executor import SlurmExecutor

        return SlurmExecutor(cluster)
    raise ConfigError(f"cluster.mode={mode!r} is not a known backend; valid: {', '.join(BACKENDS)} (conf/cluster/)")


__all__ = ["BACKENDS", "Executor", "make_executor"]
