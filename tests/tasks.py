"""Small, real task callables the contract and validation tests run through every backend.

They do deterministic arithmetic and record when and where they ran, so tests can check outputs,
overlap in time, admission and failure propagation without depending on the ML stack.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from cl_hpc.context import TaskContext


def emit(ctx: TaskContext, value: int = 1, sleep_s: float = 0.0) -> dict[str, Any]:
    start = time.time()
    time.sleep(sleep_s)
    item = ctx.item if ctx.item is not None else 0
    return {"value": value + item, "pid": os.getpid(), "start": start, "end": time.time()}


def add(ctx: TaskContext, offset: int = 0, sleep_s: float = 0.0) -> dict[str, Any]:
    """Sum every upstream 'value' (fan-outs give lists of shard outputs), plus a numeric item."""
    start = time.time()
    time.sleep(sleep_s)
    total = offset + (ctx.item if isinstance(ctx.item, int) else 0)
    for outputs in ctx.upstream.values():
        for out in outputs if isinstance(outputs, list) else [outputs]:
            total += out["value"]
    return {"value": total, "pid": os.getpid(), "start": start, "end": time.time()}


def fail(ctx: TaskContext, message: str = "boom", until_attempt: int = 10**9) -> dict[str, Any]:
    """Raise while ctx.attempt < until_attempt (so a retry can succeed)."""
    if ctx.attempt < until_attempt:
        raise RuntimeError(f"{message} (attempt {ctx.attempt})")
    return {"value": 100, "attempt": ctx.attempt}


def fail_if_flag(ctx: TaskContext, flag: str, value: int = 7) -> dict[str, Any]:
    """Fails while the file ``flag`` exists: a test removes it, then resumes."""
    if Path(flag).exists():
        raise RuntimeError(f"flag {flag} is set")
    return {"value": value}


def not_json(ctx: TaskContext) -> dict[str, Any]:
    return {"value": object()}


def env_probe(ctx: TaskContext,
              names: tuple[str, ...] = ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS", "SLURM_GPUS_ON_NODE", "SLURM_JOB_ID",
                                        "SLURM_ARRAY_TASK_ID", "SLURM_CPUS_PER_TASK")) -> dict[str, Any]:
    """What the scheduler put in the task's environment."""
    return {"env": {name: os.environ.get(name) for name in names}, "value": 0}


def hog(ctx: TaskContext, mb: int = 400, hold_s: float = 3.0, gate: str = "") -> dict[str, Any]:
    """Touch ``mb`` MiB and hold it long enough for Slurm's 1 s memory sampler to see it; with
    ``gate``, hold it until that file exists (or the process is killed), whatever the sampler's pace."""
    block = b"x" * (mb << 20)  # bytes(n) would be lazily zero-mapped and never counted in RSS
    if gate:
        _wait_for_gate(Path(gate))
    else:
        time.sleep(hold_s)
    return {"value": len(block) >> 20, "attempt": ctx.attempt}


def wait_for_file(ctx: TaskContext, path: str, value: int = 1) -> dict[str, Any]:
    """Run until the test creates ``path``: a unit held running for as long as a test needs."""
    start = time.time()
    _wait_for_gate(Path(path))
    return {"value": value, "pid": os.getpid(), "start": start, "end": time.time()}


def _wait_for_gate(path: Path, timeout_s: float = 600.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout_s:g} s")
        time.sleep(0.05)


def slow_fit(ctx: TaskContext, epochs: int = 3, batches: int = 10, step_s: float = 0.5) -> dict[str, Any]:
    """A real Lightning fit that checkpoints on Slurm's signals and resumes after a requeue."""
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.plugins.environments import LightningEnvironment
    from torch.utils.data import DataLoader, TensorDataset

    from cl_hpc.learn.preemption import PreemptionCheckpoint

    class Slow(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)

        def training_step(self, batch: Any, index: int) -> Any:
            time.sleep(step_s)
            with open(ctx.task_dir / "steps.log", "a") as log:  # every step this job really ran
                log.write(f"{self.current_epoch},{index}\n")
            return self.layer(batch[0]).pow(2).mean()

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    saver = PreemptionCheckpoint(ctx.task_dir / f"resume-attempt{ctx.attempt}.ckpt", every_n_steps=5)
    (ctx.task_dir / "started.log").open("a").write(f"{time.time()}\n")
    loader = DataLoader(TensorDataset(torch.randn(batches * 4, 2)), batch_size=4)
    trainer = pl.Trainer(max_epochs=epochs, plugins=[LightningEnvironment()], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[saver])
    trainer.fit(Slow(), loader, ckpt_path=saver.resume_from())
    steps = (ctx.task_dir / "steps.log").read_text().split()
    return {"global_step": trainer.global_step, "steps_run": len(steps), "distinct_steps": len(set(steps)), "value": 0}


def gc_state(ctx: TaskContext, value: int = 1) -> dict[str, Any]:
    """emit's output, plus whether Python's cyclic GC is on in the process that runs the task."""
    import gc

    return {"value": value, "gc_enabled": gc.isenabled(), "pid": os.getpid()}


def fill_disk(ctx: TaskContext, chunk_kb: int = 1024) -> dict[str, Any]:
    """Fill the file system of the task dir to the last byte, keep it full, then return outputs
    (whose write then fails with ENOSPC, as on a full scratch disk)."""
    with open(ctx.task_dir / "ballast", "wb", buffering=0) as handle:
        for size in (chunk_kb << 10, 4096, 1):  # big chunks, then the last pages, then the last bytes
            try:
                while True:
                    handle.write(b"x" * size)
            except OSError:
                continue
    return {"value": 1}
