"""The one Slurm command layer (cl_hpc/execute/slurm/commands.py), against real processes: the fake
Slurm CLI (tests/fakes/slurm/) for retries, lost answers and parsing; tests/slurm/ runs it on the
real cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cl_hpc.errors import ExecutorError
from cl_hpc.execute.slurm import commands
from cl_hpc.execute.slurm.parse import parse_job_id
from tests.fakes.slurm import TRANSIENT, FakeSlurm

FAST_S = 0.01  # the pause before a retry, in these tests


def _script(tmp_path: Path, name: str = "job.sh", extra: str = "") -> Path:
    path = tmp_path / name
    path.write_text(f"#!/bin/bash\n#SBATCH --job-name=t\n{extra}exec true\n")
    return path


@pytest.mark.parametrize("stdout, job_id", [("123\n", "123"), ("77;cluster\n", "77"), ("  9 ", "9"),
                                            ("site banner\n4242\n", "4242")])
def test_parse_job_id(stdout: str, job_id: str) -> None:
    assert parse_job_id(stdout) == job_id


@pytest.mark.parametrize("stdout", ["", "sbatch: error", "Submitted batch job 12", "abc;cluster"])
def test_parse_job_id_refuses_what_is_no_id(stdout: str) -> None:
    with pytest.raises(ValueError, match="not a job id"):
        parse_job_id(stdout)


def test_errors_name_the_command_its_exit_and_what_to_check() -> None:
    with pytest.raises(ExecutorError, match=r"`sinfo-not-installed -h` failed: sinfo-not-installed is not on PATH"):
        commands.run(["sinfo-not-installed", "-h"])
    with pytest.raises(ExecutorError, match=r"failed \(exit 3\): boom; check that the cluster is up with `sinfo`"):
        commands.run([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"])
    with pytest.raises(ExecutorError, match=r"failed \(exit 1\): Partition x not found;"):  # scontrol's way
        commands.run([sys.executable, "-c", "import sys; print('Partition x not found'); sys.exit(1)"])
    with pytest.raises(ExecutorError, match=r"did not answer after 2 tries: no answer within 0.2 s"):
        commands.run([sys.executable, "-c", "import time; time.sleep(5)"], timeout_s=0.2, retries=1, backoff_s=FAST_S)


def test_a_transient_error_is_tried_again_until_it_clears(fake_slurm: FakeSlurm, tmp_path: Path) -> None:
    fake_slurm.fail("sbatch", [1, 2], "sbatch: error: Batch job submission failed: Resource temporarily unavailable")
    assert commands.sbatch(_script(tmp_path), backoff_s=FAST_S) == "100"
    assert fake_slurm.calls("sbatch") == 3 and list(fake_slurm.jobs()) == ["100"]


def test_a_transient_error_that_stays_fails_with_the_count_of_tries(fake_slurm: FakeSlurm, tmp_path: Path) -> None:
    fake_slurm.fail("squeue", [1, 2, 3], "slurm_load_jobs error: Unable to contact slurm controller (connect failure)")
    with pytest.raises(commands.SlurmCommandError, match=r"`squeue -h` failed \(exit 1\) after 3 tries: "
                                                         r"slurm_load_jobs error: Unable to contact"):
        commands.run(["squeue", "-h"], retries=2, backoff_s=FAST_S)
    assert fake_slurm.calls("squeue") == 3


def test_a_lasting_error_is_not_tried_again(fake_slurm: FakeSlurm, tmp_path: Path) -> None:
    with pytest.raises(commands.SlurmCommandError, match=r"Invalid partition name specified; check the script's "
                                                         r"#SBATCH lines") as err:
        commands.sbatch(_script(tmp_path, extra="#SBATCH --partition=nope\n"), backoff_s=FAST_S)
    assert fake_slurm.calls("sbatch") == 1 and err.value.returncode == 1 and not err.value.transient


def test_a_lost_answer_adopts_the_job_slurm_did_queue(fake_slurm: FakeSlurm, tmp_path: Path) -> None:
    """slurmctld queued the job but its answer timed out: a blind retry would submit it twice."""
    fake_slurm.fail("sbatch", [1], TRANSIENT, queue=True)
    assert commands.sbatch(_script(tmp_path), backoff_s=FAST_S) == "100"
    assert fake_slurm.calls("sbatch") == 1 and list(fake_slurm.jobs()) == ["100"]


def test_a_lost_answer_without_a_queued_job_submits_again(fake_slurm: FakeSlurm, tmp_path: Path) -> None:
    fake_slurm.fail("sbatch", [1], TRANSIENT, queue=False)
    assert commands.sbatch(_script(tmp_path), backoff_s=FAST_S) == "100"
    assert fake_slurm.calls("sbatch") == 2 and fake_slurm.calls("squeue") == 1


def test_a_lost_answer_on_the_last_try_still_adopts_the_queued_job(fake_slurm: FakeSlurm, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The last try's answer is lost too, but slurmctld queued that one: the lookup after it (after
    a pause, as slurmctld may still be at it) finds the job instead of failing and leaving it queued."""
    fake_slurm.fail("sbatch", [1, 2], TRANSIENT, queue=False)
    fake_slurm.fail("sbatch", [3], TRANSIENT, queue=True)
    assert commands.sbatch(_script(tmp_path), retries=2, backoff_s=FAST_S) == "100"
    assert fake_slurm.calls("sbatch") == 3 and fake_slurm.calls("squeue") == 3 and list(fake_slurm.jobs()) == ["100"]
    assert "looking whether it went through in 0.04 s" in capsys.readouterr().err


def test_a_lost_answer_on_the_last_try_without_a_job_fails_after_looking(fake_slurm: FakeSlurm, tmp_path: Path) -> None:
    fake_slurm.fail("sbatch", [1, 2], TRANSIENT, queue=False)
    with pytest.raises(commands.SlurmCommandError, match="after 2 tries: .*Socket timed out"):
        commands.sbatch(_script(tmp_path), retries=1, backoff_s=FAST_S)
    assert fake_slurm.calls("sbatch") == 2 and fake_slurm.calls("squeue") == 2 and not fake_slurm.jobs()


def test_a_lasting_transient_error_that_lost_nothing_is_not_looked_up(fake_slurm: FakeSlurm, tmp_path: Path) -> None:
    fake_slurm.fail("sbatch", [1, 2], "sbatch: error: Batch job submission failed: Resource temporarily unavailable")
    with pytest.raises(commands.SlurmCommandError, match="after 2 tries: .*Resource temporarily unavailable"):
        commands.sbatch(_script(tmp_path), retries=1, backoff_s=FAST_S)
    assert fake_slurm.calls("squeue") == 0


def test_a_hung_sbatch_is_a_timeout_then_a_lookup(fake_slurm: FakeSlurm, tmp_path: Path) -> None:
    fake_slurm.fail("sbatch", [1], "", hang_s=120)
    assert commands.sbatch(_script(tmp_path), timeout_s=3.0, backoff_s=FAST_S) == "100"
    assert fake_slurm.calls("sbatch") == 2


def test_sbatch_output_that_is_no_job_id_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "sbatch"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'Submitted batch job 5'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    with pytest.raises(ExecutorError, match=r"succeeded but sbatch --parsable printed 'Submitted batch job 5', "
                                            r"not a job id"):
        commands.sbatch(_script(tmp_path))


def test_the_layer_keeps_a_job_light() -> None:
    """runner._request_requeue imports it on every preempted Slurm job (see tests/unit/test_unit_call.py)."""
    code = ("import sys; import cl_hpc.execute.slurm.commands; "
            "print(sorted(m for m in ('typing', 'dataclasses') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
