"""The sbatch renderer is a pure function: compare with stored expected scripts, and check quoting."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import pytest

from cl_hpc.config.resources import Resources
from cl_hpc.errors import ConfigError
from cl_hpc.execute.slurm.sbatch import (
    SbatchJob,
    interpreter,
    render_sbatch,
    resource_options,
    slurm_mem,
    slurm_time,
)
from tests.fakes.slurm import TRANSIENT, FakeSlurm

EXPECTED = Path(__file__).parent / "expected"
CMD = "/venv/bin/python -u -m cl_hpc.execute.slurm.job /runs/r1 train 0 0:1,1:1,2:1,3:2"

CASES = {
    "plain_task": SbatchJob(
        name="cl_hpc.r1.ingest", comment="cl_hpc run=r1 task=ingest",
        resources=Resources(cpus=1, mem_gb=2, time_min=10), folder="/runs/r1/tasks/ingest/logs",
        command="/venv/bin/python -u -m cl_hpc.execute.slurm.job /runs/r1 ingest 0 1"),
    "gpu_array_with_deps": SbatchJob(
        name="cl_hpc.r1.train", comment="cl_hpc run=r1 task=train",
        resources=Resources(cpus=8, gpus=2, gpu_type="a100", mem_gb=64, time_min=1500, nodes=2, tasks_per_node=2,
                            partition="gpu", account="ml-team", qos="high", constraint="a100|h100",
                            extra={"exclusive": True, "mail_type": "FAIL"}),
        folder="/runs/r1/tasks/train/logs", command=CMD, array=(0, 1, 2, 3), array_parallelism=2,
        dependency="afterok:101,aftercorr:102", signal_delay_s=120,
        setup=("module load cuda/12.4", "source /home/me/venv/bin/activate"), extra={"mail-user": "me@example.org"}),
    "hostile_values": SbatchJob(
        name="cl_hpc.r1.it's $(rm -rf ~)", comment="cl_hpc run=r1 task=a b;c",
        resources=Resources(mem_gb=0.5, time_min=0.05, account="a'b", extra={"chdir": "/tmp/with space"}),
        folder="/runs/r 1/logs", command=CMD, use_srun=False),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_render_matches_the_stored_script(name: str) -> None:
    rendered = render_sbatch(CASES[name])
    expected = EXPECTED / f"sbatch_{name}.sh"
    if os.environ.get("CL_HPC_UPDATE_EXPECTED") == "1":  # regenerate after an intended change, then review the diff
        expected.write_text(rendered)
    assert rendered == expected.read_text()


def test_every_sbatch_value_survives_shell_parsing() -> None:
    script = render_sbatch(CASES["hostile_values"])
    options = dict(line.removeprefix("#SBATCH --").split("=", 1)
                   for line in script.splitlines() if line.startswith("#SBATCH --"))
    assert shlex.split(options["job-name"]) == ["cl_hpc.r1.it's $(rm -rf ~)"]
    assert shlex.split(options["comment"]) == ["cl_hpc run=r1 task=a b;c"]
    assert shlex.split(options["account"]) == ["a'b"]
    assert shlex.split(options["chdir"]) == ["/tmp/with space"]


@pytest.mark.parametrize("minutes,expected", [(0.05, "00:01:00"), (1, "00:01:00"), (59.5, "01:00:00"),
                                              (90, "01:30:00"), (1440, "1-00:00:00"), (1500, "1-01:00:00")])
def test_time_limits_round_up_to_whole_minutes(minutes: float, expected: str) -> None:
    assert slurm_time(minutes) == expected


@pytest.mark.parametrize("gb,expected", [(0.5, "512M"), (2, "2048M"), (1.5, "1536M"), (0.0001, "1M")])
def test_memory_is_given_in_mebibytes(gb: float, expected: str) -> None:
    assert slurm_mem(gb) == expected


@pytest.mark.parametrize("res,key,value", [
    (Resources(gpus=1), "gres", "gpu:1"),
    (Resources(gpus=4, gpu_type="h100"), "gres", "gpu:h100:4"),
    (Resources(extra={"exclusive": True}), "exclusive", True),
    (Resources(extra={"gpus_per_task": 1}), "gpus-per-task", 1),
])
def test_resource_options(res: Resources, key: str, value: object) -> None:
    assert resource_options(res)[key] == value


def test_no_gres_without_gpus_and_unset_placement_is_omitted() -> None:
    options = resource_options(Resources())
    assert "gres" not in options and "partition" not in options and "account" not in options


def test_a_line_break_in_a_value_is_refused() -> None:
    job = CASES["plain_task"]
    from dataclasses import replace

    with pytest.raises(ValueError, match="contains a line break"):
        render_sbatch(replace(job, resources=Resources(account="ok\nrm -rf /")))


@pytest.mark.parametrize("since_last_s,expected_sleep_s", [(0.0, 0.5), (0.3, 0.2), (0.5, None), (2.0, None)])
def test_the_submit_interval_waits_only_for_what_is_left_of_it(monkeypatch: pytest.MonkeyPatch, since_last_s: float,
                                                               expected_sleep_s: float | None) -> None:
    """submitit's own throttle sleeps a whole interval whenever one has not passed (gaps of up to
    two); ours sleeps the rest of it. The clock is faked: it is what is measured."""
    from cl_hpc.execute.slurm import submit

    now, slept = 1000.0, []
    monkeypatch.setattr(submit.time, "time", lambda: now)
    monkeypatch.setattr(submit.time, "sleep", slept.append)
    submit.wait_interval(now - since_last_s, 0.5)
    assert slept == ([] if expected_sleep_s is None else [pytest.approx(expected_sleep_s)])


# ---------------------------------------------------------------- cluster.python: one rendering for every job

@pytest.mark.parametrize("python,expected", [
    ("/venv/bin/python", "/venv/bin/python"),
    ("apptainer exec img.sif python3", "apptainer exec img.sif python3"),
    ("env PYTHONUNBUFFERED=1 /venv/bin/python", "env PYTHONUNBUFFERED=1 /venv/bin/python"),
    ("'/opt/my env/bin/python'", "'/opt/my env/bin/python'"),  # a path with a space, quoted by the user
    ("apptainer exec --bind '/a b:/data' img.sif python3", "apptainer exec --bind '/a b:/data' img.sif python3"),
    ("python3 $(rm -rf ~)", "python3 '$(rm' -rf '~)'"),  # words, never shell code
])
def test_the_interpreter_is_split_into_words_each_quoted(python: str, expected: str) -> None:
    assert interpreter(python) == expected
    assert shlex.split(interpreter(python)) == shlex.split(python)


def test_no_interpreter_is_the_launchers_own() -> None:
    assert interpreter(None) == shlex.quote(sys.executable)


@pytest.mark.parametrize("python,match", [("", "cluster.python is empty"),
                                          ("apptainer exec 'img.sif python3", "not a valid command line")])
def test_a_bad_interpreter_is_a_config_error(python: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        interpreter(python)


MULTIWORD = "apptainer exec img.sif python3"


def test_task_jobs_guards_and_backtests_start_with_the_same_words() -> None:
    """Defect 5 of issue 10: the guard and the backtest quoted cluster.python as one word, so with a
    command line their jobs could not start, retries never happened and dependents waited forever."""
    from cl_hpc.backtest.slurm import command as backtest_command
    from cl_hpc.execute.slurm.guard_submit import guard_job
    from cl_hpc.execute.slurm.submit import job_command

    task = job_command(MULTIWORD, "/runs/r1", "train", 0, {None: 1})
    guard = guard_job("/runs/r1", "train", 0, "123", CASES["plain_task"], MULTIWORD).command
    backtest = backtest_command(Path("/out"), [], MULTIWORD, "--merge")
    for line in (task, guard, backtest):
        assert shlex.split(line)[:4] == ["apptainer", "exec", "img.sif", "python3"], line


def test_render_guard_matches_the_stored_script() -> None:
    from cl_hpc.execute.slurm.guard_submit import guard_job

    rendered = render_sbatch(guard_job("/runs/r1", "train", 2, "123", CASES["gpu_array_with_deps"],
                                       "env PYTHONUNBUFFERED=1 /venv/bin/python"))
    expected = EXPECTED / "sbatch_guard_multiword_python.sh"
    if os.environ.get("CL_HPC_UPDATE_EXPECTED") == "1":
        expected.write_text(rendered)
    assert rendered == expected.read_text()


def test_a_backtest_never_adopts_an_earlier_backtests_queued_array(fake_slurm: FakeSlurm, tmp_path: Path) -> None:
    """A second backtest into the same OUT while the first's array is still queued: its cells
    sbatch's answer is lost (nothing queued), and the lookup must not take the first array for it."""
    from cl_hpc.backtest.slurm import submit

    cells = "#!/bin/bash\n#SBATCH --job-name=cl_hpc.backtest.cells\n#SBATCH --array=0,1\nexec true\n"
    merge = ("#!/bin/bash\n#SBATCH --job-name=cl_hpc.backtest.merge\n#SBATCH --dependency=afterok:{array_job}\n"
             "exec true\n")
    out = tmp_path / "out"
    assert submit(cells, merge, out) == ("100", "101")
    fake_slurm.fail("sbatch", [3], TRANSIENT)  # the answer is lost, nothing was queued
    array_job, merge_job = submit(cells, merge, out)
    assert array_job not in ("100", "101"), "adopted the earlier backtest's array"
    assert (array_job, merge_job) == ("102", "103") and sorted(fake_slurm.jobs()) == ["100", "101", "102", "103"]
    assert fake_slurm.jobs()["103"]["dependency"] == "afterok:102"
