"""A fit longer than its time limit: Slurm's pre-timeout USR2 makes it checkpoint, requeue itself
and resume, until it completes with the exact step count (issue 3).

The job asks for 1 minute with USR2 55 s before the end, so the signal comes early; Slurm checks time
limits every 30 s and may send it up to a minute early, so it can come at any time from the job's
start, before the fit has begun included. The fit (32 steps of 1 s) is longer than that window, so
it cannot finish before its first signal; every run after a requeue is signalled again, so the job
may be requeued several times, each time a few steps further. A signal that comes after the fit,
while the job exits, must not fail it either: Slurm's own account must end COMPLETED.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

from cl_hpc.execute.slurm.parse import parse_scontrol_records
from tests.conftest import Launcher
from tests.slurm.test_backend import _jobs, _wait_state

STEPS = 32  # tests/conf/pipeline/timelimit.yaml: 2 epochs x 16 batches


def _squeue_state(job: str) -> str:
    """PENDING, RUNNING, ...; "" once the job has left the queue. A failed squeue (a slurmctld busy
    past its MessageTimeout) is asked again: read as "left the queue" it would end the follow early."""
    for _ in range(10):
        proc = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True)
        if proc.returncode == 0 or "Invalid job id" in proc.stderr:
            return proc.stdout.strip()
        time.sleep(1)
    raise AssertionError(f"squeue kept failing: {proc.stderr.strip()}")


def _restarts(job: str) -> int:
    out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True, check=True).stdout
    return int(parse_scontrol_records(out)[0]["Restarts"])


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # not written yet
        return {}


def _release_requeues(job: str, attempt: Path, timeout_s: float) -> tuple[list[str], int]:
    """Follow the job until it leaves the queue; each time it waits requeued, note why and release it.

    Slurm holds a requeued batch job for about two minutes (BeginTime); the test starts it at once.
    Returns the PREEMPTED notes seen, in order, and the highest Restarts count Slurm showed.
    """
    notes: list[str] = []
    restarts = 0
    deadline = time.monotonic() + timeout_s
    while (state := _squeue_state(job)) and time.monotonic() < deadline:
        record = _read_json(attempt)
        if state == "PENDING" and record.get("state") == "PREEMPTED":
            if record["note"] not in notes:
                notes.append(record["note"])
            restarts = max(restarts, _restarts(job))
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], capture_output=True)
        time.sleep(0.5)
    if state:  # out of time: leave nothing queued behind the test
        subprocess.run(["scancel", job], capture_output=True)
    return notes, restarts


def _sacct_states(job: str, timeout_s: float = 30) -> list[str]:
    """Every record of the job, requeued runs included (-D), once the last one has ended."""
    deadline = time.monotonic() + timeout_s
    while True:
        out = subprocess.run(["sacct", "-D", "-X", "-n", "-P", "-j", job, "-o", "State"],
                             capture_output=True, text=True, check=True).stdout
        states = out.split()
        if (states and states[-1] not in ("PENDING", "RUNNING", "REQUEUED")) or time.monotonic() > deadline:
            return states
        time.sleep(0.5)


def test_pre_timeout_signal_checkpoints_requeues_and_resumes_with_the_exact_step_count(launcher: Launcher) -> None:
    result = launcher("cluster=slurm", "pipeline=timelimit", "cluster.signal_delay_s=55", "launch.follow=false")
    assert result.proc.returncode == 0, result.output
    run = result.run_dir()
    fit = run / "tasks" / "fit"
    job = _jobs(run)["fit"]["job_id"]

    notes, restarts = _release_requeues(job, fit / "attempts" / "1.json", timeout_s=240)
    info = _wait_state(launcher, run.name, {"COMPLETED", "FAILED", "CANCELLED"}, timeout_s=120)
    logs = "".join(p.read_text() for p in sorted((fit / "logs").glob("*_log.err")))
    assert info.get("state") == "COMPLETED", f"{info}\n--- job log:\n{logs[-4000:]}"

    outputs = json.loads((fit / "outputs.json").read_text())
    assert outputs["global_step"] == STEPS, f"2 epochs x 16 batches, exactly: {outputs}"
    assert outputs["steps_run"] == outputs["distinct_steps"] == STEPS, f"no step lost, none run twice: {outputs}"

    attempt = json.loads((fit / "attempts" / "1.json").read_text())
    starts = (fit / "started.log").read_text().split()
    assert attempt["state"] == "COMPLETED" and attempt["requeues"] >= 1, attempt
    assert len(starts) == attempt["requeues"] + 1, "each requeue started the same attempt again"
    assert len(notes) == attempt["requeues"], f"each requeue was seen PREEMPTED while it waited: {notes}"
    assert attempt["preemptions"] == notes, "the final record keeps why each requeue happened"
    matches = [re.match(r"SIGUSR2 at step (\d+): checkpoint saved", note) for note in notes]
    assert all(matches), f"only the pre-timeout signal preempted the fit: {notes}"
    saved = [int(m.group(1)) for m in matches if m]
    # a signal in the last step checkpoints the end of the fit, and the requeued run only restores it
    assert saved == sorted(set(saved)) and saved[-1] <= STEPS, f"every run got further before its checkpoint: {saved}"

    states = _sacct_states(job)  # Slurm's own account: the job was requeued, never timed out
    assert states == ["REQUEUED"] * attempt["requeues"] + ["COMPLETED"], states
    assert restarts == attempt["requeues"], f"scontrol showed Restarts={restarts}"
    outside = logs.count("caught SIGUSR2 with no checkpointing fit running")  # before or after the fit
    print(f"job {job}: requeued {attempt['requeues']}x, checkpoints at steps {saved} ({outside} signal(s) caught "
          f"outside a fit); sacct -D: {states}")
