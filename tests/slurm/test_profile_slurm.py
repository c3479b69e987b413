"""Profiles on the real cluster: joined with sacct, reported, and sizing the next run's sbatch."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

from tests.conftest import REPO, Launcher, _env


def _report(launcher: Launcher, run: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "cl_hpc.report", "efficiency", run, "--run-root",
                           str(launcher.run_root), "--json"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


_UNIT_MB = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
_MEM = re.compile(r"^\d+(\.\d+)?[KMGT]$")


def _requested(job: str) -> list[str]:
    """ReqMem, Timelimit and State of an ended job, once slurmdbd holds its complete row.

    Right after the end the row can be half-written: ReqMem then reads like ``16?`` (no TRES yet).
    """
    deadline = time.monotonic() + 60
    while True:
        out = subprocess.run(["sacct", "-n", "-P", "-X", "-j", job, "-o", "ReqMem,Timelimit,State"],
                             capture_output=True, text=True, check=True).stdout
        req = out.split("\n")[0].split("|")
        if (len(req) == 3 and _MEM.match(req[0])) or time.monotonic() > deadline:
            assert len(req) == 3 and _MEM.match(req[0]), out
            return req
        time.sleep(1)


def test_profile_is_joined_with_sacct_and_the_next_run_asks_slurm_for_less(launcher: Launcher) -> None:
    first = launcher("cluster=slurm", "pipeline=sizing")
    assert first.proc.returncode == 0, first.output
    run = first.run_dir()
    # The report runs status first, which joins once slurmdbd holds the ended job's complete row
    # (right after the end it may still be half-written): ask again until it has.
    deadline = time.monotonic() + 90
    while True:
        report = _report(launcher, run.name)
        profile = json.loads((run / "tasks" / "hog" / "profiles" / "1-0.json").read_text())
        if profile["sacct"] is not None or time.monotonic() > deadline:
            break
        time.sleep(2)
    sacct = profile["sacct"]
    assert sacct is not None and sacct["state"] == "COMPLETED", profile["sacct"]
    assert sacct["job_id"] == profile["job_id"] and sacct["req_mem_mb"] == 2048
    assert sacct["max_rss_mb"] is not None and sacct["elapsed_s"] >= 1 and "mem=2G" in sacct["alloc_tres"]
    (row,) = report["attempts"]
    assert row["state"] == "COMPLETED" and row["mem_req_gb"] == 2 and 0.13 < row["mem_eff"] < 0.5

    second = launcher("cluster=slurm", "pipeline=sizing", "rightsize.mode=auto")
    assert second.proc.returncode == 0, second.output
    launched = json.loads((second.run_dir() / "slurm.json").read_text())["launches"]["0"]["hog"]
    job = launched["job_id"]
    req = _requested(job)
    mem_mb = float(req[0][:-1]) * _UNIT_MB[req[0][-1]]
    peak_mb = profile["memory"]["peak_mb"]
    assert peak_mb <= mem_mb and peak_mb / mem_mb >= 0.8, (peak_mb, req)  # >= 80% memory efficiency
    assert req[1] == "00:01:00" and req[2] == "COMPLETED", req  # no OOM at the smaller request
