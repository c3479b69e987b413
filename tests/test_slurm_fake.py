"""cluster=slurm's logic against the fake Slurm CLI (tests/fakes/slurm/): faults a real cluster
rarely shows, fast and without root. The same behaviours run on the real cluster in tests/slurm/."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO, Launcher, _env
from tests.fakes.slurm import FakeSlurm

SLURM = ("cluster=slurm", "cluster.check_limits=false", "launch.follow=false")
REFUSED = "sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified"


def _states(launcher: Launcher, run_id: str) -> dict[str, str]:
    proc = launcher.status(run_id, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {key: unit["state"] for key, unit in json.loads(proc.stdout)["units"].items()}


def test_a_failed_submission_is_cancelled_whole_and_can_be_resumed(launcher: Launcher, fake_slurm: FakeSlurm) -> None:
    """sbatch refuses the third task: the two jobs already queued are cancelled, every unit reads
    CANCELLED with the reason, and launch.resume submits the run again (defect 4 of issue 10)."""
    fake_slurm.fail("sbatch", [3], REFUSED)
    first = launcher("pipeline=diamond", *SLURM)
    assert first.proc.returncode == 2, first.output
    assert "submitting task 'c' failed, so the 2 job(s) already submitted (100, 101) were cancelled" in first.output
    assert "launch.resume=" in first.output
    jobs = fake_slurm.jobs()
    assert sorted(jobs) == ["100", "101"] and all(j["states"][""][0] == "CANCELLED" for j in jobs.values())
    run = first.run_dir()
    states = _states(launcher, run.name)
    assert states == {"a": "CANCELLED", "b": "CANCELLED", "c": "CANCELLED", "d": "CANCELLED"}, states
    reason = json.loads((run / "tasks" / "d" / "cancelled.json").read_text())["reason"]
    assert "Invalid account" in reason and "task 'c'" in reason
    shown = launcher.status(run.name).stdout
    assert "cancelled (a, b, c, d): submitting task 'c' failed" in " ".join(shown.split()), shown

    again = launcher("pipeline=diamond", *SLURM, f"launch.resume={run.name}")
    assert again.proc.returncode == 0, again.output
    assert sorted(fake_slurm.jobs()) == ["100", "101", "102", "103", "104", "105"]
    assert set(_states(launcher, run.name).values()) == {"PENDING"}


def test_a_transient_sbatch_error_mid_dag_is_retried_and_the_run_goes_on(launcher: Launcher,
                                                                         fake_slurm: FakeSlurm) -> None:
    fake_slurm.fail("sbatch", [2], "sbatch: error: Batch job submission failed: Resource temporarily unavailable")
    launched = launcher("pipeline=diamond", *SLURM)
    assert launched.proc.returncode == 0, launched.output
    assert fake_slurm.calls("sbatch") == 5 and sorted(fake_slurm.jobs()) == ["100", "101", "102", "103"]
    deps = {j["name"].rsplit(".", 1)[-1]: j["dependency"] for j in fake_slurm.jobs().values()}
    assert deps == {"a": None, "b": "afterok:100", "c": "afterok:100", "d": "afterok:101,afterok:102"}


def test_reconcile_waits_for_a_lagging_sacct_then_records_what_slurm_saw(launcher: Launcher,
                                                                        fake_slurm: FakeSlurm) -> None:
    """A job killed before it wrote its end (here a node failure) is recorded from sacct, once
    slurmdbd has its row; before that it reads as still pending, never as a guess."""
    fake_slurm.update(sacct_lag=2)
    run = launcher("pipeline=diamond", *SLURM).run_dir()
    fake_slurm.set_state("100", "NODE_FAIL", "0:0")
    assert _states(launcher, run.name)["a"] == "PENDING"  # sacct has no row for it yet
    deadline_calls = 5
    for _ in range(deadline_calls):
        states = _states(launcher, run.name)
        if states["a"] != "PENDING":
            break
    assert states["a"] == "FAILED", states
    record = json.loads((run / "tasks" / "a" / "attempts" / "1.json").read_text())
    assert record["slurm_state"] == "NODE_FAIL" and "NODE_FAIL" in record["error"]


def test_a_second_resume_of_a_run_being_resumed_is_refused_naming_the_first(launcher: Launcher,
                                                                            fake_slurm: FakeSlurm,
                                                                            tmp_path: Path) -> None:
    """Two `launch.resume` of one run at once (issue 10: 'would submit it twice'). The retry guard of
    `once` failed, so `after` waits forever and the run may be resumed. The first resume is held in
    the sacct call that finds the failed guard, after it read the states and before it wrote
    anything: the second must fail at once, naming the first's pid and host, not submit again."""
    run = launcher("pipeline=retry", *SLURM).run_dir()
    entry = json.loads((run / "slurm.json").read_text())["launches"]["0"]["once"]
    once, guard = entry["job_id"], entry["guard"]
    fake_slurm.set_state(once, "FAILED", "1:0")
    fake_slurm.set_state(guard, "FAILED", "1:0")
    gate = tmp_path / "gate"
    args = [sys.executable, "-m", "cl_hpc.launch", "hydra.searchpath=[file://tests/conf]",
            f"run_root={launcher.run_root}", f"store.root={launcher.store_root}", "pipeline=retry", *SLURM,
            f"launch.resume={run.name}"]
    env = {**_env(), "CL_HPC_FAKE_SLURM_GATE": str(gate), "CL_HPC_FAKE_SLURM_GATE_COMMAND": "sacct"}
    first = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not Path(f"{gate}.waiting").exists():
            assert first.poll() is None and time.monotonic() < deadline, \
                first.communicate()[0] if first.poll() else "timeout"
            time.sleep(0.05)
        second = launcher("pipeline=retry", *SLURM, f"launch.resume={run.name}")
        assert second.proc.returncode == 2, second.output
        assert f"is being launched by another process (pid {first.pid} on {os.uname().nodename}" in second.output
    finally:
        gate.touch()
        out = first.communicate(timeout=120)[0]
    assert first.returncode == 0, out
    names = sorted(j["name"].rsplit(".", 1)[-1] for j in fake_slurm.jobs().values())
    assert names == ["after", "after", "guard", "guard", "once", "once"], names  # the first launch, then one resume


