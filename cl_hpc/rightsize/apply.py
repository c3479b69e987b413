"""Right-size a plan from the store's profile history: ``rightsize.mode=off|suggest|auto``.

History: every profiled attempt of the same pipeline task whose units had the same config
fingerprint (target, params, shard item: the model config and feature definitions), in the data
size bucket of the newest one. A requeued attempt's segments are merged: time adds up, the
peak is the largest. The outcome comes from the attempt record (OOM and TIMEOUT as the Slurm
backend wrote them), the rest from the profile joined with sacct.

``auto`` replaces resources only. A recommended ``num_workers`` is shown, not applied: it is a
task param, part of the config fingerprint, and changing it would start a new history.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from cl_hpc.config.resources import Resources
from cl_hpc.dag.model import Plan
from cl_hpc.errors import ConfigError
from cl_hpc.rightsize.history import Observation, Outcome, rows_bucket
from cl_hpc.rightsize.recommend import Policy, Recommendation, recommend
from cl_hpc.states import AttemptState, Limit
from cl_hpc.store.profiles import attempt_elapsed_s, attempt_peak_mb, by_attempt, current_row
from cl_hpc.store.uri import sqlite_uri

if TYPE_CHECKING:
    from cl_hpc.store.profiles import ProfileRow

MODES = ("off", "suggest", "auto")
_OOM = (Limit.OUT_OF_MEMORY, "Exceeded job memory limit")  # the second: a kill without cgroups


def outcome_of(state: str | None, error: str | None) -> Outcome:
    text = error or ""
    if state == Limit.OUT_OF_MEMORY or any(m in text for m in _OOM):
        return Outcome.OOM
    if state == Limit.TIMEOUT or Limit.TIMEOUT.ended(text):
        return Outcome.TIMEOUT
    if state == AttemptState.COMPLETED:
        return Outcome.COMPLETED
    if state == AttemptState.PREEMPTED:
        return Outcome.PREEMPTED
    return Outcome.FAILED


def observations(rows: Iterable[Mapping[str, Any]],
                 attempts: Mapping[tuple[str, str, int], Mapping[str, Any]]) -> list[Observation]:
    """Store rows (profiles) -> one Observation per attempt; ``attempts`` maps (run, key, attempt)
    to the attempt row (its final state and error)."""
    out = []
    for ident, segments in by_attempt(current_row(r) for r in rows).items():
        attempt = attempts.get(ident) or {}
        if attempt.get("state") in (None, AttemptState.RUNNING):
            continue  # still running, or never recorded: not a finished fact yet
        out.append(_observation(segments, attempt))
    return out


def _observation(segments: list[ProfileRow], attempt: Mapping[str, Any]) -> Observation:
    """The store's columns carry the profile record's names and units (cl_hpc/store/profiles.py);
    the Observation's shares of an allocation (cpu_util, worker_cpu_util, gpu_util) are derived here."""
    last = segments[-1]
    req = Resources(cpus=int(last["req_cpus"] or 1), gpus=int(last["req_gpus"] or 0),
                    mem_gb=float(last["req_mem_gb"] or 0), time_min=float(last["req_time_min"] or 0))
    elapsed, peak = attempt_elapsed_s(segments), attempt_peak_mb(segments)
    workers = int(last["workers_max"] or 0)
    cpu = (last["cpu_pct_mean"] or 0.0) + (last["workers_cpu_pct_mean"] or 0.0)
    gpus = json.loads(last["gpu_util_pct"]) if last["gpu_util_pct"] else None
    return Observation(
        finished_at=last["ended"], outcome=outcome_of(attempt.get("state"), attempt.get("error")), requested=req,
        peak_mem_gb=peak / 1024 if peak else None, peak_mem_exact=all(s["peak_exact"] for s in segments),
        elapsed_s=elapsed or None, setup_s=segments[0]["setup_s"], steps=last["steps"],
        step_p95_s=last["step_p95_s"], stall_fraction=last["stall_fraction"],
        loader_verdict=last["stall_verdict"],
        worker_cpu_util=_clip((last["workers_cpu_pct_mean"] or 0.0) / (100 * workers)) if workers else None,
        cpu_util=_clip(cpu / (100 * req.cpus)) if last["cpu_pct_mean"] is not None else None,
        iowait_fraction=_clip(last["iowait_fraction"]) if last["iowait_fraction"] is not None else None,
        gpu_util=tuple(_clip((g or 0.0) / 100) for g in gpus) if gpus else None,
        num_workers=last["num_workers"], data_rows=last["data_rows"],
    )


