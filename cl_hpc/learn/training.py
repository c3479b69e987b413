"""Fit any workload with a Lightning Trainer: seeded, quiet, profiled, resumable, reporting progress.

CPU by default; a GPU when the task was given one (``fit.accelerator: auto``), in bf16 mixed
precision there unless ``fit.precision`` says otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.environments import LightningEnvironment, SLURMEnvironment
from pytorch_lightning.strategies import DDPStrategy

from cl_hpc.config.ml import FitConf
from cl_hpc.learn.nets import n_params
from cl_hpc.learn.preemption import PreemptionCheckpoint
from cl_hpc.learn.workload import Workload

ProgressFn = Callable[..., None]  # TaskContext.progress(done, total, note, *, force=False)


class ProgressCallback(pl.Callback):
    """Reports each step (ctx.progress throttles the writes) and keeps the per-epoch loss (and the
    accuracy, when the training step returns a ``correct`` count)."""

    def __init__(self, progress: Optional[ProgressFn] = None) -> None:
        self.progress = progress
        self.epoch_loss: list[float] = []
        self.epoch_accuracy: list[float] = []
        self._sums = np.zeros(3)  # loss * rows, correct rows, rows: of the current epoch
        self._has_correct = False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sums = np.zeros(3)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        out = outputs if isinstance(outputs, dict) else {"loss": outputs}
        if out.get("loss") is None:
            return  # a step the module skipped (returned None)
        loss, rows = float(out["loss"]), int(out.get("rows") or _rows_of(batch))
        self._has_correct = self._has_correct or "correct" in out
        self._sums += (loss * rows, float(out.get("correct", 0.0)), rows)
        if self.progress is not None:
            note = f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} loss {loss:.4f}"
            self.progress(trainer.global_step, trainer.estimated_stepping_batches, note)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rows = max(self._sums[2], 1.0)
        self.epoch_loss.append(float(self._sums[0] / rows))
        if self._has_correct:
            self.epoch_accuracy.append(float(self._sums[1] / rows))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.progress is not None:
            self.progress(trainer.global_step, trainer.global_step, "trained", force=True)


class LrScale(pl.Callback):
    """A stateful fine-tune keeps the model's own optimizer set-up and multiplies its learning rates
    (every param group of every optimizer, and the schedulers' bases) by ``scale`` once, at fit start."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.scale == 1.0:
            return
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] *= self.scale
                if "initial_lr" in group:
                    group["initial_lr"] *= self.scale
        for config in trainer.lr_scheduler_configs:
            base = getattr(config.scheduler, "base_lrs", None)
            if base is not None:
                config.scheduler.base_lrs = [lr * self.scale for lr in base]


@dataclass
class FitResult:
    model: Any  # the fitted LightningModule
    epochs: int
    steps: int
    seconds: float
    n_params: int
    epoch_loss: list[float] = field(default_factory=list)  # running mean over each epoch's batches
    epoch_accuracy: list[float] = field(default_factory=list)  # when the training step reports `correct`


