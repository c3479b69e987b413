"""Train a classifier with a Lightning Trainer on CPU: seeded, quiet, and reporting progress."""

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
import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.environments import LightningEnvironment, SLURMEnvironment
from pytorch_lightning.strategies import DDPStrategy
from torch.utils.data import DataLoader, TensorDataset

from cl_hpc.config.ml import ModelConf
from cl_hpc.learn.metrics import accuracy, log_loss
from cl_hpc.learn.model import Classifier
from cl_hpc.learn.nets import n_params, predict_proba
from cl_hpc.learn.preemption import PreemptionCheckpoint

ProgressFn = Callable[..., None]  # TaskContext.progress(done, total, note, *, force=False)


class ProgressCallback(pl.Callback):
    """Reports each step (ctx.progress throttles the writes) and keeps the per-epoch loss and accuracy."""

    def __init__(self, progress: Optional[ProgressFn] = None) -> None:
        self.progress = progress
        self.epoch_loss: list[float] = []
        self.epoch_accuracy: list[float] = []
        self._sums = np.zeros(3)  # loss * rows, correct rows, rows: of the current epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sums = np.zeros(3)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        loss, rows = float(outputs["loss"]), int(outputs["rows"])
        self._sums += (loss * rows, float(outputs["correct"]), rows)
        if self.progress is not None:
            note = f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} loss {loss:.4f}"
            self.progress(trainer.global_step, trainer.estimated_stepping_batches, note)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rows = max(self._sums[2], 1.0)
        self.epoch_loss.append(float(self._sums[0] / rows))
        self.epoch_accuracy.append(float(self._sums[1] / rows))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.progress is not None:
            self.progress(trainer.global_step, trainer.global_step, "trained", force=True)


@dataclass
class FitResult:
    module: Classifier
    epochs: int
    steps: int
    seconds: float
    train_loss: float  # over the whole train window, in eval mode, after training
    train_accuracy: float
    n_params: int
    epoch_loss: list[float] = field(default_factory=list)  # running mean over each epoch's batches
    epoch_accuracy: list[float] = field(default_factory=list)


def slurm_world() -> tuple[int, int]:
    """(nodes, processes per node) of this Slurm job step; (1, 1) outside a multi-task srun."""
    tasks = int(os.environ.get("SLURM_NTASKS", "1"))
    nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", os.environ.get("SLURM_NNODES", "1")))
    return (nodes, tasks // max(nodes, 1)) if tasks > 1 else (1, 1)


def build_trainer(conf: ModelConf, callbacks: list[pl.Callback], n_batches: int, root_dir: Path,
                  profiler: Any = None) -> pl.Trainer:
    """CPU, deterministic, no progress bar, no logger, no checkpoints of Lightning's own (the train
    task saves a plain state_dict it can checksum).

    One process: ``LightningEnvironment`` keeps Lightning's SLURM support out (cl_hpc owns
    scheduling and retries; Lightning would install its own requeue handler). Several Slurm tasks
    (``resources.tasks_per_node`` x ``nodes``, started by srun): DDP through Lightning's
    ``SLURMEnvironment`` with its auto-requeue off, gloo on CPU (NCCL on GPUs).
    """
    nodes, per_node = slurm_world()
    distributed = nodes * per_node > 1
    env = SLURMEnvironment(auto_requeue=False) if distributed else LightningEnvironment()
    return pl.Trainer(
        accelerator="cpu", devices=per_node, num_nodes=nodes, max_epochs=conf.max_epochs, deterministic=True,
        strategy=DDPStrategy(process_group_backend="gloo") if distributed else "auto",
        plugins=[env],
        enable_progress_bar=False, enable_model_summary=False, logger=False, enable_checkpointing=False,
        callbacks=callbacks, log_every_n_steps=max(1, min(50, n_batches)), num_sanity_val_steps=0,
        default_root_dir=str(root_dir), profiler=profiler,
    )


class BatchedTensorDataset(TensorDataset):
    """A TensorDataset that hands the DataLoader whole batches by fancy indexing.

    The default fetch indexes every row on its own and ``default_collate`` stacks them: for a
    small model that Python loop was 60% of each step (4.9 s against 1.8 s for the same 632-step
    fit, with bit-identical results). The sampler, shuffling order and DDP's DistributedSampler
    are unchanged: only the fetch of the sampled indices is batched (``__getitems__``).
    """

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices)
        return tuple(tensor[index] for tensor in self.tensors)


