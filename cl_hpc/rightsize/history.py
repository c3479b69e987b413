"""The right-sizer's input: one ``Observation`` per past attempt of a task, and the history key.

Observations are plain measured facts; every field the profiler or ``sacct`` could not supply is
None, and the rules in ``recommend`` skip what they cannot see rather than guess. The caller keeps
one history per ``history_key(...)``: runs of the same pipeline task with the same model config and
a data size in the same power-of-two bucket are assumed to need about the same resources.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Sequence

from cl_hpc.config.resources import Resources
from cl_hpc.errors import DataError
from cl_hpc.profile.diagnosis import Verdict
from cl_hpc.states import TextEnum


class Outcome(TextEnum):
    """How a past attempt ended, as the right-sizer reads it: its attempt state (AttemptState),
    with a kill at a limit named apart (apply.outcome_of reads the error's Limit prefix)."""

    COMPLETED = "COMPLETED"
    OOM = "OOM"  # killed for memory: Slurm's OUT_OF_MEMORY, or FAILED with "Exceeded job memory limit"
    TIMEOUT = "TIMEOUT"  # killed at its time limit
    FAILED = "FAILED"
    PREEMPTED = "PREEMPTED"


OUTCOMES = tuple(o.value for o in Outcome)
_FRACTIONS = ("stall_fraction", "worker_cpu_util", "cpu_util", "iowait_fraction")
_NON_NEGATIVE = ("peak_mem_gb", "elapsed_s", "setup_s", "steps", "step_p95_s", "num_workers", "data_rows")


@dataclass(frozen=True)
class Observation:
    """The measured facts of one past attempt of a task (None where unknown)."""

    finished_at: Optional[float] = None  # epoch seconds; orders the history (newest weighs most)
    outcome: Optional[str] = None  # one of OUTCOMES; a cgroup-less "FAILED, Exceeded job memory limit" is OOM
    requested: Optional[Resources] = None  # what this attempt was given
    peak_mem_gb: Optional[float] = None  # best measure: cgroup memory.peak, else max(sacct MaxRSS, sampled RSS)
    # True only for a kernel high-water mark (cgroup memory.peak, VmHWM / ru_maxrss summed over the
    # processes). sacct MaxRSS and psutil RSS are polled (every JobAcctGatherFrequency, default 30 s,
    # or 1 Hz) and can miss a short spike, so the recommender trusts them less.
    peak_mem_exact: bool = False
    elapsed_s: Optional[float] = None  # wall-clock seconds from start to end of the job
    setup_s: Optional[float] = None  # seconds before the first step (imports, data open, model build)
    steps: Optional[int] = None  # optimizer steps run
    step_p95_s: Optional[float] = None  # 95th percentile of the step time over the steady state
    stall_fraction: Optional[float] = None  # data-wait / step time over the steady state, 0-1
    # the profile's diagnosis of the stall (a cl_hpc.profile.diagnosis.Verdict value); None for a
    # record that predates it, which the loader rule then diagnoses from the measures here
    loader_verdict: Optional[str] = None
    worker_cpu_util: Optional[float] = None  # busy share of the data-loader workers' CPU, 0-1
    cpu_util: Optional[float] = None  # busy share of the allocated cpus, 0-1
    iowait_fraction: Optional[float] = None  # share of CPU time spent waiting on I/O, 0-1
    gpu_util: Optional[tuple[float, ...]] = None  # per-GPU mean utilization, 0-1, one entry per GPU
    num_workers: Optional[int] = None  # data-loader worker processes this attempt ran with
    data_rows: Optional[int] = None  # rows of training data this attempt saw

    def __post_init__(self) -> None:
        if self.outcome is not None and self.outcome not in OUTCOMES:
            raise DataError(f"observation outcome {self.outcome!r} is not one of {', '.join(OUTCOMES)}")
        verdicts = [v.value for v in Verdict]
        if self.loader_verdict is not None and self.loader_verdict not in verdicts:
            raise DataError(f"observation loader_verdict {self.loader_verdict!r} is not one of {', '.join(verdicts)} "
                            "(cl_hpc/profile/diagnosis.py)")
        for name in _NON_NEGATIVE:
            _check(name, getattr(self, name), 0.0, math.inf)
        for name in _FRACTIONS:
            _check(name, getattr(self, name), 0.0, 1.0)
        for util in self.gpu_util or ():
            _check("gpu_util", util, 0.0, 1.0)


def _check(name: str, value: Optional[float], low: float, high: float) -> None:
    if value is not None and not low <= value <= high:
        raise DataError(f"observation {name}={value!r} is outside [{low:g}, {high:g}]")


def history_key(pipeline: str, task: str, model_config: Mapping[str, Any], data_rows: Optional[int]) -> str:
    """``pipeline/task/<config digest>/<rows bucket>``: equal inputs give equal keys in every process."""
    return f"{pipeline}/{task}/{config_digest(model_config)}/{rows_bucket(data_rows)}"


def config_digest(model_config: Mapping[str, Any]) -> str:
    """The first 12 hex digits of sha256 over canonical JSON (sorted keys), so key order is irrelevant."""
    text = json.dumps(_plain(model_config), sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def rows_bucket(data_rows: Optional[int]) -> str:
    """``rows2^k`` for 2^k <= rows < 2^(k+1): a doubling of the data is a new bucket, smaller growth is
    scaled within one (``recommend`` scales time by rows now / rows then)."""
    if data_rows is None:
        return "rows?"
    if data_rows < 0:
        raise DataError(f"data_rows={data_rows} is negative; give the row count of the training data, or None")
    return "rows0" if data_rows == 0 else f"rows2^{int(data_rows).bit_length() - 1}"


def _plain(value: Any) -> Any:
    """Mappings (dict, DictConfig) as dicts and sequences (list, tuple, ListConfig) as lists, so json
    sees one shape whatever container the config came in."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value


def newest_first(history: Iterable[Observation], window: int) -> list[Observation]:
    """The newest ``window`` observations, newest first, by finished_at. Undated ones count as older
    than any dated one and keep their given order (oldest first), so the result never depends on how
    the caller happened to list a dated history."""
    ordered = sorted(history, key=lambda o: -math.inf if o.finished_at is None else o.finished_at)
    return ordered[::-1][:window]


def decayed_max(points: Sequence[tuple[int, float]], anchor: Optional[float], half_life: float) -> float:
    """The highest value once each one's excess over ``anchor`` halves every ``half_life`` runs of age
    (``points`` are (age in runs, value), age 0 the newest).

    Decaying only the excess keeps the newest completed run's value (the anchor) whole, so an old
    spike fades toward today's level instead of toward zero, and a recent spike (age 1: 87% of its
    excess at a 5-run half-life) still counts nearly in full. Without an anchor nothing decays.
    """
    if anchor is None:
        return max(v for _, v in points)
    return max([anchor] + [anchor + (v - anchor) * 0.5 ** (age / half_life) for age, v in points if v > anchor])
