"""The run dir's launch lock (cl_hpc/rundir/launch_lock.py) between real processes: a `status`
probe holding it for an instant does not refuse a resume, and a refusal never names a holder
that is gone."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import psutil

from cl_hpc.rundir import launch_lock
from tests.conftest import REPO, _env

# Takes LOCK_SH on the lock file, as launch_lock.busy does, says so, and keeps it until the
# release file appears (a probe caught in the middle of its instant).
PROBE = """
import fcntl, os, sys, time
from pathlib import Path
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
Path(sys.argv[2]).touch()
while not Path(sys.argv[3]).exists():
    time.sleep(0.005)
"""
ACQUIRE = ("import sys; from pathlib import Path; from cl_hpc.rundir import launch_lock; "
           "launch_lock.acquire(Path(sys.argv[1]))")
# The same with a retry window no loaded machine can miss: what is tested is that it retries,
# not how fast this test lets the probe go.
ACQUIRE_PATIENT = ACQUIRE.replace("launch_lock.acquire(", "launch_lock.RETRY_S = 120.0; launch_lock.acquire(")


def _until(predicate: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.005)


def _probe(run: Path, tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path]:
    ready, release = tmp_path / "probe.ready", tmp_path / "probe.release"
    probe = subprocess.Popen([sys.executable, "-c", PROBE, str(run / launch_lock.LOCK_NAME), str(ready), str(release)])
    _until(lambda: ready.exists() or probe.poll() is not None)
    assert probe.poll() is None, "the probe could not take its shared lock"
    return probe, release


def _earlier_launch(run: Path) -> None:
    """A launcher took the lock and let it go (this process, as a launch that ended)."""
    launch_lock.acquire(run)
    launch_lock.release(run)


def test_an_acquire_during_a_status_probe_waits_it_out(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    _earlier_launch(run)
    probe, release = _probe(run, tmp_path)
    lock = (run / launch_lock.LOCK_NAME).resolve()
    try:
        resume = subprocess.Popen([sys.executable, "-c", ACQUIRE_PATIENT, str(run)], cwd=REPO, env=_env(),
                                  stderr=subprocess.PIPE, text=True)

        def opened_or_ended() -> bool:
            if resume.poll() is not None:
                return True
            try:
                return any(f.path == str(lock) for f in psutil.Process(resume.pid).open_files())
            except psutil.Error:
                return False

        _until(opened_or_ended)  # the resume is at its flock (or already refused)
        release.touch()  # the probe's instant ends
        _, err = resume.communicate(timeout=60)
        assert resume.returncode == 0, f"the resume was refused while a probe held the lock for an instant:\n{err}"
    finally:
        release.touch()
        probe.wait(60)


def test_a_refusal_never_names_a_holder_that_is_gone(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    _earlier_launch(run)  # wrote this pid in the file
    probe, release = _probe(run, tmp_path)  # then someone holds it (and writes nothing)
    try:
        resume = subprocess.run([sys.executable, "-c", ACQUIRE, str(run)], cwd=REPO, env=_env(),
                                capture_output=True, text=True, timeout=60)
        assert resume.returncode != 0 and "is being launched by another process" in resume.stderr, resume.stderr
        assert f"pid {os.getpid()}" not in resume.stderr, f"names the earlier launch, long gone:\n{resume.stderr}"
    finally:
        release.touch()
        probe.wait(60)


def test_the_holder_is_named_while_it_holds(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    launch_lock.acquire(run)
    try:
        resume = subprocess.run([sys.executable, "-c", ACQUIRE, str(run)], cwd=REPO, env=_env(),
                                capture_output=True, text=True, timeout=60)
        assert resume.returncode != 0 and f"(pid {os.getpid()} on {os.uname().nodename}" in resume.stderr, \
            resume.stderr
        with open(run / launch_lock.LOCK_NAME) as held:
            try:
                fcntl.flock(held, fcntl.LOCK_SH | fcntl.LOCK_NB)
                raise AssertionError("the lock must still be held by this process")
            except BlockingIOError:
                pass
    finally:
        launch_lock.release(run)
