"""The NVML side of the profiler's 1 Hz sampler: a thin adapter over nvidia-ml-py (``pynvml``).

``open_gpus()`` gives a reader for the task's GPUs, or None and why not (no pynvml, no driver, no
visible device); it never raises, as a job without a GPU is normal. ``sample()`` reads each field
on its own: an unsupported counter gives None and is not asked for again on that device. It never
lists processes (nvmlDeviceGetComputeRunningProcesses and kin take a driver-wide lock). Not
thread-safe: one sampler thread owns a reader. pynvml is imported when opening, never at load.

Which GPUs: ``visible``, else CUDA_VISIBLE_DEVICES, else all that NVML sees. Entries are indices
("0,2"), full GPU UUIDs ("GPU-8f6c...") or MIG UUIDs ("MIG-..."). SLURM_JOB_GPUS/SLURM_STEP_GPUS
are not read: they hold physical indices, but with ``ConstrainDevices=yes`` the job's cgroup hides
the other GPUs from NVML too, so NVML numbers the allowed ones 0..n-1, just as Slurm renumbers
CUDA_VISIBLE_DEVICES; that variable matches this process's view with or without cgroups. Caveat:
CUDA orders devices fastest first unless CUDA_DEVICE_ORDER=PCI_BUS_ID, NVML by PCI bus; the two
agree on nodes of identical GPUs (the usual cluster), not on mixed ones. UUIDs are exact everywhere.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_log = logging.getLogger(__name__)

_MIB = float(1 << 20)  # NVML reports bytes; nvidia-smi's "MiB" is what people compare with
VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"

# nvmlDeviceGetArchitecture codes (nvidia-ml-py NVML_DEVICE_ARCH_*), for reports.
_ARCH_NAMES = {2: "kepler", 3: "maxwell", 4: "pascal", 5: "volta", 6: "turing", 7: "ampere",
               8: "ada", 9: "hopper", 10: "blackwell", 13: "rubin"}
_ARCH_HOPPER = 9
_ARCH_UNKNOWN = 0xFFFFFFFF

# Clock event bits (nvmlClocksEventReason* == nvmlClocksThrottleReason*; a unit test checks them
# against the installed pynvml). Copied, so decoding stays pure and pynvml-free.
_THROTTLING: tuple[tuple[int, str], ...] = (
    (0x4, "sw_power_cap"),  # SwPowerCap: the power limit holds clocks down
    (0x8, "hw_slowdown"),  # HwSlowdown: thermal or power-brake hardware slowdown, clocks halved or worse
    (0x10, "sync_boost"),  # SyncBoost: held to the slowest GPU of a sync-boost group
    (0x20, "sw_thermal"),  # SwThermalSlowdown
    (0x40, "hw_thermal"),  # HwThermalSlowdown
    (0x80, "hw_power_brake"),  # HwPowerBrakeSlowdown: external power brake (PSU)
    (0x200, "board_limit"),  # BoardLimit (throttle-reason table only)
    (0x400, "reliability"),  # Reliability (throttle-reason table only)
)
# Set while clocks are low for a reason that costs a training job nothing: an idle GPU, clocks
# pinned by the admin, a display clock. Reported only on request, so "throttled" means slowed.
_BENIGN: tuple[tuple[int, str], ...] = ((0x1, "idle"), (0x2, "app_clocks"), (0x100, "display_clock"))

# GPM metric ids (NVML_GPM_METRIC_*) -> GpuSample field, all percentages 0..100.
_GPM_METRICS: tuple[tuple[int, str], ...] = (
    (2, "sm_active_pct"),  # SM_UTIL: share of SMs busy
    (3, "sm_occupancy_pct"),  # SM_OCCUPANCY: resident warps / theoretical maximum
    (5, "tensor_active_pct"),  # ANY_TENSOR_UTIL: share of time any tensor pipe was busy
    (10, "dram_bw_util_pct"),  # DRAM_BW_UTIL: DRAM bandwidth used / peak
)


@dataclass(frozen=True)
class GpuInfo:
    """What a GPU is; read once at open."""

    index: int | None  # NVML index in this process's view (for a MIG slice: its parent GPU's)
    uuid: str  # "GPU-..." or, for a MIG slice, "MIG-..."
    name: str  # exactly as NVML reports it; profile.peaks maps it to peak FLOPS
    memory_total_mb: float | None  # MiB
    power_limit_w: float | None  # enforced power limit
    architecture: str | None  # "ampere", "hopper", ...; None if NVML does not say or is newer than us
    compute_capability: tuple[int, int] | None  # (9, 0) on an H100
    mig: bool  # a MIG slice: NVML gives no utilization there; other counters may be missing too
    gpm: bool  # GPM metrics (SM, tensor, DRAM activity) are sampled


@dataclass(frozen=True)
class GpuSample:
    """One device at one tick; None where NVML cannot tell."""

    uuid: str
    util_pct: float | None = None  # share of time a kernel ran (not how busy the SMs were)
    mem_util_pct: float | None = None  # share of time device memory was read or written
    mem_used_mb: float | None = None  # MiB, all processes on the device
    power_w: float | None = None
    energy_mj: int | None = None  # millijoules since the driver loaded; see energy_mj_between
    sm_clock_mhz: float | None = None
    mem_clock_mhz: float | None = None
    temp_c: float | None = None
    throttle_reasons: int | None = None  # clock event bitmask; see decode_throttle
    sm_active_pct: float | None = None  # GPM, Hopper and newer, over the previous tick
    sm_occupancy_pct: float | None = None
    tensor_active_pct: float | None = None
    dram_bw_util_pct: float | None = None


def decode_throttle(mask: int, *, benign: bool = False) -> list[str]:
    """Slowdown reasons set in mask (with benign=True also idle/app/display); unknown bits as "0x..."."""
    table = _THROTTLING + _BENIGN if benign else _THROTTLING
    unknown = mask & ~sum(bit for bit, _ in _THROTTLING + _BENIGN)
    return [name for bit, name in sorted(table) if mask & bit] + [
        hex(1 << i) for i in range(unknown.bit_length()) if unknown >> i & 1]


def energy_mj_between(first: GpuSample, last: GpuSample) -> int | None:
    """Energy used between two samples of one device, or None if unknown or the counter restarted."""
    if first.energy_mj is None or last.energy_mj is None or last.energy_mj < first.energy_mj:
        return None
    return last.energy_mj - first.energy_mj


def parse_visible(value: str | None) -> list[int | str] | None:
    """CUDA_VISIBLE_DEVICES as CUDA reads it: indices and UUIDs; None means every device.

    CUDA ignores everything from the first entry it cannot parse on ("-1", "NoDevFiles", ""),
    which is how "no GPU" is usually written; so do we.
    """
    if value is None:
        return None
    entries: list[int | str] = []
    for token in (t.strip() for t in value.split(",")):
        if not (token.isdigit() or token.startswith(("GPU-", "MIG-"))):
            break
        entries.append(int(token) if token.isdigit() else token)
    return entries


# Fields are read in groups, one NVML call each, so each can fail alone.
Fields = dict[str, Any]


def _utilization(nv: Any, h: Any) -> Fields:
    rates = nv.nvmlDeviceGetUtilizationRates(h)
    return {"util_pct": float(rates.gpu), "mem_util_pct": float(rates.memory)}


def _throttle(nv: Any, h: Any) -> Fields:
    # "Throttle" was renamed "event" in driver 535; old bindings lack the new name, old drivers the symbol.
    read_events = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
    if read_events is not None:
        try:
            return {"throttle_reasons": int(read_events(h))}
        except nv.NVMLError_FunctionNotFound:
            pass
    return {"throttle_reasons": int(nv.nvmlDeviceGetCurrentClocksThrottleReasons(h))}


_READERS: dict[str, Callable[[Any, Any], Fields]] = {
    "utilization": _utilization,
    "memory": lambda nv, h: {"mem_used_mb": nv.nvmlDeviceGetMemoryInfo(h).used / _MIB},
    "power": lambda nv, h: {"power_w": nv.nvmlDeviceGetPowerUsage(h) / 1000.0},  # mW
    "energy": lambda nv, h: {"energy_mj": int(nv.nvmlDeviceGetTotalEnergyConsumption(h))},
    "sm_clock": lambda nv, h: {"sm_clock_mhz": float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM))},
    "mem_clock": lambda nv, h: {"mem_clock_mhz": float(nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM))},
    "temperature": lambda nv, h: {"temp_c": float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))},
    "throttle": _throttle,
}


def _permanent(nv: Any, err: Exception) -> bool:
    """Errors that will repeat on every call; anything else (timeout, GPU lost) is retried next tick."""
    codes = (nv.NVML_ERROR_NOT_SUPPORTED, nv.NVML_ERROR_FUNCTION_NOT_FOUND, nv.NVML_ERROR_NO_PERMISSION)
    # AttributeError: the installed bindings lack the function altogether.
    return isinstance(err, AttributeError) or getattr(err, "value", None) in codes


def _try(nv: Any, function: str, *args: Any) -> Any:
    """One informational NVML call at open; None where it fails, as a missing detail is no reason to stop."""
    try:
        return getattr(nv, function)(*args)
    except (nv.NVMLError, AttributeError):
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def gpm_request(nv: Any, older: Any, newer: Any) -> Any:
    """The nvmlGpmMetricsGet argument for our metrics between two filled samples (older first)."""
    request = nv.c_nvmlGpmMetricsGet_t()
    request.version = nv.NVML_GPM_METRICS_GET_VERSION
    request.numMetrics = len(_GPM_METRICS)
    request.sample1, request.sample2 = older, newer
    for slot, (metric_id, _) in enumerate(_GPM_METRICS):
        request.metrics[slot].metricId = metric_id
    return request


def gpm_values(nv: Any, request: Any) -> Fields:
    """The filled request's metrics by GpuSample field; None for a metric NVML could not compute."""
    values: Fields = {}
    for slot, (_, name) in enumerate(_GPM_METRICS):
        metric = request.metrics[slot]
        ok = metric.nvmlReturn == nv.NVML_SUCCESS and math.isfinite(metric.value)
        values[name] = float(metric.value) if ok else None
    return values


