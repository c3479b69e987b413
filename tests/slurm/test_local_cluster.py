"""Smoke tests of the local Slurm cluster itself (scripts/slurm-local-up.sh).

They pin down the behaviour cl_hpc relies on, with real sbatch/sacct calls:
accounting, fake GPUs, --mem enforcement, dependencies and submit-time limits.
If one fails, the cluster (or its config in slurm/local/) is wrong, not cl_hpc.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

# States after which sacct reports nothing new for a job.
_FINAL_STATES = {
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED",
    "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT",
}
_WAIT_S = 30.0


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)


class Jobs:
    """Submits jobs with output under one folder; cancels leftovers at teardown."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.ids: list[str] = []

    def submit(self, *args: str, wrap: str) -> str:
        proc = self.try_submit(*args, wrap=wrap)
        assert proc.returncode == 0, f"sbatch failed: {proc.stderr}"
        job_id = proc.stdout.strip().split(";")[0]
        self.ids.append(job_id)
        return job_id

    def try_submit(self, *args: str, wrap: str) -> subprocess.CompletedProcess[str]:
        return _run(
            "sbatch", "--parsable",
            f"--output={self.out_dir}/%j.out", f"--error={self.out_dir}/%j.err",
            *args, f"--wrap={wrap}",
        )

    def out(self, job_id: str) -> str:
        return (self.out_dir / f"{job_id}.out").read_text()

    def err(self, job_id: str) -> str:
        return (self.out_dir / f"{job_id}.err").read_text()

    def cancel_all(self) -> None:
        if self.ids:
            _run("scancel", *self.ids)


@pytest.fixture
def jobs(tmp_path: Path) -> Iterator[Jobs]:
    tracker = Jobs(tmp_path)
    yield tracker
    tracker.cancel_all()


def sacct_field(job_id: str, field: str) -> str:
    """One field of the job's allocation line in sacct ('' until it is recorded)."""
    proc = _run("sacct", "-j", job_id, "-X", "-n", "-P", "-o", field)
    return proc.stdout.strip()


