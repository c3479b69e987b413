"""The profile record of one task attempt, built from what the adapters measured: pure functions.

One JSON document per attempt segment (a requeued attempt resumes as a new segment), written to
``<task dir>/profile.json`` (the latest) and ``<task dir>/profiles/<attempt>-<segment>.json``, and
ingested into the store's ``profiles`` table. On Slurm the ingestion adds the job's ``sacct`` row.
"""

from __future__ import annotations

from cl_hpc.profile.diagnosis import diagnose

TYPE_CHECKING = False  # on the job path: no typing at run time (cl_hpc/execute/runner.py)
if TYPE_CHECKING:
    from typing import Any, Mapping, Optional, Sequence, TypedDict

    # The record's shape, for the store (cl_hpc/store/profiles.py) and the right-sizer, which read
    # it under these names and units: one name and one unit per measure. Fractions are 0-1 and
    # named *_fraction or mfu_*; percentages (of one core, of a GPU) end in _pct_*; sizes say MB.
    class HostSummary(TypedDict, total=False):  # cl_hpc/profile/sampler.py Sampler.summary
        samples: int
        interval_s: float
        duration_s: float
        cpu_s: float  # user + system CPU seconds of the task and its waited-for children
        cpu_pct_mean: Optional[float]  # the main process, percent of one core
        workers_cpu_pct_mean: Optional[float]  # its descendants (loader workers), summed, percent of one core
        workers_max: int  # most live descendant processes seen
        rss_mb_max: Optional[float]
        hwm_mb_max: Optional[float]
        iowait_fraction: Optional[float]  # the machine's CPU time waiting on I/O, 0-1, mean over samples

    class ComputeSummary(TypedDict, total=False):  # cl_hpc/profile/compute.py fit_compute, plus MFU
        device: str
        dtype: Optional[str]
        flops_per_step: Optional[float]
        flops_method: Optional[str]
        peak_flops_per_s: Optional[float]  # the datasheet's dense peak
        ceiling_flops_per_s: Optional[float]  # the measured matmul ceiling
        achieved_flops_per_s: Optional[float]
        mfu_datasheet: Optional[float]  # 0-1, against peak_flops_per_s
        mfu_ceiling: Optional[float]  # 0-1, against ceiling_flops_per_s
        why: list[str]

    class StallSection(TypedDict):
        fraction: Optional[float]  # data-wait / step time over the steady state, 0-1
        verdict: str  # a cl_hpc.profile.diagnosis.Verdict value
        diagnosis: str
        probe: Optional[dict[str, Any]]  # cl_hpc/profile/loader.py: fetch_s, worker_batch_s, worker_start_s

    class MemorySection(TypedDict):
        peak_mb: Optional[float]
        source: str  # cgroup | vmhwm | rss-sampled
        exact: bool

    class ProfileRecord(TypedDict, total=False):
        version: int
        run_id: str
        key: str
        attempt: int
        segment: int
        task: str
        pipeline: str
        config_fp: str
        job_id: Optional[str]
        outcome: str
        started: float
        ended: float
        elapsed_s: float
        setup_s: Optional[float]
        requested: dict[str, Any]  # the portable resources: cpus, gpus, mem_gb, time_min
        steps: Optional[dict[str, Any]]  # cl_hpc/profile/meter.py StepStats: step_p50_s, step_p95_s, ...
        host: HostSummary
        memory: MemorySection
        gpus: list[dict[str, Any]]  # per GPU: NVML device info and cl_hpc/profile/sampler.py gpu_summary
        compute: Optional[ComputeSummary]
        notes: dict[str, Any]  # num_workers, batch_size, data_rows, sampler_errors, ...
        stall: StallSection
        series: Optional[dict[str, list[Optional[float]]]]
        sacct: Optional[dict[str, Any]]

# 2: mfu_ceiling (was mfu_measured_ceiling), iowait_fraction 0-1 (was iowait_pct_mean, percent), and
# the stall's verdict and probe.
VERSION = 2
# What version-1 records called a measure: (section, old name) -> (name now, factor to its unit now).
# Run dirs are the source of truth and `store rebuild` re-reads them, so old files stay readable.
RENAMED = {("compute", "mfu_measured_ceiling"): ("mfu_ceiling", 1.0),
           ("host", "iowait_pct_mean"): ("iowait_fraction", 0.01),
           ("series", "iowait_pct"): ("iowait_fraction", 0.01)}


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
                 host: Mapping[str, Any], memory: Mapping[str, Any], gpus: Sequence[Mapping[str, Any]],
                 compute: Mapping[str, Any] | None, notes: Mapping[str, Any],
                 series: Mapping[str, Any] | None, probe: Mapping[str, Any] | None = None) -> ProfileRecord:
    """Assemble the record. ``compute``: flops per step and the peaks they are measured against;
    ``probe``: what workers would cost this fit's loader (cl_hpc/profile/loader.py), when measured."""
    # identity and timing carry the record's keys (run_id, ..., elapsed_s)
    return {
        "version": VERSION, **identity, **timing, "steps": steps, "host": dict(host),  # type: ignore[typeddict-item]
        "memory": dict(memory),
        "gpus": [dict(g) for g in gpus], "compute": _with_mfu(compute, steps), "notes": dict(notes),
        "stall": stall_section(steps, host, notes, probe), "series": series, "sacct": None,
    }


def stall_section(steps: Mapping[str, Any] | None, host: Mapping[str, Any], notes: Mapping[str, Any],
                  probe: Mapping[str, Any] | None) -> dict[str, Any]:
    """The stall fraction with cl_hpc/profile/diagnosis.py's verdict on it, from the record's measures."""
    stall = steps.get("stall_fraction") if steps else None
    workers = int(notes["num_workers"] if notes.get("num_workers") is not None else host.get("workers_max") or 0)
    busy = (host.get("workers_cpu_pct_mean") or 0.0) / (100.0 * workers) if workers else None
    steady = steps.get("steady_steps") if steps else None
    found = diagnose(stall, workers, busy, host.get("iowait_fraction"), probe,
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
    out["mfu_ceiling"] = mfu(flops, step_s, compute.get("ceiling_flops_per_s"))
    return out


def upgrade(rec: Mapping[str, Any]) -> ProfileRecord:
    """A record under this version's names and units, whatever version wrote it. A version-1 record
    also gets its stall diagnosed again, by the one diagnosis (without a probe: it had none)."""
    if int(rec.get("version") or 0) >= VERSION:
        return rec  # type: ignore[return-value]
    out = dict(rec)
    for (section, old), (new, factor) in RENAMED.items():
        part = out.get(section)
        if isinstance(part, dict) and old in part:
            part = {k: v for k, v in part.items() if k != old}
            part[new] = _scaled(rec[section][old], factor)
            out[section] = part
    out["stall"] = stall_section(out.get("steps"), out.get("host") or {}, out.get("notes") or {}, None)
    out["version"] = VERSION
    return out  # type: ignore[return-value]


def _scaled(value: Any, factor: float) -> Any:
    if isinstance(value, list):  # a series column
        return [_scaled(v, factor) for v in value]
    return value * factor if isinstance(value, (int, float)) and factor != 1.0 else value
