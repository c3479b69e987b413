"""A fake ``pynvml`` (nvidia-ml-py) for machines without an NVIDIA GPU: NVML is the one thing
the tests cannot have for real.

Load it as the top-level module ``pynvml``: the ``fake_nvml`` fixture (tests/unit/test_nvml.py)
loads this file fresh and puts it in sys.modules for one test; a subprocess gets it with
PYTHONPATH=tests/fakes. Function names, argument order, return shapes, constant values and the
NVMLError class hierarchy copy nvidia-ml-py 13.615; test_nvml compares them with the installed
package, so the fake cannot drift from the real names.

The scenario is ``FAKE``: its devices (FakeGpu, FakeMig), an error for nvmlInit, and a tick the
test advances by hand (no wall clock). Series fields take one value or one per tick (the last
repeats); the energy counter grows by power x 1 s per tick. Every call is logged in FAKE.calls
as (function, uuid of the handle or None). Simplifications: a MIG handle answers only name, UUID,
memory and its parent/instance ids (NVML documents no utilization there; other counters vary by
driver), and a GPM metric is the mean of its series over the ticks between the two samples.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Union

# ---- constants, values as in nvidia-ml-py ----
NVML_SUCCESS = 0
NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_INVALID_ARGUMENT = 2
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_ALREADY_INITIALIZED = 5
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_INSUFFICIENT_SIZE = 7
NVML_ERROR_INSUFFICIENT_POWER = 8
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_TIMEOUT = 10
NVML_ERROR_IRQ_ISSUE = 11
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_CORRUPTED_INFOROM = 14
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_RESET_REQUIRED = 16
NVML_ERROR_OPERATING_SYSTEM = 17
NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18
NVML_ERROR_IN_USE = 19
NVML_ERROR_MEMORY = 20
NVML_ERROR_NO_DATA = 21
NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25
NVML_ERROR_UNKNOWN = 999

NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_GRAPHICS = 0
NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2

NVML_DEVICE_ARCH_AMPERE = 7
NVML_DEVICE_ARCH_HOPPER = 9
NVML_DEVICE_ARCH_UNKNOWN = 0xFFFFFFFF

NVML_GPM_METRIC_SM_UTIL = 2
NVML_GPM_METRIC_SM_OCCUPANCY = 3
NVML_GPM_METRIC_ANY_TENSOR_UTIL = 5
NVML_GPM_METRIC_DRAM_BW_UTIL = 10
NVML_GPM_METRIC_MAX = 477
NVML_GPM_METRICS_GET_VERSION = 1
NVML_GPM_SUPPORT_VERSION = 1


# ---- errors: NVMLError(code) becomes the subclass for code, as in nvidia-ml-py ----
class NVMLError(Exception):
    _valClassMapping: dict[int, type] = {}
    value: int

    def __new__(typ, value: int) -> NVMLError:  # noqa: N804 (the real signature)
        if typ == NVMLError:
            typ = NVMLError._valClassMapping.get(value, typ)
        obj = Exception.__new__(typ)
        obj.value = value
        return obj

    def __str__(self) -> str:
        return f"NVML error {self.value}"


def _make_error_classes() -> None:
    """NVML_ERROR_NOT_SUPPORTED -> NVMLError_NotSupported, by the real module's rule."""
    for name, value in list(globals().items()):
        if name.startswith("NVML_ERROR_"):
            class_name = "NVMLError_" + string.capwords(name[len("NVML_ERROR_"):], "_").replace("_", "")
            new = (lambda code: lambda typ, *args: NVMLError.__new__(typ, code))(value)
            cls = type(class_name, (NVMLError,), {"__new__": new, "__module__": __name__})
            globals()[class_name] = cls
            NVMLError._valClassMapping[value] = cls


_make_error_classes()


# ---- the scenario ----
Series = Union[float, Sequence[float]]
GIB = 1 << 30
MIB = 1 << 20


def _at(series: Series, tick: int) -> float:
    if isinstance(series, (int, float)):
        return series
    return series[min(tick, len(series) - 1)]


def _default_gpm() -> dict[int, Series]:
    return {NVML_GPM_METRIC_SM_UTIL: 60.0, NVML_GPM_METRIC_SM_OCCUPANCY: 30.0,
            NVML_GPM_METRIC_ANY_TENSOR_UTIL: 45.0, NVML_GPM_METRIC_DRAM_BW_UTIL: 20.0}


@dataclass(eq=False)
class FakeMig:
    """A MIG slice of a FakeGpu, found only by its UUID (as CUDA_VISIBLE_DEVICES=MIG-... names it)."""

    uuid: str
    name: str = "NVIDIA H100 80GB HBM3 MIG 1g.10gb"
    gpu_instance_id: int = 1
    memory_total: int = 9984 * MIB  # bytes
    memory_used: Series = 0


