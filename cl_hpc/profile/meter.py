"""A pure accumulator of training steps, split into data-wait and compute.

The shape follows Lightning's ``fabric/utilities/throughput.py``: ``update`` per step, ``compute``
for the summary, ``reset``. Adapters (the Lightning callback, the plain context manager) time the
steps; this module only counts, so it is tested with made-up numbers and imports nothing heavy.

- **data-wait**: the time blocked on the next batch, host-to-device copy included;
- **compute**: the rest of the step (forward, backward, optimizer);
- **steady state**: every step except the first ``warmup`` ones of the fit and the first step
  of each epoch. Those pay for worker start-up, lazy initialisation and compilation, and would
  make the stall fraction describe the start instead of the run. They are reported apart.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class StepStats:
    steps: int  # every step seen
    steady_steps: int  # the steps the figures below describe
    data_wait_s: float  # steady state, summed
    compute_s: float  # steady state, summed
    step_p50_s: float | None  # wall time of one steady step (data-wait + compute)
    step_p95_s: float | None
    stall_fraction: float | None  # data-wait / step wall time over the steady state
    warmup_s: float  # the warm-up steps, summed
    epoch_first_s: list[float] = field(default_factory=list)  # each epoch's first step (wait + compute)
    samples_per_s: float | None = None  # steady state, when the adapter counts samples

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class StepMeter:
    """Accumulates (data-wait, compute) pairs; ``first_of_epoch`` marks an epoch's first step."""

    def __init__(self, warmup: int = 5) -> None:
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0 steps, got {warmup}")
        self.warmup = warmup
        self.reset()

    def reset(self) -> None:
        self._steps = 0
        self._wait: list[float] = []
        self._compute: list[float] = []
        self._samples = 0
        self._warmup_s = 0.0
        self._epoch_first: list[float] = []

    def update(self, data_wait_s: float, compute_s: float, *, first_of_epoch: bool = False, samples: int = 0) -> None:
        if not (math.isfinite(data_wait_s) and math.isfinite(compute_s)) or data_wait_s < 0 or compute_s < 0:
            raise ValueError(f"step times must be finite and >= 0, got wait={data_wait_s} compute={compute_s}")
        self._steps += 1
        if first_of_epoch:
            self._epoch_first.append(data_wait_s + compute_s)
        if self._steps <= self.warmup:
            self._warmup_s += data_wait_s + compute_s
        elif not first_of_epoch:
            self._wait.append(data_wait_s)
            self._compute.append(compute_s)
            self._samples += samples

    def compute(self) -> StepStats:
        wait, work = sum(self._wait), sum(self._compute)
        walls = sorted(w + c for w, c in zip(self._wait, self._compute))
        total = wait + work
        return StepStats(
            steps=self._steps, steady_steps=len(walls), data_wait_s=wait, compute_s=work,
            step_p50_s=_quantile(walls, 0.50), step_p95_s=_quantile(walls, 0.95),
            stall_fraction=wait / total if total > 0 else None, warmup_s=self._warmup_s,
            epoch_first_s=list(self._epoch_first),
            samples_per_s=self._samples / total if self._samples and total > 0 else None,
        )


def _quantile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    if len(sorted_values) == 1:
        return sorted_values[0]
    # "inclusive" interpolates between the observed values, never beyond the slowest step.
    cuts = statistics.quantiles(sorted_values, n=100, method="inclusive")
    return cuts[round(q * 100) - 1]
