"""The local scheduler process: `python -m cl_hpc.execute.local_agent RUN_DIR` (started by LocalExecutor).

It plays Slurm's part on one machine: admits units whose dependencies completed while their
declared resources fit, runs each in a submitit subprocess with its time limit and its own GPU ids,
kills one whose processes use more memory than it declared (as Slurm's OverMemoryKill does),
retries failures up to ``retries`` (with more memory or time where that was the cause, as the Slurm
retry guard does), and cancels the dependents of a unit that failed for good.
It keeps no state the run directory does not also hold, so ``status`` never needs it.

A full disk must not leave the run stuck: the scheduler keeps a small reserve file in the run dir
and frees it when a record of its own cannot be written for lack of space (local_io.py).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil
import submitit

from cl_hpc import procs
from cl_hpc.atomic import read_json
from cl_hpc.config.resources import Resources
from cl_hpc.dag.capacity import Capacity
from cl_hpc.dag.model import Plan
from cl_hpc.execute.local import CANCEL_FILE, SCHEDULER_FILE, SchedulerState
from cl_hpc.execute.local_io import Recorder, disk_note
from cl_hpc.execute.runner import run_unit, timeout_message
from cl_hpc.execute.schedule import Pool, cancel_dependents, ready
from cl_hpc.execute.slurm.escalate import escalate
from cl_hpc.rundir.layout import RunDir
from cl_hpc.rundir.records import AttemptRecord
from cl_hpc.states import AttemptState, Limit

GB = 1024**3
MEM_SAMPLE_S = 1.0  # as often as the local Slurm cluster's JobAcctGatherFrequency; a sample reads /proc


@dataclass
class Running:
    job: Any  # submitit LocalJob
    res: Resources
    gpu_ids: list[int]
    attempt: int
    started: float
    root: psutil.Process | None  # the submitit controller; the task runs as its child
    peak_rss: int = 0  # bytes, the largest sum over the task's processes seen so far
    oom: str | None = None  # why the scheduler killed it for memory


@dataclass
class Agent:
    run: RunDir
    plan: Plan
    todo: list[str]
    epoch: int
    pool: Pool
    poll_s: float
    io: Recorder
    max_mem_gb: float | None = None
    done: set[str] = field(default_factory=set)
    running: dict[str, Running] = field(default_factory=dict)
    tries: dict[str, int] = field(default_factory=dict)
    resources: dict[str, Resources] = field(default_factory=dict)  # escalated for a retry
    sampled: float = 0.0  # when enforce_memory last read the processes' memory (monotonic)

    def loop(self) -> None:
        self.done = {k for k in self.plan.units if k not in self.todo}
        while self.todo or self.running:
            if (self.run.path / CANCEL_FILE).exists():
                self.cancel_all("cancelled by request (cl_hpc.cancel)")
                return
            self.enforce_memory()
            self.reap()
            self.admit()
            if not self.running and not ready(self.plan, self.todo, self.done):
                self.cancel_all("can never start: a dependency did not complete")  # defensive
                return
            time.sleep(self.poll_s)

    def admit(self) -> None:
        for key in ready(self.plan, self.todo, self.done):
            res = self.resources.get(key, self.plan.spec(key).resources)
            if key in self.running or not self.pool.fits(res):
                continue
            gpu_ids = self.pool.take(res)
            attempt = len(self.run.attempts(key)) + 1
            self.tries[key] = self.tries.get(key, 0) + 1
            try:
                job = self.launch(key, res, gpu_ids, attempt)
            except OSError as exc:  # submitit writes its pickles first: a full disk fails here
                self.pool.give_back(res, gpu_ids)
                self._not_started(key, res, attempt, exc)
                continue
            self.running[key] = Running(job, res, gpu_ids, attempt, time.time(), _controller(job))
            # Now, not after the loop: if this process dies before its next launch, a resume or a
            # cancel still finds this controller (it has no attempt record until its task starts).
            self.save_running()

    def launch(self, key: str, res: Resources, gpu_ids: list[int], attempt: int) -> Any:
        executor = submitit.LocalExecutor(folder=self.run.log_dir(key))
        executor.update_parameters(
            timeout_min=res.time_min, gpus_per_node=res.gpus, visible_gpus=gpu_ids,
            tasks_per_node=res.tasks_per_node, signal_delay_s=min(30, max(1, int(res.time_min * 6))),
        )
        # An escalated retry is told what it runs under: the plan says what the first attempt asked for.
        given = json.dumps(asdict(res)) if key in self.resources else None
        return executor.submit(run_unit, str(self.run.path), key, attempt, self.epoch, resources=given)

    def save_running(self) -> None:
        """Each running unit's controller in scheduler.json: if this process dies, a resume or a
        cancel finds and stops them from there (local_orphans.py)."""
        running = {k: {"attempt": e.attempt, "epoch": self.epoch, **_identity(e.root)} for k, e in self.running.items()}
        self.io.update_scheduler(running=running)

    def enforce_memory(self) -> None:
        """Kill a unit whose processes together hold more than its mem_gb, as Slurm's OverMemoryKill
        does with --mem (per node: every task process of the unit shares it)."""
        if time.monotonic() - self.sampled < MEM_SAMPLE_S:
            return
        self.sampled = time.monotonic()
        for key, entry in self.running.items():
            if entry.root is None or entry.oom:
                continue
            rss = procs.mem_bytes(procs.tree(entry.root, with_root=False))  # the controller is Slurm's stepd
            entry.peak_rss = max(entry.peak_rss, rss)
            limit = entry.res.mem_gb * GB
            if rss > limit:
                entry.oom = (f"{Limit.OUT_OF_MEMORY}: Exceeded job memory limit: its processes used "
                             f"{rss / 2**20:.0f} MB, "
                             f"over its mem_gb={entry.res.mem_gb:g} ({limit / 2**20:.0f} MB, resources.mem_gb); "
                             f"killed by the local scheduler, as Slurm's OverMemoryKill would")
                self.io.log(f"{key}: {entry.oom}")
                procs.kill(procs.tree(entry.root))

    def reap(self) -> None:
        changed = False
        for key, entry in list(self.running.items()):
            if not entry.job.done():
                continue
            del self.running[key]
            changed = True
            self.pool.give_back(entry.res, entry.gpu_ids)
            if self._completed(key, entry):
                self.todo.remove(key)
                self.done.add(key)
            else:
                self._failed(key, entry.res, entry.peak_rss)
        if changed:
            self.save_running()

    def _failed(self, key: str, res: Resources, peak_rss: int) -> None:
        """Retry ``key`` (asking for more where memory or time ended it), or, with no attempts
        left, give up on it and cancel what depends on it."""
        full = disk_note(self.run.path)
        if self.tries[key] <= self.plan.spec(key).retries and not full:
            self._escalate(key, res, peak_rss)
            return
        if full:  # a retry would fail the same way, and use up the room left for the records
            self._skip_retries(key, full)
        self.todo.remove(key)
        self.io.write(f"the cancellation of what depends on {key}",
                      functools.partial(cancel_dependents, self.run, self.plan, key))
        gone = set(self.plan.descendants(key))
        self.todo[:] = [k for k in self.todo if k not in gone]

    def _not_started(self, key: str, res: Resources, attempt: int, exc: OSError) -> None:
        error = f"the local scheduler could not start it: {exc}"
        full = disk_note(self.run.path)
        self._record_unstarted(key, attempt, f"{error}; {full}" if full else error)
        self._failed(key, res, 0)

    def _skip_retries(self, key: str, why: str) -> None:
        """Record the attempts left as failed without starting them, so the unit reads FAILED."""
        first = len(self.run.attempts(key)) + 1
        for attempt in range(first, first + self.plan.spec(key).retries + 1 - self.tries[key]):
            self.tries[key] += 1
            self._record_unstarted(key, attempt, f"not started: {why}")

    def _record_unstarted(self, key: str, attempt: int, error: str) -> None:
        record: AttemptRecord = {"attempt": attempt, "epoch": self.epoch, "state": AttemptState.FAILED,
                                 "started": time.time(), "ended": time.time(), "host": os.uname().nodename,
                                 "error": error}
        self.io.log(f"{key}: attempt {attempt}: {error}")
        self.io.write(f"attempt {attempt} of {key} as FAILED", functools.partial(self.run.write_attempt, key, record))

    def _completed(self, key: str, entry: Running) -> bool:
        attempts = self.run.attempts(key)
        last = attempts[-1] if attempts else None
        if last and last["attempt"] == entry.attempt and last["state"] == AttemptState.COMPLETED:
            return True  # it recorded its end before a memory kill could land: done, as on Slurm
        if not last or last["attempt"] != entry.attempt or last["state"] == AttemptState.RUNNING or entry.oom:
            # The process ended without recording its end (killed, out of memory, time limit, or
            # its record could not be written): record it here, so the run never waits for it.
            record = _lost_record(self.run, entry, last, key, self.epoch)
            self.io.write(f"attempt {entry.attempt} of {key} as FAILED ({record['error']})",
                          functools.partial(self.run.write_attempt, key, record))
        return False

    def _escalate(self, key: str, res: Resources, peak_rss: int) -> None:
        """The next attempt asks for more memory or time when that is what ended this one."""
        attempts = self.run.attempts(key)
        error = (attempts[-1].get("error") if attempts else None) or ""
        res, reasons = escalate(res, [error], peak_rss / 2**20 if peak_rss else None, self.max_mem_gb,
                                peak_source="summed PSS sampled by the local scheduler")
        if reasons:
            self.resources[key] = res
            self.io.log(f"{key}: retrying with " + "; ".join(reasons))

    def cancel_all(self, reason: str) -> None:
        for entry in self.running.values():
            entry.job.cancel()
        for key in list(self.todo):
            self.io.write(f"the cancellation of {key}", functools.partial(self.run.mark_cancelled, key, reason, None))
        self.todo.clear()
        self.running.clear()
        self.save_running()


def _controller(job: Any) -> psutil.Process | None:
    try:
        return psutil.Process(job._process.pid)
    except (psutil.Error, AttributeError):
        return None


def _identity(proc: psutil.Process | None) -> dict[str, Any]:
    try:
        return {"pid": proc.pid, "pid_started": proc.create_time()} if proc else {}
    except psutil.Error:
        return {}


def _lost_record(run: RunDir, entry: Running, last: AttemptRecord | None, key: str, epoch: int) -> AttemptRecord:
    elapsed_min = (time.time() - entry.started) / 60
    if entry.oom:
        error = entry.oom
    elif elapsed_min >= entry.res.time_min:
        error = timeout_message(entry.res.time_min)
    else:
        code = entry.job._process.poll() if entry.job._process else None
        error = f"the process of {key} died with exit code {code} before recording its end (killed? out of memory?)"
        full = disk_note(run.path)
        if full:
            error = f"the process of {key} ended without recording its end: {full}"
    base: AttemptRecord = last if last and last["attempt"] == entry.attempt else {
        "attempt": entry.attempt, "state": AttemptState.RUNNING, "epoch": epoch, "started": entry.started}
    record: AttemptRecord = {**base, "state": AttemptState.FAILED, "ended": time.time(), "error": error}
    if entry.peak_rss:
        record["max_rss_mb"] = round(entry.peak_rss / 2**20, 1)
    return record


def main(run_dir: str) -> int:
    run = RunDir(run_dir)
    info = read_json(run.path / SCHEDULER_FILE) or {}
    io = Recorder(run)
    me = psutil.Process(os.getpid())
    io.update_scheduler(pid=me.pid, pid_started=me.create_time(), state=SchedulerState.RUNNING)
    io.reserve()
    signal.signal(signal.SIGTERM, lambda *_: (run.path / CANCEL_FILE).write_text("SIGTERM\n"))
    cap = info["capacity"]
    agent = Agent(run, run.load_plan(), list(info["todo"]), int(info.get("epoch", 0)),
                  Pool.of(Capacity("local", cap["cpus"], cap["mem_gb"], cap["gpus"])), float(info.get("poll_s", 0.2)),
                  io, max_mem_gb=float(cap["mem_gb"]))
    try:
        agent.loop()
    except BaseException as exc:  # a bug or a signal: say so, where status and a follow will look
        io.log(f"cl_hpc scheduler: stopped by {type(exc).__name__}: {exc}")
        io.update_scheduler(state=SchedulerState.CRASHED, ended=time.time(), error=f"{type(exc).__name__}: {exc}")
        raise  # the running map stays: a resume or a cancel stops what it left running
    else:
        io.update_scheduler(state=SchedulerState.FINISHED, ended=time.time(), running={})
    finally:
        io.release()
        _index(agent)
    return 0


def _index(agent: Agent) -> None:
    """A detached run is indexed when it ends, asked or not; the run dir stays the truth if this fails
    (status indexes it again)."""
    if not agent.plan.meta.get("store"):
        return
    from cl_hpc.store.sync import index_run

    try:
        index_run(agent.run, agent.plan.meta["store"])
    except Exception as exc:  # sqlite3's "database or disk is full" is no OSError
        agent.io.log(f"cl_hpc scheduler: could not index the run in the store: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
