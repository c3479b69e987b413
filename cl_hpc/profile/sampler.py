"""The sampler thread: host (psutil) and GPU (NVML) samples at a fixed interval, 1 Hz by default.

It samples once at start and once at stop, so even a task shorter than the interval has a first
and last value (the GPU energy of a task is the difference of the two counters). The samples are
kept as a compact column-per-field series for plots; past ``max_points`` every other point is
dropped, which halves the resolution evenly instead of keeping only the start.
"""

from __future__ import annotations

import math
import threading
import time

TYPE_CHECKING = False  # on the job path: no typing or dataclasses at run time (cl_hpc/execute/runner.py)
if TYPE_CHECKING:
    from typing import Any, Callable, Protocol, Sequence

    from cl_hpc.profile.tree import ProcessTree

    class GpuSource(Protocol):
        """What the sampler needs of cl_hpc.profile.nvml.GpuReader."""

        def sample(self) -> Sequence[Any]: ...


class Series:
    """Columns of numbers sharing one time axis (seconds since the start)."""

    def __init__(self, max_points: int = 4000) -> None:
        self.max_points = max(2, max_points)
        self.columns: dict[str, list[float | None]] = {"t": []}

    def add(self, t: float, values: dict[str, float | None]) -> None:
        n = len(self.columns["t"])
        for key in values.keys() - self.columns.keys():
            self.columns[key] = [None] * n  # a field that appears late (a GPU came up) back-fills
        for key, column in self.columns.items():
            column.append(round(t, 3) if key == "t" else _compact(values.get(key)))
        if n + 1 > self.max_points:
            for key, column in self.columns.items():
                last = column[-1]
                self.columns[key] = column[:-1:2] + [last]  # keep the final point: it closes the energy

    def column(self, key: str) -> list[float]:
        return [v for v in self.columns.get(key, []) if v is not None]

    def to_dict(self) -> dict[str, list[float | None]]:
        return {k: list(v) for k, v in self.columns.items()}


def _compact(value: Any) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    # 4 significant digits: plenty for a plot, a quarter of the JSON. Integers (the energy counter,
    # bitmasks) stay exact: the counter counts from the driver load, so rounding it erases a task's energy.
    return float(value) if isinstance(value, int) else float(f"{value:.4g}")


class Sampler:
    def __init__(self, interval_s: float = 1.0, gpus: GpuSource | None = None, tree: ProcessTree | None = None,
                 max_points: int = 4000, on_sample: Callable[[], None] | None = None, lazy: bool = False) -> None:
        if not interval_s > 0:
            raise ValueError(f"profile.interval_s must be > 0 s, got {interval_s}")
        self.interval_s = interval_s
        # lazy: nothing is measured (or imported) before the first tick, which comes after two
        # intervals, so a task shorter than that costs a thread and no more; its peak and CPU time
        # come from the kernel at the end. Not one: a task of about one interval (1 s jobs) would
        # race its own end with a tick that imports psutil (25 ms) for a single sample.
        self.lazy = lazy
        self.tree = tree if tree is not None or lazy else _process_tree()
        self.gpus = gpus
        self.series = Series(max_points)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cl_hpc-sampler", daemon=True)
        self._t0 = time.monotonic()
        self.errors: list[str] = []
        self.on_sample = on_sample  # called in the sampler thread after each periodic sample

    def start(self) -> "Sampler":
        self._t0 = time.monotonic()
        if not self.lazy:
            self.sample()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5 * self.interval_s + 5)
        if self.tree is not None:  # a lazy sampler that never ticked stays unmeasured
            self.sample()

    def _loop(self) -> None:
        if self.lazy and self._stop.wait(self.interval_s):
            return
        while not self._stop.wait(self.interval_s):
            self.sample()
            if self.on_sample is not None:
                try:
                    self.on_sample()
                except Exception as exc:  # a failed flush must not end the sampling
                    self._error(exc)

    def sample(self) -> None:
        try:
            if self.tree is None:
                self.tree = _process_tree()
            values = dict(vars(self.tree.sample()))
            for i, gpu in enumerate(self.gpus.sample() if self.gpus is not None else ()):
                fields = gpu if isinstance(gpu, dict) else vars(gpu)  # NVML's GpuSample, or a plain dict
                values.update({f"gpu{i}.{k}": v for k, v in fields.items()})
            self.series.add(time.monotonic() - self._t0, values)
        except Exception as exc:  # a sampling hiccup must never fail the task it measures
            self._error(exc)

    def _error(self, exc: Exception) -> None:
        if len(self.errors) < 5:
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def summary(self, n_gpus: int = 0) -> dict[str, Any]:
        s = self.series
        out: dict[str, Any] = {
            "samples": len(s.columns["t"]), "interval_s": self.interval_s,
            "duration_s": s.columns["t"][-1] if s.columns["t"] else 0.0,
            "cpu_pct_mean": _mean(s.column("cpu_pct")), "workers_cpu_pct_mean": _mean(s.column("workers_cpu_pct")),
            "workers_max": max(s.column("workers"), default=0), "rss_mb_max": max(s.column("rss_mb"), default=None),
            "hwm_mb_max": max(s.column("hwm_mb"), default=None), "iowait_fraction": _mean(s.column("iowait_fraction")),
        }
        out["gpus"] = [gpu_summary(s, i) for i in range(n_gpus)]
        return out


def _process_tree() -> ProcessTree:
    from cl_hpc.profile.tree import ProcessTree  # psutil and its sample type: at the first tick

    return ProcessTree()


def gpu_summary(s: Series, i: int) -> dict[str, Any]:
    col = lambda name: s.column(f"gpu{i}.{name}")  # noqa: E731
    energy = col("energy_mj")
    power, t = s.columns.get(f"gpu{i}.power_w", []), s.columns["t"]
    counted = len(energy) >= 2 and energy[-1] >= energy[0]
    return {
        "util_pct_mean": _mean(col("util_pct")), "mem_used_mb_max": max(col("mem_used_mb"), default=None),
        "power_w_mean": _mean(col("power_w")), "sm_active_pct_mean": _mean(col("sm_active_pct")),
        "tensor_active_pct_mean": _mean(col("tensor_active_pct")), "dram_bw_pct_mean": _mean(col("dram_bw_util_pct")),
        "sm_occupancy_pct_mean": _mean(col("sm_occupancy_pct")),
        "temp_c_max": max(col("temp_c"), default=None), "sm_clock_mhz_mean": _mean(col("sm_clock_mhz")),
        # The driver's counter where it has one and it did not restart; else power over the samples.
        "energy_j": (energy[-1] - energy[0]) / 1000 if counted else _integrate(t, power),
        "energy_source": "nvml-counter" if counted else "power-integral",
        "throttle_reasons_seen": sorted({int(v) for v in col("throttle_reasons")} - {0}),
    }


def _mean(values: list[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None  # = statistics.fmean, without its import


def _integrate(t: list[float | None], power: list[float | None]) -> float | None:
    pts = [(a, b) for a, b in zip(t, power) if a is not None and b is not None]
    if len(pts) < 2:
        return None
    return sum((t1 - t0) * (p0 + p1) / 2 for (t0, p0), (t1, p1) in zip(pts, pts[1:]))
