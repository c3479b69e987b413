"""cluster=local under faults, as Slurm would meet them: a dead scheduler, orphaned tasks, a full disk,
a task over its memory, Ctrl-C in the follow. Real launcher, scheduler and task subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil
import pytest

from cl_hpc import procs
from cl_hpc.watch.lock import pid_alive
from tests.conftest import REPO, Launcher, _env, attempt_records, held_sleeper, poll


class Follow:
    """A `python -m cl_hpc.launch` in its own session, its output in a file, killed at the end."""

    def __init__(self, launcher: Launcher, *overrides: str) -> None:
        self.launcher = launcher
        self.log = launcher.tmp / "launch.out"
        args = [sys.executable, "-m", "cl_hpc.launch", "hydra.searchpath=[file://tests/conf]",
                f"run_root={launcher.run_root}", f"store.root={launcher.store_root}", *overrides]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(args, cwd=REPO, env=_env(), stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def run_dir(self) -> Path:
        found = poll(lambda: [p for p in self.launcher.run_root.glob("*/plan.json")], 60)
        assert found, f"no run dir; the launcher said:\n{self.output}"
        return found[0].parent

    def exit_code(self, timeout_s: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None


@pytest.fixture
def follows(launcher: Launcher) -> Iterator[Callable[..., Follow]]:
    started: list[Follow] = []

    def start(*overrides: str) -> Follow:
        started.append(Follow(launcher, *overrides))
        return started[-1]

    yield start
    for follow in started:
        if follow.proc.poll() is None:
            follow.proc.kill()
            follow.proc.wait()
    _stop_leftovers(launcher.run_root)


def _stop_leftovers(run_root: Path) -> None:
    """Whatever a test left running under its run root (a scheduler, a task): never outlive the test."""
    mine = []
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(run_root) in part for part in proc.info["cmdline"] or []):
            mine.append(proc)
    procs.kill([p for root in mine for p in procs.tree(root)])


def _status(launcher: Launcher, run: Path) -> dict[str, Any]:
    out = launcher.status(run.name, "--json")
    return json.loads(out.stdout) if out.returncode == 0 else {}


def _unit_state(launcher: Launcher, run: Path, key: str) -> str | None:
    return _status(launcher, run).get("units", {}).get(key, {}).get("state")


def _running_attempt(run: Path, key: str) -> dict[str, Any] | None:
    attempts = attempt_records(run, key) if (run / "tasks" / key / "attempts").is_dir() else []
    return attempts[-1] if attempts and attempts[-1]["state"] == "RUNNING" else None


def _kill_scheduler(run: Path) -> int:
    pid = int(json.loads((run / "scheduler.json").read_text())["pid"])
    os.kill(pid, signal.SIGKILL)
    return pid


# --- defect 2: a dead scheduler is seen, by the follow and by status --------------------------

def test_a_zombie_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    started = psutil.Process(child.pid).create_time()
    try:
        assert procs.alive(child.pid, started) and pid_alive(child.pid, started)
        child.kill()  # not reaped yet: a zombie, with its pid and start time still there
        assert poll(lambda: psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE, 10)
        assert not procs.alive(child.pid, started)
        assert not pid_alive(child.pid, started), "the watch lock must not take a zombie for its holder"
    finally:
        child.kill()
        child.wait()


def test_a_followed_run_ends_when_its_scheduler_dies(launcher: Launcher, follows: Callable[..., Follow]) -> None:
    follow = follows("pipeline=slow", "pipeline.tasks.sleeper.params.sleep_s=60", "launch.follow=true")
    run = follow.run_dir()
    assert poll(lambda: _running_attempt(run, "sleeper"), 60), follow.output
    _kill_scheduler(run)
    # status from another shell says so while the launcher still follows (the scheduler is its child)
    problems = poll(lambda: _status(launcher, run).get("problems"), 30)
    assert problems, "status must report the dead scheduler"
    assert "scheduler.log" in problems[0] and f"launch.resume={run.name}" in problems[0], problems
    code = follow.exit_code(60)
    assert code == 1, f"the follow must end when its scheduler is gone (exit {code}):\n{follow.output}"
    assert "local scheduler" in follow.output and "is gone" in follow.output, follow.output


def test_a_unit_the_scheduler_cannot_start_fails_with_the_reason(
        launcher: Launcher, follows: Callable[..., Follow]) -> None:
    gate = launcher.tmp / "sleeper.gate"  # the sleeper runs until the blocker is in place
    follow = follows(*held_sleeper(gate), "launch.follow=true")
    run = follow.run_dir()
    assert poll(lambda: _running_attempt(run, "sleeper"), 60), follow.output
    blocker = run / "tasks" / "last" / "logs"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("")  # a file where 'last' needs its log folder: submitit cannot start it
    gate.touch()
    code = follow.exit_code(60)
    assert code == 1, f"the run must end, FAILED (exit {code}):\n{follow.output}"
    (only,) = attempt_records(run, "last")
    assert only["state"] == "FAILED" and "could not start it" in only["error"] and "File exists" in only["error"], only
    assert "root cause: last failed" in follow.output, follow.output


# --- defect 3: orphaned tasks are stopped by a resume and by a cancel ---------------------------

def test_resume_stops_the_orphaned_attempt_before_running_the_unit_again(
        launcher: Launcher, follows: Callable[..., Follow]) -> None:
    follow = follows("pipeline=slow", "pipeline.tasks.sleeper.params.sleep_s=120", "launch.follow=false")
    run = follow.run_dir()
    orphan = poll(lambda: _running_attempt(run, "sleeper"), 60)
    assert orphan, follow.output
    _kill_scheduler(run)
    assert procs.process(orphan["pid"], before=orphan["started"]), "the task outlives its scheduler"
    resumed = launcher("pipeline=slow", "pipeline.tasks.sleeper.params.sleep_s=1", f"launch.resume={run.name}")
    assert resumed.proc.returncode == 0, resumed.output
    assert procs.process(orphan["pid"], before=orphan["started"]) is None, "the orphan must be stopped"
    first, second = attempt_records(run, "sleeper")[-2:]
    assert first["attempt"] == orphan["attempt"] and first["state"] == "FAILED"
    assert "orphaned" in first["error"], first
    assert first["ended"] <= second["started"], "two attempts of one unit ran at once"
    assert json.loads((run / "tasks" / "sleeper" / "outputs.json").read_text())["pid"] == second["pid"]


def test_cancel_works_without_the_scheduler(launcher: Launcher, follows: Callable[..., Follow]) -> None:
    follow = follows("pipeline=slow", "pipeline.tasks.sleeper.params.sleep_s=120", "launch.follow=false")
    run = follow.run_dir()
    orphan = poll(lambda: _running_attempt(run, "sleeper"), 60)
    assert orphan, follow.output
    _kill_scheduler(run)
    out = subprocess.run([sys.executable, "-m", "cl_hpc.cancel", run.name, "--run-root", str(launcher.run_root)],
                         cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert poll(lambda: _status(launcher, run).get("state") == "CANCELLED", 30), _status(launcher, run)
    assert procs.process(orphan["pid"], before=orphan["started"]) is None, "cancel must stop the running task"
    assert "orphaned" in attempt_records(run, "sleeper")[-1]["error"]
    assert not _status(launcher, run)["problems"], "a cancelled run has nothing left to resume"


# --- defect 10: a full disk ends the run FAILED, with the reason ---------------------------------

@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 16 MB file system (tmpfs): writes on it fail with ENOSPC once it is full."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        why = f"cannot mount a tmpfs ({done.stderr.strip()}); run as root, or in a container with CAP_SYS_ADMIN"
        if os.environ.get("CI") == "true":
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    try:
        yield mount
    finally:
        _stop_leftovers(mount)
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_ends_the_run_failed_with_the_reason(small_disk: Path, tmp_path: Path,
                                                         follows: Callable[..., Follow]) -> None:
    launcher = Launcher(tmp_path)
    launcher.run_root = small_disk / "runs"  # the store stays on the big disk, as the run root's neighbour would not
    follow = Follow(launcher, "pipeline=diskfull", "launch.follow=true")
    code = follow.exit_code(180)
    assert code == 1, f"the run must end, and FAILED (exit {code}):\n{follow.output}"
    run = follow.run_dir()
    last, unstarted = attempt_records(run, "filler")  # its retry is not started on a disk that is still full
    assert last["state"] == "FAILED" and "No space left on device" in last["error"], last
    assert unstarted["state"] == "FAILED" and unstarted["error"].startswith("not started: ENOSPC"), unstarted
    assert "ENOSPC" in last["error"], last
    status = _status(launcher, run)
    assert status["state"] == "FAILED", status
    assert status["units"]["last"]["state"] == "CANCELLED" and not status["problems"], status
    assert "root cause: filler failed" in follow.output, follow.output
    assert "disk full" in (run / "scheduler.log").read_text(), "the scheduler says what it could not write"


# --- defect 11: memory over the request is killed, as Slurm's OverMemoryKill does ----------------

def test_a_task_over_its_memory_is_killed_and_retried_with_more(launcher: Launcher,
                                                               follows: Callable[..., Follow]) -> None:
    # hog holds 250 MB (and Python's own) but asks for 0.25 GB: killed; the retry asks for >= 1.5x.
    # It holds its memory until killed (or the gate opens once the first attempt failed), so the
    # 1 s sampler sees it however loaded the machine is.
    gate = launcher.tmp / "hog.gate"
    follow = follows("pipeline=oom", "pipeline.tasks.hog.params.mb=250", "pipeline.tasks.hog.retries=1",
                     f"+pipeline.tasks.hog.params.gate={gate}", "launch.follow=true")
    run = follow.run_dir()
    assert poll(lambda: [a for a in attempt_records(run, "hog") if a["state"] == "FAILED"], 120), follow.output
    gate.touch()
    assert follow.exit_code(120) == 0, follow.output
    first, second = attempt_records(run, "hog")
    assert first["state"] == "FAILED" and first["error"].startswith("OUT_OF_MEMORY"), first
    assert "Exceeded job memory limit" in first["error"] and first["max_rss_mb"] > 256, first
    assert second["state"] == "COMPLETED"
    log = (run / "scheduler.log").read_text()
    assert "retrying with mem_gb 0.25 -> " in log, log
    # the peak is the local scheduler's sample, not sacct's (there is no sacct here)
    assert "GB (summed PSS sampled by the local scheduler)" in log and "sacct" not in log, log


def test_a_task_over_its_memory_fails_like_on_slurm(launcher: Launcher) -> None:
    never = launcher.tmp / "never.gate"  # held until the scheduler kills it
    result = launcher("pipeline=oom", "pipeline.tasks.hog.params.mb=600", "pipeline.tasks.hog.retries=0",
                      "pipeline.tasks.hog.resources.mem_gb=0.2", f"+pipeline.tasks.hog.params.gate={never}")
    assert result.proc.returncode == 1, result.output
    run = result.run_dir()
    (only,) = attempt_records(run, "hog")
    assert only["state"] == "FAILED" and "Exceeded job memory limit" in only["error"], only
    from cl_hpc.rightsize.apply import outcome_of

    assert outcome_of(only["state"], only["error"]) == "OOM", "the right-sizer reads it as Slurm's OOM"
    assert "root cause: hog failed" in result.output


def test_a_second_scheduler_is_refused_naming_the_commands(tmp_path: Path) -> None:
    """A run whose scheduler still lives: submitting to it again names how to wait and to cancel."""
    from cl_hpc.config.schema import LocalClusterConf
    from cl_hpc.dag.model import Plan
    from cl_hpc.errors import ExecutorError
    from cl_hpc.execute.local import SCHEDULER_FILE, LocalExecutor
    from cl_hpc.rundir.layout import RunDir

    scheduler = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        run = RunDir(tmp_path / "r1")
        run.path.mkdir()
        (run.path / SCHEDULER_FILE).write_text(json.dumps({
            "state": "running", "pid": scheduler.pid, "pid_started": psutil.Process(scheduler.pid).create_time()}))
        with pytest.raises(ExecutorError) as err:
            LocalExecutor(LocalClusterConf()).submit(run, Plan("empty", {}, (), {}), [], 1)
        assert "already has a live local scheduler" in str(err.value)
        assert "`python -m cl_hpc.cancel r1`" in str(err.value) and "`python -m cl_hpc.status r1`" in str(err.value)
    finally:
        scheduler.kill()
        scheduler.wait()


def test_each_launched_controller_is_saved_before_the_next_launch(launcher: Launcher,
                                                                  follows: Callable[..., Follow]) -> None:
    """a's end makes b and c ready in one admit pass. c's attempt folder holds a FIFO, so reading it
    (the pass does, to number c's attempt) blocks the scheduler after b's launch: b's controller
    must already be in scheduler.json's running map, else a scheduler killed there leaves it in
    neither that map nor an attempt record, and no resume or cancel would stop it."""
    gate = launcher.tmp / "a.gate"
    follow = follows("pipeline=diamond", "pipeline.tasks.a.target=tests.tasks.wait_for_file",
                     f"+pipeline.tasks.a.params.path={gate}", "cluster.cpus=2", "launch.follow=false")
    run = follow.run_dir()
    assert poll(lambda: _running_attempt(run, "a"), 60), follow.output
    (run / "tasks" / "c" / "attempts").mkdir(parents=True, exist_ok=True)
    os.mkfifo(run / "tasks" / "c" / "attempts" / "9.json")
    gate.touch()

    def saved() -> dict[str, Any]:
        info = json.loads((run / "scheduler.json").read_text() or "{}")
        return info.get("running", {}).get("b") or {}

    entry = poll(saved, 60)
    assert entry, f"b was launched but is not in the running map: {(run / 'scheduler.json').read_text()}"
    assert procs.alive(entry["pid"], entry["pid_started"]), entry
    _kill_scheduler(run)


# --- defect 15: Ctrl-C stops the follow, not the run, and says so ------------------------------

def test_ctrl_c_while_following_says_the_run_goes_on(launcher: Launcher, follows: Callable[..., Follow]) -> None:
    follow = follows("pipeline=slow", "pipeline.tasks.sleeper.params.sleep_s=8", "launch.follow=true")
    run = follow.run_dir()
    assert poll(lambda: _running_attempt(run, "sleeper"), 60), follow.output
    follow.proc.send_signal(signal.SIGINT)
    assert follow.exit_code(60) == 130, follow.output
    assert f"run {run.name} goes on in the background" in follow.output, follow.output
    assert f"python -m cl_hpc.status {run.name}" in follow.output, follow.output
    assert f"python -m cl_hpc.cancel {run.name}" in follow.output, follow.output
    assert poll(lambda: _status(launcher, run).get("state") == "COMPLETED", 90), _status(launcher, run)


# --- a followed run ends with its result --------------------------------------------------------

def test_a_followed_run_ends_with_its_final_outputs(launcher: Launcher) -> None:
    result = launcher("pipeline=diamond")
    assert result.proc.returncode == 0, result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("d: ")]
    assert f"value {(1 + 10) + (1 + 100)}" in line.split(" · "), result.output
    assert "b: value" not in result.output, "only the final tasks' outputs: the others fed them"


def test_ctrl_c_right_after_the_scheduler_started_says_the_run_goes_on(launcher: Launcher,
                                                                       follows: Callable[..., Follow]) -> None:
    """Review of issue 10: a SIGINT while the launcher waited for its scheduler to start, or while it
    indexed the run, ended in a KeyboardInterrupt traceback with no word on the run going on."""
    follow = follows("pipeline=slow", "pipeline.tasks.sleeper.params.sleep_s=8", "launch.follow=true")
    scheduler = None
    deadline = time.monotonic() + 60
    while scheduler is None and time.monotonic() < deadline:  # the first moment the scheduler has a pid
        runs = [p for p in launcher.run_root.glob("*/scheduler.json")] if launcher.run_root.exists() else []
        scheduler = next((p for p in runs if (json.loads(p.read_text() or "{}") or {}).get("pid")), None)
        time.sleep(0.005)
    assert scheduler is not None, follow.output
    follow.proc.send_signal(signal.SIGINT)
    assert follow.exit_code(60) == 130, follow.output
    assert "Traceback" not in follow.output and "KeyboardInterrupt" not in follow.output, follow.output
    run = scheduler.parent
    assert f"run {run.name} goes on in the background" in follow.output, follow.output
    assert poll(lambda: _status(launcher, run).get("state") == "COMPLETED", 90), _status(launcher, run)
