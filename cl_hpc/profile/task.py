"""The profiler of one task attempt: the runner starts it around every task, the task feeds it steps.

Lightning tasks add ``ctx.profiler.lightning_callback()`` (last) to their Trainer and call
``ctx.profiler.fit_done(trainer, module)`` after the fit. Any other loop gets the same record from::

    for batch in ctx.profiler.steps(loader):   # next() is the data-wait, the loop body the compute
        ...

The record is written at the end of the attempt, and every ``flush_s`` while it runs, so an
attempt killed for memory or time still leaves what was measured until shortly before.
Nothing here imports torch or Lightning until a training task asks for the callback.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from cl_hpc.atomic import write_json_atomic
from cl_hpc.profile import record
from cl_hpc.profile.host import cpu_seconds, own_peak_mb, read_cgroup_peak_mb, this_job_cgroup
from cl_hpc.profile.sampler import Sampler
from cl_hpc.states import AttemptState  # only enum: light enough for the job path

TYPE_CHECKING = False  # on the job path: no typing or dataclasses at run time (cl_hpc/execute/runner.py)
if TYPE_CHECKING:
    from typing import Any, Iterable, Iterator, Mapping

    from cl_hpc.profile.meter import StepMeter
    from cl_hpc.profile.record import ProfileRecord


class ProfileSettings:
    """config.schema.ProfileConf as the jobs read it from the plan (they never compose Hydra)."""

    __slots__ = ("enabled", "interval_s", "warmup_steps", "max_points", "ceiling", "flush_s")

    def __init__(self, enabled: bool = True, interval_s: float = 1.0, warmup_steps: int = 5,
                 max_points: int = 4000, ceiling: bool = True, flush_s: float = 30.0) -> None:
        self.enabled = enabled
        self.interval_s = interval_s
        self.warmup_steps = warmup_steps
        self.max_points = max_points
        self.ceiling = ceiling
        self.flush_s = flush_s

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> ProfileSettings:
        return cls(**{k: v for k, v in (data or {}).items() if k in cls.__slots__})

    def __repr__(self) -> str:
        return "ProfileSettings(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"


class TaskProfiler:
    def __init__(self, task_dir: Path, identity: Mapping[str, Any], requested: Mapping[str, Any],
                 settings: ProfileSettings | None = None) -> None:
        self.task_dir = Path(task_dir)
        self.identity = {**identity, "host": os.uname().nodename, "pid": os.getpid()}
        self.requested = dict(requested)
        self.settings = settings or ProfileSettings()
        self._meter: StepMeter | None = None
        self.notes: dict[str, Any] = {}
        self.compute: dict[str, Any] | None = None
        self.probe: dict[str, Any] | None = None  # what loader workers would cost (profile/loader.py)
        self._timer: Any = None
        self._gpus: Any = None
        self._cgroup = this_job_cgroup()
        self._last_flush = time.monotonic()
        self.sampler: Sampler | None = None
        self.started = time.time()
        self.first_step_at: float | None = None
        self._cpu0 = 0.0
        # The sampler thread's periodic flush and finish() never write at once, and no flush starts
        # after finish(): a late RUNNING record must not replace the final one.
        self._lock = threading.Lock()
        self._finished = False

    def start(self) -> "TaskProfiler":
        self._cpu0 = cpu_seconds()
        gpu_task = int(self.requested.get("gpus") or 0) > 0
        if gpu_task:  # NVML from the start: the energy counter's first reading opens the task's energy
            from cl_hpc.profile.nvml import open_gpus

            self._gpus, why = open_gpus()
            self.notes["gpu_sampling"] = why  # "NVML: 2 GPU(s) (...)", or why there is no GPU section
        else:
            self.notes["gpu_sampling"] = "no GPUs requested"
        self.sampler = Sampler(self.settings.interval_s, self._gpus, max_points=self.settings.max_points,
                               on_sample=self._maybe_flush, lazy=not gpu_task).start()
        return self

    @property
    def meter(self) -> StepMeter:
        """The step meter, made when the task first times a step: a task that times none (and its
        job's start-up) never imports it."""
        if self._meter is None:
            from cl_hpc.profile.meter import StepMeter

            self._meter = StepMeter(self.settings.warmup_steps)
        return self._meter

    # ---------------------------------------------------------------- what tasks call
    def lightning_callback(self) -> Any:
        from cl_hpc.profile.callback import StepTimer

        self._timer = StepTimer(self.meter, on_first_step=self._first_step)
        return self._timer

    def fit_done(self, trainer: Any, module: Any) -> None:
        """FLOPs and peaks of the fit that just ended (counted now, off the timed steps)."""
        timer = self._timer
        if timer is None or timer.example_batch is None:
            return
        from cl_hpc.profile.compute import fit_compute

        self.compute = fit_compute(module, timer.example_batch, timer.device, timer.precision,
                                   int(getattr(trainer, "world_size", 1)), self.settings.ceiling)
        self._probe_loader(getattr(trainer, "train_dataloader", None))

    def _probe_loader(self, loader: Any) -> None:
        """A stalled fit without workers: measure whether workers would help (the diagnosis advises
        them only then). Never for a compute-bound fit: the probe starts a worker process."""
        from cl_hpc.profile.diagnosis import STALL_THRESHOLD

        stall = self.meter.compute().stall_fraction
        if stall is None or stall < STALL_THRESHOLD or getattr(loader, "num_workers", None):
            return
        try:
            from cl_hpc.profile.loader import probe

            self.probe = probe(loader)
        except Exception as exc:  # the task succeeded whatever the probe says
            self.notes["probe_error"] = f"{type(exc).__name__}: {exc}"

    def steps(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """Yield from ``iterable``, timing each ``next()`` as data-wait and the loop body as compute."""
        iterator, first, clock = iter(iterable), True, time.perf_counter
        while True:
            t0 = clock()
            try:
                item = next(iterator)
            except StopIteration:
                return
            t1 = clock()
            if first:
                self._first_step()
            yield item
            self.meter.update(t1 - t0, clock() - t1, first_of_epoch=first)
            first = False

    def note(self, **values: Any) -> None:
        """Facts the right-sizer and the report use: num_workers, data_rows, batch_size, ..."""
        self.notes.update(values)

    # ---------------------------------------------------------------- the record
    def finish(self, outcome: str) -> ProfileRecord:
        with self._lock:
            self._finished = True
        if self.sampler is not None:
            self.sampler.stop()
        data = self.build(outcome)
        self._write(data)
        if self._gpus is not None:
            self._gpus.close()
        return data

    def build(self, outcome: str) -> ProfileRecord:
        sampler = self.sampler
        stats = self._meter.compute() if self._meter is not None else None
        host = sampler.summary(len(getattr(self._gpus, "devices", ()))) if sampler else {}
        ended = time.time()
        host["cpu_s"] = cpu_seconds() - self._cpu0
        if host.get("cpu_pct_mean") is None and ended > self.started:  # too short to sample: the kernel's count
            host["cpu_pct_mean"] = 100 * host["cpu_s"] / (ended - self.started)
        if host.get("hwm_mb_max") is None:
            host["hwm_mb_max"] = own_peak_mb()
        timing = {"outcome": outcome, "started": self.started, "ended": ended, "elapsed_s": ended - self.started,
                  "setup_s": (self.first_step_at - self.started) if self.first_step_at else None,
                  "requested": self.requested}
        memory = record.best_memory(read_cgroup_peak_mb(self._cgroup), host.get("hwm_mb_max"), host.get("rss_mb_max"))
        gpus = [{**vars(info), **summary} for info, summary in
                zip(getattr(self._gpus, "devices", ()), host.pop("gpus", []))]
        notes = {**self.notes, "sampler_errors": sampler.errors if sampler else []}
        return record.build_record(self.identity, timing, stats.to_dict() if stats and stats.steps else None, host,
                                   memory, gpus, self.compute, notes, sampler.series.to_dict() if sampler else None,
                                   self.probe)

    def _write(self, data: ProfileRecord) -> None:
        name = f"{int(self.identity.get('attempt', 0))}-{int(self.identity.get('segment', 0))}.json"
        write_json_atomic(self.task_dir / "profiles" / name, data)
        write_json_atomic(self.task_dir / "profile.json", data)

    def _maybe_flush(self) -> None:
        if self._finished or time.monotonic() - self._last_flush < self.settings.flush_s:
            return
        with self._lock:
            if not self._finished:
                self._last_flush = time.monotonic()
                self._write(self.build(AttemptState.RUNNING))

    def _first_step(self) -> None:
        if self.first_step_at is None:
            self.first_step_at = time.time()
