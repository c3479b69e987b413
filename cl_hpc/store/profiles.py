"""A profile record (cl_hpc/profile/record.py) as a row of the store's ``profiles`` table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from cl_hpc.atomic import read_json
from cl_hpc.rundir.layout import RunDir


def profile_rows(run: RunDir) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(run.path.glob("tasks/**/profiles/*.json")):
        data = read_json(path)
        if data and data.get("version"):
            rows.append(profile_row(data, path))
    return rows


def profile_row(rec: Mapping[str, Any], path: Path) -> dict[str, Any]:
    req, mem, host = rec.get("requested") or {}, rec.get("memory") or {}, rec.get("host") or {}
    steps, compute, notes = rec.get("steps") or {}, rec.get("compute") or {}, rec.get("notes") or {}
    sacct, gpus = rec.get("sacct") or {}, rec.get("gpus") or []
    energy = [g.get("energy_j") for g in gpus if g.get("energy_j") is not None]
    return {
        **{k: rec.get(k) for k in ("run_id", "key", "attempt", "segment", "task", "pipeline", "config_fp",
                                   "outcome", "started", "ended", "elapsed_s", "setup_s", "job_id")},
        "state": sacct.get("state") or rec.get("outcome"),
        "req_cpus": req.get("cpus"), "req_gpus": req.get("gpus"), "req_mem_gb": req.get("mem_gb"),
        "req_time_min": req.get("time_min"),
        "peak_mem_mb": _max(mem.get("peak_mb"), sacct.get("max_rss_mb")), "peak_exact": int(bool(mem.get("exact"))),
        "peak_source": mem.get("source"), "cpu_pct_mean": host.get("cpu_pct_mean"),
        "workers_cpu_pct_mean": host.get("workers_cpu_pct_mean"), "workers": host.get("workers_max"),
        "iowait_pct_mean": host.get("iowait_pct_mean"), "steps": steps.get("steps"),
        "step_p50_s": steps.get("step_p50_s"), "step_p95_s": steps.get("step_p95_s"),
        "stall_fraction": (rec.get("stall") or {}).get("fraction"),
        "stall_diagnosis": (rec.get("stall") or {}).get("diagnosis"),
        "stall_verdict": (rec.get("stall") or {}).get("verdict"),
        "flops_per_step": compute.get("flops_per_step"), "flops_method": compute.get("flops_method"),
        "mfu_datasheet": compute.get("mfu_datasheet"), "mfu_ceiling": compute.get("mfu_measured_ceiling"),
        "gpu_util_pct": json.dumps([g.get("util_pct_mean") for g in gpus]) if gpus else None,
        "energy_j": sum(energy) if energy else sacct.get("energy_j"),
        "data_rows": notes.get("data_rows"), "num_workers": notes.get("num_workers"),
        "sacct_state": sacct.get("state"), "sacct_elapsed_s": sacct.get("elapsed_s"),
        "sacct_max_rss_mb": sacct.get("max_rss_mb"), "sacct_total_cpu_s": sacct.get("total_cpu_s"),
        "record_path": str(path),
    }


def by_attempt(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, int], list[Mapping[str, Any]]]:
    """Profile rows grouped per (run, unit, attempt), segments in order: a requeued attempt resumes
    as a new segment, and is one attempt for the report and the right-sizer."""
    merged: dict[tuple[str, str, int], list[Mapping[str, Any]]] = {}
    for row in rows:
        merged.setdefault((row["run_id"], row["key"], int(row["attempt"])), []).append(row)
    return {k: sorted(v, key=lambda r: r["segment"] or 0) for k, v in merged.items()}


def attempt_elapsed_s(segments: Iterable[Mapping[str, Any]]) -> float:
    """Wall time over the segments, each the longer of the profiler's and Slurm's count."""
    return sum(max(s["elapsed_s"] or 0.0, s["sacct_elapsed_s"] or 0.0) for s in segments)


def attempt_peak_mb(segments: Iterable[Mapping[str, Any]]) -> float | None:
    peaks = [s["peak_mem_mb"] for s in segments if s["peak_mem_mb"]]
    return max(peaks) if peaks else None


def _max(*values: Any) -> float | None:
    present = [float(v) for v in values if v is not None]
    return max(present) if present else None
