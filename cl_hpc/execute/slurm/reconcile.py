"""Bring the run directory up to date with what Slurm knows and the jobs could not write themselves.

A job records its own attempts. It cannot record being cancelled before it started (a dependency
failed: --kill-on-invalid-dep), nor its own death by SIGKILL (out of memory, time limit, node
failure). ``sacct`` knows both; ``reconcile`` writes them into the run directory, so the run dir
stays the one source of truth and ``status`` works long after the launcher has gone.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Mapping

from cl_hpc.dag.model import Plan
from cl_hpc.execute.slurm import commands
from cl_hpc.execute.slurm.parse import SlurmState, parse_sacct, slurm_state, unrecorded_end
from cl_hpc.rundir.layout import RunDir
from cl_hpc.rundir.records import AttemptRecord
from cl_hpc.rundir.state import State, UnitStatus, run_status, unit_status
from cl_hpc.states import AttemptState, Limit

OOM_MARKERS = ("Exceeded job memory limit", "oom-kill", SlurmState.OUT_OF_MEMORY)
TAIL_BYTES = 64 * 1024  # Slurm writes its kill message last; a task's log may be gigabytes before it


def sacct_states(job_ids: list[str]) -> dict[str, tuple[str, str]]:
    """Job id ("123", "123_4") -> (State, ExitCode) for every allocation sacct knows of."""
    if not job_ids:
        return {}
    return parse_sacct_states(commands.run(["sacct", "-n", "-P", "-X", "-o", "JobID,State,ExitCode",
                                            "-j", ",".join(sorted(set(job_ids)))]))


def parse_sacct_states(text: str) -> dict[str, tuple[str, str]]:
    states: dict[str, tuple[str, str]] = {}
    for row in parse_sacct(text, ["JobID", "State", "ExitCode"]):
        state = slurm_state(row["State"])  # "CANCELLED by 0" -> CANCELLED
        for one in _expand_array(row["JobID"]):
            states[one] = (state, row["ExitCode"])
    return states


def _expand_array(job_id: str) -> list[str]:
    """'123_[0-2,5%2]' (a pending array's shards, folded) -> ['123_0', '123_1', '123_2', '123_5']."""
    match = re.fullmatch(r"(\d+)_\[([^\]]+)\]", job_id)
    if not match:
        return [job_id]
    out: list[str] = []
    for part in match[2].split("%")[0].split(","):
        lo, _, hi = part.partition("-")
        out.extend(f"{match[1]}_{i}" for i in range(int(lo), int(hi or lo) + 1))
    return out


def reconcile(run: RunDir, jobs: Mapping[str, str]) -> None:
    plan = run.load_plan()
    statuses = run_status(run, plan)
    open_keys = [k for k, s in statuses.items() if not s.state.terminal and k in jobs]
    if not open_keys:
        return
    known = sacct_states([jobs[k] for k in open_keys])
    launch = (run.meta().get("launches") or [None])[-1]
    for key in open_keys:  # plan order: a failure is written before its dependents are looked at
        state, exit_code = known.get(jobs[key], (SlurmState.PENDING, ""))
        end = unrecorded_end(state)
        if end is None:
            continue
        if state == SlurmState.CANCELLED and not _started(statuses[key], launch):
            cause = failed_ancestor(plan, statuses, key)
            run.mark_cancelled(key, f"upstream {cause} failed" if cause else "cancelled in Slurm (scancel)", cause)
        else:
            stderr = run.path / "tasks" / plan.units[key].task / "logs" / f"{jobs[key]}_0_log.err"
            _record_death(run, statuses[key], launch, jobs[key], state, exit_code, stderr, end)
        statuses[key] = unit_status(run, plan, key, launch)


def failed_ancestor(plan: Plan, statuses: Mapping[str, UnitStatus], key: str) -> str | None:
    """The first upstream unit that failed, or whose own root cause did: what the user should fix."""
    for dep in plan.units[key].deps:
        st = statuses.get(dep)
        if st and st.state is State.FAILED:
            return dep
        if st and st.state is State.CANCELLED and st.cancelled and st.cancelled.get("root_cause"):
            return str(st.cancelled["root_cause"])
    for dep in plan.units[key].deps:
        found = failed_ancestor(plan, statuses, dep)
        if found:
            return found
    return None


def _started(status: UnitStatus, launch: Mapping | None) -> bool:
    epoch = (launch or {}).get("epoch", 0)
    return any(a.get("epoch", 0) == epoch for a in status.attempts)


def _record_death(run: RunDir, status: UnitStatus, launch: Mapping | None, job_id: str, state: str,
                  exit_code: str, stderr: Path, end: AttemptState) -> None:
    epoch = (launch or {}).get("epoch", 0)
    mine = [a for a in status.attempts if a.get("epoch", 0) == epoch]
    last: AttemptRecord | None = mine[-1] if mine else None
    if last is not None and last.get("job_id") not in (None, job_id):
        # An earlier job's attempt: this job died before it recorded its start (a failing
        # cluster.setup line, a node failure). Counted as an attempt of its own, or a retry guard
        # would find the same one failed attempt after every death and re-submit forever.
        last = None
    if last is None:
        last = {"attempt": len(status.attempts) + 1, "state": AttemptState.RUNNING, "epoch": epoch, "job_id": job_id}
    if last.get("state") in (AttemptState.COMPLETED, AttemptState.FAILED):
        return  # the job wrote its own end; sacct only lags
    reason = _reason(state, exit_code, stderr)
    run.write_attempt(status.key, {**last, "state": end, "ended": last.get("ended") or time.time(),
                                   "error": reason, "slurm_state": state})


def _reason(state: str, exit_code: str, stderr: Path) -> str:
    # Without cgroups a memory kill ends FAILED (signal 9); only the job's stderr says why.
    text = read_tail(stderr)
    if state == SlurmState.OUT_OF_MEMORY or any(m in text for m in OOM_MARKERS):
        return (f"{Limit.OUT_OF_MEMORY}: killed for using more than its --mem (resources.mem_gb); "
                f"Slurm state {state}, exit {exit_code}")
    if state == SlurmState.TIMEOUT:
        return f"{Limit.TIMEOUT}: killed at its time limit (resources.time_min)"
    return f"Slurm ended the job {state} (exit code {exit_code}) before it recorded its end"


def read_tail(path: Path, limit: int = TAIL_BYTES) -> str:
    """The last ``limit`` bytes of a log as text ("" if there is none): a job's stderr can be as
    large as its task made it, and the guard runs in a 1 GB job."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, 2) - limit))
            return f.read(limit).decode(errors="replace")
    except FileNotFoundError:
        return ""
