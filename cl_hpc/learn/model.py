"""The LightningModule that trains a classifier network with cross-entropy and AdamW."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch.nn import functional as F

from cl_hpc.learn.nets import MLP


class Classifier(pl.LightningModule):
    """Any number of classes (two logits for a binary task, so one code path serves both)."""

    def __init__(self, n_features: int, n_classes: int, hidden: int = 64, layers: int = 2,
                 dropout: float = 0.1, lr: float = 3e-3, weight_decay: float = 1e-4) -> None:
        super().__init__()
        self.net_hparams: dict[str, Any] = {"n_features": n_features, "n_classes": n_classes, "hidden": hidden,
                            "layers": layers, "dropout": dropout}
        self.net = MLP(**self.net_hparams)
        self.lr, self.weight_decay = lr, weight_decay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        x, y = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        correct = (logits.argmax(dim=1) == y).sum()
        # Returned (not self.log-ged): the callbacks aggregate them without a logger.
        return {"loss": loss, "correct": correct.detach(), "rows": len(y)}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
