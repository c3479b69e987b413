"""The profile record of one task attempt, built from what the adapters measured: pure functions.

One JSON document per attempt segment (a requeued attempt resumes as a new segment), written to
``<task dir>/profile.json`` (the latest) and ``<task dir>/profiles/<attempt>-<segment>.json``, and
ingested into the store's ``profiles`` table. On Slurm the ingestion adds the job's ``sacct`` row.
"""

from __future__ import annotations

from cl_hpc.profile.diagnosis import diagnose

TYPE_CHECKING = False  # on the job path: no typing at run time (cl_hpc/execute/runner.py)
if TYPE_CHECKING:
    from typing import Any, Mapping

VERSION = 1


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


def build_record(identity: Mapping[str, Any], timing: Mapping[str, Any], steps: Mapping[str, Any] | None,
                 host: Mapping[str, Any], memory: Mapping[str, Any], gpus: list[Mapping[str, Any]],
                 compute: Mapping[str, Any] | None, notes: Mapping[str, Any],
                 series: Mapping[str, Any] | None, probe: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Assemble the record. ``compute``: flops per step and the peaks they are measured against;
    ``probe``: what workers would cost this fit's loader (cl_hpc/profile/loader.py), when measured."""
    return {
        "version": VERSION, **identity, **timing, "steps": steps, "host": dict(host), "memory": dict(memory),
        "gpus": gpus, "compute": _with_mfu(compute, steps), "notes": dict(notes),
        "stall": stall_section(steps, host, notes, probe), "series": series, "sacct": None,
    }


def stall_section(steps: Mapping[str, Any] | None, host: Mapping[str, Any], notes: Mapping[str, Any],
                  probe: Mapping[str, Any] | None) -> dict[str, Any]:
    """The stall fraction with cl_hpc/profile/diagnosis.py's verdict on it, from the record's measures."""
    stall = steps.get("stall_fraction") if steps else None
    workers = int(notes["num_workers"] if notes.get("num_workers") is not None else host.get("workers_max") or 0)
    busy = (host.get("workers_cpu_pct_mean") or 0.0) / (100.0 * workers) if workers else None
    iowait = host.get("iowait_pct_mean")
    steady = steps.get("steady_steps") if steps else None
    found = diagnose(stall, workers, busy, iowait / 100.0 if iowait is not None else None, probe,
                     steps.get("steps") if steps else None,
                     steps["data_wait_s"] / steady if steps and steady else None)
    return {"fraction": stall, "verdict": found.verdict.value, "diagnosis": found.text,
            "probe": dict(probe) if probe else None}


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
