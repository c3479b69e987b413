"""What a backend can ever give one task: the bound that declared resources are checked against."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Capacity:
    where: str  # how to name it in errors, e.g. "this machine (cluster=local)"
    cpus: int
    mem_gb: float
    gpus: int
    nodes: int = 1
    max_time_min: float | None = None  # None = no limit
    hint: str = ""  # where the user changes these numbers, e.g. "cluster.cpus=..."
