"""The data of a run's HTML page (:class:`cl_hpc.report.records.RunReport`), read from its run directory.

Built from what ``status`` reads (``collect``: the plan, each unit's attempts, the problems; on Slurm
after the reconcile with sacct), the efficiency report (``efficiency``: its rows and savings), the
per-attempt profile files (the timelines), slurm.json or scheduler.log (the escalations) and the
logs submitit writes (a failure's tail). Nothing here starts a process per unit, and a record that
cannot be read becomes a ``problems`` line, never a traceback: the page of a broken run is the one
most wanted.

Times: every bar's start and end are the attempt record's (written by the job, or by the scheduler
that saw it die): sacct's Submit/Start/End are not fetched (cl_hpc/execute/slurm/accounting.py
FIELDS), so every bar's ``source`` is LOCAL. No record holds a submit time either; an attempt's
``submitted`` is the evidence of when it was queued: the end of the attempt before it in the same
launch (both schedulers queue a retry when the failed attempt ends: the local scheduler at once,
Slurm's retry guard after it), else the time its launch was recorded in run.json (just before
the launcher submits the launch's units: Slurm queues them all at once, dependents included, and
the local scheduler takes the whole list). The queue wait so includes the wait for dependencies,
as Slurm's Submit-to-Start does. A submit time past the start (clocks of two hosts) is clamped to it.
"""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path
from typing import Any, Mapping, Optional

from cl_hpc.atomic import read_json
from cl_hpc.errors import ClHpcError, DataError, ExecutorError
from cl_hpc.execute.slurm.reconcile import TAIL_BYTES, read_tail
from cl_hpc.profile.record import upgrade
from cl_hpc.report.efficiency import efficiency
from cl_hpc.report.records import AttemptBar, Failure, Limit, RunReport, TaskNode, Timeline, TimeSource
from cl_hpc.rundir.layout import RunDir
from cl_hpc.rundir.records import AttemptRecord
from cl_hpc.rundir.state import State, UnitStatus, root_cause, run_status, unreadable_records
from cl_hpc.states import AttemptState
from cl_hpc.states import Limit as StateLimit
from cl_hpc.status import collect
from cl_hpc.store.sync import run_state

# A task's state is its worst unit's, worst first: a failure anywhere is what the page must show;
# then work in flight (a retry before a plain run: something already went wrong), then work not
# begun; CANCELLED only beside COMPLETED (a finished task whose other units were cancelled).
WORST_FIRST = (State.FAILED, State.RETRYING, State.RUNNING, State.PENDING, State.CANCELLED, State.COMPLETED)
LOG_TAIL_LINES = 40  # per file: the end of stderr (a traceback), then the end of stdout
_LIMITS = {StateLimit.OUT_OF_MEMORY: Limit.OOM, StateLimit.TIMEOUT: Limit.TIMEOUT}
# The local scheduler's line when it escalates a retry (cl_hpc/execute/local_agent.py Agent._escalate).
_LOCAL_ESCALATION = re.compile(r"^\S+ \S+ (?P<key>.+?): retrying with (?P<reasons>.+)$")
_RAISED_MEM = re.compile(r"^mem_gb \S+ -> ([0-9.eE+-]+):")  # an escalation reason (cl_hpc/execute/slurm/escalate.py)


def run_report(run: RunDir, store_root: Optional[Path] = None, now: Optional[float] = None) -> RunReport:
    """Everything the run's page shows, as of ``now`` (default: the clock). Raises only what
    ``status`` raises for a directory that is not a run (a ClHpcError)."""
    info = _collect(run)
    plan, statuses = info["plan"], info["statuses"]
    problems: list[str] = list(info["problems"])
    rows = _efficiency(run, store_root, problems)
    meta = run.meta()
    state = run_state(statuses)
    escalations = _escalations(run, statuses, problems)
    bars = [bar for key, st in statuses.items() for bar in _bars(plan, st, meta, escalations.get(key, {}))]
    raised = _raised_mem_gb(statuses, escalations)
    if not state.terminal:
        bars += [b for key, st in statuses.items() if (b := _queued(plan, st, meta)) is not None]
    return RunReport(
        run_id=run.run_id, run_dir=str(run.path), pipeline=plan.pipeline, backend=str(meta.get("backend", "local")),
        state=state.value, finished=state.terminal, created=meta.get("created"),
        as_of=time.time() if now is None else now, tasks=_tasks(plan, statuses), attempts=bars,
        timelines=_timelines(run, raised, problems), efficiency=rows, failures=_failures(run, plan, statuses, problems),
        problems=problems, core_h_saved=sum(r.get("core_h_saved", 0.0) for r in rows),
        gpu_h_saved=sum(r.get("gpu_h_saved", 0.0) for r in rows),
    )


