"""Plain torch networks, kept apart from the LightningModules that train them (cl_hpc/learn/tabular.py)."""

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