def wait_sacct_field(job_id: str, field: str, ok: Callable[[str], bool] = bool, timeout: float = 30) -> str:
    """A field of an ended job once slurmdbd's row holds it: right after the end the row can be
    half-written (TRES empty, ReqMem "16?"); the last value read if it never does."""
    deadline = time.monotonic() + timeout
    while True:
        value = sacct_field(job_id, field)
        if ok(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def wait_final_state(job_id: str, timeout: float = _WAIT_S) -> str:
    """Poll sacct until the job reaches a final state; sacct lags ~1 s behind."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = sacct_field(job_id, "State")
        # "CANCELLED by 0" -> "CANCELLED"
        if state.split(" ")[0] in _FINAL_STATES:
            return state.split(" ")[0]
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still '{state}' after {timeout}s")


def squeue_state_reason(job_id: str) -> tuple[str, str]:
    proc = _run("squeue", "-h", "-j", job_id, "-o", "%T|%r")
    state, _, reason = proc.stdout.strip().partition("|")
    return state, reason


def wait_squeue_reason(job_id: str, reason: str, timeout: float = _WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    seen: tuple[str, str] = ("", "")
    while time.monotonic() < deadline:
        seen = squeue_state_reason(job_id)
        if seen == ("PENDING", reason):
            return
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} is {seen}, expected PENDING/{reason}")


def job_env(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def gpu_type() -> str:
    """The fake GPU type the node declares (Gres=gpu:<type>:2)."""
    gres = _run("sinfo", "-h", "-N", "-o", "%G").stdout.strip()
    return gres.split(",")[0].split(":")[1]


# (a) accounting


def test_batch_job_completes_and_sacct_records_it(jobs: Jobs) -> None:
    job_id = jobs.submit(wrap="echo hello from slurm")
    assert wait_final_state(job_id) == "COMPLETED"
    assert jobs.out(job_id).strip() == "hello from slurm"
    assert wait_sacct_field(job_id, "ExitCode") == "0:0"


def test_jobs_charge_the_default_or_the_requested_account(jobs: Jobs) -> None:
    default_job = jobs.submit(wrap="true")
    research_job = jobs.submit("--account=research", wrap="true")
    wait_final_state(default_job)
    wait_final_state(research_job)
    assert wait_sacct_field(default_job, "Account") == "default"
    assert wait_sacct_field(research_job, "Account") == "research"


def test_unknown_account_is_rejected(jobs: Jobs) -> None:
    proc = jobs.try_submit("--account=no-such-account", wrap="true")
    assert proc.returncode != 0
    assert "Invalid account" in proc.stderr


# (b) fake GPUs


@pytest.mark.parametrize(
    ("request_gpus", "expected_ids"),
    [("gpu:1", {"0", "1"}), ("gpu:2", {"0,1"}), ("gpu:{type}:1", {"0", "1"})],
)
def test_gres_job_sees_its_gpus_in_env(
    jobs: Jobs, request_gpus: str, expected_ids: set[str]
) -> None:
    gres = request_gpus.format(type=gpu_type())
    job_id = jobs.submit(f"--gres={gres}", wrap="env")
    assert wait_final_state(job_id) == "COMPLETED"
    env = job_env(jobs.out(job_id))
    count = str(int(gres.rsplit(":", 1)[1]))
    assert env["SLURM_GPUS_ON_NODE"] == count
    assert env["CUDA_VISIBLE_DEVICES"] in expected_ids
    assert env["SLURM_JOB_GPUS"] == env["CUDA_VISIBLE_DEVICES"]
    assert env["GPU_DEVICE_ORDINAL"] == env["CUDA_VISIBLE_DEVICES"]
    assert f"gres/gpu={count}" in wait_sacct_field(job_id, "AllocTRES", lambda tres: "gres/gpu=" in tres)


def test_concurrent_gpu_jobs_get_different_gpus(jobs: Jobs) -> None:
    # Long enough that the second starts while the first still holds its GPU, on a loaded machine too.
    first = jobs.submit("--gres=gpu:1", wrap="env; sleep 8")
    second = jobs.submit("--gres=gpu:1", wrap="env; sleep 8")
    for job_id in (first, second):
        assert wait_final_state(job_id) == "COMPLETED"
    gpus = {job_env(jobs.out(j))["CUDA_VISIBLE_DEVICES"] for j in (first, second)}
    assert gpus == {"0", "1"}


def test_job_without_gres_sees_no_gpus(jobs: Jobs) -> None:
    job_id = jobs.submit(wrap="env")
    assert wait_final_state(job_id) == "COMPLETED"
    env = job_env(jobs.out(job_id))
    assert "SLURM_JOB_GPUS" not in env
    assert "CUDA_VISIBLE_DEVICES" not in env


# (c) --mem enforcement

_ALLOCATE_600MB = (
    f"{sys.executable} -c 'import time; b = bytearray(600 * 2**20); "
    "[b.__setitem__(i, 1) for i in range(0, len(b), 4096)]; time.sleep(10); print(\"survived\")'"
)


def test_job_over_its_mem_is_killed(jobs: Jobs) -> None:
    job_id = jobs.submit("--mem=200M", wrap=_ALLOCATE_600MB)
    # Without cgroups: FAILED with signal 9. With cgroups (real clusters): OUT_OF_MEMORY.
    state = wait_final_state(job_id)
    assert state in {"FAILED", "OUT_OF_MEMORY"}
    if state == "FAILED":
        assert wait_sacct_field(job_id, "ExitCode", lambda code: code != "0:0") == "0:9"
    assert "Exceeded job memory limit" in jobs.err(job_id)
    assert "survived" not in jobs.out(job_id)


# (d) dependencies


def test_afterok_dependent_starts_after_parent_ends(jobs: Jobs, tmp_path: Path) -> None:
    parent = jobs.submit(wrap=f"sleep 6; date +%s.%N > {tmp_path}/parent_end")
    child = jobs.submit(f"--dependency=afterok:{parent}", wrap=f"date +%s.%N > {tmp_path}/child_start")
    wait_squeue_reason(child, "Dependency", timeout=5)
    assert wait_final_state(child) == "COMPLETED"
    assert wait_final_state(parent) == "COMPLETED"
    parent_end = float((tmp_path / "parent_end").read_text())
    child_start = float((tmp_path / "child_start").read_text())
    assert child_start >= parent_end


def test_afterok_dependent_of_failed_job_is_cancelled_with_kill_on_invalid_dep(
    jobs: Jobs,
) -> None:
    parent = jobs.submit(wrap="sleep 1; exit 3")
    child = jobs.submit(
        f"--dependency=afterok:{parent}", "--kill-on-invalid-dep=yes", wrap="echo ran"
    )
    assert wait_final_state(parent) == "FAILED"
    assert wait_final_state(child) == "CANCELLED"
    assert not (jobs.out_dir / f"{child}.out").exists()


def test_afterok_dependent_of_failed_job_stays_pending_by_default(jobs: Jobs) -> None:
    # Like most real clusters (no DependencyParameters=kill_invalid_depend): a
    # dispatcher that omits --kill-on-invalid-dep leaves such jobs behind.
    parent = jobs.submit(wrap="exit 3")
    child = jobs.submit(f"--dependency=afterok:{parent}", wrap="echo ran")
    assert wait_final_state(parent) == "FAILED"
    wait_squeue_reason(child, "DependencyNeverSatisfied")


# (e) submit-time limits (EnforcePartLimits=ALL)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--partition=debug", "--time=61"), "Requested time limit is invalid"),
        (("--gres=gpu:3",), "Requested node configuration is not available"),
        (("--cpus-per-task=9",), "More processors requested than permitted"),
        (("--mem=30000",), "Memory specification can not be satisfied"),
    ],
)
def test_request_over_limits_is_rejected_at_submit(
    jobs: Jobs, args: tuple[str, ...], message: str
) -> None:
    proc = jobs.try_submit(*args, wrap="true")
    assert proc.returncode != 0
    assert message in proc.stderr


def test_long_partition_accepts_what_debug_rejects(jobs: Jobs) -> None:
    job_id = jobs.submit("--partition=long", "--time=61", "--hold", wrap="true")
    wait_squeue_reason(job_id, "JobHeldUser")
    state, reason = squeue_state_reason(job_id)
    assert (state, reason) == ("PENDING", "JobHeldUser")