@dataclass(eq=False)
class FakeGpu:
    """One GPU; defaults are an H100 SXM. Units as NVML gives them: bytes, mW, mJ, MHz, percent."""

    uuid: str = "GPU-00000000-0000-0000-0000-000000000000"
    name: str = "NVIDIA H100 80GB HBM3"
    arch: int = NVML_DEVICE_ARCH_HOPPER
    compute_capability: tuple[int, int] = (9, 0)
    memory_total: int = 81559 * MIB
    memory_used: Series = 0
    util: Series = 0
    mem_util: Series = 0
    power_mw: Series = 100_000
    power_limit_mw: int = 700_000
    energy_mj: int = 1_000_000  # the counter at tick 0
    sm_clock: Series = 1980
    mem_clock: Series = 2619
    temp: Series = 40
    clock_events: Series = 0
    gpm: bool = True  # nvmlGpmQueryDeviceSupport says yes (only on Hopper or newer)
    gpm_metrics: dict[int, Series] = field(default_factory=_default_gpm)  # a missing id: NOT_SUPPORTED
    errors: dict[str, int] = field(default_factory=dict)  # function name -> NVML_ERROR_* it raises here
    migs: list[FakeMig] = field(default_factory=list)
    processes: list[tuple[int, int]] = field(default_factory=list)  # (pid, used bytes)

    def energy_at(self, tick: int) -> int:
        return int(self.energy_mj + sum(_at(self.power_mw, t) for t in range(1, tick + 1)))  # mW x 1 s


def a100(**overrides: Any) -> FakeGpu:
    """An A100 SXM 80GB: Ampere, so no GPM."""
    base: dict[str, Any] = dict(name="NVIDIA A100-SXM4-80GB", arch=NVML_DEVICE_ARCH_AMPERE,
                                compute_capability=(8, 0), memory_total=81920 * MIB, power_limit_mw=400_000)
    return FakeGpu(**{**base, **overrides})


@dataclass
class Scenario:
    devices: list[FakeGpu] = field(default_factory=list)
    init_error: int | None = None  # NVML_ERROR_* that nvmlInit raises
    tick: int = 0
    calls: list[tuple[str, str | None]] = field(default_factory=list)
    inits: int = 0  # nvmlInit calls not yet matched by nvmlShutdown
    live_samples: set[int] = field(default_factory=set)  # ids of GPM samples allocated, not freed
    sequence: int = 0

    def advance(self, ticks: int = 1) -> None:
        self.tick += ticks

    def count(self, function: str, uuid: str | None = None) -> int:
        return sum(1 for f, u in self.calls if f == function and (uuid is None or u == uuid))


FAKE = Scenario()


@dataclass(frozen=True, eq=False)
class _Handle:
    gpu: FakeGpu
    mig: FakeMig | None = None

    @property
    def uuid(self) -> str:
        return self.mig.uuid if self.mig else self.gpu.uuid


_MIG_ANSWERS = {"nvmlDeviceGetUUID", "nvmlDeviceGetName", "nvmlDeviceGetMemoryInfo",
                "nvmlDeviceGetDeviceHandleFromMigDeviceHandle", "nvmlDeviceGetGpuInstanceId"}


def _log(function: str, handle: _Handle | None = None) -> None:
    FAKE.calls.append((function, handle.uuid if handle else None))
    if FAKE.inits <= 0:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)


def _gpu(function: str, handle: _Handle) -> FakeGpu:
    """Log the call, raise what the scenario says this device raises, else give its GPU."""
    _log(function, handle)
    if handle.mig is not None and function not in _MIG_ANSWERS:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    if function in handle.gpu.errors:
        raise NVMLError(handle.gpu.errors[function])
    return handle.gpu


# ---- init, handles, static facts ----
def nvmlInit() -> None:
    FAKE.calls.append(("nvmlInit", None))
    if FAKE.init_error is not None:
        raise NVMLError(FAKE.init_error)
    FAKE.inits += 1


def nvmlShutdown() -> None:
    _log("nvmlShutdown")
    FAKE.inits -= 1


def nvmlDeviceGetCount() -> int:
    _log("nvmlDeviceGetCount")
    return len(FAKE.devices)


def nvmlDeviceGetHandleByIndex(index: int) -> _Handle:
    _log("nvmlDeviceGetHandleByIndex")
    if not 0 <= index < len(FAKE.devices):
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return _Handle(FAKE.devices[index])


