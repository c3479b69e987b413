"""cluster=slurm's logic against the fake Slurm CLI (tests/fakes/slurm/): faults a real cluster
rarely shows, fast and without root. The same behaviours run on the real cluster in tests/slurm/."""

from __future__ import annotations

import json

from tests.conftest import Launcher
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
    assert "submitting task 'c' failed, so the 2 job(s) already submitted were cancelled" in first.output
    assert "launch.resume=" in first.output
    jobs = fake_slurm.jobs()
    assert sorted(jobs) == ["100", "101"] and all(j["states"][""][0] == "CANCELLED" for j in jobs.values())
    run = first.run_dir()
    states = _states(launcher, run.name)
    assert states == {"a": "CANCELLED", "b": "CANCELLED", "c": "CANCELLED", "d": "CANCELLED"}, states
    reason = json.loads((run / "tasks" / "d" / "cancelled.json").read_text())["reason"]
    assert "Invalid account" in reason and "task 'c'" in reason

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
