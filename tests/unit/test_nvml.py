"""The NVML adapter: real pynvml where the machine allows (no driver here), the fake for the rest.

The fake (tests/fakes/pynvml.py) stands in only for the GPU. Its names and constants are checked
against the installed nvidia-ml-py below, so a test that passes on the fake calls real names.
"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from cl_hpc.profile.nvml import (
    GpuReader,
    GpuSample,
    decode_throttle,
    energy_mj_between,
    gpm_request,
    gpm_values,
    open_gpus,
    parse_visible,
)

REPO = Path(__file__).resolve().parents[2]
FAKE_PATH = REPO / "tests" / "fakes" / "pynvml.py"
GIB = 1 << 30
PROCESS_LISTINGS = ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses",
                    "nvmlDeviceGetProcessUtilization", "nvmlDeviceGetMPSComputeRunningProcesses")


@pytest.fixture(scope="session")
def real_nvml() -> ModuleType:
    """The installed nvidia-ml-py; session scope, so it is imported before any fake replaces it."""
    module = importlib.import_module("pynvml")
    assert FAKE_PATH.parent not in Path(module.__file__ or "").parents, "the fake shadows nvidia-ml-py"
    return module


def three_gpus(nv: ModuleType) -> list[object]:
    nv.FAKE.devices = [nv.FakeGpu(uuid=f"GPU-{i}{i}{i}-test") for i in range(3)]
    return nv.FAKE.devices


# ---- the real boundary: installed nvidia-ml-py, and whatever driver this machine has ----

def test_module_imports_without_pynvml() -> None:
    code = "import cl_hpc.profile.nvml, sys; assert 'pynvml' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_real_nvml_says_why_there_is_no_gpu(real_nvml: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    nv = real_nvml
    try:
        nv.nvmlInit()
        failure = None
        nv.nvmlShutdown()
    except nv.NVMLError as err:
        failure = err
    reader, why = open_gpus()
    if failure is None:  # a machine with a driver: it must find the GPUs nvidia-smi would list
        assert reader is not None and reader.devices, why
        reader.close()
        return
    assert reader is None
    expected = {nv.NVML_ERROR_LIBRARY_NOT_FOUND: "no GPU: NVML library not found",
                nv.NVML_ERROR_DRIVER_NOT_LOADED: "no GPU: NVML driver not loaded"}
    assert why.startswith(expected.get(failure.value, "no GPU: nvmlInit failed")), why


def test_gpm_request_fits_the_real_ctypes_struct(real_nvml: ModuleType) -> None:
    nv = real_nvml
    older, newer = nv.c_nvmlGpmSample_t(), nv.c_nvmlGpmSample_t()
    request = gpm_request(nv, older, newer)
    assert request.version == nv.NVML_GPM_METRICS_GET_VERSION
    assert [request.metrics[i].metricId for i in range(request.numMetrics)] == [
        nv.NVML_GPM_METRIC_SM_UTIL, nv.NVML_GPM_METRIC_SM_OCCUPANCY,
        nv.NVML_GPM_METRIC_ANY_TENSOR_UTIL, nv.NVML_GPM_METRIC_DRAM_BW_UTIL]
    request.metrics[0].value = 55.5
    request.metrics[1].nvmlReturn = nv.NVML_ERROR_NOT_SUPPORTED
    request.metrics[2].value = float("nan")
    assert gpm_values(nv, request) == {"sm_active_pct": 55.5, "sm_occupancy_pct": None,
                                       "tensor_active_pct": None, "dram_bw_util_pct": 0.0}


@pytest.mark.parametrize("reason, name", [
    ("GpuIdle", "idle"), ("ApplicationsClocksSetting", "app_clocks"), ("SwPowerCap", "sw_power_cap"),
    ("HwSlowdown", "hw_slowdown"), ("SyncBoost", "sync_boost"), ("SwThermalSlowdown", "sw_thermal"),
    ("HwThermalSlowdown", "hw_thermal"), ("HwPowerBrakeSlowdown", "hw_power_brake"),
    ("DisplayClockSetting", "display_clock"), ("BoardLimit", "board_limit"), ("Reliability", "reliability"),
])
def test_decode_throttle_matches_the_real_constants(real_nvml: ModuleType, reason: str, name: str) -> None:
    for prefix in ("nvmlClocksThrottleReason", "nvmlClocksEventReason"):
        if hasattr(real_nvml, prefix + reason):  # BoardLimit and Reliability have the old name only
            assert decode_throttle(getattr(real_nvml, prefix + reason), benign=True) == [name]


def test_fake_uses_real_names_and_values(real_nvml: ModuleType, fake_nvml: ModuleType) -> None:
    nv = real_nvml
    names = [n for n in vars(fake_nvml) if n.startswith(("NVML", "nvml", "c_nvml"))]
    assert [n for n in names if not hasattr(nv, n)] == []
    constants = [n for n in names if isinstance(getattr(fake_nvml, n), int)]
    assert {n: getattr(fake_nvml, n) for n in constants} == {n: getattr(nv, n) for n in constants}
    fake_errors = fake_nvml.NVMLError._valClassMapping
    assert {c: k.__name__ for c, k in fake_errors.items()} == {c: nv.NVMLError._valClassMapping[c].__name__
                                                              for c in fake_errors}


# ---- pure parts ----

@pytest.mark.parametrize("mask, benign, names", [
    (0, False, []),
    (0x4, False, ["sw_power_cap"]),
    (0x1, False, []),
    (0x1, True, ["idle"]),
    (0x1 | 0x4, False, ["sw_power_cap"]),
    (0x1 | 0x4, True, ["idle", "sw_power_cap"]),
    (0x8 | 0x40, False, ["hw_slowdown", "hw_thermal"]),
    (0x2 | 0x100, False, []),
    (0x2 | 0x100, True, ["app_clocks", "display_clock"]),
    (0x800 | 0x20, False, ["sw_thermal", "0x800"]),
])
def test_decode_throttle(mask: int, benign: bool, names: list[str]) -> None:
    assert decode_throttle(mask, benign=benign) == names


@pytest.mark.parametrize("value, entries", [
    (None, None),
    ("", []),
    ("0,2", [0, 2]),
    (" 1 , 0 ", [1, 0]),
    ("GPU-8f6c1e2a-aaaa,1", ["GPU-8f6c1e2a-aaaa", 1]),
    ("MIG-5c3b9d7e-bbbb", ["MIG-5c3b9d7e-bbbb"]),
    ("-1", []),
    ("0,-1,1", [0]),
    ("NoDevFiles", []),
])
def test_parse_visible(value: str | None, entries: list[int | str] | None) -> None:
    assert parse_visible(value) == entries


def test_energy_between_samples() -> None:
    def at(mj: int | None) -> GpuSample:
        return GpuSample(uuid="GPU-x", energy_mj=mj)
    assert energy_mj_between(at(5_000), at(7_500)) == 2_500
    assert energy_mj_between(at(7_500), at(100)) is None  # the driver reloaded: counter restarted
    assert energy_mj_between(at(None), at(100)) is None


# ---- which GPUs (fake) ----

@pytest.mark.parametrize("env, visible, picked, note", [
    (None, None, [0, 1, 2], "unset: all devices"),
    ("2,0", None, [2, 0], "CUDA_VISIBLE_DEVICES='2,0'"),
    ("GPU-111-test", None, [1], "GPU(s)"),
    ("0,GPU-222-test", None, [0, 2], "GPU(s)"),
    ("1,1", None, [1], "1 GPU(s)"),
    ("1", "0", [0], "visible='0'"),
    ("0,7,1", None, [0], "ignored from '7' on"),
])
def test_selects_the_tasks_gpus(fake_nvml: ModuleType, monkeypatch: pytest.MonkeyPatch, env: str | None,
                                visible: str | None, picked: list[int], note: str) -> None:
    gpus = three_gpus(fake_nvml)
    if env is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", env)
    reader, why = open_gpus(visible)
    assert reader is not None, why
    assert [d.uuid for d in reader.devices] == [gpus[i].uuid for i in picked]
    assert [s.uuid for s in reader.sample()] == [gpus[i].uuid for i in picked]
    assert note in why
    reader.close()


@pytest.mark.parametrize("visible, why", [
    ("", "no GPU: none visible (visible='')"),
    ("-1", "no GPU: none visible"),
    ("7", "ignored from '7' on: no such device among NVML's 3"),
    ("GPU-not-here", "ignored from 'GPU-not-here' on"),
])
def test_no_visible_gpu(fake_nvml: ModuleType, visible: str, why: str) -> None:
    three_gpus(fake_nvml)
    reader, reason = open_gpus(visible)
    assert reader is None and reason.startswith("no GPU:") and why in reason
    assert fake_nvml.FAKE.inits == 0  # nvmlInit was balanced by nvmlShutdown


@pytest.mark.parametrize("error, why", [
    ("NVML_ERROR_DRIVER_NOT_LOADED", "no GPU: NVML driver not loaded"),
    ("NVML_ERROR_LIBRARY_NOT_FOUND", "no GPU: NVML library not found (no NVIDIA driver installed)"),
    ("NVML_ERROR_UNKNOWN", "no GPU: nvmlInit failed: NVMLError_Unknown"),
])
def test_init_failure_is_a_reason(fake_nvml: ModuleType, error: str, why: str) -> None:
    three_gpus(fake_nvml)
    fake_nvml.FAKE.init_error = getattr(fake_nvml, error)
    reader, reason = open_gpus()
    assert reader is None and reason.startswith(why)
    assert GpuReader.open() is None


def test_no_devices_and_no_pynvml(fake_nvml: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    assert open_gpus() == (None, "no GPU: NVML sees no devices")
    assert fake_nvml.FAKE.inits == 0
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml now raises ImportError
    reader, why = open_gpus()
    assert reader is None and why.startswith("no GPU: nvidia-ml-py (pynvml) not importable")


def test_mig_uuid_selects_the_slice(fake_nvml: ModuleType) -> None:
    mig = fake_nvml.FakeMig(uuid="MIG-5c3b9d7e-test", gpu_instance_id=3, memory_used=2 * GIB)
    fake_nvml.FAKE.devices = [fake_nvml.FakeGpu(uuid="GPU-parent"), fake_nvml.FakeGpu(uuid="GPU-other", migs=[mig])]
    with GpuReader.open("MIG-5c3b9d7e-test") as reader:
        assert reader is not None
        (info,) = reader.devices
        assert (info.uuid, info.name, info.index, info.mig) == (mig.uuid, mig.name, 1, True)
        assert info.memory_total_mb == 9984.0 and info.architecture == "hopper" and info.gpm
        (sample,) = reader.sample()
    assert sample.mem_used_mb == 2048.0 and sample.util_pct is None  # NVML: no utilization on MIG
    assert sample.sm_active_pct == 60.0  # GPM of its own GPU instance, through the parent
    assert fake_nvml.FAKE.count("nvmlGpmMigSampleGet", "GPU-other") == 2
    assert fake_nvml.FAKE.count("nvmlGpmSampleGet") == 0


# ---- sampling (fake) ----

def test_info_and_sample_fields_in_their_units(fake_nvml: ModuleType) -> None:
    fake_nvml.FAKE.devices = [fake_nvml.FakeGpu(
        uuid="GPU-h100", memory_used=[10 * GIB, 12 * GIB], util=[97, 50], mem_util=[41, 20],
        power_mw=[612_345, 400_000], sm_clock=[1755, 1980], mem_clock=2619, temp=[71, 60],
        clock_events=[0x1 | 0x4, 0])]
    reader, _ = open_gpus()
    assert reader is not None
    (info,) = reader.devices
    assert info.name == "NVIDIA H100 80GB HBM3"  # verbatim: peaks.py parses it
    assert (info.index, info.memory_total_mb, info.power_limit_w) == (0, 81559.0, 700.0)
    assert (info.architecture, info.compute_capability, info.mig, info.gpm) == ("hopper", (9, 0), False, True)
    (sample,) = reader.sample()
    assert sample == GpuSample(
        uuid="GPU-h100", util_pct=97.0, mem_util_pct=41.0, mem_used_mb=10240.0, power_w=612.345,
        energy_mj=1_000_000, sm_clock_mhz=1755.0, mem_clock_mhz=2619.0, temp_c=71.0, throttle_reasons=0x5,
        sm_active_pct=60.0, sm_occupancy_pct=30.0, tensor_active_pct=45.0, dram_bw_util_pct=20.0)
    assert decode_throttle(sample.throttle_reasons or 0) == ["sw_power_cap"]
    reader.close()


def test_energy_is_the_counter_difference(fake_nvml: ModuleType) -> None:
    fake_nvml.FAKE.devices = [fake_nvml.FakeGpu(energy_mj=5_000_000, power_mw=[200_000, 300_000, 400_000])]
    with GpuReader.open() as reader:
        assert reader is not None
        samples = []
        for _ in range(3):
            samples.append(reader.sample()[0])
            fake_nvml.FAKE.advance()
    assert energy_mj_between(samples[0], samples[-1]) == 700_000  # (300 W + 400 W) x 1 s, in mJ


def test_unsupported_field_is_none_and_not_asked_again(fake_nvml: ModuleType) -> None:
    nv = fake_nvml
    nv.FAKE.devices = [nv.FakeGpu(uuid="GPU-a", errors={"nvmlDeviceGetPowerUsage": nv.NVML_ERROR_NOT_SUPPORTED,
                                                        "nvmlDeviceGetTemperature": nv.NVML_ERROR_TIMEOUT}),
                       nv.FakeGpu(uuid="GPU-b")]
    with GpuReader.open() as reader:
        assert reader is not None
        first, second = reader.sample(), reader.sample()
    assert [s.power_w for s in first] == [None, 100.0] and [s.power_w for s in second] == [None, 100.0]
    assert first[0].temp_c is None and first[0].util_pct == 0.0 and first[0].energy_mj == 1_000_000
    assert nv.FAKE.count("nvmlDeviceGetPowerUsage", "GPU-a") == 1  # refused for good: asked once
    assert nv.FAKE.count("nvmlDeviceGetPowerUsage", "GPU-b") == 2
    assert nv.FAKE.count("nvmlDeviceGetTemperature", "GPU-a") == 2  # a timeout is retried


def test_throttle_reasons_on_older_drivers_and_bindings(fake_nvml: ModuleType,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    nv = fake_nvml
    old_driver = {"nvmlDeviceGetCurrentClocksEventReasons": nv.NVML_ERROR_FUNCTION_NOT_FOUND}
    nv.FAKE.devices = [nv.FakeGpu(uuid="GPU-old", clock_events=0x40, errors=old_driver)]
    with GpuReader.open() as reader:
        assert reader is not None and reader.sample()[0].throttle_reasons == 0x40
    monkeypatch.delattr(nv, "nvmlDeviceGetCurrentClocksEventReasons")  # bindings before the rename
    nv.FAKE.devices = [nv.FakeGpu(uuid="GPU-new", clock_events=0x20)]
    with GpuReader.open() as reader:
        assert reader is not None and reader.sample()[0].throttle_reasons == 0x20


def test_gpm_on_hopper_follows_the_intervals(fake_nvml: ModuleType) -> None:
    nv = fake_nvml
    metrics = {nv.NVML_GPM_METRIC_SM_UTIL: [10.0, 80.0, 90.0], nv.NVML_GPM_METRIC_ANY_TENSOR_UTIL: 33.0}
    nv.FAKE.devices = [nv.FakeGpu(gpm_metrics=metrics)]
    with GpuReader.open() as reader:
        assert reader is not None
        values = []
        for _ in range(3):
            nv.FAKE.advance()
            sample = reader.sample()[0]
            values.append((sample.sm_active_pct, sample.tensor_active_pct, sample.sm_occupancy_pct))
    assert values == [(80.0, 33.0, None), (90.0, 33.0, None), (90.0, 33.0, None)]  # occupancy: not given
    assert nv.FAKE.count("nvmlGpmSampleAlloc") == 2  # two samples reused in turn, not one per tick
    assert nv.FAKE.live_samples == set() and nv.FAKE.inits == 0  # freed and shut down on close


@pytest.mark.parametrize("make", [
    lambda nv: nv.a100(),  # Ampere: no GPM, and not even asked
    lambda nv: nv.FakeGpu(gpm=False),  # Hopper whose driver says GPM is unsupported
])
def test_no_gpm_gives_none(fake_nvml: ModuleType, make: object) -> None:
    fake_nvml.FAKE.devices = [make(fake_nvml)]  # type: ignore[operator]
    with GpuReader.open() as reader:
        assert reader is not None and not reader.devices[0].gpm
        sample = reader.sample()[0]
    assert (sample.sm_active_pct, sample.sm_occupancy_pct, sample.tensor_active_pct, sample.dram_bw_util_pct) == (
        None, None, None, None)
    assert sample.util_pct == 0.0
    assert fake_nvml.FAKE.count("nvmlGpmSampleAlloc") == 0


def test_gpm_failing_later_stops_gpm_only(fake_nvml: ModuleType) -> None:
    nv = fake_nvml
    nv.FAKE.devices = [nv.FakeGpu(uuid="GPU-a")]
    with GpuReader.open() as reader:
        assert reader is not None
        nv.FAKE.devices[0].errors["nvmlGpmSampleGet"] = nv.NVML_ERROR_NOT_SUPPORTED
        first, second = reader.sample()[0], reader.sample()[0]
    assert first.sm_active_pct is None and second.power_w == 100.0
    assert nv.FAKE.count("nvmlGpmSampleGet") == 2  # the sample at open, then one refused try
    assert nv.FAKE.live_samples == set()


def test_sample_never_lists_processes(fake_nvml: ModuleType) -> None:
    nv = fake_nvml
    nv.FAKE.devices = [nv.FakeGpu(uuid="GPU-a", processes=[(4242, GIB)]), nv.a100(uuid="GPU-b")]
    with GpuReader.open() as reader:
        assert reader is not None
        for _ in range(5):
            reader.sample()
            nv.FAKE.advance()
    called = {function for function, _ in nv.FAKE.calls}
    assert called & set(PROCESS_LISTINGS) == set() and not [f for f in called if "Process" in f]


def test_close_is_idempotent_and_balances_init(fake_nvml: ModuleType) -> None:
    three_gpus(fake_nvml)
    reader = GpuReader.open()
    assert reader is not None and fake_nvml.FAKE.inits == 1
    reader.close()
    reader.close()
    assert fake_nvml.FAKE.inits == 0 and fake_nvml.FAKE.count("nvmlShutdown") == 1
    assert fake_nvml.FAKE.live_samples == set()