def test_a_launcher_killed_mid_submission_leaves_a_run_that_resume_completes(launcher: Launcher,
                                                                            fake_slurm: FakeSlurm,
                                                                            tmp_path: Path) -> None:
    """SIGKILL while c's sbatch runs: no error path runs, so status names the units never
    submitted, and resume cancels the jobs left queued before it submits the run again."""
    gate = tmp_path / "gate"
    args = [sys.executable, "-m", "cl_hpc.launch", "hydra.searchpath=[file://tests/conf]",
            f"run_root={launcher.run_root}", f"store.root={launcher.store_root}", "pipeline=diamond", *SLURM]
    env = {**_env(), "CL_HPC_FAKE_SLURM_GATE": str(gate), "CL_HPC_FAKE_SLURM_GATE_AFTER": "2"}
    first = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)  # its own group: the kill takes its sbatch too
    deadline = time.monotonic() + 120
    while not Path(f"{gate}.waiting").exists():
        assert first.poll() is None and time.monotonic() < deadline, \
            first.communicate()[0] if first.poll() else "timeout"
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    run = next(launcher.run_root.iterdir())
    assert sorted(fake_slurm.jobs()) == ["100", "101"]  # a and b queued, c and d never

    proc = launcher.status(run.name, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    info = json.loads(proc.stdout)
    assert any(p.startswith("c, d were never submitted") and f"launch.resume={run.name}" in p
               for p in info["problems"]), info["problems"]

    again = launcher("pipeline=diamond", *SLURM, f"launch.resume={run.name}")
    assert again.proc.returncode == 0, again.output
    jobs = fake_slurm.jobs()
    assert [jobs[j]["states"][""][0] for j in ("100", "101")] == ["CANCELLED", "CANCELLED"]
    assert sorted(j["name"].rsplit(".", 1)[-1] for j in jobs.values() if j["states"][""][0] == "PENDING") == \
        ["a", "b", "c", "d"]


def _guard(run: Path, task: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cl_hpc.execute.slurm.guard", str(run), task, "0"], cwd=REPO,
                          env=_env(), capture_output=True, text=True, timeout=300, check=False)


def test_the_retry_guard_waits_for_a_lagging_sacct_then_resubmits_and_repoints(launcher: Launcher,
                                                                              fake_slurm: FakeSlurm) -> None:
    """`once` (retries: 1) died without recording its end, and slurmdbd has no row for it yet: the
    guard must wait for sacct rather than read 'still running' and leave `after` waiting forever."""
    fake_slurm.update(sacct_lag=3)
    run = launcher("pipeline=retry", *SLURM).run_dir()
    jobs = json.loads((run / "slurm.json").read_text())["launches"]["0"]
    fake_slurm.set_state(jobs["once"]["job_id"], "FAILED", "1:0")
    before = fake_slurm.calls("sacct")
    done = _guard(run, "once")
    assert done.returncode == 0, done.stdout + done.stderr
    assert fake_slurm.calls("sacct") - before > 3  # it asked until the row was there
    new = json.loads((run / "slurm.json").read_text())["launches"]["0"]["once"]
    assert f"re-submitted once as job {new['job_id']}" in done.stdout
    assert new["job_id"] != jobs["once"]["job_id"] and new["history"][0]["job_id"] == jobs["once"]["job_id"]
    assert ["update", f"JobId={jobs['after']['job_id']}", f"Dependency=afterok:{new['job_id']}"] \
        in fake_slurm.log("scontrol")
    attempt = json.loads((run / "tasks" / "once" / "attempts" / "1.json").read_text())
    assert attempt["state"] == "FAILED" and attempt["slurm_state"] == "FAILED"


def test_the_retry_guard_cancels_the_dependents_once_no_attempts_are_left(launcher: Launcher,
                                                                          fake_slurm: FakeSlurm) -> None:
    run = launcher("pipeline=retry", *SLURM, "pipeline.tasks.once.retries=0",
                   "pipeline.tasks.after.retries=1").run_dir()
    jobs = json.loads((run / "slurm.json").read_text())["launches"]["0"]
    fake_slurm.set_state(jobs["after"]["job_id"], "FAILED", "1:0")  # after's own guard: nothing depends on it
    done = _guard(run, "after")
    assert done.returncode == 0 and "re-submitted after" in done.stdout, done.stdout + done.stderr
    new = json.loads((run / "slurm.json").read_text())["launches"]["0"]["after"]["job_id"]
    fake_slurm.set_state(new, "FAILED", "1:0")
    done = _guard(run, "after")
    assert "after failed with no attempts left" in done.stdout, done.stdout + done.stderr
    assert _states(launcher, run.name)["after"] == "FAILED"


# --- review of issue 10: jobs never left queued and untracked, resumes never beside old jobs -----

def _job_states(fake_slurm: FakeSlurm) -> dict[str, str]:
    return {j: job["states"][""][0] for j, job in fake_slurm.jobs().items()}


def test_a_refused_guard_sbatch_cancels_the_task_job_it_guards(launcher: Launcher, fake_slurm: FakeSlurm) -> None:
    """once's sbatch succeeds, its guard's is refused: once's job (100) must be cancelled with the
    launch and be in slurm.json, not stay PENDING untracked (a resume would then submit a second)."""
    fake_slurm.fail("sbatch", [2], REFUSED)
    first = launcher("pipeline=retry", *SLURM)
    assert first.proc.returncode == 2, first.output
    assert "submitting task 'once' failed, so the 1 job(s) already submitted (100) were cancelled" in first.output
    assert _job_states(fake_slurm) == {"100": "CANCELLED"}
    run = first.run_dir()
    assert json.loads((run / "slurm.json").read_text())["launches"]["0"]["once"]["job_id"] == "100"
    again = launcher("pipeline=retry", *SLURM, f"launch.resume={run.name}")
    assert again.proc.returncode == 0, again.output
    pending = [st for st in _job_states(fake_slurm).values() if st == "PENDING"]
    assert pending == ["PENDING"] * 3  # once, its guard, after


def test_jobs_that_could_not_be_cancelled_are_not_called_cancelled(launcher: Launcher, fake_slurm: FakeSlurm) -> None:
    fake_slurm.fail("sbatch", [3], REFUSED)
    fake_slurm.fail("scancel", [1], "scancel: error: Invalid user for job", rc=1)
    first = launcher("pipeline=diamond", *SLURM)
    assert first.proc.returncode == 2, first.output
    flat = " ".join(first.output.split())
    assert "the 2 job(s) already submitted (100, 101) could NOT be cancelled" in flat, first.output
    assert "were cancelled" not in flat and "`scancel 100 101`" in flat, first.output


def _left_by_a_dead_guard(launcher: Launcher, fake_slurm: FakeSlurm) -> tuple[Path, int]:
    """A run whose retry guard failed: `after` waits forever (PENDING), so it may be resumed."""
    run = launcher("pipeline=retry", *SLURM).run_dir()
    entry = json.loads((run / "slurm.json").read_text())["launches"]["0"]["once"]
    fake_slurm.set_state(entry["job_id"], "FAILED", "1:0")
    fake_slurm.set_state(entry["guard"], "FAILED", "1:0")
    return run, fake_slurm.calls("sbatch")


def test_a_resume_whose_scancel_fails_submits_nothing(launcher: Launcher, fake_slurm: FakeSlurm) -> None:
    run, sbatches = _left_by_a_dead_guard(launcher, fake_slurm)
    before = (run / "run.json").read_text(), sorted(str(p) for p in run.rglob("*"))
    fake_slurm.fail("scancel", [1], "scancel: error: Kill job error on job id 102: Access/permission denied", rc=1)
    again = launcher("pipeline=retry", *SLURM, f"launch.resume={run.name}")
    assert again.proc.returncode == 2, again.output
    # Stopped before the resume wrote anything (review of issue 10): no launch recorded, no dir reset.
    assert ((run / "run.json").read_text(), sorted(str(p) for p in run.rglob("*"))) == before
    flat = " ".join(again.output.split())
    assert "the resume could not cancel job(s) 102, left by earlier launches" in flat, again.output
    assert "`scancel 102`" in flat and "Access/permission denied" in flat, again.output
    assert fake_slurm.calls("sbatch") == sbatches, "no second copy beside the job still queued"


def test_a_resume_waits_until_the_cancelled_jobs_have_left_squeue(launcher: Launcher, fake_slurm: FakeSlurm) -> None:
    """scancel is asynchronous (KillWait): the old job reads COMPLETING for a while; the resume
    submits only once squeue no longer lists it."""
    run, sbatches = _left_by_a_dead_guard(launcher, fake_slurm)
    fake_slurm.update(scancel_lag=2)
    again = launcher("pipeline=retry", *SLURM, f"launch.resume={run.name}")
    assert again.proc.returncode == 0, again.output
    log = [entry[0] for entry in fake_slurm.read()["log"]]
    after_cancel = log[log.index("scancel"):]
    before_sbatch = after_cancel[:after_cancel.index("sbatch")]
    assert before_sbatch.count("squeue") >= 3, before_sbatch  # listed COMPLETING twice, then gone
    assert fake_slurm.calls("sbatch") == sbatches + 3  # once, its guard, after


def test_jobs_still_listed_after_the_wait_stop_the_resume_naming_them(launcher: Launcher,
                                                                      fake_slurm: FakeSlurm) -> None:
    from cl_hpc.errors import ExecutorError
    from cl_hpc.execute.slurm.executor import stop_earlier_jobs
    from cl_hpc.rundir.layout import RunDir

    run, _ = _left_by_a_dead_guard(launcher, fake_slurm)
    fake_slurm.update(scancel_lag=10**6)  # a job whose processes never go
    try:
        stop_earlier_jobs(RunDir(run), timeout_s=0.5, poll_s=0.1)
        raise AssertionError("the resume went on beside a job still in squeue")
    except ExecutorError as exc:
        assert "job(s) 102 (COMPLETING), left by earlier launches" in str(exc) and "squeue -j 102" in str(exc), exc


def test_a_guard_whose_scancel_fails_fails_and_status_names_it(launcher: Launcher, fake_slurm: FakeSlurm) -> None:
    """once failed its last attempt: its guard cancels `after`; if that scancel fails, the guard
    must fail (so problems() names it), not end COMPLETED with a warning while `after` waits forever."""
    run = launcher("pipeline=retry", *SLURM).run_dir()
    first = json.loads((run / "slurm.json").read_text())["launches"]["0"]
    fake_slurm.set_state(first["once"]["job_id"], "FAILED", "1:0")
    assert _guard(run, "once").returncode == 0  # attempt 2 re-submitted
    once = json.loads((run / "slurm.json").read_text())["launches"]["0"]["once"]
    fake_slurm.set_state(once["job_id"], "FAILED", "1:0")
    fake_slurm.fail("scancel", [fake_slurm.calls("scancel") + 1], "scancel: error: Invalid user for job", rc=1)
    done = _guard(run, "once")
    assert done.returncode != 0 and "Invalid user for job" in done.stderr, done.stdout + done.stderr
    assert _job_states(fake_slurm)[first["after"]["job_id"]] == "PENDING"  # what the guard could not cancel
    fake_slurm.set_state(once["guard"], "FAILED", "1:0")  # how Slurm records a guard job that exited 1
    proc = launcher.status(run.name, "--json")
    problems = json.loads(proc.stdout)["problems"]
    assert any(p.startswith(f"the retry guard of once (job {once['guard']}) ended FAILED") for p in problems), problems


def test_a_guard_whose_own_guard_is_refused_keeps_its_resubmission_tracked(launcher: Launcher,
                                                                           fake_slurm: FakeSlurm) -> None:
    """The guard re-submits once (sbatch 4), then the new job's guard is refused (sbatch 5): the
    new job must be in slurm.json (status follows it, cancel and resume find it), and this guard
    fails, which problems() names."""
    run = launcher("pipeline=retry", *SLURM).run_dir()
    first = json.loads((run / "slurm.json").read_text())["launches"]["0"]["once"]
    fake_slurm.set_state(first["job_id"], "FAILED", "1:0")
    fake_slurm.fail("sbatch", [fake_slurm.calls("sbatch") + 2], REFUSED)
    done = _guard(run, "once")
    assert done.returncode != 0 and "retry guard of once could not be submitted" in done.stderr, done.stderr
    once = json.loads((run / "slurm.json").read_text())["launches"]["0"]["once"]
    queued = [j for j, st in _job_states(fake_slurm).items() if st == "PENDING" and j != first["guard"]]
    assert once["job_id"] != first["job_id"] and once["job_id"] in queued, (once, queued)
    assert once["history"][0]["job_id"] == first["job_id"] and once["guard"] == first["guard"], once
    fake_slurm.set_state(first["guard"], "FAILED", "1:0")  # how Slurm records a guard job that exited 1
    problems = json.loads(launcher.status(run.name, "--json").stdout)["problems"]
    assert any(p.startswith(f"the retry guard of once (job {first['guard']}) ended FAILED") for p in problems), problems


def test_ctrl_c_before_the_guard_is_queued_cancels_the_task_job(launcher: Launcher, fake_slurm: FakeSlurm,
                                                                tmp_path: Path) -> None:
    """Ctrl-C after once's sbatch returned, while its guard's sbatch runs (held at the gate): once's
    job is recorded already, so the interrupted launch cancels it rather than leaving it queued."""
    gate = tmp_path / "gate"
    args = [sys.executable, "-m", "cl_hpc.launch", "hydra.searchpath=[file://tests/conf]",
            f"run_root={launcher.run_root}", f"store.root={launcher.store_root}", "pipeline=retry", *SLURM]
    env = {**_env(), "CL_HPC_FAKE_SLURM_GATE": str(gate), "CL_HPC_FAKE_SLURM_GATE_AFTER": "1"}
    first = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not Path(f"{gate}.waiting").exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[0]
            time.sleep(0.05)
        first.send_signal(signal.SIGINT)
        out = first.communicate(timeout=120)[0]
    finally:
        gate.touch()
        if first.poll() is None:
            first.kill()
    assert first.returncode != 0, out
    assert _job_states(fake_slurm) == {"100": "CANCELLED"}, (fake_slurm.jobs(), out)
