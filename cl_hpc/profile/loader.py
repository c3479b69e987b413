"""Probe a DataLoader for what workers would cost and save: the measurements behind
cl_hpc/profile/diagnosis.py's advice. Imports torch: called after a fit, off the timed steps.

Two loaders over the fit's own dataset, sampler and collate function: one without workers times
the fetch of a batch in process, one with a worker times taking a batch it has ready (the loop
pauses long enough between batches for the worker to finish the next one, so the figure is the
training process's own cost, not the worker's speed) and its start-up. Both get a generator of
their own: a DataLoader iterator draws its base seed from torch's global RNG otherwise, and the
probe must leave the training's random state as it was.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Optional

from torch import Generator
from torch.utils.data import DataLoader, IterableDataset

BATCHES = 20  # batches timed per loader: enough for a stable median, ~0.1 s on an in-memory dataset
BUDGET_S = 1.0  # fewer batches (3 at least) where fetching 20 takes longer: the probe stays ~4 x this


def probe(loader: Any, batches: int = BATCHES, budget_s: float = BUDGET_S) -> Optional[dict[str, Any]]:
    """``{fetch_s, worker_batch_s, worker_start_s, batches}``, or None for a loader the probe cannot
    copy (not a DataLoader, an iterable dataset, or fewer than 4 batches)."""
    if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset):
        return None
    n = min(batches, len(loader) - 1)
    if n < 3:
        return None
    _, fetch_s, n = _timed(_copy(loader, 0), n, pause_s=0.0, budget_s=budget_s)
    # The worker's pause (twice the fetch, and 2 ms for pickling) makes its loop ~3x the fetch loop.
    start_s, worker_s, _ = _timed(_copy(loader, 1), n, pause_s=2 * fetch_s + 0.002)
    return {"fetch_s": fetch_s, "worker_batch_s": worker_s, "worker_start_s": start_s, "batches": n}


def _copy(loader: DataLoader, workers: int) -> DataLoader:
    if loader.batch_sampler is not None:
        kwargs: dict[str, Any] = {"batch_sampler": loader.batch_sampler}
    else:  # auto-collation off: the sampler yields whole batches
        kwargs = {"sampler": loader.sampler, "batch_size": None}
    return DataLoader(loader.dataset, num_workers=workers, collate_fn=loader.collate_fn,
                      pin_memory=loader.pin_memory, worker_init_fn=loader.worker_init_fn,
                      multiprocessing_context=loader.multiprocessing_context if workers else None,
                      generator=Generator().manual_seed(0), **kwargs)


def _timed(loader: DataLoader, n: int, pause_s: float, budget_s: float = float("inf")) -> tuple[float, float, int]:
    """(seconds to the first batch, median seconds of the next ``n``, how many were timed: at least
    3, and no more once ``budget_s`` is spent)."""
    clock = time.perf_counter
    iterator = iter(loader)
    t0 = clock()
    next(iterator)
    first = clock() - t0
    times: list[float] = []
    while len(times) < n and (len(times) < 3 or sum(times) < budget_s):
        if pause_s:
            time.sleep(pause_s)
        t0 = clock()
        next(iterator)
        times.append(clock() - t0)
    del iterator  # stops a worker now rather than at the next collection
    return first, statistics.median(times), len(times)
