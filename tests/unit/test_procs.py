"""cl_hpc/procs.py against real processes: what the local scheduler's memory limit counts."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil

from cl_hpc import procs

MB = 2**20
# A parent that fills a 200 MiB buffer, then forks 3 children that only hold it (a DataLoader's
# workers sharing the dataset by copy-on-write); all wait for the gate file.
FORKED = """
import os, sys, time
from pathlib import Path
block = b"x" * (200 << 20)
kids = []
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        while not Path(sys.argv[1]).exists():
            time.sleep(0.05)
        os._exit(0)
    kids.append(pid)
Path(sys.argv[2]).touch()
while not Path(sys.argv[1]).exists():
    time.sleep(0.05)
for pid in kids:
    os.waitpid(pid, 0)
"""


def _wait_for(path: Path, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the forking process did not get ready"
        time.sleep(0.05)


def test_pages_shared_by_forked_children_count_once(tmp_path: Path) -> None:
    gate, ready = tmp_path / "gate", tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", FORKED, str(gate), str(ready)])
    try:
        _wait_for(ready, proc)
        tree = procs.tree(psutil.Process(proc.pid))
        assert len(tree) == 4
        rss = sum(p.memory_info().rss for p in tree)
        held = procs.mem_bytes(tree)
        assert rss > 4 * 200 * MB, f"each process maps the buffer: RSS sums to {rss / MB:.0f} MB"
        # PSS: the buffer once (split over the 4), plus each interpreter's own pages.
        assert 200 * MB < held < 2 * 200 * MB, f"{held / MB:.0f} MB held (RSS sum {rss / MB:.0f} MB)"
    finally:
        gate.touch()
        proc.wait(60)


def test_a_process_that_ended_counts_nothing(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    handle = psutil.Process(proc.pid)
    proc.wait(60)
    assert procs.mem_bytes([handle]) == 0
