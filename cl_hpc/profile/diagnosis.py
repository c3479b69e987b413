"""Why a training loop waits for data, and whether DataLoader workers would help: pure.

This is the one diagnosis of data-loading stalls. The profile record stores its verdict and text
(cl_hpc/profile/record.py), the efficiency report prints the text, and the right-sizer acts on the
verdict (cl_hpc/rightsize/recommend.py ``loader_rule``); none of them has thresholds of its own.

When workers help, measured rather than assumed. A worker takes the fetch of a batch (sampling,
indexing, reading, decoding, collating) out of the training process, but the training process then
pays to receive every batch from it (the index and result queues, unpickling, mapping the shared
memory the tensors travel in), and each worker costs a start-up. So with no workers, a stalled fit
is probed (cl_hpc/profile/loader.py) for ``fetch_s``, the time to fetch one batch in process,
``worker_batch_s``, the time to take one ready batch from a worker, and ``worker_start_s``, and
workers are advised only when

    gain = min(data wait per step, fetch_s - worker_batch_s) > 0   and   steps x gain > worker_start_s

i.e. when every step gets faster and the fit is long enough to pay for the start-up. Tensors
already in memory fail the first test: their fetch is a fancy index (0.07 ms a batch on the test
VM) and receiving the same batch from a worker costs 1.4 ms, so workers slow every step
(scripts/bench_advice.py measures both pipelines side by side). A stalled fit that could not be
probed (no DataLoader: a plain loop) gets no worker advice, only what to measure.

Runs on the job path (the record is built in every job): no ``typing`` or ``dataclasses``.
"""

from __future__ import annotations

from enum import Enum

TYPE_CHECKING = False  # on the job path: no typing at run time (cl_hpc/execute/runner.py)
if TYPE_CHECKING:
    from typing import Any, Mapping

STALL_THRESHOLD = 0.2  # data-wait / step time at or above this is data-bound (below: at most 20% to win)
WORKER_BUSY_THRESHOLD = 0.8  # loader workers this busy are saturated: more of them help
WORKER_IDLE_THRESHOLD = 0.5  # loader workers less busy than this wait on something else than CPU
IOWAIT_THRESHOLD = 0.1  # share of CPU time waiting on I/O at or above which storage is the suspect


class Verdict(str, Enum):
    """What the stall is; ``adds_workers`` says whether more loader workers (and cpus) would help."""

    NO_STEPS = "no-steps"  # the task timed no training steps
    COMPUTE_BOUND = "compute-bound"  # the wait is under STALL_THRESHOLD
    IN_PROCESS = "in-process"  # no workers, the fetch measured to cost more than a worker's IPC
    WORKERS_WOULD_SLOW = "workers-would-slow"  # no workers, and measured: workers cost more than they save
    IN_PROCESS_UNMEASURED = "in-process-unmeasured"  # no workers and no DataLoader to probe
    PREPROCESSING_BOUND = "preprocessing-bound"  # workers saturated
    STORAGE_BOUND = "storage-bound"  # workers idle, or the machine waits on I/O
    UNCLEAR = "unclear"

    @property
    def adds_workers(self) -> bool:
        return self in (Verdict.IN_PROCESS, Verdict.PREPROCESSING_BOUND)


class Diagnosis:
    """A verdict and the sentence that explains it, with the numbers it came from."""

    __slots__ = ("verdict", "text")

    def __init__(self, verdict: Verdict, text: str) -> None:
        self.verdict = verdict
        self.text = text

    def __repr__(self) -> str:
        return f"Diagnosis({self.verdict.value!r}, {self.text!r})"


def diagnose(stall: float | None, workers: int, workers_busy: float | None = None,
             iowait_fraction: float | None = None, probe: Mapping[str, Any] | None = None,
             steps: int | None = None, wait_per_step_s: float | None = None) -> Diagnosis:
    """``stall``: data-wait / step time (0-1); ``workers``: loader worker processes; ``workers_busy``:
    their CPU use per worker (0-1); ``iowait_fraction``: the machine's (0-1); ``probe``: fetch_s,
    worker_batch_s, worker_start_s (cl_hpc/profile/loader.py), for a fit with no workers;
    ``steps``: training steps of the fit; ``wait_per_step_s``: its mean data wait per step."""
    if stall is None:
        return Diagnosis(Verdict.NO_STEPS, "no step timing: the task reported no training steps")
    if stall < STALL_THRESHOLD:
        return Diagnosis(Verdict.COMPUTE_BOUND, f"compute-bound: data loading takes {stall:.0%} of step time "
                                                f"(data-bound from {STALL_THRESHOLD:.0%})")
    if workers == 0:
        return _no_workers(stall, probe, steps, wait_per_step_s)
    busy = workers_busy or 0.0
    if busy >= WORKER_BUSY_THRESHOLD:
        return Diagnosis(Verdict.PREPROCESSING_BOUND,
                         f"preprocessing-bound: {workers} workers {busy:.0%} busy while the loop waits {stall:.0%} "
                         "of step time; add workers and CPUs")
    iowait = iowait_fraction or 0.0
    if iowait >= IOWAIT_THRESHOLD or busy < WORKER_IDLE_THRESHOLD:
        return Diagnosis(Verdict.STORAGE_BOUND,
                         f"storage-bound: the loop waits {stall:.0%} of step time while {workers} workers are "
                         f"only {busy:.0%} busy (iowait {iowait:.0%}); more workers will not help: stage or "
                         "cache the data on node-local disk or in memory")
    return Diagnosis(Verdict.UNCLEAR,
                     f"data-bound ({stall:.0%} of step time waiting), workers {busy:.0%} busy: profile the loader")


def _no_workers(stall: float, probe: Mapping[str, Any] | None, steps: int | None,
                wait_per_step_s: float | None) -> Diagnosis:
    """The rule of the module docstring: advise workers only where they were measured to win."""
    head = f"data-bound ({stall:.0%} of step time waiting) with no DataLoader workers"
    fetch, ipc, start = (probe or {}).get("fetch_s"), (probe or {}).get("worker_batch_s"), \
        (probe or {}).get("worker_start_s")
    if fetch is None or ipc is None:
        return Diagnosis(Verdict.IN_PROCESS_UNMEASURED,
                         f"{head}; not probed (no DataLoader): workers help only when fetching a batch does real "
                         "work (reading, decoding) that costs more than receiving it from a worker")
    seen = (f"a batch takes {_ms(fetch)} to fetch in process and {_ms(ipc)} to receive from a worker, "
            f"which takes {_ms(start or 0.0)} to start")
    gain = min(fetch - ipc, wait_per_step_s if wait_per_step_s is not None else fetch)
    if gain <= 0:
        return Diagnosis(Verdict.WORKERS_WOULD_SLOW,
                         f"{head}, but {seen}: workers would slow every step (the data is ready in memory); "
                         "keep num_workers=0 and make the fetch cheaper (whole batches, fewer Python steps)")
    if steps is not None and steps * gain <= (start or 0.0):
        return Diagnosis(Verdict.WORKERS_WOULD_SLOW,
                         f"{head}, but {seen}: {steps} steps save {_ms(steps * gain)}, less than the start-up; "
                         "keep num_workers=0")
    return Diagnosis(Verdict.IN_PROCESS,
                     f"{head}: {seen}, so workers save up to {_ms(gain)} a step; set num_workers > 0 "
                     "(and cpus to match)")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2g} ms" if seconds < 0.01 else f"{seconds * 1000:.0f} ms"
