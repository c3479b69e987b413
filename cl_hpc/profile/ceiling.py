"""The measured ceiling: the FLOP/s a plain square matmul reaches on this device and dtype.

The datasheet peak (peaks.py) is what the hardware promises; the ceiling is what torch gets
here, with this BLAS, this many threads and these clocks. achieved / ceiling says how much of
the reachable speed a job uses; achieved / peak says how much of the hardware it pays for.
The CPU has no datasheet peak at all, so there the ceiling is the only yardstick.

Results are cached in one JSON file, since a GPU measurement costs seconds and the answer only
changes with the hardware, the thread count or torch. torch is imported inside functions only.
"""

from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cl_hpc.atomic import read_json, write_json_atomic
from cl_hpc.profile.peaks import normalize_dtype

#: Environment variable naming the cache directory (the file inside is ceiling.json).
CACHE_ENV = "CL_HPC_CACHE_DIR"
_CACHE_FILE = "ceiling.json"
_CACHE_FORMAT = 1

#: Default matmul size per device type: big enough to be compute bound, small enough that a
#: 2-core CPU finishes in about a second.
DEFAULT_SIZE = {"cpu": 1024, "cuda": 8192}
_REPEATS = 3
# Timed seconds per repeat. Iterations are derived from a probe matmul, so a slow CPU does
# few and a fast GPU does enough that event overhead vanishes; the cap bounds the fast case.
_BUDGET_S = {"cpu": 0.15, "cuda": 0.2}
_MAX_ITERATIONS = 100
_PROBE_SIZE = 256
_MEASURABLE = ("fp32", "tf32", "bf16", "fp16")


@dataclass(frozen=True)
class Ceiling:
    """One measurement: the best of a few timed runs of n x n matmuls."""

    flops_per_s: float  # 2 * n**3 * iterations / seconds, best repeat
    device_name: str  # "AMD EPYC (2 threads)" or "NVIDIA H100 80GB HBM3"
    dtype: str  # a key of peaks.DTYPES
    matmul_size: int  # n as run: the CPU halves a requested n that one matmul cannot fit
    iterations: int  # matmuls per timed repeat
    seconds: float  # timed seconds of the best repeat
    measured_at: str  # ISO 8601, UTC
    torch_version: str

    @classmethod
    def from_json(cls, raw: Any) -> Ceiling | None:
        """The record stored by asdict(), or None if raw is not one (old format, hand-edited)."""
        if not isinstance(raw, dict):
            return None
        if any(not isinstance(raw.get(name), kind) for name, kind in _FIELD_TYPES.items()):
            return None
        ceiling = cls(**{name: raw[name] for name in _FIELD_TYPES})
        return ceiling if math.isfinite(ceiling.flops_per_s) and ceiling.flops_per_s > 0 else None


_FIELD_TYPES: dict[str, type | tuple[type, ...]] = {
    "flops_per_s": (int, float), "device_name": str, "dtype": str, "matmul_size": int,
    "iterations": int, "seconds": (int, float), "measured_at": str, "torch_version": str,
}


# ------------------------------------------------------------------ pure helpers


def default_cache_path() -> Path:
    """$CL_HPC_CACHE_DIR/ceiling.json if set, else ~/.cache/cl_hpc/ceiling.json."""
    root = os.environ.get(CACHE_ENV)
    return (Path(root) if root else Path.home() / ".cache" / "cl_hpc") / _CACHE_FILE


def cache_key(device_name: str, dtype: str, size: int, torch_version: str) -> str:
    # The size is part of the key: a small test matmul reaches less than the default one and
    # must never be served as the device's ceiling.
    return f"{device_name} | {dtype} | n={size} | torch {torch_version}"


def cpu_model(cpuinfo: str) -> str | None:
    """The "model name" of the first CPU in /proc/cpuinfo text; None if there is none (arm64)."""
    for line in cpuinfo.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() == "model name" and value.strip():
            return value.strip()
    return None


def check_dtype(dtype: object, device_type: str) -> str:
    """The canonical dtype key to measure, or ValueError naming what is valid."""
    key = normalize_dtype(dtype)
    if key not in _MEASURABLE:
        raise ValueError(f"cannot measure dtype {dtype!r}: valid are {', '.join(_MEASURABLE)}")
    if key == "tf32" and device_type != "cuda":
        raise ValueError("tf32 is a CUDA tensor-core mode; on the CPU measure fp32")
    return key


# ------------------------------------------------------------------ the benchmark


