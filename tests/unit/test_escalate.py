"""Retry escalation rules, on a table of cases, and reading why a job died from its stderr."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cl_hpc.config.resources import Resources
from cl_hpc.execute.slurm.escalate import escalate
from cl_hpc.execute.slurm.reconcile import read_tail

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


# ---------------------------------------------------------------- why a job died, from the tail of its stderr

SLURM_OOM = "slurmstepd: error: Exceeded job memory limit at some point.\n"


def test_the_kill_message_is_found_at_the_end_of_a_large_log(tmp_path: Path) -> None:
    """A 2 GiB stderr (sparse: its task logged that much) with Slurm's kill message last is read
    in a process that may not map 512 MB more than it has: only the tail is read (issue 10, 'the
    retry guard reads a whole stderr file'; read whole, this process dies of MemoryError)."""
    log = tmp_path / "123_0_log.err"
    with log.open("wb") as f:
        f.truncate(2 * 1024**3)
        f.seek(0, 2)
        f.write(SLURM_OOM.encode())
    code = f"""
import resource, sys
from pathlib import Path
from cl_hpc.execute.slurm.reconcile import _reason
vm = int(next(l for l in open('/proc/self/status') if l.startswith('VmSize:')).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + 512 * 1024**2, resource.RLIM_INFINITY))
print(_reason('FAILED', '0:9', Path({str(log)!r})))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.startswith("OUT_OF_MEMORY: killed for using more than its --mem"), proc.stdout


@pytest.mark.parametrize("text,limit,expected", [
    ("", 10, ""), ("short", 10, "short"), ("0123456789abcdef", 6, "abcdef"),
    ("é" * 10, 5, "\ufffdéé"),  # a cut through a character is replaced, never an error
])
def test_read_tail(tmp_path: Path, text: str, limit: int, expected: str) -> None:
    path = tmp_path / "log"
    path.write_text(text)
    assert read_tail(path, limit) == expected


def test_read_tail_of_a_missing_log_is_empty(tmp_path: Path) -> None:
    assert read_tail(tmp_path / "none.err") == ""
