"""The local scheduler process: `python -m cl_hpc.execute.local_agent RUN_DIR` (started by LocalExecutor).

It plays Slurm's part on one machine: admits units whose dependencies completed while their
declared resources fit, runs each in a submitit subprocess with its time limit and its own GPU ids,
retries failures up to ``retries``, and cancels the dependents of a unit that failed for good.
It keeps no state the run directory does not also hold, so ``status`` never needs it.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import submitit

from cl_hpc.config.resources import Resources
from cl_hpc.dag.capacity import Capacity
from cl_hpc.dag.model import Plan
from cl_hpc.execute.local import CANCEL_FILE, SCHEDULER_FILE
from cl_hpc.execute.runner import run_unit, timeout_message
from cl_hpc.execute.schedule import Pool, cancel_dependents, ready
from cl_hpc.atomic import read_json, write_json_atomic
from cl_hpc.rundir.layout import RunDir


@dataclass
class Running:
    job: Any  # submitit LocalJob
    res: Resources
    gpu_ids: list[int]
    attempt: int
    started: float


@dataclass
class Agent:
    run: RunDir
    plan: Plan
    todo: list[str]
    epoch: int
    pool: Pool
    poll_s: float
    done: set[str] = field(default_factory=set)
    running: dict[str, Running] = field(default_factory=dict)
    tries: dict[str, int] = field(default_factory=dict)

    def loop(self) -> None:
        self.done = {k for k in self.plan.units if k not in self.todo}
        while self.todo or self.running:
            if (self.run.path / CANCEL_FILE).exists():
                self.cancel_all("cancelled by request (cl_hpc.cancel)")
                return
            self.reap()
            self.admit()
            if not self.running and not ready(self.plan, self.todo, self.done):
                self.cancel_all("can never start: a dependency did not complete")  # defensive
                return
            time.sleep(self.poll_s)

    def admit(self) -> None:
        for key in ready(self.plan, self.todo, self.done):
            res = self.plan.spec(key).resources
            if key in self.running or not self.pool.fits(res):
                continue
            gpu_ids = self.pool.take(res)
            attempt = len(self.run.attempts(key)) + 1
            self.tries[key] = self.tries.get(key, 0) + 1
            self.running[key] = Running(self.launch(key, res, gpu_ids, attempt), res, gpu_ids, attempt, time.time())

    def launch(self, key: str, res: Resources, gpu_ids: list[int], attempt: int) -> Any:
        executor = submitit.LocalExecutor(folder=self.run.log_dir(key))
        executor.update_parameters(
            timeout_min=res.time_min, gpus_per_node=res.gpus, visible_gpus=gpu_ids,
            tasks_per_node=res.tasks_per_node, signal_delay_s=min(30, max(1, int(res.time_min * 6))),
        )
        return executor.submit(run_unit, str(self.run.path), key, attempt, self.epoch)

    def reap(self) -> None:
        for key, entry in list(self.running.items()):
            if not entry.job.done():
                continue
            del self.running[key]
            self.pool.give_back(entry.res, entry.gpu_ids)
            if self._completed(key, entry):
                self.todo.remove(key)
                self.done.add(key)
            elif self.tries[key] > self.plan.spec(key).retries:
                self.todo.remove(key)
                for dep in cancel_dependents(self.run, self.plan, key):
                    if dep in self.todo:
                        self.todo.remove(dep)

    def _completed(self, key: str, entry: Running) -> bool:
        attempts = self.run.attempts(key)
        last = attempts[-1] if attempts else None
        if last and last["attempt"] == entry.attempt and last["state"] == "COMPLETED":
            return True
        if not last or last["attempt"] != entry.attempt or last["state"] == "RUNNING":
            # The process died without recording its end (killed, out of memory, time limit).
            self.run.write_attempt(key, _lost_record(entry, last, key))
        return False

    def cancel_all(self, reason: str) -> None:
        for key, entry in self.running.items():
            entry.job.cancel()
        for key in list(self.todo):
            self.run.mark_cancelled(key, reason, None)
        self.todo.clear()
        self.running.clear()


def _lost_record(entry: Running, last: dict[str, Any] | None, key: str) -> dict[str, Any]:
    elapsed_min = (time.time() - entry.started) / 60
    if elapsed_min >= entry.res.time_min:
        error = timeout_message(entry.res.time_min)
    else:
        code = entry.job._process.poll() if entry.job._process else None
        error = f"the process of {key} died with exit code {code} before recording its end (killed? out of memory?)"
    base = last if last and last["attempt"] == entry.attempt else {"attempt": entry.attempt, "started": entry.started}
    return {**base, "state": "FAILED", "ended": time.time(), "error": error}


def main(run_dir: str) -> int:
    run = RunDir(run_dir)
    info = read_json(run.path / SCHEDULER_FILE) or {}
    me = psutil.Process(os.getpid())
    write_json_atomic(run.path / SCHEDULER_FILE, {**info, "pid": me.pid, "pid_started": me.create_time(), "state": "running"})
    signal.signal(signal.SIGTERM, lambda *_: (run.path / CANCEL_FILE).write_text("SIGTERM\n"))
    cap = info["capacity"]
    agent = Agent(run, run.load_plan(), list(info["todo"]), int(info.get("epoch", 0)),
                  Pool.of(Capacity("local", cap["cpus"], cap["mem_gb"], cap["gpus"])), float(info.get("poll_s", 0.2)))
    try:
        agent.loop()
    finally:
        write_json_atomic(run.path / SCHEDULER_FILE, {**read_json(run.path / SCHEDULER_FILE), "state": "finished", "ended": time.time()})
        if agent.plan.meta.get("store"):  # a detached run is indexed when it ends, asked or not
            from cl_hpc.store.sync import index_run

            index_run(run, agent.plan.meta["store"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
