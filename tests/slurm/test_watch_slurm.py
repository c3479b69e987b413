"""The watch on the real local Slurm cluster: the lock holds a watch-launched run's job ids, a
second watch is skipped while they are in squeue, and once they are gone the lock is stale and the
next watch launches again (after the run completed, and after its jobs were cancelled under it).
Then the watch as scrontab runs it, inside a Slurm job, and the scrontab example itself."""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from pathlib import Path

from cl_hpc.watch.lock import live_slurm_jobs
from tests.conftest import REPO
from tests.test_watch_cli import Watch, out, wait_ended


def _wait_gone(job_ids: list[str], timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while live_slurm_jobs(job_ids) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not live_slurm_jobs(job_ids), f"jobs {job_ids} still in squeue after {timeout_s} s"


def test_watch_on_slurm_holds_the_lock_while_the_jobs_are_queued(tmp_path: Path) -> None:
    watch = Watch(tmp_path)
    # sleeper lengthened: the second watch must find the jobs still queued on a loaded machine
    args = ("cluster=slurm", "pipeline=slow", "launch.follow=false", "pipeline.tasks.sleeper.params.sleep_s=12")
    lock_path = watch.run_root / ".watch-slow.lock"

    first = watch(*args)
    assert first.returncode == 0, out(first)
    [run] = watch.runs()
    lock = json.loads(lock_path.read_text())
    jobs = json.loads((run / "slurm.json").read_text())["launches"]["0"]
    assert lock["run_id"] == run.name and lock["backend"] == "slurm" and lock["launched"] is True
    assert sorted(lock["job_ids"]) == sorted(task["job_id"] for task in jobs.values())

    second = watch(*args)
    assert second.returncode == 0, out(second)
    assert f"skipped: run {run.name} still going: Slurm job(s)" in second.stdout and "in squeue" in second.stdout
    assert watch.runs() == [run]

    assert wait_ended(run) == "COMPLETED"
    _wait_gone(lock["job_ids"])
    third = watch(*args)
    assert third.returncode == 0, out(third)
    assert f"cleared: run {run.name} ended (COMPLETED)" in third.stdout
    rerun = watch.runs()[-1]
    assert rerun != run and json.loads((rerun / "run.json").read_text())["launches"][-1]["reason"].startswith("time:")

    # Jobs cancelled under the watch: the run never ends in its files, but nothing drives it.
    held = json.loads(lock_path.read_text())["job_ids"]
    subprocess.run(["scancel", *held], check=True)
    _wait_gone(held)
    fourth = watch(*args, "--dry-run")
    assert fourth.returncode == 0, out(fourth)
    assert f"stale lock {lock_path} would be replaced: run {rerun.name} is unfinished but nothing drives it " \
           f"any more: its Slurm job(s)" in fourth.stdout


def test_watch_as_a_batch_job_records_its_job_and_keeps_its_slurm_variables_from_the_pipeline(tmp_path: Path) -> None:
    """What scrontab runs: the watch inside a Slurm job. Its lock names that job, and the pipeline's
    jobs see the watch's job only as CL_HPC_LAUNCHER_JOB_ID, not through inherited SLURM_* variables."""
    watch = Watch(tmp_path)
    probe = ["pipeline.tasks.d.target=tests.tasks.env_probe",
             "+pipeline.tasks.d.params.names=[CL_HPC_LAUNCHER_JOB_ID,SLURM_JOB_ID,SLURM_MEM_PER_NODE]"]
    command = shlex.join(watch.argv("cluster=slurm", "pipeline=diamond", "launch.follow=false", *probe))
    log = tmp_path / "watch-job.out"
    submitted = subprocess.run(["sbatch", "--parsable", "-J", "cl_hpc.watch", "-c", "1", "--mem=1G", "-t", "10",
                                "-o", str(log), f"--chdir={REPO}", f"--export=ALL,PYTHONPATH={REPO}",
                                f"--wrap={command}"], capture_output=True, text=True, check=True)
    job = submitted.stdout.strip().split(";")[0]
    _wait_gone([job])
    text = log.read_text()
    [run] = watch.runs()
    assert f"launching run {run.name}" in text and "the lock stays until it ends" in text, text
    lock = json.loads((watch.run_root / ".watch-diamond.lock").read_text())
    assert lock["watch_job"] == job and lock["launched"] is True and lock["job_ids"]

    assert wait_ended(run) == "COMPLETED"
    env = json.loads((run / "tasks" / "d" / "outputs.json").read_text())["env"]
    assert env["CL_HPC_LAUNCHER_JOB_ID"] == job and env["SLURM_JOB_ID"] != job
    assert env["SLURM_MEM_PER_NODE"] == "512"  # the task's own --mem, not the watch job's 1G


def test_scrontab_example_runs_the_watch_every_30_minutes_and_backs_up_the_store() -> None:
    from tests.slurm.test_wrappers import _check_with_sbatch, parse_scrontab

    text = (REPO / "slurm" / "scrontab.example").read_text().replace("/path/to/cl_hpc", str(REPO))
    entries, problems = parse_scrontab(text)
    assert problems == [] and [e.spec for e in entries] == ["*/30 * * * *", "15 3 * * *"]
    entry, backup = entries
    assert f"{REPO}/.venv/bin/python -m cl_hpc.watch cluster=slurm launch.follow=false" in entry.command
    assert "--job-name=cl_hpc.watch" in entry.options
    _check_with_sbatch(entry)
    assert f"-m cl_hpc.store backup {REPO}/backups/ --keep 14" in backup.command
    assert "--job-name=cl_hpc.backup" in backup.options and "--job-name=cl_hpc.watch" not in backup.options
    _check_with_sbatch(backup)
    # the commented-out nightly retrain is valid once uncommented
    lines = text.splitlines()
    start = lines.index("# #SCRON --job-name=cl_hpc.nightly")
    nightly, problems = parse_scrontab("\n".join(line.removeprefix("# ") for line in lines[start:]))
    assert problems == [] and [e.spec for e in nightly] == ["30 2 * * *"]
    assert f"bash {REPO}/slurm/launch.sbatch" in nightly[0].command
    _check_with_sbatch(nightly[0])