class _Gpm:
    """Hopper's GPM counters (SM, tensor, DRAM activity) are a difference of two samples.

    Two samples are used in turn: each tick refills the older one and diffs it against the newer.
    """

    def __init__(self, nv: Any, device: Any, gpu_instance: int | None) -> None:
        self._device, self._gpu_instance = device, gpu_instance
        self._older = nv.nvmlGpmSampleAlloc()
        try:
            self._newer = nv.nvmlGpmSampleAlloc()
        except nv.NVMLError:
            nv.nvmlGpmSampleFree(self._older)
            raise
        self._fill(nv, self._older)  # so the first tick already has an interval to report

    def _fill(self, nv: Any, sample: Any) -> None:
        if self._gpu_instance is None:
            nv.nvmlGpmSampleGet(self._device, sample)
        else:  # a MIG slice is sampled through its parent GPU and GPU-instance id
            nv.nvmlGpmMigSampleGet(self._device, self._gpu_instance, sample)

    def read(self, nv: Any, _handle: Any = None) -> Fields:
        """Metrics over the interval since the previous read (or since open)."""
        self._fill(nv, self._newer)
        request = nv.nvmlGpmMetricsGet(gpm_request(nv, self._older, self._newer))
        self._older, self._newer = self._newer, self._older
        return gpm_values(nv, request)

    def free(self, nv: Any) -> None:
        for sample in (self._older, self._newer):
            _try(nv, "nvmlGpmSampleFree", sample)  # a failure changes nothing: nvmlShutdown follows


