"""Retry escalation rules, on a table of cases."""

from __future__ import annotations

import pytest

from cl_hpc.config.resources import Resources
from cl_hpc.execute.slurm.escalate import escalate

OOM = "OUT_OF_MEMORY: killed for using more than its --mem"
TIMEOUT = "TIMEOUT: stopped at its time limit of 5 min"

CASES = [
    # (request, errors, peak MB, caps, expected mem_gb, expected time_min, reasons)
    (Resources(mem_gb=1, time_min=5), [OOM], 1536.0, (None, None), 2.25, 5, 1),  # from the 1.5 GB peak, x1.5
    (Resources(mem_gb=4, time_min=5), [OOM], 1024.0, (None, None), 6.0, 5, 1),  # peak below request: from the request
    (Resources(mem_gb=1, time_min=5), [OOM], None, (None, None), 1.5, 5, 1),  # no accounting data
    (Resources(mem_gb=16, time_min=5), [OOM], 16384.0, (19.5, None), 19.5, 5, 1),  # capped at the biggest node
    (Resources(mem_gb=1, time_min=5), [TIMEOUT], None, (None, None), 1, 10, 1),
    (Resources(mem_gb=1, time_min=50), [TIMEOUT], None, (None, 60), 1, 60, 1),  # capped at MaxTime
    (Resources(mem_gb=1, time_min=5), [OOM, TIMEOUT], 512.0, (None, None), 1.5, 10, 2),  # shards failed differently
    (Resources(mem_gb=1, time_min=5), ["RuntimeError: boom"], 4096.0, (None, None), 1, 5, 0),  # a bug: same resources
]


@pytest.mark.parametrize("res,errors,peak,caps,mem,time_min,n_reasons", CASES)
def test_escalation(res: Resources, errors: list[str], peak: float | None, caps: tuple, mem: float,
                    time_min: float, n_reasons: int) -> None:
    new, reasons = escalate(res, errors, peak, *caps)
    assert (new.mem_gb, new.time_min, len(reasons)) == (mem, time_min, n_reasons)
    assert new.cpus == res.cpus and new.gpus == res.gpus