def nvmlDeviceGetHandleByUUID(uuid: str | bytes) -> _Handle:
    _log("nvmlDeviceGetHandleByUUID")
    text = uuid.decode() if isinstance(uuid, bytes) else uuid
    for gpu in FAKE.devices:
        if gpu.uuid == text:
            return _Handle(gpu)
        for mig in gpu.migs:
            if mig.uuid == text:
                return _Handle(gpu, mig)
    raise NVMLError(NVML_ERROR_NOT_FOUND)


def nvmlDeviceGetIndex(handle: _Handle) -> int:
    return FAKE.devices.index(_gpu("nvmlDeviceGetIndex", handle))


def nvmlDeviceGetUUID(handle: _Handle) -> str:
    _gpu("nvmlDeviceGetUUID", handle)
    return handle.uuid


def nvmlDeviceGetName(handle: _Handle) -> str:
    gpu = _gpu("nvmlDeviceGetName", handle)
    return handle.mig.name if handle.mig else gpu.name


def nvmlDeviceGetMemoryInfo(handle: _Handle) -> SimpleNamespace:
    gpu = _gpu("nvmlDeviceGetMemoryInfo", handle)
    source: FakeGpu | FakeMig = handle.mig or gpu
    used = int(_at(source.memory_used, FAKE.tick))
    return SimpleNamespace(total=source.memory_total, used=used, free=source.memory_total - used)


def nvmlDeviceGetEnforcedPowerLimit(handle: _Handle) -> int:
    return _gpu("nvmlDeviceGetEnforcedPowerLimit", handle).power_limit_mw


def nvmlDeviceGetArchitecture(handle: _Handle) -> int:
    return _gpu("nvmlDeviceGetArchitecture", handle).arch


def nvmlDeviceGetCudaComputeCapability(handle: _Handle) -> tuple[int, int]:
    return _gpu("nvmlDeviceGetCudaComputeCapability", handle).compute_capability


def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle: _Handle) -> _Handle:
    _gpu("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", handle)
    if handle.mig is None:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return _Handle(handle.gpu)


def nvmlDeviceGetGpuInstanceId(handle: _Handle) -> int:
    _gpu("nvmlDeviceGetGpuInstanceId", handle)
    if handle.mig is None:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return handle.mig.gpu_instance_id


# ---- counters, read each tick ----
def nvmlDeviceGetUtilizationRates(handle: _Handle) -> SimpleNamespace:
    gpu = _gpu("nvmlDeviceGetUtilizationRates", handle)
    return SimpleNamespace(gpu=int(_at(gpu.util, FAKE.tick)), memory=int(_at(gpu.mem_util, FAKE.tick)))


def nvmlDeviceGetPowerUsage(handle: _Handle) -> int:
    return int(_at(_gpu("nvmlDeviceGetPowerUsage", handle).power_mw, FAKE.tick))


def nvmlDeviceGetTotalEnergyConsumption(handle: _Handle) -> int:
    return _gpu("nvmlDeviceGetTotalEnergyConsumption", handle).energy_at(FAKE.tick)


def nvmlDeviceGetClockInfo(handle: _Handle, type: int) -> int:  # noqa: A002 (the real parameter name)
    gpu = _gpu("nvmlDeviceGetClockInfo", handle)
    series = {NVML_CLOCK_GRAPHICS: gpu.sm_clock, NVML_CLOCK_SM: gpu.sm_clock, NVML_CLOCK_MEM: gpu.mem_clock}
    if type not in series:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return int(_at(series[type], FAKE.tick))


def nvmlDeviceGetTemperature(handle: _Handle, sensor: int) -> int:
    gpu = _gpu("nvmlDeviceGetTemperature", handle)
    if sensor != NVML_TEMPERATURE_GPU:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    return int(_at(gpu.temp, FAKE.tick))


def nvmlDeviceGetCurrentClocksEventReasons(handle: _Handle) -> int:
    return int(_at(_gpu("nvmlDeviceGetCurrentClocksEventReasons", handle).clock_events, FAKE.tick))


def nvmlDeviceGetCurrentClocksThrottleReasons(handle: _Handle) -> int:
    return int(_at(_gpu("nvmlDeviceGetCurrentClocksThrottleReasons", handle).clock_events, FAKE.tick))


# ---- per-process listings: present so that a call is logged, not an AttributeError ----
def _processes(function: str, handle: _Handle) -> list[SimpleNamespace]:
    gpu = _gpu(function, handle)
    return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in gpu.processes]


def nvmlDeviceGetComputeRunningProcesses(handle: _Handle) -> list[SimpleNamespace]:
    return _processes("nvmlDeviceGetComputeRunningProcesses", handle)


def nvmlDeviceGetGraphicsRunningProcesses(handle: _Handle) -> list[SimpleNamespace]:
    return _processes("nvmlDeviceGetGraphicsRunningProcesses", handle)