def _start_gpm(nv: Any, device: Any, gpu_instance: int | None, arch: int | None) -> _Gpm | None:
    if arch is not None and not _ARCH_HOPPER <= arch < _ARCH_UNKNOWN:
        return None  # pre-Hopper: no GPM, and old drivers lack the query
    support = _try(nv, "nvmlGpmQueryDeviceSupport", device)
    if support is None or not support.isSupportedDevice:
        return None
    try:
        return _Gpm(nv, device, gpu_instance)
    except nv.NVMLError:
        return None  # GPM is extra detail; the sample stands without it


@dataclass
class _Device:
    handle: Any
    info: GpuInfo
    gpm: _Gpm | None
    unsupported: set[str] = field(default_factory=set)  # reader groups NVML refused for good


def _mig_parent(nv: Any, handle: Any) -> tuple[Any, int | None]:
    """A MIG slice's static facts (index, architecture, GPM) belong to its parent GPU."""
    parent = _try(nv, "nvmlDeviceGetDeviceHandleFromMigDeviceHandle", handle)
    return (handle if parent is None else parent), _try(nv, "nvmlDeviceGetGpuInstanceId", handle)


def _describe(nv: Any, handle: Any) -> _Device:
    uuid = _text(_try(nv, "nvmlDeviceGetUUID", handle))
    mig = uuid.startswith("MIG-")
    parent, instance = _mig_parent(nv, handle) if mig else (handle, None)
    arch = _try(nv, "nvmlDeviceGetArchitecture", parent)
    # Without its GPU-instance id a slice's GPM would measure the whole GPU, other tenants included.
    gpm = None if mig and instance is None else _start_gpm(nv, parent, instance, arch)
    return _Device(handle, _info(nv, handle, parent, uuid, arch, gpm is not None), gpm)


