"""The Lightning adapter of the step meter: splits every training step into data-wait and compute.

Lightning fetches the next batch and copies it to the device between ``on_train_batch_end`` of
one step and ``on_train_batch_start`` of the next. The data-wait is the time of those two actions
(``DataWaitProfiler``, given to the Trainer; without it, the whole gap), and the span between the
two hooks is the compute. Add this callback last: hooks
run in list order, and another callback's work after a step (a checkpoint save) would otherwise
count as data-wait.

On a GPU the host clock says when work was queued, not when it ran. The callback records CUDA
events at the same two hooks instead and reads them lazily (``Event.query()``, never a
synchronize per step): on the GPU's own timeline the gap between one step's end event and the
next step's start event is the time the GPU sat idle waiting for input.

It also keeps the first batch, to count FLOPs per step once the fit is over, when the count can
no longer disturb the timings.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable

import pytorch_lightning as pl
import torch
from pytorch_lightning.profilers import Profiler

from cl_hpc.profile.meter import StepMeter


class DataWaitProfiler(Profiler):
    """Lightning brackets the dataloader's ``next()`` and the batch's copy to the device with
    profiler actions. Their summed time is the data-wait proper: the gap between two steps also
    holds the loop's own bookkeeping (0.15-0.6 ms a step on the test VM), which on a 1 ms step
    would read as a 10-percentage-point stall. Pass it as ``Trainer(profiler=...)``."""

    _WAITS = ("train_dataloader_next", ".batch_to_device")

    def __init__(self) -> None:
        super().__init__()
        self.waited = 0.0
        self._started: dict[str, float] = {}

    def start(self, action_name: str) -> None:
        if action_name.endswith(self._WAITS):
            self._started[action_name] = time.perf_counter()

    def stop(self, action_name: str) -> None:
        begun = self._started.pop(action_name, None)
        if begun is not None:
            self.waited += time.perf_counter() - begun

    def take(self) -> float:
        waited, self.waited = self.waited, 0.0
        return waited


class StepTimer(pl.Callback):
    def __init__(self, meter: StepMeter, on_first_step: Callable[[], None] | None = None) -> None:
        self.meter = meter
        self.on_first_step = on_first_step  # the end of set-up: the profiler's setup_s
        self.waits = DataWaitProfiler()  # give it to the Trainer; without it the whole gap counts as wait
        self._wait_s: float | None = None
        self.example_batch: Any = None  # the first batch: what the FLOP count runs on
        self.device: str = "cpu"
        self.precision: str = "32-true"
        self._cuda = False
        self._mark: float | Any = 0.0  # end of the previous step (host time, or a CUDA event)
        self._start: float | Any = 0.0
        self._first = True
        self._pending: deque[tuple[Any, Any, Any, bool, int]] = deque()  # CUDA: (prev end, start, end, first, rows)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        root = trainer.strategy.root_device
        self.device, self.precision = str(root), str(trainer.precision)
        self._cuda = root.type == "cuda"

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._mark, self._first = self._now(), True  # the first wait includes the loader's start-up

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.example_batch is None:
            self.example_batch = batch
            if self.on_first_step is not None:
                self.on_first_step()
        self._start = self._now()
        # Trainer.profiler exists on every Lightning 2.x Trainer; its stubs do not declare it.
        profiler = getattr(trainer, "profiler", None)
        self._wait_s = self.waits.take() if profiler is self.waits else None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        end, rows = self._now(), _rows(batch)
        if self._cuda:
            self._pending.append((self._mark, self._start, end, self._first, rows))
            self._drain(block=False)
        else:
            wait = self._start - self._mark if self._wait_s is None else self._wait_s
            self.meter.update(wait, end - self._start, first_of_epoch=self._first, samples=rows)
        self._mark, self._first = end, False

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._drain(block=True)  # one synchronize for the whole fit

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._drain(block=True)  # a preempted fit still reports the steps it made

    def _now(self) -> float | Any:
        if not self._cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _drain(self, block: bool) -> None:
        while self._pending:
            mark, start, end, first, rows = self._pending[0]
            if block:
                end.synchronize()
            elif not end.query():
                return  # the GPU has not got there yet: read it at a later step
            self._pending.popleft()
            wait_ms, compute_ms = mark.elapsed_time(start), start.elapsed_time(end)
            self.meter.update(max(wait_ms, 0.0) / 1000, max(compute_ms, 0.0) / 1000, first_of_epoch=first,
                              samples=rows)


def _rows(batch: Any) -> int:
    """Samples in a batch: the first dimension of its first tensor (0 when there is none)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() else 0
    if isinstance(batch, (list, tuple)) and batch:
        return _rows(batch[0])
    if isinstance(batch, dict) and batch:
        return _rows(next(iter(batch.values())))
    return 0
