"""The profile record of one task attempt, built from what the adapters measured: pure functions.

One JSON document per attempt segment (a requeued attempt resumes as a new segment), written to
``<task dir>/profile.json`` (the latest) and ``<task dir>/profiles/<attempt>-<segment>.json``, and
ingested into the store's ``profiles`` table. On Slurm the ingestion adds the job's ``sacct`` row.
"""

from __future__ import annotations

TYPE_CHECKING = False  # on the job path: no typing at run time (cl_hpc/execute/runner.py)
if TYPE_CHECKING:
    from typing import Any, Mapping

VERSION = 1
STALL_THRESHOLD = 0.10  # below this share of step time, data loading is not the bottleneck


def best_memory(cgroup_peak_mb: float | None, hwm_mb: float | None, rss_mb: float | None) -> dict[str, Any]:
    """The peak to size memory from, and how far to trust it (``exact``: it cannot have missed a
    spike; the cgroup peak is exact, summed VmHWM an upper bound, sampled RSS neither)."""
    if cgroup_peak_mb:
        return {"peak_mb": cgroup_peak_mb, "source": "cgroup", "exact": True}
    if hwm_mb:
        return {"peak_mb": hwm_mb, "source": "vmhwm", "exact": True}
    return {"peak_mb": rss_mb, "source": "rss-sampled", "exact": False}


def mfu(flops_per_step: float | None, step_s: float | None, peak: float | None) -> float | None:
    """Model FLOPs utilization: achieved FLOP/s (FLOPs per step / median step time) over a peak."""
    if not flops_per_step or not step_s or not peak:
        return None
    return flops_per_step / step_s / peak


def diagnose_stall(stall: float | None, workers: int, workers_cpu_pct: float | None,
                   iowait_pct: float | None) -> str:
    """Why the training loop waits for data, and what would help."""
    if stall is None:
        return "no step timing: the task reported no training steps"
    if stall < STALL_THRESHOLD:
        return f"compute-bound: data loading takes {stall:.0%} of step time"
    if workers == 0:
        return (f"data-bound ({stall:.0%} of step time waiting) with no DataLoader workers: loading runs "
                f"in the training process; set num_workers > 0 (and cpus to match)")
    busy = (workers_cpu_pct or 0.0) / (100.0 * workers)
    if busy >= 0.8:
        return (f"preprocessing-bound: {workers} workers {busy:.0%} busy while the loop waits {stall:.0%} "
                f"of step time; add workers and CPUs")
    if (iowait_pct or 0.0) >= 10.0 or busy < 0.5:
        return (f"storage-bound: the loop waits {stall:.0%} of step time while {workers} workers are only "
                f"{busy:.0%} busy (iowait {iowait_pct or 0:.0f}%); more workers will not help: stage or "
                f"cache the data on node-local disk or in memory")
    return f"data-bound ({stall:.0%} of step time waiting), workers {busy:.0%} busy: profile the loader"


def build_record(identity: Mapping[str, Any], timing: Mapping[str, Any], steps: Mapping[str, Any] | None,
                 host: Mapping[str, Any], memory: Mapping[str, Any], gpus: list[Mapping[str, Any]],
                 compute: Mapping[str, Any] | None, notes: Mapping[str, Any],
                 series: Mapping[str, Any] | None) -> dict[str, Any]:
    """Assemble the record. ``compute``: flops per step and the peaks they are measured against."""
    stall = steps.get("stall_fraction") if steps else None
    workers = int(notes["num_workers"] if notes.get("num_workers") is not None else host.get("workers_max") or 0)
    return {
        "version": VERSION, **identity, **timing, "steps": steps, "host": dict(host), "memory": dict(memory),
        "gpus": gpus, "compute": _with_mfu(compute, steps), "notes": dict(notes),
        "stall": {"fraction": stall,
                  "diagnosis": diagnose_stall(stall, workers, host.get("workers_cpu_pct_mean"),
                                              host.get("iowait_pct_mean"))},
        "series": series, "sacct": None,
    }


def _with_mfu(compute: Mapping[str, Any] | None, steps: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not compute:
        return None
    step_s = steps.get("step_p50_s") if steps else None
    flops = compute.get("flops_per_step")
    out = dict(compute)
    out["achieved_flops_per_s"] = flops / step_s if flops and step_s else None
    out["mfu_datasheet"] = mfu(flops, step_s, compute.get("peak_flops_per_s"))
    out["mfu_measured_ceiling"] = mfu(flops, step_s, compute.get("ceiling_flops_per_s"))
    return out
