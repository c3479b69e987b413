"""The profiler on a GPU node, with NVML faked at its module boundary (tests/fakes/pynvml.py):
the sampler thread, the record's GPU section, energy, GPM and MFU against the datasheet peak."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from cl_hpc.profile import peaks, record
from cl_hpc.profile.task import ProfileSettings, TaskProfiler

# interval far longer than the test: the thread never samples, the test does, between fake ticks
MANUAL = ProfileSettings(interval_s=3600, ceiling=False)


def _profiler(tmp_path: Path) -> TaskProfiler:
    ident = {"run_id": "r1", "key": "train", "task": "train", "attempt": 1, "segment": 0, "job_id": None}
    return TaskProfiler(tmp_path, ident, {"gpus": 2, "mem_gb": 8.0, "time_min": 10, "cpus": 4}, MANUAL)


def _run(nv: ModuleType, prof: TaskProfiler, ticks: int) -> dict:
    prof.start()
    for _ in range(ticks):
        nv.FAKE.advance()
        assert prof.sampler is not None
        prof.sampler.sample()
    return prof.finish("COMPLETED")


def test_two_busy_h100s_give_utilization_energy_gpm_and_a_datasheet_peak(fake_nvml: ModuleType, tmp_path: Path) -> None:
    nv = fake_nvml
    nv.FAKE.devices = [nv.FakeGpu(uuid=f"GPU-{i}-test", util=[0, 90, 90, 90, 90], power_mw=400_000) for i in range(2)]
    data = _run(nv, _profiler(tmp_path), ticks=4)
    assert [g["name"] for g in data["gpus"]] == ["NVIDIA H100 80GB HBM3"] * 2
    for gpu in data["gpus"]:
        assert gpu["util_pct_mean"] == pytest.approx((0 + 4 * 90) / 6, abs=15)  # start/stop samples included
        assert gpu["energy_j"] == pytest.approx(4 * 400.0)  # 4 ticks of 1 s at 400 W, from the counter
        assert gpu["energy_source"] == "nvml-counter"
        assert gpu["tensor_active_pct_mean"] is not None  # Hopper: GPM
    assert data["notes"]["gpu_sampling"].startswith("NVML: 2 GPU(s)")
    on_disk = json.loads((tmp_path / "profiles" / "1-0.json").read_text())
    assert on_disk["gpus"][0]["uuid"] == "GPU-0-test" and "gpu1.util_pct" in on_disk["series"]
    peak = peaks.peak_flops(data["gpus"][0]["name"], "bf16")
    assert peak == pytest.approx(989.4e12)
    assert record.mfu(989.4e12 * 0.4, 1.0, peak) == pytest.approx(0.4)


def test_an_ampere_gpu_has_no_gpm_and_an_unsupported_counter_falls_back_to_power(fake_nvml: ModuleType,
                                                                                   tmp_path: Path) -> None:
    nv = fake_nvml
    nv.FAKE.devices = [nv.a100(uuid="GPU-a-test", power_mw=200_000,
                               errors={"nvmlDeviceGetTotalEnergyConsumption": nv.NVML_ERROR_NOT_SUPPORTED})]
    data = _run(nv, _profiler(tmp_path), ticks=3)
    gpu = data["gpus"][0]
    assert gpu["tensor_active_pct_mean"] is None and gpu["energy_source"] == "power-integral"
    assert gpu["energy_j"] is not None and gpu["energy_j"] >= 0


def test_no_driver_means_no_gpu_section_and_says_why(tmp_path: Path) -> None:
    data = _profiler(tmp_path).start().finish("COMPLETED")  # the real pynvml: no driver on this machine
    assert data["gpus"] == [] and data["notes"]["gpu_sampling"].startswith("no GPU")
