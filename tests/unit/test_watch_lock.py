"""The watch's lock, with real processes, real run directories and (where marked) the real Slurm
cluster: a fresh lock, a live holder that blocks, every kind of stale lock replaced, and two or
more watches racing for it, of which exactly one wins."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import psutil
import pytest

from cl_hpc.atomic import write_json_atomic
from cl_hpc.dag.build import build_plan
from cl_hpc.errors import ExecutorError
from cl_hpc.rundir.layout import RunDir
from cl_hpc.watch.lock import GRACE_S, WatchLock, judge, live_slurm_jobs

REPO = Path(__file__).resolve().parents[2]
HOST = socket.gethostname()


def make_run(root: Path, run_id: str, states: dict[str, Optional[str]], backend: str = "local") -> RunDir:
    """A run dir of tasks a -> b, each with one attempt in ``states`` (None: not started)."""
    res = {"cpus": 1, "mem_gb": 0.5, "time_min": 5}
    plan = build_plan({"name": "p", "tasks": {"a": {"target": "tests.tasks.emit", "resources": res},
                                              "b": {"target": "tests.tasks.emit", "depends_on": ["a"],
                                                    "resources": res}}},
                      None)
    run = RunDir(root / run_id)
    run.path.mkdir(parents=True)
    run.save_plan(plan)
    run.update_meta(run_id=run_id, backend=backend, host=HOST,
                    launches=[{"epoch": 0, "units": ["a", "b"], "reason": "test"}])
    for key, state in states.items():
        if state is not None:
            run.write_attempt(key, {"attempt": 1, "epoch": 0, "state": state})
    return run


def dead_process() -> tuple[int, float]:
    """(pid, start time) of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    started = psutil.Process(proc.pid).create_time()
    proc.communicate(b"")
    return proc.pid, started


def lock_record(run_dir: Path, **over: Any) -> dict[str, Any]:
    me = psutil.Process()
    return {"token": "t0", "pid": me.pid, "pid_started": me.create_time(), "host": HOST, "watch_job": None,
            "created": time.time(), "run_id": run_dir.name, "run_dir": str(run_dir), "backend": "local",
            "launched": False, "job_ids": [], **over}


def plant(lock: Path, record: dict[str, Any]) -> None:
    write_json_atomic(lock, record)


def test_a_fresh_lock_is_taken_names_the_run_and_is_released_by_its_holder(tmp_path: Path) -> None:
    lock = WatchLock(tmp_path / ".watch-m.lock")
    taken = lock.acquire(tmp_path / "runs" / "r1", "slurm")
    assert taken.ok and taken.stale is None
    info = json.loads(lock.path.read_text())
    assert info["pid"] == os.getpid() and info["host"] == HOST and info["run_id"] == "r1"
    assert info["run_dir"] == str((tmp_path / "runs" / "r1").resolve()) and info["backend"] == "slurm"
    assert info["launched"] is False and info["created"] == pytest.approx(time.time(), abs=30)
    lock.update(launched=True, job_ids=["123"])
    assert json.loads(lock.path.read_text())["job_ids"] == ["123"]
    lock.release()
    assert not lock.path.exists()


def test_a_live_holder_on_this_host_blocks(tmp_path: Path) -> None:
    first = WatchLock(tmp_path / ".lock")
    assert first.acquire(tmp_path / "r1", "local").ok
    second = WatchLock(tmp_path / ".lock")
    taken = second.acquire(tmp_path / "r2", "local")
    assert not taken.ok and f"run r1 still going: watch pid {os.getpid()} on {HOST} is alive" in taken.why
    assert json.loads(first.path.read_text())["run_id"] == "r1"
    verdict, _ = second.clear_stale()
    assert verdict is not None and verdict.held and first.path.exists()


def test_only_the_holder_may_update_or_release(tmp_path: Path) -> None:
    holder = WatchLock(tmp_path / ".lock")
    holder.acquire(tmp_path / "r1", "local")
    other = WatchLock(tmp_path / ".lock")
    with pytest.raises(ExecutorError, match="not held by this watch"):
        other.release()
    with pytest.raises(ExecutorError, match="not held by this watch"):
        other.update(launched=True)
    assert holder.path.exists()