def _collect(run: RunDir) -> dict[str, Any]:
    """status's collect; when the scheduler cannot be asked (slurmdbd down), the run dir's records
    as they stand, with a problem that says so."""
    try:
        return collect(run)
    except ExecutorError as exc:
        plan = run.load_plan()
        statuses = run_status(run, plan)
        why = f"the scheduler could not be asked ({exc}); shown as the run directory records it"
        return {"run": run, "plan": plan, "statuses": statuses, "problems": [why, *unreadable_records(statuses)]}
    except (ValueError, TypeError, KeyError) as exc:  # a hand-edited or truncated plan.json / run.json
        raise DataError(f"{run.path}: plan.json or run.json cannot be read ({type(exc).__name__}: {exc}); "
                        f"the run's page needs both (`python -m cl_hpc.status` reads the same files)") from exc


def _efficiency(run: RunDir, store_root: Optional[Path], problems: list[str]) -> list[dict[str, Any]]:
    """cl_hpc.report.efficiency's rows (it also refreshes the run's store rows, as status does)."""
    try:
        return efficiency(run, store_root)
    except (ClHpcError, OSError, ValueError, sqlite3.Error) as exc:
        problems.append(f"efficiency: could not be computed ({type(exc).__name__}: {exc})")
        return []


# --- the DAG ---------------------------------------------------------------------------------
def _tasks(plan: Any, statuses: Mapping[str, UnitStatus]) -> list[TaskNode]:
    nodes = []
    for name, spec in plan.tasks.items():
        states = [statuses[u.key].state for u in plan.units_of(name) if u.key in statuses]
        counts = {s.value: states.count(s) for s in WORST_FIRST if s in states}
        worst = next((s for s in WORST_FIRST if s in states), State.PENDING)
        nodes.append(TaskNode(name, list(spec.depends_on), worst.value, len(states), counts))
    return nodes


# --- the attempts ----------------------------------------------------------------------------
def _bars(plan: Any, st: UnitStatus, meta: Mapping[str, Any], escalated: Mapping[int, list[str]]) -> list[AttemptBar]:
    unit, launched = plan.units[st.key], _launch_times(meta)
    bars, previous = [], None
    for a in st.attempts:
        error = a.get("error")
        bars.append(AttemptBar(
            unit=st.key, task=unit.task, shard=unit.shard, attempt=a["attempt"], state=str(a["state"]),
            submitted=_submitted(a, previous, launched), started=a.get("started"), ended=a.get("ended"),
            source=TimeSource.LOCAL, job_id=a.get("job_id"), limit=limit_of(error),
            escalation=list(escalated.get(a["attempt"], [])), error=error))
        previous = a
    return bars


def _queued(plan: Any, st: UnitStatus, meta: Mapping[str, Any]) -> Optional[AttemptBar]:
    """The bar of the attempt a running run has queued for a unit (PENDING, or RETRYING after a
    failure) and not yet started: only for units the latest launch submitted."""
    launch = (meta.get("launches") or [{}])[-1]
    if st.state not in (State.PENDING, State.RETRYING) or st.key not in launch.get("units", [st.key]):
        return None
    ended = st.last.get("ended") if st.state is State.RETRYING and st.last else None
    submitted = ended or launch.get("time")
    unit = plan.units[st.key]
    return AttemptBar(unit=st.key, task=unit.task, shard=unit.shard, attempt=len(st.attempts) + 1,
                      state=State.PENDING.value, submitted=submitted, started=None, ended=None,
                      source=TimeSource.LOCAL)


def _launch_times(meta: Mapping[str, Any]) -> dict[int, float]:
    return {int(x.get("epoch", 0)): float(x["time"]) for x in meta.get("launches") or [] if x.get("time")}


def _submitted(a: AttemptRecord, previous: Optional[AttemptRecord], launched: Mapping[int, float]) -> Optional[float]:
    """When the attempt was queued (see the module's docstring), never after its start."""
    epoch = int(a.get("epoch", 0) or 0)
    same_launch = previous is not None and int(previous.get("epoch", 0) or 0) == epoch
    queued = previous.get("ended") if same_launch and previous else None
    queued = queued if queued is not None else launched.get(epoch)
    started = a.get("started")
    return min(queued, started) if queued is not None and started is not None else queued


def limit_of(error: Optional[str]) -> Optional[Limit]:
    """The limit an attempt's error says ended it (its error starts with the limit's name)."""
    return next((mine for theirs, mine in _LIMITS.items() if theirs.ended(error)), None)


