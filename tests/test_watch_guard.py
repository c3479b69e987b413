"""The watch lock's guard cannot be held hostage (issue 10, defect 9): it was 0644, so any user who
could read the run root could open it and flock it, and the watch waited on it with no timeout."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterator

import pytest

from cl_hpc.errors import ExecutorError
from cl_hpc.watch.lock import WatchLock

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)   # read access is all flock needs
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(600)
"""


def _holder(guard: Path, user: str | None = None) -> subprocess.Popen[str]:
    """A real process that opens the guard read-only and flocks it, as ``user`` if given."""
    demote = None
    if user is not None:
        entry = pwd.getpwnam(user)

        def demote() -> None:
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)

    python = "/usr/bin/python3" if user is not None and os.path.exists("/usr/bin/python3") else sys.executable
    return subprocess.Popen([python, "-c", HOLD, str(guard)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=demote)


def _wait_held(proc: subprocess.Popen[str]) -> bool:
    line = proc.stdout.readline() if proc.stdout else ""  # blocks until it printed or exited
    return line.strip() == "held"


@pytest.fixture
def shared_root() -> Iterator[Path]:
    """A run root every user may read, as on a shared cluster (pytest's tmp_path is root's alone)."""
    root = Path(tempfile.mkdtemp(prefix="cl_hpc-shared-", dir="/tmp"))
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_the_guard_is_private_and_another_user_cannot_hold_it(shared_root: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to run a process as another user") if os.environ.get("CI") != "true" else \
            pytest.fail("CI runs as root")
    lock = WatchLock(shared_root / ".watch-m.lock", guard_timeout_s=5)
    assert lock.acquire(shared_root / "r1", "local").ok
    guard = shared_root / ".watch-m.lock.guard"
    assert stat.S_IMODE(guard.stat().st_mode) == 0o600
    intruder = _holder(guard, user="nobody")
    try:
        assert not _wait_held(intruder)  # cannot even open it
        assert "Permission denied" in intruder.communicate(timeout=30)[1]
    finally:
        intruder.kill()
    lock.update(launched=True)  # the guard is free: this takes it at once
    lock.release()


def test_an_older_world_readable_guard_is_replaced_so_an_open_descriptor_cannot_block(shared_root: Path) -> None:
    """chmod would not revoke a descriptor opened while the guard was 0644: it is replaced instead."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run a process as another user") if os.environ.get("CI") != "true" else \
            pytest.fail("CI runs as root")
    guard = shared_root / ".lock.guard"
    guard.touch()
    os.chmod(guard, 0o644)  # as an older cl_hpc left it
    old_inode = guard.stat().st_ino
    intruder = _holder(guard, user="nobody")  # opened and flocked while it was still readable
    try:
        assert _wait_held(intruder)
        assert WatchLock(shared_root / ".lock", guard_timeout_s=5).acquire(shared_root / "r1", "local").ok
        assert stat.S_IMODE(guard.stat().st_mode) == 0o600 and guard.stat().st_ino != old_inode
    finally:
        intruder.kill()
        intruder.wait(timeout=30)


def test_a_guard_of_another_owner_is_refused_with_the_way_out(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to chown") if os.environ.get("CI") != "true" else pytest.fail("CI runs as root")
    guard = tmp_path / ".lock.guard"
    guard.touch()
    os.chown(guard, pwd.getpwnam("nobody").pw_uid, -1)
    with pytest.raises(ExecutorError, match=r"belongs to uid \d+, not to this user .* Remove it, or give the watch"):
        WatchLock(tmp_path / ".lock").acquire(tmp_path / "r1", "local")
    assert not (tmp_path / ".lock").exists()


def test_a_hung_holder_is_named_after_the_timeout_instead_of_blocking_forever(tmp_path: Path) -> None:
    first = WatchLock(tmp_path / ".lock")
    assert first.acquire(tmp_path / "r1", "local").ok  # a lock the message can quote
    guard = tmp_path / ".lock.guard"
    hung = _holder(guard)
    outcome: list[BaseException | object] = []

    def second_watch() -> None:
        try:
            outcome.append(WatchLock(tmp_path / ".lock", guard_timeout_s=1.0).acquire(tmp_path / "r2", "local"))
        except BaseException as exc:  # noqa: BLE001  (handed to the test's thread)
            outcome.append(exc)

    try:
        assert _wait_held(hung)
        thread = threading.Thread(target=second_watch, daemon=True)
        thread.start()
        thread.join(timeout=120)  # before the fix it waited forever: this join would time out
        assert not thread.is_alive() and len(outcome) == 1
        error = outcome[0]
        assert isinstance(error, ExecutorError), error
        assert f"locked for over 1 s by pid {hung.pid} on {socket.gethostname()}" in str(error)
        assert f"the lock names watch pid {os.getpid()}" in str(error) and "stop it" in str(error)
    finally:
        hung.kill()
        hung.wait(timeout=30)
    first.release()  # the holder gone, the guard is free again
    assert WatchLock(tmp_path / ".lock").acquire(tmp_path / "r2", "local").ok