def nvmlDeviceGetProcessUtilization(handle: _Handle, timeStamp: int) -> list[SimpleNamespace]:  # noqa: N803
    _gpu("nvmlDeviceGetProcessUtilization", handle)
    return []


# ---- GPM ----
class c_nvmlGpmMetric_t:  # noqa: N801 (the real name); a ctypes struct in nvidia-ml-py
    def __init__(self) -> None:
        self.metricId = 0
        self.nvmlReturn = 0
        self.value = 0.0


class c_nvmlGpmMetricsGet_t:  # noqa: N801
    def __init__(self) -> None:
        self.version = 0
        self.numMetrics = 0
        self.sample1: Any = None
        self.sample2: Any = None
        self.metrics = [c_nvmlGpmMetric_t() for _ in range(NVML_GPM_METRIC_MAX)]


@dataclass(eq=False)
class _GpmSample:
    source: tuple[str, int | None] | None = None  # (GPU uuid, GPU instance) it was filled from
    tick: int = 0
    sequence: int = 0


def _gpm_capable(gpu: FakeGpu) -> bool:
    return gpu.gpm and NVML_DEVICE_ARCH_HOPPER <= gpu.arch < NVML_DEVICE_ARCH_UNKNOWN


def nvmlGpmQueryDeviceSupport(handle: _Handle) -> SimpleNamespace:
    gpu = _gpu("nvmlGpmQueryDeviceSupport", handle)
    return SimpleNamespace(version=NVML_GPM_SUPPORT_VERSION, isSupportedDevice=int(_gpm_capable(gpu)))


def nvmlGpmSampleAlloc() -> _GpmSample:
    _log("nvmlGpmSampleAlloc")
    sample = _GpmSample()
    FAKE.live_samples.add(id(sample))
    return sample


def nvmlGpmSampleFree(sample: _GpmSample) -> None:
    _log("nvmlGpmSampleFree")
    if id(sample) not in FAKE.live_samples:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)  # double free, or never allocated
    FAKE.live_samples.discard(id(sample))


def _fill(sample: _GpmSample, source: tuple[str, int | None]) -> _GpmSample:
    if id(sample) not in FAKE.live_samples:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    FAKE.sequence += 1
    sample.source, sample.tick, sample.sequence = source, FAKE.tick, FAKE.sequence
    return sample


def nvmlGpmSampleGet(device: _Handle, sample: _GpmSample) -> _GpmSample:
    gpu = _gpu("nvmlGpmSampleGet", device)
    if not _gpm_capable(gpu):
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return _fill(sample, (device.uuid, None))


def nvmlGpmMigSampleGet(device: _Handle, gpuInstanceId: int, sample: _GpmSample) -> _GpmSample:  # noqa: N803
    gpu = _gpu("nvmlGpmMigSampleGet", device)
    if device.mig is not None or gpuInstanceId not in {m.gpu_instance_id for m in gpu.migs}:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)  # takes the parent GPU and a GPU instance id
    if not _gpm_capable(gpu):
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return _fill(sample, (device.uuid, gpuInstanceId))


def _check_request(request: c_nvmlGpmMetricsGet_t) -> None:
    """Refuse a bad version or count, unfilled or foreign samples, and a reversed pair.

    NVML documents sample1 as the earlier sample; what it does with a reversed pair is not
    documented, so the fake refuses one and the order gets tested.
    """
    if request.version != NVML_GPM_METRICS_GET_VERSION:
        raise NVMLError(NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
    older, newer = request.sample1, request.sample2
    samples_ok = all(isinstance(s, _GpmSample) and id(s) in FAKE.live_samples and s.source for s in (older, newer))
    if not 0 < request.numMetrics <= NVML_GPM_METRIC_MAX or not samples_ok:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)
    if older.source != newer.source or older.sequence >= newer.sequence:
        raise NVMLError(NVML_ERROR_INVALID_ARGUMENT)


def nvmlGpmMetricsGet(metricsGet: c_nvmlGpmMetricsGet_t) -> c_nvmlGpmMetricsGet_t:  # noqa: N803
    _log("nvmlGpmMetricsGet")
    _check_request(metricsGet)
    uuid = metricsGet.sample2.source[0]
    gpu = next(g for g in FAKE.devices if g.uuid == uuid)
    older, newer = metricsGet.sample1.tick, metricsGet.sample2.tick
    ticks = range(older + 1, newer + 1) if newer > older else range(newer, newer + 1)
    for metric in metricsGet.metrics[: metricsGet.numMetrics]:
        series = gpu.gpm_metrics.get(metric.metricId)
        metric.nvmlReturn = NVML_SUCCESS if series is not None else NVML_ERROR_NOT_SUPPORTED
        metric.value = sum(_at(series, t) for t in ticks) / len(ticks) if series is not None else 0.0
    return metricsGet
