"""The HTML run report's data (cl_hpc/report/run_data.py) from real local runs made by the launcher:
a completed profiled run, a failed one (root cause, log tail, unreadable records as problems), a
retry without a profile, a run still going (and then finished), a memory kill and its escalation;
and a Slurm run (the fake Slurm CLI) whose retry guard escalated a timeout."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cl_hpc.report.records import Limit, RunReport, TimeSource
from cl_hpc.report.run_data import run_report
from cl_hpc.rundir.layout import RunDir
from tests.conftest import REPO, Launcher, _env, attempt_records, held_sleeper, poll
from tests.fakes.slurm import FakeSlurm


def _report(launcher: Launcher, run: Path, now: float | None = None) -> RunReport:
    return run_report(RunDir(run), launcher.store_root, now=now)


def _bars(report: RunReport, unit: str) -> list[Any]:
    return [b for b in report.attempts if b.unit == unit]


def _attempt_states(run: Path, key: str) -> list[str]:
    return [a["state"] for a in attempt_records(run, key)]


def test_a_completed_profiled_run(launcher: Launcher) -> None:
    result = launcher("cluster=local", "pipeline=sizing", "pipeline.tasks.hog.params.hold_s=3")
    assert result.proc.returncode == 0, result.output
    run = result.run_dir()
    report = _report(launcher, run)
    assert (report.run_id, report.pipeline, report.backend) == (run.name, "sizing", "local")
    assert report.state == "COMPLETED" and report.finished and not report.failures and not report.problems
    (node,) = report.tasks
    assert (node.name, node.state, node.units, node.unit_states) == ("hog", "COMPLETED", 1, {"COMPLETED": 1})
    (bar,) = report.attempts
    assert bar.state == "COMPLETED" and bar.source is TimeSource.LOCAL and bar.job_id and bar.limit is None
    assert report.created is not None and report.created <= bar.submitted <= bar.started < bar.ended  # type: ignore[operator]
    assert bar.ended - bar.started >= 3  # type: ignore[operator]
    (line,) = report.timelines
    assert (line.unit, line.attempt, line.mem_request_mb, line.cpus_requested) == ("hog", 1, 2048, 1)
    assert len(line.t) >= 2 and len(line.cpu_pct) == len(line.rss_mb) == len(line.t) and line.t == sorted(line.t)
    assert max(r for r in line.rss_mb if r is not None) >= 300  # the 300 MB it held
    assert line.gpu_util_pct == []  # no GPU asked for
    (row,) = report.efficiency
    assert row["key"] == "hog" and row["mem_req_gb"] == 2 and "mem=" in row["recommended"]
    assert report.core_h_saved == row["core_h_saved"]

    # A requeued attempt resumes as segment 1, its series' clock from zero: one timeline, on the
    # attempt's clock (here resumed 100 s after the first segment's start).
    first = json.loads((run / "tasks" / "hog" / "profiles" / "1-0.json").read_text())
    later = {**first, "segment": 1, "started": first["started"] + 100, "requested": {**first["requested"], "cpus": 2}}
    (run / "tasks" / "hog" / "profiles" / "1-1.json").write_text(json.dumps(later))
    (merged,) = _report(launcher, run).timelines
    n = len(line.t)
    assert merged.t[:n] == line.t and merged.t[n:] == [round(100 + x, 3) for x in line.t]
    assert merged.rss_mb == line.rss_mb * 2 and merged.cpus_requested == 2  # the last segment's request


def test_a_failed_run_names_its_root_cause_with_the_log_tail(launcher: Launcher) -> None:
    result = launcher("cluster=local", "pipeline=failing")
    assert result.proc.returncode == 1, result.output
    run = result.run_dir()
    report = _report(launcher, run)
    assert report.state == "FAILED" and report.finished
    nodes = {n.name: n for n in report.tasks}
    assert {k: n.state for k, n in nodes.items()} == {"a": "COMPLETED", "e": "COMPLETED", "bad": "FAILED",
                                                        "c": "CANCELLED", "d": "CANCELLED"}
    assert nodes["c"].depends_on == ["bad"] and nodes["bad"].depends_on == ["a"]
    (failure,) = report.failures
    assert failure.unit == "bad" and failure.root_cause and failure.attempt == 1
    assert failure.error == "RuntimeError: deliberate failure (attempt 1)"
    assert failure.log_path and Path(failure.log_path).name.endswith("_log.out")
    assert any("deliberate failure (attempt 1)" in line for line in failure.log_tail), failure.log_tail
    (bad,) = _bars(report, "bad")
    assert bad.state == "FAILED" and bad.error == failure.error and bad.limit is None
    assert not _bars(report, "c"), "a unit cancelled before it started has no attempt"

    # Unreadable records: problems, not a traceback.
    (run / "tasks" / "a" / "attempts" / "1.json").write_text("{not json")
    next((run / "tasks" / "e" / "profiles").glob("*.json")).write_text("[truncated")
    broken = _report(launcher, run)
    assert any("tasks/a/attempts/1.json" in p and "cannot be read" in p for p in broken.problems), broken.problems
    assert any("tasks/e/profiles" in p and "cannot be read" in p for p in broken.problems), broken.problems
    assert {t.unit for t in broken.timelines} == {"a", "bad"}


def test_a_retry_shows_both_attempts_and_no_profile(launcher: Launcher) -> None:
    result = launcher("cluster=local", "pipeline=retry", "profile.enabled=false")
    assert result.proc.returncode == 0, result.output
    report = _report(launcher, result.run_dir())
    assert report.state == "COMPLETED" and not report.failures
    first, second = _bars(report, "once")
    assert (first.attempt, first.state, second.attempt, second.state) == (1, "FAILED", 2, "COMPLETED")
    assert first.error == "RuntimeError: boom (attempt 1)" and first.limit is None and first.escalation == []
    assert second.error is None
    assert second.submitted == first.ended, "a retry is queued when the attempt before it ended"
    assert report.timelines == [] and report.efficiency == [] and report.core_h_saved == 0.0


def test_a_run_still_going_then_finished(launcher: Launcher) -> None:
    gate = launcher.tmp / "sleeper.gate"
    result = launcher("cluster=local", *held_sleeper(gate), "launch.follow=false")
    assert result.proc.returncode == 0, result.output
    run = result.run_dir()
    try:
        assert poll(lambda: _attempt_states(run, "sleeper") == ["RUNNING"], 120), result.output
        now = time.time() + 5.0  # a page built a little later than the clock: running bars end there
        going = _report(launcher, run, now=now)
    finally:
        gate.touch()
    assert going.state == "RUNNING" and not going.finished and going.as_of == now
    assert {n.name: n.state for n in going.tasks} == {"first": "COMPLETED", "sleeper": "RUNNING", "last": "PENDING"}
    (sleeper,) = _bars(going, "sleeper")
    assert sleeper.state == "RUNNING" and sleeper.started is not None and sleeper.ended is None
    (queued,) = _bars(going, "last")
    assert (queued.state, queued.attempt, queued.started, queued.ended) == ("PENDING", 1, None, None)
    assert queued.submitted == going.created, "queued at the launch, as Slurm queues every job of the DAG"
    assert poll(lambda: _attempt_states(run, "last") == ["COMPLETED"], 120), "the run ends once the gate opens"
    done = _report(launcher, run)
    assert done.state == "COMPLETED" and done.finished and all(b.ended for b in done.attempts)
    assert [b.unit for b in done.attempts] == ["first", "sleeper", "last"]


def test_a_memory_kill_and_the_escalated_retry(launcher: Launcher) -> None:
    # hog holds 250 MB over its 0.25 GB until the local scheduler kills it (the gate opens only
    # after the first attempt failed), then the retry asks for more and completes.
    gate = launcher.tmp / "hog.gate"
    result = launcher("cluster=local", "pipeline=oom", "pipeline.tasks.hog.params.mb=250",
                      "pipeline.tasks.hog.retries=1", f"+pipeline.tasks.hog.params.gate={gate}", "launch.follow=false")
    assert result.proc.returncode == 0, result.output
    run = result.run_dir()
    try:
        assert poll(lambda: "FAILED" in _attempt_states(run, "hog"), 120), (run / "scheduler.log").read_text()
    finally:
        gate.touch()
    assert poll(lambda: _attempt_states(run, "after") == ["COMPLETED"], 120), (run / "scheduler.log").read_text()
    report = _report(launcher, run)
    assert report.state == "COMPLETED" and not report.failures
    first, second = _bars(report, "hog")
    assert first.state == "FAILED" and first.limit is Limit.OOM and "Exceeded job memory limit" in (first.error or "")
    (reason,) = first.escalation
    assert reason.startswith("mem_gb 0.25 -> ") and "summed PSS sampled by the local scheduler" in reason
    assert second.state == "COMPLETED" and second.limit is None and second.escalation == []
    assert {(t.unit, t.attempt) for t in report.timelines} >= {("hog", 2)}
    # The retry's request line is what its scheduler enforced (the job is told it: its profile records it)
    raised_gb = float(reason.split(" -> ")[1].split(":")[0])
    mem = {t.attempt: t.mem_request_mb for t in report.timelines if t.unit == "hog"}
    assert mem[2] == raised_gb * 1024 > 256 and mem.get(1, 256) == 256, mem


def test_a_slurm_run_with_a_timeout_escalated_by_its_retry_guard(launcher: Launcher, fake_slurm: FakeSlurm) -> None:
    """On the fake Slurm CLI: `once` hits its time limit, its retry guard re-submits it with twice
    the time; the page shows the attempt, its limit and the guard's reasons, and what is queued."""
    result = launcher("pipeline=retry", "cluster=slurm", "cluster.check_limits=false", "launch.follow=false")
    run = result.run_dir()
    jobs = json.loads((run / "slurm.json").read_text())["launches"]["0"]
    fake_slurm.set_state(jobs["once"]["job_id"], "TIMEOUT", "0:15")
    guard = subprocess.run([sys.executable, "-m", "cl_hpc.execute.slurm.guard", str(run), "once", "0"], cwd=REPO,
                           env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert guard.returncode == 0 and "re-submitted once" in guard.stdout, guard.stdout + guard.stderr
    (replaced,) = json.loads((run / "slurm.json").read_text())["launches"]["0"]["once"]["history"]
    report = _report(launcher, run)
    assert report.backend == "slurm" and report.state == "RUNNING" and not report.finished, report.problems
    assert {n.name: n.state for n in report.tasks} == {"once": "RETRYING", "after": "PENDING"}
    first, queued = _bars(report, "once")
    assert first.state == "FAILED" and first.job_id == jobs["once"]["job_id"] and first.limit is Limit.TIMEOUT
    assert first.escalation == replaced["escalation"] and first.escalation[0].startswith("time_min 5 -> 10")
    assert (queued.attempt, queued.state, queued.started, queued.submitted) == (2, "PENDING", None, first.ended)
    (after,) = _bars(report, "after")
    assert after.state == "PENDING" and after.submitted == report.created
    assert report.timelines == [] and report.failures == []

    # slurmdbd down: the page still comes, from the run dir's records, and says why
    done = fake_slurm.calls("sacct")
    fake_slurm.fail("sacct", list(range(done + 1, done + 50)), "sacct: error: Problem talking to the database")
    offline = _report(launcher, run)
    assert any("could not be asked" in p and "Problem talking to the database" in p for p in offline.problems)
    assert offline.attempts == report.attempts and offline.tasks == report.tasks