def _info(nv: Any, handle: Any, parent: Any, uuid: str, arch: int | None, gpm: bool) -> GpuInfo:
    memory = _try(nv, "nvmlDeviceGetMemoryInfo", handle)
    limit_mw = _try(nv, "nvmlDeviceGetEnforcedPowerLimit", handle)
    capability = _try(nv, "nvmlDeviceGetCudaComputeCapability", parent)
    return GpuInfo(
        index=_try(nv, "nvmlDeviceGetIndex", parent),
        uuid=uuid,
        name=_text(_try(nv, "nvmlDeviceGetName", handle)),
        memory_total_mb=None if memory is None else memory.total / _MIB,
        power_limit_w=None if limit_mw is None else limit_mw / 1000.0,
        architecture=None if arch is None else _ARCH_NAMES.get(arch),
        compute_capability=None if capability is None else (int(capability[0]), int(capability[1])),
        mig=uuid.startswith("MIG-"),
        gpm=gpm,
    )


def _handle_for(nv: Any, entry: int | str, count: int) -> Any:
    if isinstance(entry, str):
        return _try(nv, "nvmlDeviceGetHandleByUUID", entry)  # takes GPU- and MIG- UUIDs alike
    return nv.nvmlDeviceGetHandleByIndex(entry) if entry < count else None


def _resolve(nv: Any, entries: list[int | str] | None, count: int) -> tuple[list[Any], str | None]:
    """Handles for the entries, stopping at the first that names no device (as CUDA does)."""
    if entries is None:
        return [nv.nvmlDeviceGetHandleByIndex(i) for i in range(count)], None
    handles: list[Any] = []
    for entry in entries:
        handle = _handle_for(nv, entry, count)
        if handle is None:
            return handles, str(entry)
        handles.append(handle)
    return handles, None


_INIT_FAILURES = {  # NVML_ERROR_* code -> why there is no GPU
    12: "NVML library not found (no NVIDIA driver installed)",  # LIBRARY_NOT_FOUND
    9: "NVML driver not loaded",  # DRIVER_NOT_LOADED
    4: "no permission to open the NVIDIA devices",  # NO_PERMISSION
}


def _init_failure(err: Exception) -> str:
    value = getattr(err, "value", None)  # pynvml's NVMLError carries the NVML return code
    known = _INIT_FAILURES.get(value) if isinstance(value, int) else None
    return "no GPU: " + (known or f"nvmlInit failed: {type(err).__name__}: {err}")


