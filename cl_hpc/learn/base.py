"""Base classes of the model contract (cl_hpc/learn/contract.py): subclass them to bring your own model.

Both are plain Lightning classes with the contract's methods added; every default is documented
so that a user overrides only what their model needs. Duck typing works as well: the loop checks
for the methods, not for these classes.
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Optional

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from cl_hpc.learn.contract import Direction, Spec

Batch = Any  # a tensor, or a tuple/dict of tensors: whatever the model's steps take


class LoopModule(pl.LightningModule):
    """A LightningModule the loop can fit, evaluate, fine-tune, register and serve."""

    # metric name -> which way it improves; the gate's metric must be one of them
    metrics: ClassVar[Mapping[str, Direction]] = {}

    def evaluate_batch(self, inputs: Batch, targets: Batch) -> dict[str, torch.Tensor]:
        """Per-row values (one per input row) whose mean over a window is the metric of that name.
        Return ``correct`` (0/1) where right/wrong applies: the gate then uses McNemar's test."""
        raise NotImplementedError(f"{type(self).__name__}.evaluate_batch(inputs, targets)")

    def predict_batch(self, inputs: Batch) -> dict[str, torch.Tensor]:
        """What the server answers for these rows: name -> tensor with one row per input row."""
        raise NotImplementedError(f"{type(self).__name__}.predict_batch(inputs)")

    def output_signature(self) -> list[Spec]:
        """The names, dtypes and per-row shapes of ``predict_batch``'s outputs."""
        raise NotImplementedError(f"{type(self).__name__}.output_signature()")

    def summarize(self, per_row: Mapping[str, np.ndarray]) -> dict[str, Optional[float]]:
        """Window-level metrics from the per-row values: their means by default. Override to add
        metrics that are not means (perplexity = exp(mean loss), ROC AUC, ...)."""
        return {name: float(np.mean(values)) if len(values) else None for name, values in per_row.items()
                if name not in ("probs", "target")}  # a classifier's extras, not metrics


class LoopDataModule(pl.LightningDataModule):
    """A LightningDataModule that turns the loop's raw window rows (a pandas frame) into batches,
    and carries the preprocessing state that must be versioned with the model."""

    def __init__(self, batch_size: int = 256, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__()
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self._train: Optional[pd.DataFrame] = None

    # ---- preprocessing state ----------------------------------------------------------------

    def fit_state(self, frame: pd.DataFrame) -> None:
        """Fit the preprocessing state (scalers, vocabularies) on a stateless fit's training rows."""

    def update_state(self, frame: pd.DataFrame) -> None:
        """A stateful fine-tune: the parent's state is loaded; move it with the new rows (or keep it)."""

    def state_dict(self) -> dict[str, Any]:
        """Tensors, numbers, strings and lists only: it is loaded back with ``weights_only=True``."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""

    # ---- what the model is built from -------------------------------------------------------

    def model_args(self) -> dict[str, Any]:
        """Model init arguments that come from the data (feature or class counts, vocabulary size)."""
        return {}

    def input_signature(self) -> list[Spec]:
        """The raw inputs one request row carries (their names, dtypes and shapes)."""
        raise NotImplementedError(f"{type(self).__name__}.input_signature()")

    def to_batch(self, frame: pd.DataFrame) -> tuple[Batch, Optional[Batch]]:
        """(model inputs, targets) for these raw rows, preprocessed with the current state; targets
        are None when the frame has none (a request to the server)."""
        raise NotImplementedError(f"{type(self).__name__}.to_batch(frame)")

    def decode(self, outputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """The model's outputs as a user reads them (class indices to labels): unchanged by default."""
        return dict(outputs)

    def baseline_rows(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """Per-row metric values of a trivial predictor, the gate's bar before any champion; none by default."""
        return {}

    # ---- the rows the next fit trains on ---------------------------------------------------

    def use(self, frame: pd.DataFrame) -> None:
        """The training rows (already chosen by the loop: a window, or new rows plus a replay sample)."""
        self._train = frame

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of ``to_batch`` over the rows given to ``use``, seeded: the order is part of the seed."""
        if self._train is None:
            raise RuntimeError(f"{type(self).__name__}: use(frame) was not called before train_dataloader()")
        inputs, targets = self.to_batch(self._train)
        tensors = [t for t in (inputs, targets) if t is not None]
        if not all(isinstance(t, torch.Tensor) for t in tensors):
            raise TypeError(f"{type(self).__name__}: the default train_dataloader needs to_batch to return tensors; "
                            f"override train_dataloader for other batch types")
        from cl_hpc.learn.training import slurm_world

        nodes, per_node = slurm_world()
        # Under DDP each process takes its share of the batch: gradients averaged over processes then
        # equal one step on the whole batch, so the optimisation matches the single-process run.
        batch = max(1, self.batch_size // (nodes * per_node))
        return DataLoader(BatchedTensorDataset(*tensors), batch_size=batch, shuffle=True, num_workers=self.num_workers,
                          generator=torch.Generator().manual_seed(self.seed), collate_fn=_already_batched,
                          persistent_workers=self.num_workers > 0)


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


def _already_batched(batch: Any) -> Any:  # the batch __getitems__ made, as it is
    return batch  # module level, not a lambda: DataLoader workers pickle it