def _clip(value: float) -> float:
    return min(max(value, 0.0), 1.0)


def same_data_bucket(history: list[Observation]) -> tuple[list[Observation], int | None]:
    """The observations in the newest one's data-size bucket, and that size (the next run is
    assumed to see about as much data as the last one did)."""
    dated = sorted(history, key=lambda o: o.finished_at or 0.0)
    rows = next((o.data_rows for o in reversed(dated) if o.data_rows is not None), None)
    return [o for o in dated if rows_bucket(o.data_rows) == rows_bucket(rows) or o.data_rows is None], rows


def recommend_plan(plan: Plan, history: Mapping[str, list[Observation]],
                   policy: Policy = Policy()) -> dict[str, Recommendation]:
    """A recommendation per task, from ``history[task]``."""
    out = {}
    for name, spec in plan.tasks.items():
        obs, rows = same_data_bucket(history.get(name, []))
        out[name] = recommend(obs, spec.resources, policy=policy, data_rows=rows, params=_loader_params(spec.params))
    return out


def _loader_params(params: Mapping[str, Any]) -> dict[str, Any]:
    nested = params.get("model") if isinstance(params.get("model"), Mapping) else {}
    workers = params.get("num_workers", (nested or {}).get("num_workers"))
    return {"num_workers": workers} if workers is not None else {}


def apply(plan: Plan, recommendations: Mapping[str, Recommendation], mode: str) -> Plan:
    """The plan with recommended resources in place (``auto``), or unchanged (``off``/``suggest``)."""
    if mode not in MODES:
        raise ConfigError(f"rightsize.mode={mode!r} is not one of {', '.join(MODES)} (conf/rightsize/)")
    if mode != "auto":
        return plan
    tasks = {n: replace(s, resources=recommendations[n].resources) if n in recommendations else s
             for n, s in plan.tasks.items()}
    return Plan(plan.pipeline, tasks, plan.edges, plan.units, plan.workdir, plan.meta)


def describe(recommendations: Mapping[str, Recommendation], mode: str) -> list[str]:
    """One line per changed value (with its reason) and per note, for the plan and the log."""
    verb = "set" if mode == "auto" else "suggest"
    lines = []
    for task, rec in recommendations.items():
        for c in rec.changes:
            applied = verb if c.field in Resources.__dataclass_fields__ else "suggest"
            lines.append(f"rightsize {task}: {applied} {c.field} {_fmt(c.old)} -> {_fmt(c.new)}: {c.reason}")
        lines += [f"rightsize {task}: note: {n}" for n in rec.notes if not n.startswith("no history")]
    return lines


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def to_meta(recommendations: Mapping[str, Recommendation], mode: str) -> dict[str, Any]:
    """What plan.json keeps of the decision, for status and the efficiency report."""
    return {"mode": mode, "tasks": {t: {"changes": [vars(c) for c in r.changes], "notes": list(r.notes),
                                        "basis": r.basis} for t, r in recommendations.items()}}


def history_from_store(store: Any, plan: Plan) -> dict[str, list[Observation]]:
    """Each task's observations: its units' config fingerprints, in this pipeline. ``store`` is
    anything with ``rows(table, where, args)``: the Store, or a ReadOnlyDb."""
    out: dict[str, list[Observation]] = {}
    for name in plan.tasks:
        fps = sorted({u.config_fp for u in plan.units_of(name)})
        marks = ",".join("?" * len(fps))
        rows = store.rows("profiles", f"pipeline = ? AND task = ? AND config_fp IN ({marks})",
                          [plan.pipeline, name, *fps])
        if not rows:
            continue
        runs = sorted({r["run_id"] for r in rows})
        attempts = store.rows("attempts", f"run_id IN ({','.join('?' * len(runs))})", runs)
        out[name] = observations(rows, {(a["run_id"], a["key"], int(a["attempt"])): a for a in attempts})
    return out


class ReadOnlyDb:
    """The store's file opened read-only with plain sqlite3: the launcher reads the history before
    it submits, and sqlite-utils' import and the store's migration check would delay the first job.
    Returns no rows from a store that predates the profiles table."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(sqlite_uri(path), uri=True, timeout=30)
        self.conn.row_factory = sqlite3.Row

    def rows(self, table: str, where: str, args: Iterable[Any]) -> list[dict[str, Any]]:
        try:
            cursor = self.conn.execute(f"SELECT * FROM {table} WHERE {where}", list(args))
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        return [dict(r) for r in cursor.fetchall()]

    def __enter__(self) -> "ReadOnlyDb":
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()
