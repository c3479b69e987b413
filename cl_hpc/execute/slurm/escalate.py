"""How a retried task asks for more: pure, so every rule is tested on a table of cases.

Out of memory: the new request is the larger of the old request and the peak sacct measured
(MaxRSS), times a margin. Without cgroups the job is killed about when it crosses its limit, so the
measured peak is a lower bound of the need; the margin, applied again on each retry, covers that.
Time limit: the limit doubles. Both stay within what the partition's largest node and MaxTime allow.

The retried job is told what it runs under, since its plan still says the first request: the local
scheduler passes the JSON of these Resources to run_unit, the Slurm retry guard to the job's
``--resources=`` (cl_hpc/execute/slurm/job.py); UnitCall.run_under validates and applies them, so
the task's ctx.resources, its profile's ``requested``, its attempt record's ``resources`` and a
time-limit message all say the escalated values.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable

from cl_hpc.config.resources import Resources
from cl_hpc.states import Limit

MEM_MARGIN = 1.5
TIME_FACTOR = 2.0


def escalate(res: Resources, errors: Iterable[str], peak_mb: float | None,
             max_mem_gb: float | None = None, max_time_min: float | None = None,
             peak_source: str = "sacct MaxRSS") -> tuple[Resources, list[str]]:
    """The resources for the next attempt, and one reason per changed value; ``peak_source`` says
    who measured ``peak_mb`` (sacct on Slurm, the local scheduler's sampler)."""
    errors = [e or "" for e in errors]
    reasons: list[str] = []
    if any(Limit.OUT_OF_MEMORY.ended(e) for e in errors):
        peak_gb = (peak_mb or 0.0) / 1024
        mem = round(max(res.mem_gb, peak_gb) * MEM_MARGIN, 3)
        if max_mem_gb is not None:
            mem = min(mem, max_mem_gb)
        measured = f"a measured peak of {peak_gb:.3g} GB ({peak_source})" if peak_mb else "no measured peak"
        reasons.append(f"mem_gb {res.mem_gb:g} -> {mem:g}: out of memory with {measured}, x{MEM_MARGIN} margin")
        res = replace(res, mem_gb=mem)
    if any(Limit.TIMEOUT.ended(e) for e in errors):
        time_min = res.time_min * TIME_FACTOR
        if max_time_min is not None:
            time_min = min(time_min, max_time_min)
        reasons.append(f"time_min {res.time_min:g} -> {time_min:g}: hit its time limit, x{TIME_FACTOR:g}")
        res = replace(res, time_min=time_min)
    return res, reasons
