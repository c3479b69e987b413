"""Executors: one interface (base.Executor), backends local / inprocess, and the job-side runner.

Import a backend through ``make_executor`` so each stays out of the launcher until it is chosen.
"""

from __future__ import annotations

from cl_hpc.errors import ConfigError

TYPE_CHECKING = False  # every Slurm job imports this package: no typing at run time (cl_hpc/dag/unit_call.py)
if TYPE_CHECKING:
    from typing import Any

    from cl_hpc.execute.base import Executor

BACKENDS = ("local", "inprocess", "slurm")


def make_executor(cluster: Any) -> Executor:
    """The executor for ``cluster``: the cluster's schema dataclass (cl_hpc/config/schema.py; the
    launcher passes its resolved ``Config.cluster``), or any object with its fields (status and
    cancel rebuild one from run.json's backend)."""
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


def __getattr__(name: str) -> Any:
    # Lazy: every Slurm job imports this package for its entry (execute/slurm/job.py), and the
    # executor base and its imports would add 40 ms to each job's start.
    if name == "Executor":
        from cl_hpc.execute.base import Executor

        return Executor
    raise AttributeError(name)


__all__ = ["BACKENDS", "Executor", "make_executor"]
