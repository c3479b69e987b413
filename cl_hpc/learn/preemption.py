"""Checkpoint a Lightning fit periodically and when Slurm warns it, so a requeued job resumes exactly.

On SIGUSR2 (submitit's pre-timeout signal: ``--signal=USR2@cluster.signal_delay_s``) or SIGTERM
(``scontrol requeue``, preemption) the handler only sets a flag; the checkpoint is written at the
next step boundary, where model, optimizer and loop counters agree, then ``Preempted`` ends the
fit. Lightning restores the loop mid-epoch from that file, so the final step count is exact:
nothing lost, nothing done twice.

A signal that came before the fit started (Slurm may send USR2 up to a minute early) was caught by
the Slurm job entry, which left its name in ``$CL_HPC_PENDING_SIGNAL``: the fit acts on it at its
first step boundary, so the job checkpoints and requeues instead of running into its time limit.

The resume checkpoint is checksummed and loaded as data only (``ResumeCheckpointIO``, installed on
the trainer by the callback): its sha256 sits beside it in ``<name>.sha256``, and a resume reads
the file once, checks those bytes against it and unpickles them with ``weights_only=True``, so a
changed file is refused and a pickled object in it never runs, whatever torch's default
(``torch<2.6`` defaults to a full unpickle).
"""

from __future__ import annotations

import hashlib
import inspect
import io
import os
import pickle
import signal
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from cl_hpc.atomic import write_bytes_atomic, write_text_atomic
from cl_hpc.context import PENDING_SIGNAL_ENV, Preempted
from cl_hpc.data.files import sha256_file
from cl_hpc.errors import ChecksumError, DataError

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

    def discard(self) -> None:
        """Remove the checkpoint and its checksum (the fit is done: nothing to resume)."""
        self.path.unlink(missing_ok=True)
        sidecar(self.path).unlink(missing_ok=True)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Lightning restores ckpt_path after the setup hooks: every trainer this callback is given
        # to verifies the resume checkpoint, not only those built by cl_hpc's build_trainer.
        if not isinstance(trainer.strategy.checkpoint_io, ResumeCheckpointIO):
            trainer.strategy.checkpoint_io = ResumeCheckpointIO()

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
        # Collective under DDP; only global rank 0 writes, through ResumeCheckpointIO (atomic, checksummed).
        trainer.save_checkpoint(str(self.path))


def sidecar(path: Path) -> Path:
    """Where the sha256 of the resume checkpoint ``path`` is kept."""
    return path.with_name(f"{path.name}.sha256")


# TorchCheckpointIO.load_checkpoint's own default, read from Lightning rather than copied.
_LIGHTNING_MAP_LOCATION = inspect.signature(TorchCheckpointIO.load_checkpoint).parameters["map_location"].default


class ResumeCheckpointIO(TorchCheckpointIO):
    """Saves atomically with a sha256 beside the file; loads only verified bytes, as data.

    The checkpoint and its checksum are two files, and no rename replaces both at once: while a
    new checkpoint replaces the old one, the checksum file lists the digests of the file on disk
    and of the new one, so a kill at any point leaves a checkpoint whose digest is listed (and never
    a listed digest of a half file). A save after a killed one lists again only those two: the
    digest of a checkpoint no longer on disk is never accepted again.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        path = Path(path)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        write_text_atomic(sidecar(path), "\n".join([*_on_disk(path), digest]) + "\n")
        write_bytes_atomic(path, data)
        write_text_atomic(sidecar(path), digest + "\n")

    def load_checkpoint(self, path: Any, map_location: Any | None = _LIGHTNING_MAP_LOCATION,
                        weights_only: bool | None = None) -> dict[str, Any]:
        """``map_location``: Lightning's Strategy.load_checkpoint passes none, so the default is
        TorchCheckpointIO's (every storage onto the CPU; the strategy then moves the states to its
        device). torch's own None would restore each storage where it was saved: every DDP rank onto
        cuda:0, and no resume at all of a GPU checkpoint without CUDA."""
        path = Path(path)
        data = path.read_bytes()  # once: the bytes checked are the bytes loaded
        digest = hashlib.sha256(data).hexdigest()
        listed = _listed(path)
        if digest not in listed:
            found = f"records {', '.join(listed)}" if listed else "is missing"
            raise ChecksumError(
                f"resume checkpoint {path} has sha256 {digest}, but its checksum file {sidecar(path)} {found}: "
                f"the file was changed after this job wrote it, so it is not resumed. Delete both files to "
                f"start this attempt's fit from scratch, or let the task's retry start a new attempt")
        try:  # whatever weights_only the caller asks for: a resume checkpoint holds only data
            return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as exc:
            raise DataError(f"resume checkpoint {path} holds objects other than tensors and plain data, "
                            f"which are never unpickled: {exc}") from exc

    def remove_checkpoint(self, path: Any) -> None:
        super().remove_checkpoint(path)
        sidecar(Path(path)).unlink(missing_ok=True)


def _on_disk(path: Path) -> list[str]:
    """The listed digest of the checkpoint on disk ([] if none is, or it is not listed). After a
    completed save the checksum file lists one digest, the file's, and it is not read again (a big
    checkpoint); after a killed save it lists two, and the file is hashed to keep only its own."""
    if not path.exists():
        return []
    listed = _listed(path)
    if len(listed) <= 1:
        return listed
    digest = sha256_file(path)
    return [digest] if digest in listed else []


def _listed(path: Path) -> list[str]:
    """The digests the checksum file beside ``path`` accepts (none when it is missing)."""
    try:
        return sidecar(path).read_text(encoding="ascii").split()
    except FileNotFoundError:
        return []
