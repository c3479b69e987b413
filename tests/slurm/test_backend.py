"""cluster=slurm against the real local cluster: what Slurm sees, and what survives the launcher."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from cl_hpc.execute.slurm.parse import parse_scontrol_records
from tests.conftest import REPO, Launcher, _env


def _scontrol_job(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, check=True).stdout
    return parse_scontrol_records(out)[0]


def _jobs(run: Path) -> dict:
    return json.loads((run / "slurm.json").read_text())["launches"]["0"]


def _wait_state(launcher: Launcher, run: str, states: set[str], timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        out = launcher.status(run, "--json")
        info = json.loads(out.stdout) if out.returncode == 0 else {}
        if info.get("state") in states or time.monotonic() > deadline:
            return info
        time.sleep(1)


def test_dependencies_arrays_and_resources_are_visible_in_scontrol(launcher: Launcher) -> None:
    result = launcher("cluster=slurm", "pipeline=slurm_shape", "launch.follow=false")
    assert result.proc.returncode == 0, result.output
    run = result.run_dir()
    jobs = _jobs(run)
    gate, prep, fit = jobs["gate"]["job_id"], jobs["prep"]["job_id"], jobs["fit"]["job_id"]
    assert jobs["prep"]["array"] == [0, 1, 2]

    prep_job = _scontrol_job(f"{prep}_0")
    assert prep_job["Dependency"].startswith(f"afterok:{gate}")
    assert prep_job["ArrayJobId"] == prep and prep_job["NumCPUs"] == "2" and prep_job["MinMemoryNode"] == "1G"
    assert prep_job["TimeLimit"] == "00:07:00" and prep_job["JobName"] == f"cl_hpc.{run.name}.prep"
    assert prep_job["Comment"] == f"cl_hpc run={run.name} task=prep"
    fit_job = _scontrol_job(f"{fit}_1")
    assert fit_job["Dependency"].startswith(f"aftercorr:{prep}") and fit_job["Partition"] == "long"
    assert _scontrol_job(jobs["report"]["job_id"])["Dependency"].startswith(f"afterok:{fit}")
    gpu_job = _scontrol_job(jobs["gpu"]["job_id"])
    assert "gres/gpu:fake=1" in gpu_job.get("TresPerNode", "") or "gpu:fake:1" in gpu_job.get("TresPerNode", "")

    info = _wait_state(launcher, run.name, {"COMPLETED", "FAILED", "CANCELLED"})
    assert info["state"] == "COMPLETED", info
    env = json.loads((run / "tasks" / "gpu" / "outputs.json").read_text())["env"]
    assert env["SLURM_JOB_GPUS"] == "0" or env["SLURM_JOB_GPUS"] == "1"
    assert env["SLURM_GPUS_ON_NODE"] == "1" and env["CUDA_VISIBLE_DEVICES"] in ("0", "1")


def test_killing_the_launcher_mid_dag_leaves_a_completed_run(launcher: Launcher) -> None:
    args = [sys.executable, "-m", "cl_hpc.launch", "hydra.searchpath=[file://tests/conf]", "cluster=slurm",
            "pipeline=slow", f"run_root={launcher.run_root}", f"store.root={launcher.store_root}", "launch.follow=true"]
    proc = subprocess.Popen(args, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    # Mid-DAG: once every task is submitted (slurm.json is rewritten after each), first is done or
    # running and sleeper (6 s) queued behind it. Killed earlier, the launcher would leave a DAG
    # it never finished submitting, which no design can complete.
    while not _submitted(launcher.run_root, {"first", "sleeper", "last"}) and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    run = next(launcher.run_root.glob("*/slurm.json")).parent
    assert _scontrol_job(_jobs(run)["last"]["job_id"])["JobState"] == "PENDING", "killed mid-DAG, not after it"
    info = _wait_state(launcher, run.name, {"COMPLETED", "FAILED", "CANCELLED"})
    assert info["state"] == "COMPLETED", info


def _submitted(run_root: Path, tasks: set[str]) -> bool:
    for path in run_root.glob("*/slurm.json"):
        try:
            return tasks <= set(json.loads(path.read_text())["launches"]["0"])
        except (ValueError, KeyError):  # written atomically, but the launch entry may not be there yet
            return False
    return False


def _diamond_jobs_since(start: str) -> list[str]:
    """Jobs of the diamond pipeline's tasks submitted since ``start`` (other tests may share the cluster)."""
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-S", start, "-o", "JobName"], capture_output=True, text=True,
                         check=True)
    return [n for n in out.stdout.split() if n.startswith("cl_hpc.") and n.rsplit(".", 1)[-1] in "abcd"]


