"""A profile record (cl_hpc/profile/record.py ``ProfileRecord``) as a row of the store's ``profiles``
table. A measure keeps the record's name and unit here (``iowait_fraction``, ``mfu_ceiling``,
``workers_max``, ``step_p95_s``); a column that flattens a section says so in its prefix (``req_``,
``sacct_``). Records an older version wrote are read through ``record.upgrade``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, TypeVar

from cl_hpc.atomic import read_json
from cl_hpc.profile.record import upgrade
from cl_hpc.rundir.layout import RunDir

if TYPE_CHECKING:
    from typing import Optional, TypedDict

    from cl_hpc.profile.record import ProfileRecord

    class ProfileRow(TypedDict):
        """A row of the ``profiles`` table (cl_hpc/store/db.py), as the right-sizer and the report read it."""

        run_id: str
        key: str
        attempt: int
        segment: int
        task: Optional[str]
        pipeline: Optional[str]
        config_fp: Optional[str]
        outcome: Optional[str]
        state: Optional[str]
        started: Optional[float]
        ended: Optional[float]
        elapsed_s: Optional[float]
        setup_s: Optional[float]
        job_id: Optional[str]
        req_cpus: Optional[int]
        req_gpus: Optional[int]
        req_mem_gb: Optional[float]
        req_time_min: Optional[float]
        peak_mem_mb: Optional[float]
        peak_exact: int
        peak_source: Optional[str]
        cpu_pct_mean: Optional[float]
        workers_cpu_pct_mean: Optional[float]
        workers_max: Optional[int]
        iowait_fraction: Optional[float]
        steps: Optional[int]
        step_p50_s: Optional[float]
        step_p95_s: Optional[float]
        stall_fraction: Optional[float]
        stall_diagnosis: Optional[str]
        stall_verdict: Optional[str]
        flops_per_step: Optional[float]
        flops_method: Optional[str]
        mfu_datasheet: Optional[float]
        mfu_ceiling: Optional[float]
        gpu_util_pct: Optional[str]  # JSON: each GPU's util_pct_mean, percent
        energy_j: Optional[float]
        data_rows: Optional[int]
        num_workers: Optional[int]
        sacct_state: Optional[str]
        sacct_elapsed_s: Optional[float]
        sacct_max_rss_mb: Optional[float]
        sacct_total_cpu_s: Optional[float]
        record_path: str


def profile_rows(run: RunDir) -> list[ProfileRow]:
    rows = []
    for path in sorted(run.path.glob("tasks/**/profiles/*.json")):
        data = read_json(path)
        if data and data.get("version"):
            rows.append(profile_row(upgrade(data), path))
    return rows


def profile_row(rec: ProfileRecord, path: Path) -> ProfileRow:
    """``rec`` under the current names (``record.upgrade`` first for a file of unknown version)."""
    req, mem, host = rec.get("requested") or {}, dict(rec.get("memory") or {}), dict(rec.get("host") or {})
    steps, compute, notes = rec.get("steps") or {}, rec.get("compute") or {}, rec.get("notes") or {}
    sacct, gpus = rec.get("sacct") or {}, rec.get("gpus") or []
    energy = [g.get("energy_j") for g in gpus if g.get("energy_j") is not None]
    return {  # the identity columns, copied by name
        **{k: rec.get(k) for k in ("run_id", "key", "attempt", "segment", "task", "pipeline", "config_fp",  # type: ignore[typeddict-item]
                                   "outcome", "started", "ended", "elapsed_s", "setup_s", "job_id")},
        "state": sacct.get("state") or rec.get("outcome"),
        "req_cpus": req.get("cpus"), "req_gpus": req.get("gpus"), "req_mem_gb": req.get("mem_gb"),
        "req_time_min": req.get("time_min"),
        "peak_mem_mb": _max(mem.get("peak_mb"), sacct.get("max_rss_mb")), "peak_exact": int(bool(mem.get("exact"))),
        "peak_source": mem.get("source"), "cpu_pct_mean": host.get("cpu_pct_mean"),
        "workers_cpu_pct_mean": host.get("workers_cpu_pct_mean"), "workers_max": host.get("workers_max"),
        "iowait_fraction": host.get("iowait_fraction"), "steps": steps.get("steps"),
        "step_p50_s": steps.get("step_p50_s"), "step_p95_s": steps.get("step_p95_s"),
        "stall_fraction": (rec.get("stall") or {}).get("fraction"),
        "stall_diagnosis": (rec.get("stall") or {}).get("diagnosis"),
        "stall_verdict": (rec.get("stall") or {}).get("verdict"),
        "flops_per_step": compute.get("flops_per_step"), "flops_method": compute.get("flops_method"),
        "mfu_datasheet": compute.get("mfu_datasheet"), "mfu_ceiling": compute.get("mfu_ceiling"),
        "gpu_util_pct": json.dumps([g.get("util_pct_mean") for g in gpus]) if gpus else None,
        "energy_j": sum(energy) if energy else sacct.get("energy_j"),
        "data_rows": notes.get("data_rows"), "num_workers": notes.get("num_workers"),
        "sacct_state": sacct.get("state"), "sacct_elapsed_s": sacct.get("elapsed_s"),
        "sacct_max_rss_mb": sacct.get("max_rss_mb"), "sacct_total_cpu_s": sacct.get("total_cpu_s"),
        "record_path": str(path),
    }


Row = TypeVar("Row", bound=Mapping[str, Any])
# Columns of the profiles table before migration 5 (cl_hpc/store/db.py): name -> (name now, factor).
_OLD_COLUMNS = {"iowait_pct_mean": ("iowait_fraction", 0.01), "workers": ("workers_max", 1)}


def current_row(row: Mapping[str, Any]) -> ProfileRow:
    """A row under the current column names. The launcher reads the history read-only, without
    migrating (cl_hpc/rightsize/apply.py ReadOnlyDb), so it may read a store the migrations have
    not reached yet."""
    if not _OLD_COLUMNS.keys() & row.keys() and "stall_verdict" in row:
        return row  # type: ignore[return-value]
    out = {k: v for k, v in row.items() if k not in _OLD_COLUMNS}
    for old, (new, factor) in _OLD_COLUMNS.items():
        if old in row:
            out[new] = row[old] * factor if row[old] is not None else None
    out.setdefault("stall_verdict", None)
    return out  # type: ignore[return-value]


def by_attempt(rows: Iterable[Row]) -> dict[tuple[str, str, int], list[Row]]:
    """Profile rows grouped per (run, unit, attempt), segments in order: a requeued attempt resumes
    as a new segment, and is one attempt for the report and the right-sizer."""
    merged: dict[tuple[str, str, int], list[Row]] = {}
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