# --- escalations: unit -> attempt -> what the next attempt raised ------------------------------
def _escalations(run: RunDir, statuses: Mapping[str, UnitStatus],
                 problems: list[str]) -> dict[str, dict[int, list[str]]]:
    try:
        if (run.path / "slurm.json").exists():
            return _slurm_escalations(run, statuses)
        return _local_escalations(run.path / "scheduler.log", statuses)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        problems.append(f"escalations: slurm.json or scheduler.log of {run.path} cannot be read "
                        f"({type(exc).__name__}: {exc}); attempts are shown without them")
        return {}


def _slurm_escalations(run: RunDir, statuses: Mapping[str, UnitStatus]) -> dict[str, dict[int, list[str]]]:
    """slurm.json's history: each job a retry guard replaced, with the reasons of what it raised;
    they belong to the failed attempts of that job (the guard re-submits only when every failed
    unit of the job has attempts left)."""
    from cl_hpc.execute.slurm.executor import launches_of

    reasons = {str(h["job_id"]): list(h.get("escalation") or []) for launch in launches_of(run).values()
               for jobs in launch.values() for h in jobs.get("history") or []}
    out: dict[str, dict[int, list[str]]] = {}
    for key, st in statuses.items():
        for a in (a for a in st.attempts if a["state"] == AttemptState.FAILED):
            job = str(a.get("job_id") or "").partition("_")[0]
            if reasons.get(job):
                out.setdefault(key, {})[a["attempt"]] = reasons[job]
    return out


def _local_escalations(log: Path, statuses: Mapping[str, UnitStatus]) -> dict[str, dict[int, list[str]]]:
    """scheduler.log's "<key>: retrying with <reason>; <reason>" lines, the only record the local
    scheduler keeps of them. It writes one for each failed attempt that a limit ended and that it
    retried (none for other failures), in order: the n-th line of a unit is its n-th such attempt."""
    if not log.exists():
        return {}
    lines: dict[str, list[list[str]]] = {}
    for line in log.read_text(errors="replace").splitlines():
        match = _LOCAL_ESCALATION.match(line)
        if match:
            lines.setdefault(match["key"], []).append(match["reasons"].split("; "))
    out: dict[str, dict[int, list[str]]] = {}
    for key, found in lines.items():
        limited = [a for a in _retried(statuses[key]) if limit_of(a.get("error"))] if key in statuses else []
        out[key] = {a["attempt"]: reasons for a, reasons in zip(limited, found)}
    return out


def _retried(st: UnitStatus) -> list[AttemptRecord]:
    """The failed attempts followed by another of the same launch, and the last one if its retry is queued."""
    listed = list(st.attempts)
    retried = [a for a, nxt in zip(listed, listed[1:])
               if a["state"] == AttemptState.FAILED and a.get("epoch", 0) == nxt.get("epoch", 0)]
    return retried + [st.last] if st.state is State.RETRYING and st.last is not None else retried


def _raised_mem_gb(statuses: Mapping[str, UnitStatus],
                   escalations: Mapping[str, Mapping[int, list[str]]]) -> dict[tuple[str, int], float]:
    """(unit, attempt) -> the mem_gb a retry ran under after an escalation in its launch, for runs made
    before a retried job was told its resources: their profiles' ``requested`` is the plan's, while the
    scheduler enforced the raised value (said in the reasons). An attempt record with ``resources`` (the
    runner writes it now, escalated or not) needs nothing: its profile's request is already right."""
    out: dict[tuple[str, int], float] = {}
    for key, st in statuses.items():
        current, epoch = None, None
        for a in st.attempts:
            if a.get("epoch", 0) != epoch:  # a new launch starts from the plan again
                current, epoch = None, a.get("epoch", 0)
            if current is not None and "resources" not in a:
                out[(key, a["attempt"])] = current
            for reason in escalations.get(key, {}).get(a["attempt"], []):
                match = _RAISED_MEM.match(reason)
                current = float(match[1]) if match else current
    return out


# --- profile timelines -----------------------------------------------------------------------
def _timelines(run: RunDir, raised: Mapping[tuple[str, int], float], problems: list[str]) -> list[Timeline]:
    segments: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for path in sorted(run.path.glob("tasks/**/profiles/*.json")):
        try:
            rec = upgrade(read_json(path) or {})
            key, attempt = str(rec["key"]), int(rec["attempt"])
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            problems.append(f"profile {path} cannot be read ({type(exc).__name__}: {exc}); its timeline is left out")
            continue
        segments.setdefault((key, attempt), []).append(rec)
    return [_timeline(key, attempt, sorted(segs, key=lambda r: int(r.get("segment") or 0)), raised.get((key, attempt)))
            for (key, attempt), segs in sorted(segments.items())]


