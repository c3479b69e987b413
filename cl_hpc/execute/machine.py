"""What this machine can offer tasks (the local and in-process backends' capacity)."""

from __future__ import annotations

import os

import psutil

from cl_hpc.dag.capacity import Capacity


def detect_gpus() -> int:
    """GPUs visible to this process: CUDA_VISIBLE_DEVICES if set, else NVML's count, else 0."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:  # imported here: the launcher pays for NVML only when it must count GPUs
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver, no library, no GPU: all mean zero GPUs here
        return 0


def machine_capacity(mode: str, cpus: int | None, mem_gb: float | None, gpus: int | None) -> Capacity:
    usable_cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    total_gb = psutil.virtual_memory().total / 1e9
    return Capacity(
        where=f"this machine (cluster={mode})",
        cpus=cpus if cpus is not None else usable_cpus,
        mem_gb=mem_gb if mem_gb is not None else round(0.9 * total_gb, 1),
        gpus=gpus if gpus is not None else detect_gpus(),
        nodes=1,
        hint="cluster.cpus / cluster.mem_gb / cluster.gpus, or lower the task's resources",
    )