def test_a_dead_pid_makes_the_lock_stale_and_it_is_replaced(tmp_path: Path) -> None:
    pid, started = dead_process()
    plant(tmp_path / ".lock", lock_record(tmp_path / "r1", pid=pid, pid_started=started))
    lock = WatchLock(tmp_path / ".lock")
    taken = lock.acquire(tmp_path / "r2", "local")
    assert taken.ok and taken.stale is not None
    assert taken.stale["stale_why"] == f"run r1 never started: watch pid {pid} on {HOST} is dead"
    assert json.loads(lock.path.read_text())["run_id"] == "r2"


def test_a_reused_pid_does_not_pass_for_the_holder(tmp_path: Path) -> None:
    # Our own pid, but a start time that is not ours: another process that once had this pid.
    plant(tmp_path / ".lock", lock_record(tmp_path / "r1", pid_started=1.0))
    assert WatchLock(tmp_path / ".lock").acquire(tmp_path / "r2", "local").ok


@pytest.mark.parametrize("states, ended", [({"a": "COMPLETED", "b": "COMPLETED"}, "COMPLETED"),
                                           ({"a": "FAILED", "b": None}, None),  # b never ran: not over
                                           ({"a": "FAILED", "b": "CANCELLED"}, "1 FAILED, 1 CANCELLED")])
def test_a_finished_run_makes_the_lock_stale_even_while_its_holder_lives(tmp_path: Path, states: dict[str, Any],
                                                                       ended: Optional[str]) -> None:
    run = make_run(tmp_path, "r1", states)
    plant(tmp_path / ".lock", lock_record(run.path, launched=True))  # holder: this live process
    verdict, info = WatchLock(tmp_path / ".lock").clear_stale()
    assert verdict is not None and info is not None and info["run_id"] == "r1"
    if ended is None:  # unfinished, launched, no local scheduler: nothing drives it any more
        assert not verdict.held and "nothing drives it any more: its local scheduler is gone" in verdict.why
    else:
        assert not verdict.held and verdict.why == f"run r1 ended ({ended})"
    assert not (tmp_path / ".lock").exists()


def test_an_unreadable_lock_file_is_stale(tmp_path: Path) -> None:
    (tmp_path / ".lock").write_text("{not json")
    taken = WatchLock(tmp_path / ".lock").acquire(tmp_path / "r2", "local")
    assert taken.ok and taken.stale is not None and "unreadable lock file" in taken.stale["stale_why"]


@pytest.mark.parametrize("age_s, watch_job, live, held", [
    (10.0, None, {}, True),  # another host, just taken: trusted for GRACE_S
    (GRACE_S + 10, None, {}, False),  # ... and no longer after that, with no run dir
    (GRACE_S + 10, "77", {"77": "RUNNING"}, True),  # the watch runs as a Slurm job, still running
    (10.0, "77", {}, False),  # ... that left squeue: it is gone, however young the lock
    (10.0, "77", {"77": "PENDING"}, False),  # ... a cron job waiting for its next time: that run is over
    (10.0, "4242", {"4242": "RUNNING"}, False),  # ... our own cron job's id: an earlier run of it
])
def test_a_holder_on_another_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, age_s: float,
                                  watch_job: Optional[str], live: dict[str, str], held: bool) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    info = lock_record(tmp_path / "r1", host="elsewhere", created=1000.0, watch_job=watch_job)
    verdict = judge(info, HOST, live_jobs=lambda ids: {j: s for j, s in live.items() if j in ids}, now=1000.0 + age_s)
    assert verdict.held is held, verdict.why


