"""The portable resource request of one task (one shard of a fan-out).

Kept apart from schema.py, which imports Hydra: jobs read plans on compute nodes and must start
fast, so this module imports nothing beyond the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional


@dataclass
class Resources:
    """What one task (one shard of a fan-out) asks the scheduler for."""

    cpus: int = 1  # CPU cores per process (sbatch --cpus-per-task)
    gpus: int = 0  # GPUs per node (sbatch --gpus-per-node / --gres=gpu:N)
    mem_gb: float = 2.0  # memory per node, GB (sbatch --mem)
    time_min: float = 30.0  # wall-clock limit in minutes (sbatch --time); the job is killed after it
    nodes: int = 1  # nodes (sbatch --nodes); local and inprocess offer one
    tasks_per_node: int = 1  # processes per node, e.g. one per GPU for DDP (sbatch --ntasks-per-node)
    partition: Optional[str] = None  # Slurm partition; None = the cluster's default
    account: Optional[str] = None  # Slurm account to charge; None = the user's default
    qos: Optional[str] = None  # Slurm QOS; None = the account's default
    constraint: Optional[str] = None  # node features, e.g. "a100|h100" (sbatch --constraint)
    gpu_type: Optional[str] = None  # GPU model for gres, e.g. "a100" gives --gres=gpu:a100:N
    extra: Dict[str, Any] = field(default_factory=dict)  # raw scheduler options, e.g. {exclusive: true}
