"""cluster=local: a small scheduler process on this machine runs each unit as a submitit subprocess.

``submit`` starts that scheduler detached (its own session), so the launcher can exit, be killed,
or lose its terminal while the run goes on, as it would under Slurm. The scheduler admits a unit
only when its dependencies completed and its declared cpus, memory and GPUs fit in what is free.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Mapping, Sequence

import psutil

from cl_hpc.config.schema import LocalClusterConf
from cl_hpc.dag.capacity import Capacity
from cl_hpc.dag.model import Plan
from cl_hpc.errors import ExecutorError
from cl_hpc.execute.base import Executor
from cl_hpc.execute.machine import machine_capacity
from cl_hpc.atomic import read_json, write_json_atomic
from cl_hpc.rundir.layout import RunDir

SCHEDULER_FILE = "scheduler.json"
CANCEL_FILE = "cancel.request"


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, conf: LocalClusterConf) -> None:
        self.conf = conf

    def capacity(self) -> Capacity:
        return machine_capacity(self.conf.mode, self.conf.cpus, self.conf.mem_gb, self.conf.gpus)

    def describe(self, plan: Plan) -> Mapping[str, str]:
        cap = self.capacity()
        pool = f"{cap.cpus} cpus, {cap.mem_gb:g} GB, {cap.gpus} gpus"
        return {
            name: f"{len(spec.foreach or [None])} subprocess(es) via submitit, each started once its "
            f"dependencies completed and its resources fit the free pool ({pool})"
            for name, spec in plan.tasks.items()
        }

    def submit(self, run: RunDir, plan: Plan, todo: Sequence[str], epoch: int) -> None:
        if scheduler_alive(run):
            raise ExecutorError(f"run {run.run_id} already has a live local scheduler; wait or cancel it first")
        (run.path / CANCEL_FILE).unlink(missing_ok=True)
        cap = self.capacity()
        write_json_atomic(run.path / SCHEDULER_FILE, {
            "todo": list(todo), "epoch": epoch, "state": "starting", "poll_s": self.conf.poll_s,
            "capacity": {"cpus": cap.cpus, "mem_gb": cap.mem_gb, "gpus": cap.gpus},
        })
        with open(run.path / "scheduler.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cl_hpc.execute.local_agent", str(run.path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives the launcher and its terminal's Ctrl-C
                cwd=plan.workdir or None,
            )
        _wait_started(run, proc)

    def cancel(self, run: RunDir) -> None:
        (run.path / CANCEL_FILE).write_text(f"{time.time()}\n")

    def problems(self, run: RunDir) -> list[str]:
        info = read_json(run.path / SCHEDULER_FILE) or {}
        if info.get("state") in ("starting", "running") and not scheduler_alive(run):
            return [f"the local scheduler (pid {info.get('pid')}) is gone before the run finished; "
                    f"see {run.path / 'scheduler.log'} and continue with launch.resume={run.run_id}"]
        return []


def scheduler_alive(run: RunDir) -> bool:
    info = read_json(run.path / SCHEDULER_FILE) or {}
    pid, started = info.get("pid"), info.get("pid_started")
    if not pid or info.get("state") == "finished":
        return False
    try:  # a pid alone can be reused by another process: compare its start time too
        return abs(psutil.Process(int(pid)).create_time() - float(started)) < 1.0
    except (psutil.Error, TypeError, ValueError):
        return False


def _wait_started(run: RunDir, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (read_json(run.path / SCHEDULER_FILE) or {}).get("pid") == proc.pid:
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    tail = (run.path / "scheduler.log").read_text(errors="replace")[-2000:]
    raise ExecutorError(f"the local scheduler did not start (exit code {proc.poll()}); its log "
                        f"{run.path / 'scheduler.log'} ends with:\n{tail}")