def _select(nv: Any, visible: str | None) -> tuple[GpuReader | None, str]:
    name, value = ("visible", visible) if visible is not None else (VISIBLE_ENV, os.environ.get(VISIBLE_ENV))
    source = f"{name}={value!r}" if value is not None else f"{VISIBLE_ENV} unset: all devices"
    count = nv.nvmlDeviceGetCount()
    if count == 0:
        return None, "no GPU: NVML sees no devices"
    handles, stopped_at = _resolve(nv, parse_visible(value), count)
    skipped = f"; ignored from {stopped_at!r} on: no such device among NVML's {count}" if stopped_at else ""
    devices: dict[str, _Device] = {}
    for handle in handles:  # "0,0", or an index and its UUID: sample the device once
        device = _describe(nv, handle)
        devices.setdefault(device.info.uuid, device)
    if not devices:
        return None, f"no GPU: none visible ({source}){skipped}"
    return GpuReader(nv, list(devices.values())), f"NVML: {len(devices)} GPU(s) ({source}){skipped}"


def open_gpus(visible: str | None = None) -> tuple[GpuReader | None, str]:
    """A reader for the task's GPUs and a line for the profile record; (None, "no GPU: why") if none.

    Never raises: a missing pynvml, library or driver, or no visible device, is an answer.
    """
    try:
        import pynvml as nv  # lazily: the login node and the unit tier never load it
    except Exception as err:  # ImportError, or a broken install that fails while importing
        return None, f"no GPU: nvidia-ml-py (pynvml) not importable: {err}"
    try:
        nv.nvmlInit()
    except Exception as err:  # NVMLError_LibraryNotFound / DriverNotLoaded / ..., or a binding mismatch
        return None, _init_failure(err)
    try:
        reader, why = _select(nv, visible)
    except Exception as err:
        reader, why = None, f"no GPU: NVML device query failed: {type(err).__name__}: {err}"
    if reader is None:
        _try(nv, "nvmlShutdown")  # init succeeded, so release it
    _log.debug("%s", why)
    return reader, why


class GpuReader:
    """The task's GPUs, as NVML sees them; create with open_gpus() or GpuReader.open()."""

    def __init__(self, nv: Any, devices: list[_Device]) -> None:
        self._nv = nv
        self._devices = devices
        self._open = True
        self.devices: tuple[GpuInfo, ...] = tuple(d.info for d in devices)

    @classmethod
    def open(cls, visible: str | None = None) -> GpuReader | None:
        """open_gpus() without the reason."""
        return open_gpus(visible)[0]

    def sample(self) -> list[GpuSample]:
        """One sample per device, in the order of ``devices``. Cheap enough for 1 Hz; never raises NVMLError."""
        return [self._sample(device) for device in self._devices]

    def _sample(self, device: _Device) -> GpuSample:
        values: Fields = {}
        for group, read in _READERS.items():
            if group not in device.unsupported:
                values.update(self._read(device, group, read))
        if device.gpm is not None and "gpm" not in device.unsupported:
            values.update(self._read(device, "gpm", device.gpm.read))
        return GpuSample(uuid=device.info.uuid, **values)

    def _read(self, device: _Device, group: str, read: Callable[[Any, Any], Fields]) -> Fields:
        try:
            return read(self._nv, device.handle)
        except (self._nv.NVMLError, AttributeError) as err:
            if _permanent(self._nv, err):
                device.unsupported.add(group)
            return {}

    def close(self) -> None:
        """Free GPM samples and shut NVML down (NVML counts inits, so torch's own stays valid). Idempotent."""
        if not self._open:
            return
        self._open = False
        for device in self._devices:
            if device.gpm is not None:
                device.gpm.free(self._nv)
        _try(self._nv, "nvmlShutdown")  # a failure means already shut down or the driver left

    def __enter__(self) -> GpuReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