def test_a_request_over_the_partition_limits_fails_before_submitting(launcher: Launcher) -> None:
    start = time.strftime("%Y-%m-%dT%H:%M:%S")
    cases = [
        (["pipeline.tasks.b.resources.time_min=120"], "exceeds"),
        (["pipeline.tasks.b.resources.gpus=3"], "gpus"),
        (["pipeline.tasks.b.resources.partition=debgu"], "debug"),
        (["pipeline.tasks.b.resources.account=nope"], "nope"),
        (["pipeline.tasks.b.resources.mem_gb=64"], "mem_gb"),
    ]
    for overrides, fragment in cases:
        result = launcher("cluster=slurm", "pipeline=diamond", *overrides)
        assert result.proc.returncode == 2, result.output
        assert "pipeline.tasks.b.resources" in result.output and fragment in result.output, result.output
        assert "Nothing was submitted" in result.output and result.runs() == []
    time.sleep(1)  # accounting records a submission within a second
    assert _diamond_jobs_since(start) == [], "nothing may reach the queue"


def test_out_of_memory_is_retried_with_more_memory_from_the_measured_peak(launcher: Launcher) -> None:
    result = launcher("cluster=slurm", "pipeline=oom", timeout=400)
    assert result.proc.returncode == 0, result.output
    run = result.run_dir()
    attempts = sorted((json.loads(p.read_text()) for p in (run / "tasks" / "hog" / "attempts").glob("*.json")),
                      key=lambda a: a["attempt"])
    assert attempts[0]["state"] == "FAILED" and attempts[0]["error"].startswith("OUT_OF_MEMORY"), attempts[0]
    assert attempts[-1]["state"] == "COMPLETED"
    history = json.loads((run / "slurm.json").read_text())["launches"]["0"]["hog"]["history"]
    first = history[0]["escalation"][0]
    assert first.startswith("mem_gb 0.25 -> ") and "measured peak" in first and "sacct MaxRSS" in first
    new_mem = float(first.split("-> ")[1].split(":")[0])
    assert new_mem > 0.25 * 1.5, "grown from the measured peak, above the old request"
    assert json.loads((run / "tasks" / "after" / "outputs.json").read_text())["value"] == 400
    # The re-submitted job is told what it runs under (--resources=): its record and its profile
    # say the escalated memory, the first attempt's the plan's.
    assert attempts[0]["resources"]["mem_gb"] == 0.25
    last = attempts[-1]
    ran_under = float(history[-1]["escalation"][0].split("-> ")[1].split(":")[0])  # a second OOM escalates again
    assert last["resources"]["mem_gb"] == ran_under and last["resources"]["time_min"] == 5, last
    profile = json.loads((run / "tasks" / "hog" / "profiles" / f"{last['attempt']}-0.json").read_text())
    assert profile["requested"]["mem_gb"] == ran_under


def test_scontrol_requeue_resumes_from_the_checkpoint_with_the_exact_step_count(launcher: Launcher) -> None:
    result = launcher("cluster=slurm", "pipeline=requeue", "launch.follow=false")
    assert result.proc.returncode == 0, result.output
    run = result.run_dir()
    steps = run / "tasks" / "fit" / "steps.log"
    deadline = time.monotonic() + 120
    while (not steps.exists() or len(steps.read_text().split()) < 8) and time.monotonic() < deadline:
        time.sleep(0.3)
    job = _jobs(run)["fit"]["job_id"]
    subprocess.run(["scontrol", "requeue", job], check=True)
    # Slurm holds a requeued batch job for about two minutes; release it now to keep the suite fast.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout.strip()
        if (state == "PENDING"
                and subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"]).returncode == 0):
            break
        time.sleep(0.5)
    info = _wait_state(launcher, run.name, {"COMPLETED", "FAILED", "CANCELLED"}, timeout_s=240)
    assert info["state"] == "COMPLETED", info
    outputs = json.loads((run / "tasks" / "fit" / "outputs.json").read_text())
    assert outputs["global_step"] == 30, "3 epochs x 10 batches, exactly"
    assert outputs["steps_run"] == outputs["distinct_steps"] == 30, "no step lost, none run twice"
    starts = (run / "tasks" / "fit" / "started.log").read_text().split()
    assert len(starts) == 2, "the job ran twice: before and after the requeue"
    attempt = json.loads((run / "tasks" / "fit" / "attempts" / "1.json").read_text())
    assert attempt["state"] == "COMPLETED" and attempt["requeues"] == 1


def test_sbatch_calls_are_spaced_by_the_submit_interval(launcher: Launcher) -> None:
    """cluster.submit_interval_s spaces every sbatch of a launch (one per task, and a retried task's
    guard), not only the calls of one task. Each script is written just before its sbatch."""
    result = launcher("cluster=slurm", "pipeline=diamond", "pipeline.tasks.b.retries=1",
                      "cluster.submit_interval_s=0.6", "launch.follow=false")
    assert result.proc.returncode == 0, result.output
    run = result.run_dir()
    scripts = [next((run / "tasks" / task / "logs").glob("*_submission.sh")) for task in "abcd"]
    scripts += list((run / "tasks" / "b" / "logs").glob("guard-*.sh"))
    written = sorted(path.stat().st_mtime for path in scripts)
    gaps = [later - earlier for earlier, later in zip(written, written[1:])]
    assert len(gaps) == 4 and min(gaps) >= 0.59, gaps
    assert _wait_state(launcher, run.name, {"COMPLETED", "FAILED", "CANCELLED"})["state"] == "COMPLETED"