def slurm_world() -> tuple[int, int]:
    """(nodes, processes per node) of this Slurm job step; (1, 1) outside a multi-task srun."""
    tasks = int(os.environ.get("SLURM_NTASKS", "1"))
    nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", os.environ.get("SLURM_NNODES", "1")))
    return (nodes, tasks // max(nodes, 1)) if tasks > 1 else (1, 1)


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python (and the loader workers), quietly."""
    pl.seed_everything(seed, workers=True, verbose=False)


def device_plan(conf: FitConf, gpus: int) -> tuple[str, str]:
    """(accelerator, precision). ``auto``: a GPU when the task was given one and CUDA sees it; bf16
    mixed precision on a GPU and fp32 on CPU unless ``conf.precision`` names one."""
    cuda = gpus > 0 and torch.cuda.is_available()
    accelerator = conf.accelerator if conf.accelerator != "auto" else "gpu" if cuda else "cpu"
    precision = conf.precision or ("bf16-mixed" if accelerator == "gpu" else "32-true")
    return accelerator, precision


def build_trainer(conf: FitConf, callbacks: list[pl.Callback], n_batches: int, root_dir: Path,
                  profiler: Any = None, gpus: int = 0, max_epochs: Optional[int] = None) -> pl.Trainer:
    """No progress bar, no logger, no checkpoints of Lightning's own (the train task saves a plain
    state_dict it can checksum); deterministic on CPU.

    One process: ``LightningEnvironment`` keeps Lightning's SLURM support out (cl_hpc owns
    scheduling and retries; Lightning would install its own requeue handler). Several Slurm tasks
    (``resources.tasks_per_node`` x ``nodes``, started by srun): DDP through Lightning's
    ``SLURMEnvironment`` with its auto-requeue off, gloo on CPU, NCCL on GPUs.
    """
    nodes, per_node = slurm_world()
    distributed = nodes * per_node > 1
    accelerator, precision = device_plan(conf, gpus)
    env = SLURMEnvironment(auto_requeue=False) if distributed else LightningEnvironment()
    strategy = DDPStrategy(process_group_backend="nccl" if accelerator == "gpu" else "gloo") if distributed else "auto"
    return pl.Trainer(
        accelerator=accelerator, devices=per_node, num_nodes=nodes, precision=precision,  # type: ignore[arg-type]
        max_epochs=max_epochs or conf.max_epochs, max_steps=conf.max_steps,
        deterministic=accelerator == "cpu", gradient_clip_val=conf.gradient_clip_val, strategy=strategy,
        plugins=[env], enable_progress_bar=False, enable_model_summary=False, logger=False,
        enable_checkpointing=False, callbacks=callbacks, log_every_n_steps=max(1, min(50, n_batches)),
        num_sanity_val_steps=0, default_root_dir=str(root_dir), profiler=profiler,
    )


def fit(workload: Workload, frame: pd.DataFrame, conf: FitConf, root_dir: Path,
        progress: Optional[ProgressFn] = None, threads: Optional[int] = None,
        resume_path: Optional[Path] = None, profiler: Any = None, gpus: int = 0, lr_scale: float = 1.0,
        max_epochs: Optional[int] = None) -> FitResult:
    """Train ``workload.model`` on the raw rows ``frame`` through ``workload.datamodule``.

    ``resume_path``: where the fit checkpoints (periodically and on Slurm's signals) and resumes
    from after a requeue. Give each attempt its own path: a new attempt must start fresh.
    ``profiler``: the attempt's TaskProfiler (ctx.profiler): times every step, counts FLOPs after.
    ``lr_scale``: a stateful fine-tune's learning-rate factor on the model's own optimizers.
    """
    if threads:
        torch.set_num_threads(threads)  # torch would otherwise use every core of the node, not the job's
    seed_everything(conf.seed)
    model, data = workload.model, workload.datamodule
    data.use(frame)
    loader = data.train_dataloader()
    callback = ProgressCallback(progress)
    # Saves at a step boundary on Slurm's pre-timeout/requeue signals (and every 50 steps); a
    # requeued job resumes from it mid-epoch with the exact step count.
    saver = PreemptionCheckpoint(resume_path or root_dir / "resume.ckpt", every_n_steps=50)
    callbacks: list[pl.Callback] = [callback, saver, LrScale(lr_scale)]
    waits = None
    if profiler is not None:  # last: the other callbacks' work after a step is not data-wait
        timer = profiler.lightning_callback()
        callbacks.append(timer)
        waits = timer.waits
        profiler.note(num_workers=getattr(loader, "num_workers", None), batch_size=getattr(loader, "batch_size", None),
                      data_rows=int(len(frame)))
    model.train()
    started = time.perf_counter()
    with _quiet():
        trainer = build_trainer(conf, callbacks, len(loader), root_dir, profiler=waits, gpus=gpus,
                                max_epochs=max_epochs)
        trainer.fit(model, train_dataloaders=loader, ckpt_path=saver.resume_from())
    seconds = time.perf_counter() - started
    if profiler is not None:
        profiler.fit_done(trainer, model)
    saver.discard()  # done: the task saves its own, checksummed model file
    model.cpu().eval()
    return FitResult(model, trainer.current_epoch, trainer.global_step, seconds, n_params(model),
                     callback.epoch_loss, callback.epoch_accuracy)


def _rows_of(batch: Any) -> int:
    """Rows in a batch: the first dimension of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)) and batch:
        return _rows_of(batch[0])
    return 1


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Keep the task log for problems: Lightning logs a device summary at INFO on every fit, and
    warns about things that are deliberate here."""
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        # num_workers=0 is deliberate: the window is a tensor in memory, worker processes only add IPC.
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        # Lightning 2.6 calls a torch pytree API that newer torch deprecates; nothing to act on here.
        warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
        # Lightning probes for Slurm even with LightningEnvironment and warns when srun is merely
        # installed (local mode on a cluster machine); it does not use Slurm here.
        warnings.filterwarnings("ignore", message=".*`srun` command is available.*")
        yield