def _timeline(key: str, attempt: int, segs: list[Mapping[str, Any]], mem_gb: Optional[float]) -> Timeline:
    t, columns = _merged(segs)
    req = {**(segs[-1].get("requested") or {}), **({"mem_gb": mem_gb} if mem_gb is not None else {})}
    gpus = sorted({int(m[1]) for name in columns if (m := re.match(r"gpu(\d+)\.", name))})
    per_gpu = lambda field: [columns.get(f"gpu{i}.{field}", [None] * len(t)) for i in gpus]  # noqa: E731
    return Timeline(
        unit=key, attempt=attempt, t=t, cpu_pct=_sum(columns.get("cpu_pct"), columns.get("workers_cpu_pct"), len(t)),
        rss_mb=columns.get("rss_mb", [None] * len(t)),
        mem_request_mb=float(req["mem_gb"]) * 1024 if req.get("mem_gb") is not None else None,
        cpus_requested=int(req["cpus"]) if req.get("cpus") is not None else None,
        gpu_util_pct=per_gpu("util_pct"), gpu_mem_mb=per_gpu("mem_used_mb"), gpu_power_w=per_gpu("power_w"),
    )


def _merged(segs: list[Mapping[str, Any]]) -> tuple[list[float], dict[str, list[Optional[float]]]]:
    """One attempt's series over its segments (a requeued attempt resumes as a new segment, its
    clock from zero), each placed on the attempt's clock at its own start (after the last sample
    before it where a start is missing); a column a segment lacks reads None there."""
    t: list[float] = []
    columns: dict[str, list[Optional[float]]] = {}
    first = segs[0].get("started")
    for seg in segs:
        series = seg.get("series") or {}
        times = list(series.get("t") or [])
        started = seg.get("started")
        offset = started - first if first is not None and started is not None else (t[-1] if t else 0.0)
        for name in (series.keys() - {"t"}) | columns.keys():
            values = list(series.get(name) or [])[:len(times)]
            columns.setdefault(name, [None] * len(t)).extend(values + [None] * (len(times) - len(values)))
        t += [round(offset + x, 3) for x in times] if offset else times
    return t, columns


def _sum(main: Optional[list[Optional[float]]], workers: Optional[list[Optional[float]]],
         n: int) -> list[Optional[float]]:
    """The process tree's CPU: the task's main process plus its workers (as efficiency counts cores)."""
    if not workers or not any(w is not None for w in workers):
        return list(main or [None] * n)
    main = main or [None] * n
    return [None if a is None and b is None else (a or 0.0) + (b or 0.0) for a, b in zip(main, workers)]


# --- failures --------------------------------------------------------------------------------
def _failures(run: RunDir, plan: Any, statuses: Mapping[str, UnitStatus], problems: list[str]) -> list[Failure]:
    cause = root_cause(statuses)
    out = []
    for st in statuses.values():
        if st.state is not State.FAILED:
            continue
        last = st.last or {"attempt": 0}
        out_log = _log_path(run, plan.units[st.key].task, st.key, last)
        out.append(Failure(unit=st.key, attempt=int(last["attempt"]), error=st.error or "failed; no error recorded",
                           log_path=str(out_log) if out_log else None, log_tail=_log_tail(out_log, problems),
                           root_cause=st is cause))
    return out


def _log_path(run: RunDir, task: str, key: str, last: Mapping[str, Any]) -> Optional[Path]:
    """The attempt's stdout log: its record's, else submitit's name for its job in the unit's log
    folder (local) or the task's (Slurm), for a record the scheduler wrote for a process it lost."""
    if last.get("log"):
        return Path(str(last["log"]))
    job = last.get("job_id")
    if not job:
        return None
    for folder in (run.log_dir(key), run.path / "tasks" / task / "logs"):
        if (folder / f"{job}_0_log.out").exists() or (folder / f"{job}_0_log.err").exists():
            return folder / f"{job}_0_log.out"
    return None


def _log_tail(out_log: Optional[Path], problems: list[str]) -> list[str]:
    if out_log is None:
        return []
    err_log = out_log.with_name(out_log.name.removesuffix(".out") + ".err") if out_log.suffix == ".out" else None
    return [line for path in (err_log, out_log) if path is not None for line in _tail(path, problems)]


def _tail(path: Path, problems: list[str]) -> list[str]:
    try:
        text, size = read_tail(path), path.stat().st_size if path.exists() else 0
    except OSError as exc:
        problems.append(f"log {path} cannot be read ({type(exc).__name__}: {exc})")
        return []
    lines = text.splitlines()
    if size > TAIL_BYTES:
        lines = lines[1:]  # the first line read is cut
    return lines[-LOG_TAIL_LINES:]
