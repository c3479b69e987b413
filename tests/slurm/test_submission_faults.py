"""Submission faults on the real local cluster (the fake CLI tests the same in tests/test_slurm_fake.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cl_hpc.execute.slurm import commands
from tests.conftest import Launcher
from tests.slurm.test_backend import _wait_state


def _sacct_state(job_id: str, timeout_s: float = 60) -> str:
    """The job's end as slurmdbd records it (polled: its row lags the cancel by a moment)."""
    deadline = time.monotonic() + timeout_s
    while True:
        out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", "State", "-j", job_id], capture_output=True, text=True,
                             check=False)
        state = out.stdout.strip().split(" ")[0]
        if state not in ("", "PENDING", "RUNNING") or time.monotonic() > deadline:
            return state
        time.sleep(0.5)


def test_a_submission_slurm_refuses_midway_is_cancelled_whole_and_resumes(launcher: Launcher) -> None:
    """sbatch refuses task c (an account the user has no association with; the pre-check is off,
    as on a cluster whose limits it cannot read): a and b are cancelled, every unit reads
    CANCELLED, and launch.resume without the bad account completes the run (issue 10, defect 4)."""
    bad = launcher("cluster=slurm", "pipeline=diamond", "cluster.check_limits=false",
                   "pipeline.tasks.c.resources.account=no_such_account", "launch.follow=false")
    assert bad.proc.returncode == 2, bad.output
    assert "Invalid account" in bad.output and "launch.resume=" in bad.output
    run = bad.run_dir()
    submitted = json.loads((run / "slurm.json").read_text())["launches"]["0"]
    assert sorted(submitted) == ["a", "b"]
    jobs = {task: _sacct_state(e["job_id"]) for task, e in submitted.items()}
    # a (no dependency) may start and finish while b's and c's sbatch run on a loaded machine: a job that
    # ended before the cancel keeps its result, and only then; anything else is cancelled
    assert set(jobs.values()) <= {"CANCELLED", "COMPLETED"} and jobs["b"] == "CANCELLED", jobs
    info = _wait_state(launcher, run.name, {"CANCELLED", "FAILED", "COMPLETED"}, timeout_s=30)
    states = {key: u["state"] for key, u in info["units"].items()}
    finished = {key for key, state in states.items() if state == "COMPLETED"}
    assert finished == {t for t, state in jobs.items() if state == "COMPLETED"}, (states, jobs)
    assert {states[key] for key in states.keys() - finished} == {"CANCELLED"}, info

    resumed = launcher("cluster=slurm", "pipeline=diamond", f"launch.resume={run.name}")
    assert resumed.proc.returncode == 0, resumed.output
    assert resumed.outputs("d", run)["value"] == 1 + 10 + 1 + 100


def test_a_multi_word_cluster_python_runs_the_tasks_and_the_retry_guard(launcher: Launcher) -> None:
    """cluster.python as a command line: the task jobs and the retry guard start with the same
    words, so the failed first attempt of `once` is retried and `after` runs (defect 5 of issue 10:
    the guard quoted it as one word, could not start, and `after` waited forever)."""
    python = f"env PYTHONUNBUFFERED=1 {sys.executable}"
    result = launcher("cluster=slurm", "pipeline=retry", f"cluster.python='{python}'", "launch.follow=false")
    assert result.proc.returncode == 0, result.output
    run = result.run_dir()
    info = _wait_state(launcher, run.name, {"COMPLETED", "FAILED", "CANCELLED"}, timeout_s=180)
    assert info.get("state") == "COMPLETED", (info, launcher.status(run.name).stdout)
    assert [a["state"] for a in info["units"]["once"]["attempts"]] == ["FAILED", "COMPLETED"]
    # The retry went through the guard: the first job is history, attempt 2 ran in the job the
    # guard re-submitted, and the guard's own log says it submitted that job.
    once = json.loads((run / "slurm.json").read_text())["launches"]["0"]["once"]
    first_job, retry_job = once["history"][0]["job_id"], once["job_id"]
    attempts = [json.loads((run / "tasks" / "once" / "attempts" / f"{n}.json").read_text()) for n in (1, 2)]
    assert retry_job != first_job and [a["job_id"] for a in attempts] == [first_job, retry_job], (once, attempts)
    logs = {p.name: p.read_text() for p in (run / "tasks" / "once" / "logs").glob("*_log.out")}
    said = f"cl_hpc guard: re-submitted once as job {retry_job}"
    assert [name for name, text in logs.items() if said in text], logs
    script = next((run / "tasks" / "once" / "logs").glob("guard-*.sh")).read_text()
    assert f"exec env PYTHONUNBUFFERED=1 {sys.executable} -m cl_hpc.execute.slurm.guard" in script


def test_the_command_layer_on_the_real_cluster(tmp_path: Path) -> None:
    """What the fake CLI assumes of the real one: sbatch --parsable's id, squeue's %o is the absolute
    script path (the lookup after a lost answer), an unknown id's error, and scancel."""
    script = tmp_path / "hold.sh"
    script.write_text("#!/bin/bash\n#SBATCH --job-name=cl_hpc.test.hold\n#SBATCH --time=1\n#SBATCH --mem=50M\n"
                      "#SBATCH --begin=now+1hour\nsleep 60\n")  # held: it must stay queued while we look
    job = commands.sbatch(script)
    try:
        assert job.isdigit()
        assert commands.find_submitted(str(script)) == job
        assert commands.live_jobs([job, "99999998"]) == {job: "PENDING"}
        assert commands.live_jobs(["99999998"]) == {}  # squeue exits 1, "Invalid job id specified"
    finally:
        commands.scancel([job])
    assert _sacct_state(job) == "CANCELLED"
    with pytest.raises(commands.SlurmCommandError, match=r"`scontrol show job 99999998` failed \(exit 1\): "
                                                         r".*Invalid job id specified"):
        commands.scontrol("show", "job", "99999998")


def test_a_resume_waits_until_the_running_job_it_cancelled_has_left_squeue(tmp_path: Path) -> None:
    """scancel only asks: a job that ignores SIGTERM runs on until KillWait's SIGKILL, and squeue
    lists it meanwhile. The resume's stop must return only once it is gone."""
    from cl_hpc.execute.slurm.executor import JOBS_FILE, stop_earlier_jobs
    from cl_hpc.rundir.layout import RunDir

    started = tmp_path / "started"
    script = tmp_path / "stubborn.sh"
    script.write_text(f"#!/bin/bash\n#SBATCH --job-name=cl_hpc.test.stubborn\n#SBATCH --time=2\n#SBATCH --mem=50M\n"
                      f"#SBATCH --output={tmp_path}/%j.out\ntrap '' TERM\ntouch {started}\n"
                      f"while true; do sleep 0.1; done\n")
    job = commands.sbatch(script)
    try:
        deadline = time.monotonic() + 120
        while not started.exists():
            assert time.monotonic() < deadline, commands.live_jobs([job])
            time.sleep(0.1)
        run = RunDir(tmp_path / "run")
        run.path.mkdir()
        (run.path / JOBS_FILE).write_text(json.dumps({"launches": {"0": {"t": {
            "job_id": job, "array": None, "units": {"t": job}, "resources": {}}}}}))
        stop_earlier_jobs(run)
        assert commands.live_jobs([job]) == {}, "the resume went on while the old job was still there"
    finally:
        commands.scancel([job])
    assert _sacct_state(job) == "CANCELLED"