def device_name(device: str = "cpu") -> str:
    """The cache's name for a device: the CUDA name, or the CPU model plus torch's thread count."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    # The thread count is in the name: a 4-CPU Slurm job and a 32-CPU one differ by 8x.
    return f"{_cpu_model_here()} ({torch.get_num_threads()} threads)"


def _cpu_model_here() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    return cpu_model(text) or platform.processor() or platform.machine() or "unknown cpu"


def _torch_device(device: str) -> Any:
    import torch

    dev = torch.device(device)
    if dev.type not in DEFAULT_SIZE:
        raise ValueError(f"cannot measure device {device!r}: valid are 'cpu', 'cuda', 'cuda:N'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA GPU here")
    return dev


def _timed(a: Any, b: Any, out: Any, iterations: int) -> float:
    """Seconds for `iterations` matmuls. On CUDA, events and one sync after the loop: a sync
    per matmul would add the launch gaps the real training loop never sees."""
    import torch

    if a.is_cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iterations):
            torch.mm(a, b, out=out)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    begin = time.perf_counter()
    for _ in range(iterations):
        torch.mm(a, b, out=out)
    return time.perf_counter() - begin


def _fitted_size(kind: Any, n: int) -> int:
    """n, halved while one CPU matmul would take over half a repeat's budget.

    Some CPU paths are a thousand times slower than BLAS (fp16 runs near 1 GFLOP/s): at the
    default size one matmul would take seconds. A 256 probe is cheap even there.
    """
    import torch

    if n <= _PROBE_SIZE:
        return n
    a = torch.randn(_PROBE_SIZE, _PROBE_SIZE, dtype=kind)
    out = torch.empty_like(a)
    _timed(a, a, out, 1)
    # Best of three: one call on a busy node can stall for milliseconds and shrink n for nothing.
    rate = 2.0 * _PROBE_SIZE**3 / max(min(_timed(a, a, out, 1) for _ in range(3)), 1e-9)
    while n > _PROBE_SIZE and 2.0 * n**3 / rate > _BUDGET_S["cpu"] / 2:
        n //= 2
    return n


def _best_seconds(dev: Any, dtype: str, n: int) -> tuple[float, int, int]:
    """(best timed seconds, iterations, size) over the repeats, after a warm-up and a probe."""
    import torch

    kind = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype, torch.float32)
    # Only the CPU shrinks: on a GPU a 256 probe is launch bound and would undersell the rate.
    n = _fitted_size(kind, n) if dev.type == "cpu" else n
    a, b = (torch.randn(n, n, device=dev, dtype=kind) for _ in range(2))
    out = torch.empty_like(a)
    _timed(a, b, out, 1)  # warm-up: BLAS handles, kernel choice, first-touch page faults
    probe = max(_timed(a, b, out, 1), 1e-9)
    iterations = max(1, min(_MAX_ITERATIONS, int(_BUDGET_S[dev.type] / probe)))
    return min(_timed(a, b, out, iterations) for _ in range(_REPEATS)), iterations, n


def _with_precision(dev: Any, dtype: str, n: int) -> tuple[float, int, int]:
    """_best_seconds with fp32 matmuls pinned to IEEE fp32 or to TF32, restored after."""
    import torch

    before = torch.get_float32_matmul_precision()
    # "fp32" must mean the CUDA-core path even where the process enabled TF32, or an fp32
    # ceiling would silently be a TF32 one, several times higher.
    torch.set_float32_matmul_precision("high" if dtype == "tf32" else "highest")
    try:
        if dev.type == "cuda":
            with torch.cuda.device(dev):
                return _best_seconds(dev, dtype, n)
        return _best_seconds(dev, dtype, n)
    finally:
        torch.set_float32_matmul_precision(before)


def measure(device: str = "cpu", dtype: object = "fp32", *, size: int | None = None) -> Ceiling:
    """Measure now, without the cache. dtype: fp32, tf32 (CUDA only), bf16 or fp16.

    size: the matmul's n (default DEFAULT_SIZE per device type).
    """
    import torch

    dev = _torch_device(device)
    key = check_dtype(dtype, dev.type)
    seconds, iterations, n = _with_precision(dev, key, size or DEFAULT_SIZE[dev.type])
    return Ceiling(
        flops_per_s=2.0 * n**3 * iterations / seconds,  # an n x n x n matmul is n**3 FMAs
        device_name=device_name(device), dtype=key, matmul_size=n, iterations=iterations,
        seconds=seconds, measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        torch_version=torch.__version__,
    )


# ------------------------------------------------------------------ the cache


def _read_entries(path: Path) -> dict[str, Any]:
    try:
        data = read_json(path)
    except (OSError, ValueError):
        # Our writes are atomic, so a crash cannot leave half a file; a hand edit, another tool
        # or a foreign file at this path can. The cache only saves time: re-measure, overwrite.
        return {}
    if not isinstance(data, dict):
        return {}
    entries = data.get("entries")
    if not isinstance(entries, dict) or data.get("format") != _CACHE_FORMAT:
        return {}
    return dict(entries)


def measured_ceiling(
    device: str = "cpu",
    dtype: object = "fp32",
    *,
    cache: Path | None = None,
    refresh: bool = False,
    size: int | None = None,
) -> Ceiling:
    """The cached ceiling for (device, dtype, size, torch version), measured on a miss.

    cache: the JSON file (default: default_cache_path()); refresh: measure even on a hit.
    Two processes measuring at once both write; the last one wins and the other's entry is
    measured again next time, which costs seconds, never a wrong answer.
    """
    import torch

    path = cache or default_cache_path()
    device_type = _torch_device(device).type
    key_dtype = check_dtype(dtype, device_type)
    n = size or DEFAULT_SIZE[device_type]
    key = cache_key(device_name(device), key_dtype, n, torch.__version__)
    entries = _read_entries(path)
    cached = None if refresh else Ceiling.from_json(entries.get(key))
    if cached is not None:
        return cached
    ceiling = measure(device, key_dtype, size=n)
    entries[key] = asdict(ceiling)
    write_json_atomic(path, {"format": _CACHE_FORMAT, "entries": entries})
    return ceiling
