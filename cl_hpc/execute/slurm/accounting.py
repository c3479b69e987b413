"""Join each finished attempt's profile with what Slurm accounted for its job (``sacct``).

The profile measures from inside the job; sacct adds what only the scheduler knows: the final
State (OUT_OF_MEMORY, TIMEOUT), the elapsed time Slurm charged, MaxRSS over every step, TotalCPU,
the requested and allocated TRES, and the node's energy counter where accounting gathers one.
The join is written into the profile file itself (the run dir stays the truth; the store indexes
it), once per profile, after the job ended.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from cl_hpc.atomic import read_json, write_json_atomic
from cl_hpc.errors import ExecutorError
from cl_hpc.execute.slurm import commands
from cl_hpc.execute.slurm.parse import LIVE_STATES, mem_mb_or_none, parse_sacct, parse_time_min, slurm_state
from cl_hpc.rundir.layout import RunDir

FIELDS = ("JobID", "State", "ElapsedRaw", "MaxRSS", "TotalCPU", "ReqMem", "ReqTRES", "AllocTRES",
          "ConsumedEnergyRaw", "ExitCode")


def fold_sacct(rows: Iterable[Mapping[str, str]]) -> dict[str, dict[str, Any]]:
    """sacct rows (the allocation plus its .batch/.0/... steps) -> one summary per job id."""
    jobs: dict[str, dict[str, Any]] = {}
    for row in rows:
        job_id, _, step = row["JobID"].partition(".")
        entry = jobs.setdefault(job_id, {"job_id": job_id, "max_rss_mb": None})
        rss = mem_mb_or_none(row["MaxRSS"], bare_unit="K")
        # The extern step (PrologFlags=contain) holds no task process, and it reports first: taken
        # as the peak, it would complete the join (written once) before the real steps arrive.
        if rss is not None and step != "extern":
            entry["max_rss_mb"] = max(entry["max_rss_mb"] or 0.0, rss)
        if not step:
            entry.update(_allocation(row))
    return jobs


def _allocation(row: Mapping[str, str]) -> dict[str, Any]:
    energy = row.get("ConsumedEnergyRaw", "")
    return {
        "state": slurm_state(row["State"]), "exit_code": row["ExitCode"],
        "elapsed_s": float(row["ElapsedRaw"]) if row["ElapsedRaw"].isdigit() else None,
        "total_cpu_s": _cpu_seconds(row["TotalCPU"]), "req_mem_mb": mem_mb_or_none(row["ReqMem"]),
        "req_tres": row["ReqTRES"], "alloc_tres": row["AllocTRES"],
        # 0 where no energy plugin gathers it (acct_gather_energy/none): unknown, not zero joules
        "energy_j": float(energy) if energy.isdigit() and int(energy) > 0 else None,
    }


def _cpu_seconds(text: str) -> float | None:
    """sacct's TotalCPU: ``MM:SS.mmm``, ``HH:MM:SS`` or ``D-HH:MM:SS``."""
    if not text:
        return None
    whole, _, fraction = text.partition(".")
    try:
        minutes = parse_time_min(whole if whole.count(":") != 1 or "-" in whole else f"00:{whole}")
    except ValueError:
        return None
    return (minutes or 0.0) * 60 + (float(f"0.{fraction}") if fraction.isdigit() else 0.0)


def query_accounting(job_ids: list[str]) -> dict[str, dict[str, Any]]:
    if not job_ids:
        return {}
    try:
        out = commands.run(["sacct", "-n", "-P", "-o", ",".join(FIELDS), "-j", ",".join(sorted(set(job_ids)))])
    except ExecutorError:
        return {}  # accounting is a bonus on the profile: a missing slurmdbd must not fail status
    return fold_sacct(parse_sacct(out, FIELDS))


def attach_sacct(run: RunDir) -> int:
    """Write the sacct join into every profile of ``run`` whose job has ended; returns how many."""
    waiting = [(p, d) for p in sorted(run.path.glob("tasks/**/profiles/*.json"))
               if (d := read_json(p)) and d.get("sacct") is None and d.get("job_id")]
    if not waiting:
        return 0
    accounted = query_accounting([str(d["job_id"]) for _, d in waiting])
    last = _last_segments(run)
    done, now = 0, time.time()
    for path, data in waiting:
        entry = accounted.get(str(data["job_id"]))
        if entry and last.get(str(data["job_id"]), 0) > int(data.get("segment") or 0):
            # A requeued job keeps its id and sacct (without --duplicates) answers for its last run
            # only: that row belongs to the last segment, never to the earlier ones.
            _write(path, {**data, "sacct": {"job_id": entry["job_id"], "note": "earlier run of a requeued job"}})
            continue
        if entry and _complete(entry, data, now):
            _write(path, {**data, "sacct": entry})
            done += 1
    return done


STEP_GRACE_S = 300.0  # how long after the end a missing step MaxRSS is waited for


def _complete(entry: Mapping[str, Any], profile: Mapping[str, Any], now: float) -> bool:
    """Whether slurmdbd's row is whole. Right after a job ends it may still be half-written (seen:
    ReqMem "16?"), and the steps' MaxRSS arrives after the allocation's end; the join is written
    once, so it waits for both (the next status call asks again). A job whose steps never report
    (no accounting gather, a kill before the step began) is joined without MaxRSS after a grace."""
    if entry.get("state") in LIVE_STATES or not entry.get("req_mem_mb") or entry.get("elapsed_s") is None:
        return False
    ended = profile.get("ended")
    return entry.get("max_rss_mb") is not None or not ended or now - float(ended) > STEP_GRACE_S


def _last_segments(run: RunDir) -> dict[str, int]:
    """Job id -> the highest profile segment recorded for it in this run."""
    last: dict[str, int] = {}
    for path in run.path.glob("tasks/**/profiles/*.json"):
        data = read_json(path) or {}
        if data.get("job_id"):
            job = str(data["job_id"])
            last[job] = max(last.get(job, 0), int(data.get("segment") or 0))
    return last


def _write(path: Path, data: dict[str, Any]) -> None:
    write_json_atomic(path, data)
    latest = path.parent.parent / "profile.json"
    current = read_json(latest)
    if current and (current.get("attempt"), current.get("segment")) == (data.get("attempt"), data.get("segment")):
        write_json_atomic(latest, data)
