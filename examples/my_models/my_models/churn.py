"""A user's own model and data module for cl_hpc's continual-learning loop.

Nothing here is cl_hpc's bundled MLP: a residual network with a learned per-feature gate, its own
robust scaling (median and inter-quartile range, frozen after the first fit: a fine-tune keeps the
scale the network learned on), a cosine learning-rate schedule, and a Brier score next to accuracy.
It implements the model contract by subclassing cl_hpc's base classes (duck typing works too).

    python -m cl_hpc.launch pipeline=continual hydra.searchpath=[file://examples/my_models/conf] model=churn
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from cl_hpc.learn.base import LoopDataModule, LoopModule
from cl_hpc.learn.contract import CannotContinue, Direction, Spec


class GatedResNet(LoopModule):
    """Input gate, then ``blocks`` residual blocks, then one logit per class."""

    metrics: ClassVar[Mapping[str, Direction]] = {"accuracy": Direction.HIGHER, "brier": Direction.LOWER}

    def __init__(self, n_inputs: int, n_classes: int, width: int = 32, blocks: int = 2, lr: float = 0.01,
                 epochs_per_cycle: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.gate = nn.Parameter(torch.ones(n_inputs))
        self.inp = nn.Linear(n_inputs, width)
        self.blocks = nn.ModuleList(nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU())
                                    for _ in range(blocks))
        self.out = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x * self.gate)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.hparams.epochs_per_cycle)
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    # ---- the contract -----------------------------------------------------------------------

    def evaluate_batch(self, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        probs = torch.softmax(self(inputs), dim=1)
        correct = (probs.argmax(dim=1) == targets).float()
        brier = ((probs - F.one_hot(targets, probs.shape[1]).float()) ** 2).sum(dim=1)
        return {"correct": correct, "accuracy": correct, "brier": brier}

    def predict_batch(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        probs = torch.softmax(self(inputs), dim=1)
        return {"churn": probs.argmax(dim=1), "probability": probs[:, -1]}

    def output_signature(self) -> list[Spec]:
        return [Spec("churn", "int64"), Spec("probability", "float32")]


class ChurnData(LoopDataModule):
    """Numeric columns scaled by their median and inter-quartile range; the label is 0/1 (or any two values)."""

    def __init__(self, label_col: str = "y", drop: Sequence[str] = ("ts",), batch_size: int = 128,
                 num_workers: int = 0, seed: int = 0) -> None:
        super().__init__(batch_size, num_workers, seed)
        self.label_col, self.drop = label_col, list(drop)
        self.columns: list[str] = []
        self.labels: list[Any] = []
        self.median: Optional[torch.Tensor] = None
        self.iqr: Optional[torch.Tensor] = None

    def fit_state(self, frame: pd.DataFrame) -> None:
        self.columns = [c for c in frame.columns if c != self.label_col and c not in self.drop]
        self.labels = sorted(frame[self.label_col].unique().tolist())
        values = torch.tensor(frame[self.columns].to_numpy(dtype=np.float32))
        q1, q2, q3 = torch.quantile(values, torch.tensor([0.25, 0.5, 0.75]), dim=0)
        self.median, self.iqr = q2, torch.where(q3 > q1, q3 - q1, torch.ones_like(q1))

    def update_state(self, frame: pd.DataFrame) -> None:
        unseen = set(frame[self.label_col].unique().tolist()) - set(self.labels)
        if unseen:  # the network's outputs cannot grow: the loop retrains from scratch instead
            raise CannotContinue(f"never saw label(s) {sorted(unseen)}")

    def state_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "labels": self.labels, "median": self.median, "iqr": self.iqr}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.columns, self.labels = list(state_dict["columns"]), list(state_dict["labels"])
        self.median, self.iqr = state_dict["median"], state_dict["iqr"]

    def model_args(self) -> dict[str, Any]:
        return {"n_inputs": len(self.columns), "n_classes": len(self.labels)}

    def input_signature(self) -> list[Spec]:
        return [Spec(c, "float64") for c in self.columns]

    def to_batch(self, frame: pd.DataFrame) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        if self.median is None or self.iqr is None:
            raise RuntimeError("ChurnData.to_batch before fit_state or load_state_dict")
        x = (torch.tensor(frame[self.columns].to_numpy(dtype=np.float32)) - self.median) / self.iqr
        if self.label_col not in frame.columns:
            return x, None
        index = {label: i for i, label in enumerate(self.labels)}
        unknown = sorted(set(frame[self.label_col].tolist()) - set(index))
        if unknown:
            raise ValueError(f"labels {unknown} were never seen in training (known: {self.labels})")
        return x, torch.tensor(frame[self.label_col].map(index).to_numpy(dtype=np.int64))

    def decode(self, outputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
        return {**outputs, "label": [self.labels[int(i)] for i in outputs["churn"]]}
