"""Checkpoint a Lightning fit periodically and when Slurm warns it, so a requeued job resumes exactly.

On SIGUSR2 (submitit's pre-timeout signal: ``--signal=USR2@cluster.signal_delay_s``) or SIGTERM
(``scontrol requeue``, preemption) the handler only sets a flag; the checkpoint is written at the
next step boundary, where model, optimizer and loop counters agree, then ``Preempted`` ends the
fit. Lightning restores the loop mid-epoch from that file, so the final step count is exact:
nothing lost, nothing done twice.

A signal that came before the fit started (Slurm may send USR2 up to a minute early) was caught by
the Slurm job entry, which left its name in ``$CL_HPC_PENDING_SIGNAL``: the fit acts on it at its
first step boundary, so the job checkpoints and requeues instead of running into its time limit.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from cl_hpc.context import PENDING_SIGNAL_ENV, Preempted

_SIGNALS = {signal.SIGUSR2: True, signal.SIGTERM: False}  # signal -> must we ask for the requeue ourselves


class PreemptionCheckpoint(pl.Callback):
    def __init__(self, path: Path, every_n_steps: int = 0) -> None:
        self.path = Path(path)
        self.every_n_steps = every_n_steps  # 0 = only on a signal
        self._caught: signal.Signals | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def resume_from(self) -> str | None:
        """The checkpoint to resume from, if an earlier run of this job left one."""
        return str(self.path) if self.path.exists() else None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for sig in _SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)
        pending = os.environ.pop(PENDING_SIGNAL_ENV, "")  # after the handlers, so no signal falls between
        self._caught = self._caught or next((sig for sig in _SIGNALS if sig.name == pending), None)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._caught = signal.Signals(signum)  # act at the next step boundary, never mid-step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        periodic = self.every_n_steps and trainer.global_step % self.every_n_steps == 0
        caught = self._agreed(trainer)
        if periodic or caught:
            self._save(trainer)
        if caught:
            sig = self._caught or signal.SIGUSR2  # another rank caught it: ask for the requeue too
            raise Preempted(f"{sig.name} at step {trainer.global_step}: checkpoint saved to {self.path}",
                            requeue=_SIGNALS[sig])

    def _agreed(self, trainer: pl.Trainer) -> bool:
        """Whether any rank caught a signal. Under DDP the ranks must agree: the checkpoint save is a
        collective, and a signal that reached one rank a step before the others would leave them
        waiting in different collectives (a hang until the time limit)."""
        caught = self._caught is not None
        if trainer.world_size > 1:
            caught = bool(trainer.strategy.reduce_boolean_decision(caught, all=False))
        return caught

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _save(self, trainer: pl.Trainer) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        trainer.save_checkpoint(str(tmp))  # collective under DDP; only global rank 0 writes the file
        if trainer.is_global_zero:
            os.replace(tmp, self.path)  # a kill mid-save leaves the previous checkpoint intact