def _already_batched(batch: Any) -> Any:  # the (x, y) batch __getitems__ made, as it is
    return batch  # module level, not a lambda: DataLoader workers pickle it


def make_loader(x: np.ndarray, y: np.ndarray, conf: ModelConf) -> DataLoader:
    data = BatchedTensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    shuffle_rng = torch.Generator().manual_seed(conf.seed)  # the shuffling order is part of the seed
    nodes, per_node = slurm_world()
    # Under DDP each process takes its share of the batch: gradients averaged over processes then
    # equal one step on the whole batch, so the optimisation matches the single-process run.
    batch = max(1, conf.batch_size // (nodes * per_node))
    return DataLoader(data, batch_size=batch, shuffle=True, num_workers=conf.num_workers,
                      generator=shuffle_rng, persistent_workers=conf.num_workers > 0, collate_fn=_already_batched)


def fit(x: np.ndarray, y: np.ndarray, n_classes: int, conf: ModelConf, root_dir: Path,
        progress: Optional[ProgressFn] = None, threads: Optional[int] = None,
        resume_path: Optional[Path] = None, profiler: Any = None,
        init_state: Optional[dict[str, Any]] = None) -> FitResult:
    """Train ``conf``'s classifier on (x, y) and score it on the same rows.

    ``resume_path``: where the fit checkpoints (periodically and on Slurm's signals) and resumes
    from after a requeue. Give each attempt its own path: a new attempt must start fresh.
    ``profiler``: the attempt's TaskProfiler (ctx.profiler): times every step, counts FLOPs after.
    ``init_state``: a state_dict of the network to start from (a stateful fine-tune) instead of a
    fresh initialisation; the architecture in ``conf`` must match it.
    """
    if threads:
        torch.set_num_threads(threads)  # torch would otherwise use every core of the node, not the job's
    pl.seed_everything(conf.seed, workers=True, verbose=False)
    module = Classifier(x.shape[1], n_classes, conf.hidden, conf.layers, conf.dropout, conf.lr, conf.weight_decay)
    if init_state is not None:
        module.net.load_state_dict(init_state)
    loader = make_loader(x, y, conf)
    callback = ProgressCallback(progress)
    # Saves at a step boundary on Slurm's pre-timeout/requeue signals (and every 50 steps); a
    # requeued job resumes from it mid-epoch with the exact step count.
    saver = PreemptionCheckpoint(resume_path or root_dir / "resume.ckpt", every_n_steps=50)
    callbacks: list[pl.Callback] = [callback, saver]
    waits = None
    if profiler is not None:  # last: the other callbacks' work after a step is not data-wait
        timer = profiler.lightning_callback()
        callbacks.append(timer)
        waits = timer.waits
        profiler.note(num_workers=conf.num_workers, batch_size=loader.batch_size, data_rows=int(len(y)))
    started = time.perf_counter()
    with _quiet():
        trainer = build_trainer(conf, callbacks, len(loader), root_dir, profiler=waits)
        trainer.fit(module, loader, ckpt_path=saver.resume_from())
    seconds = time.perf_counter() - started
    if profiler is not None:
        profiler.fit_done(trainer, module)
    saver.discard()  # done: the task saves its own, checksummed model file
    probs = predict_proba(module.net, torch.from_numpy(x)).numpy()
    return FitResult(module, trainer.current_epoch, trainer.global_step, seconds, log_loss(probs, y),
                     accuracy(probs, y), n_params(module.net), callback.epoch_loss, callback.epoch_accuracy)


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
