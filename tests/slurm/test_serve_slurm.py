"""The model server as a Slurm job (slurm/serve.sbatch) on the local cluster: it publishes its
address in a discovery file, a client finds it there and is answered, and `scancel` (SIGTERM)
drains it: requests logged, discovery file withdrawn, exit 0. A job that reaches its time limit
gets the same SIGTERM first (--signal) and ends COMPLETED rather than killed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from cl_hpc.data.predictions import Stream, read_stream
from cl_hpc.registry.store import ModelRegistry
from cl_hpc.serve import discovery
from tests.conftest import REPO
from tests.unit.test_registry import make_checkpoint, make_workload

SERVE = REPO / "slurm" / "serve.sbatch"
DEADLINE_S = 180


def _store(root: Path) -> Path:
    store = root / "store"
    workload = make_workload(0)
    with ModelRegistry.open(store) as registry:
        path = root / "ckpt" / "model.pt"
        sha = make_checkpoint(path, 0)
        registry.register("served", path, strategy="stateless", checkpoint_sha256=sha, workdir=REPO,
                          model_class=workload.model_target.path, init_args=workload.model_target.args,
                          datamodule_class=workload.data_target.path, signature=workload.signature.to_dict())
        registry.promote("served", "1.0", reason="slurm serve test")
    return store


def _sbatch(tmp: Path, *flags: str, overrides: tuple[str, ...] = ()) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SBATCH_", "SLURM_JOB", "VIRTUAL_ENV"))}
    env.update(CL_HPC_PYTHON=sys.executable, PYTHONPATH=str(REPO))
    proc = subprocess.run(["sbatch", "--parsable", f"--chdir={tmp}", f"--output={tmp}/serve-%j.out", *flags,
                           str(SERVE), f"store.root={tmp / 'store'}", "serve.port=0", "serve.flush_interval_s=0.2",
                           *overrides], capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def _published(store: Path, job_id: str) -> discovery.ServerRecord:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        for _, record in discovery.listed(store):
            if record.job_id == job_id and discovery.probe(record)["ready"]:
                return record
        time.sleep(0.25)
    raise AssertionError(f"job {job_id} published no ready server in {DEADLINE_S} s: {_squeue(job_id)}")


def _squeue(job_id: str) -> str:
    return subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True,
                          timeout=30).stdout.strip()


def _finished(job_id: str) -> str:
    """Poll until the job leaves the queue; its final state from sacct."""
    deadline = time.monotonic() + DEADLINE_S
    while _squeue(job_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _squeue(job_id), f"job {job_id} still queued after {DEADLINE_S} s"
    while time.monotonic() < deadline:  # accounting lags the queue by a moment
        state = subprocess.run(["sacct", "-n", "-X", "-j", job_id, "-o", "State%30,ExitCode"], capture_output=True,
                               text=True, timeout=30).stdout.split()
        if state and state[0] not in ("RUNNING", "PENDING", "COMPLETING"):
            return " ".join(state)
        time.sleep(0.5)
    raise AssertionError(f"sacct has no final state for job {job_id}")


def test_a_client_finds_the_job_through_its_discovery_file_and_scancel_drains_it(tmp_path: Path) -> None:
    store = _store(tmp_path)
    job_id = _sbatch(tmp_path, "--time=10")  # the script asks a day: more than the debug partition gives
    record = _published(store, job_id)
    assert record.job_id == job_id and record.host == record.hostname  # bound to 0.0.0.0: reached by name
    found = discovery.find(store, "served")
    answers = [httpx.post(f"{found.url}/predict", json={"inputs": [{"a": i, "b": 1.0, "c": 2.0}]}, timeout=30)
               for i in range(5)]
    assert [a.status_code for a in answers] == [200] * 5, [a.text for a in answers]
    assert {a.json()["version"] for a in answers} == {"1.0"}
    status = subprocess.run([sys.executable, "-m", "cl_hpc.serve", "status", "--json", f"store.root={store}"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert job_id in status.stdout and '"ready": true' in status.stdout, status.stdout + status.stderr

    subprocess.run(["scancel", job_id], check=True, timeout=30)
    final = _finished(job_id)
    out = (tmp_path / f"serve-{job_id}.out").read_text()
    assert "stopped on SIGTERM" in out, out
    assert not [r for _, r in discovery.listed(store) if r.job_id == job_id]  # withdrawn
    logged = set(read_stream(Path(record.log_dir), Stream.PREDICTIONS).frame["request_id"])
    assert {a.json()["request_id"] for a in answers} <= logged
    assert final.split()[0].startswith("CANCELLED"), final


def test_the_time_limit_signal_ends_the_job_completed_not_killed(tmp_path: Path) -> None:
    _store(tmp_path)
    # One minute, SIGTERM 40 s before the end. Slurm may send it up to a minute early, so it may
    # come while the server starts or while it serves: either way the server stops and exits 0 on
    # its own, and the job ends COMPLETED, not TIMEOUT or FAILED (killed by the signal).
    job_id = _sbatch(tmp_path, "--time=1", "--signal=B:TERM@40")
    final = _finished(job_id)
    out = (tmp_path / f"serve-{job_id}.out").read_text()
    assert "SIGTERM" in out and final.split() == ["COMPLETED", "0:0"], (final, out)