def test_a_local_run_on_another_host_cannot_be_judged_from_here_so_it_holds(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r1", {"a": "RUNNING", "b": None})
    run.update_meta(host="elsewhere")
    verdict = judge(lock_record(run.path, launched=True, host="elsewhere"), HOST, live_jobs=lambda ids: {})
    assert verdict.held and "cannot be checked from" in verdict.why


def test_a_slurm_error_counts_as_held(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r1", {"a": "RUNNING", "b": None}, backend="slurm")
    write_json_atomic(run.path / "slurm.json", {"launches": {"0": {"a": {"job_id": "5", "units": {"a": "5"}}}}})

    def down(ids: Any) -> dict[str, str]:
        raise ExecutorError("squeue: slurmctld is not responding")

    verdict = judge(lock_record(run.path, launched=True, backend="slurm"), HOST, live_jobs=down)
    assert verdict.held and "may still be going" in verdict.why and "not responding" in verdict.why


# --- races: real processes -------------------------------------------------------------------------

_RACER = """
import json, sys, time
from pathlib import Path
from cl_hpc.watch.lock import WatchLock
lock_path, run_dir, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
time.sleep(max(0.0, start - time.time()))
taken = WatchLock(Path(lock_path)).acquire(Path(run_dir), "local")
print(json.dumps({"ok": taken.ok, "stale": bool(taken.stale)}), flush=True)
time.sleep(max(0.0, start + 4 - time.time()))  # the winner stays alive while the others try
"""


@pytest.mark.parametrize("planted", ["none", "stale"])
def test_of_watches_started_at_once_exactly_one_takes_the_lock(tmp_path: Path, planted: str) -> None:
    if planted == "stale":
        pid, started = dead_process()
        plant(tmp_path / ".lock", lock_record(tmp_path / "old", pid=pid, pid_started=started))
    start = time.time() + 2.0  # every racer is imported and waiting by then
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, str(tmp_path / ".lock"), str(tmp_path / f"r{i}"),
                               str(start)], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
             for i in range(6)]
    results = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert sum(r["ok"] for r in results) == 1, results
    assert sum(r["stale"] for r in results) == (1 if planted == "stale" else 0)


# --- the real Slurm cluster --------------------------------------------------------------------------


@pytest.mark.slurm
def test_squeue_on_job_ids_that_never_existed_finds_none() -> None:
    assert live_slurm_jobs(["99999998"]) == {}  # one id: squeue exits 1, "Invalid job id"
    assert live_slurm_jobs(["99999998", "99999997_3"]) == {}  # several: exit 0, no lines


@pytest.mark.slurm
def test_a_slurm_run_holds_the_lock_while_its_job_is_in_squeue(tmp_path: Path) -> None:
    job = subprocess.run(["sbatch", "--parsable", "-t", "2", "-o", "/dev/null", "--wrap", "sleep 60"],
                         capture_output=True, text=True, check=True).stdout.strip().split(";")[0]
    try:
        run = make_run(tmp_path, "r1", {"a": None, "b": None}, backend="slurm")
        write_json_atomic(run.path / "slurm.json", {"launches": {"0": {"a": {"job_id": job, "units": {"a": job}},
                                                                       "b": {"job_id": "99999998",
                                                                             "units": {"b": "99999998"}}}}})
        pid, started = dead_process()  # the watch that launched it has exited, as after a detached launch
        plant(tmp_path / ".lock", lock_record(run.path, pid=pid, pid_started=started, launched=True,
                                              backend="slurm", job_ids=[job]))
        assert live_slurm_jobs([job, "99999998"])[job] in ("PENDING", "RUNNING", "CONFIGURING")
        taken = WatchLock(tmp_path / ".lock").acquire(tmp_path / "r2", "slurm")
        assert not taken.ok and f"run r1 still going: Slurm job(s) {job} in squeue" in taken.why
    finally:
        subprocess.run(["scancel", job], check=False)
    deadline = time.monotonic() + 60
    while live_slurm_jobs([job]) and time.monotonic() < deadline:
        time.sleep(0.5)
    taken = WatchLock(tmp_path / ".lock").acquire(tmp_path / "r2", "slurm")
    assert taken.ok and taken.stale is not None
    assert "nothing drives it any more: its Slurm job(s)" in taken.stale["stale_why"]
    assert "are no longer in squeue" in taken.stale["stale_why"]
