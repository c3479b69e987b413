"""Plain torch networks. Kept apart from the LightningModule so that evaluation and serving load
a checkpoint with torch alone (importing Lightning costs seconds per task process)."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """``layers`` x (Linear, ReLU, Dropout), then a Linear to one logit per class."""

    def __init__(self, n_features: int, n_classes: int, hidden: int = 64, layers: int = 2,
                 dropout: float = 0.1) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        width = n_features
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        blocks.append(nn.Linear(width, n_classes))
        self.body = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@torch.no_grad()
def predict_proba(net: nn.Module, x: torch.Tensor, batch_size: int = 8192) -> torch.Tensor:
    """Class probabilities [rows, classes], in eval mode, in batches to bound memory."""
    net.eval()
    chunks = [torch.softmax(net(x[i:i + batch_size]), dim=1) for i in range(0, len(x), batch_size)]
    return torch.cat(chunks) if chunks else torch.empty(0, 0)
