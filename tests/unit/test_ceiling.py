"""The measured ceiling: a real CPU matmul benchmark (small n, well under a second) and its cache.

No test asserts a speed: only that a measurement happened or was read back from the cache.
A cached entry is told apart from a fresh measurement by a sentinel rate written into the file.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from cl_hpc.profile import ceiling as ceiling_module
from cl_hpc.profile.ceiling import (
    CACHE_ENV,
    Ceiling,
    cache_key,
    check_dtype,
    cpu_model,
    default_cache_path,
    measure,
    measured_ceiling,
)

SIZE = 128
SENTINEL = 123.0

# The first processor block of /proc/cpuinfo on the development VM, pasted byte for byte
# (flags and bugs shortened). Note "model" precedes "model name".
CPUINFO_X86 = (
    "processor\t: 0\n"
    "vendor_id\t: AuthenticAMD\n"
    "cpu family\t: 25\n"
    "model\t\t: 17\n"
    "model name\t: AMD EPYC\n"
    "stepping\t: 1\n"
    "microcode\t: 0x1000065\n"
    "cpu MHz\t\t: 2596.140\n"
    "cache size\t: 1024 KB\n"
    "physical id\t: 0\n"
    "siblings\t: 2\n"
    "core id\t\t: 0\n"
    "cpu cores\t: 2\n"
    "flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep avx2 avx512f avx512_bf16\n"
    "bogomips\t: 5192.28\n"
    "power management:\n"
    "\n"
    "processor\t: 1\n"
    "vendor_id\t: AuthenticAMD\n"
)
# Hand-written in the arm64 kernel's format: it has no "model name" line at all.
CPUINFO_ARM64 = (
    "processor\t: 0\n"
    "BogoMIPS\t: 50.00\n"
    "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\n"
    "CPU implementer\t: 0x41\n"
    "CPU part\t: 0xd0c\n"
)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "nested" / "ceiling.json"


def _key() -> str:
    return cache_key(ceiling_module.device_name("cpu"), "fp32", SIZE, torch.__version__)


def _set_rate(path: Path, rate: float) -> None:
    data = json.loads(path.read_text())
    data["entries"][_key()]["flops_per_s"] = rate
    path.write_text(json.dumps(data))


def _assert_measured(result: Ceiling) -> None:
    assert math.isfinite(result.flops_per_s) and result.flops_per_s > 0
    assert result.flops_per_s != SENTINEL
    assert result.iterations >= 1 and result.seconds > 0


def test_cpu_measurement_is_positive_and_described(cache: Path) -> None:
    result = measured_ceiling("cpu", "fp32", cache=cache, size=SIZE)
    _assert_measured(result)
    assert (result.dtype, result.matmul_size, result.torch_version) == ("fp32", SIZE, torch.__version__)
    assert result.device_name.endswith(f"({torch.get_num_threads()} threads)")
    assert result.flops_per_s == pytest.approx(2 * SIZE**3 * result.iterations / result.seconds)


def test_second_call_is_read_from_the_cache(cache: Path) -> None:
    first = measured_ceiling("cpu", "fp32", cache=cache, size=SIZE)
    assert cache.is_file()
    assert measured_ceiling("cpu", "fp32", cache=cache, size=SIZE) == first
    _set_rate(cache, SENTINEL)
    again = measured_ceiling("cpu", torch.float32, cache=cache, size=SIZE)
    assert again.flops_per_s == SENTINEL
    assert asdict(again) | {"flops_per_s": first.flops_per_s} == asdict(first)


def test_refresh_measures_again_and_rewrites_the_entry(cache: Path) -> None:
    measured_ceiling("cpu", "fp32", cache=cache, size=SIZE)
    _set_rate(cache, SENTINEL)
    fresh = measured_ceiling("cpu", "fp32", cache=cache, size=SIZE, refresh=True)
    _assert_measured(fresh)
    stored = json.loads(cache.read_text())["entries"][_key()]
    assert stored["flops_per_s"] == fresh.flops_per_s


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe\x00garbage",
        b"[]",
        b'{"format": 99, "entries": {}}',
        b'{"format": 1, "entries": []}',
    ],
)
def test_corrupt_cache_is_replaced_by_a_measurement(cache: Path, content: bytes) -> None:
    cache.parent.mkdir(parents=True)
    cache.write_bytes(content)
    _assert_measured(measured_ceiling("cpu", "fp32", cache=cache, size=SIZE))
    assert _key() in json.loads(cache.read_text())["entries"]


def test_malformed_entry_is_measured_again(cache: Path) -> None:
    measured_ceiling("cpu", "fp32", cache=cache, size=SIZE)
    data = json.loads(cache.read_text())
    data["entries"][_key()]["flops_per_s"] = "fast"
    cache.write_text(json.dumps(data))
    _assert_measured(measured_ceiling("cpu", "fp32", cache=cache, size=SIZE))


def test_other_entries_survive_a_write(cache: Path) -> None:
    other = measured_ceiling("cpu", "bf16", cache=cache, size=SIZE)
    measured_ceiling("cpu", "fp32", cache=cache, size=SIZE)
    entries = json.loads(cache.read_text())["entries"]
    assert len(entries) == 2
    assert measured_ceiling("cpu", "bf16", cache=cache, size=SIZE) == other


def test_env_var_and_home_choose_the_default_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert default_cache_path() == tmp_path / "home" / ".cache" / "cl_hpc" / "ceiling.json"
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "shared"))
    assert default_cache_path() == tmp_path / "shared" / "ceiling.json"
    measured_ceiling("cpu", "fp32", size=SIZE)
    assert (tmp_path / "shared" / "ceiling.json").is_file()


@pytest.mark.parametrize(("dtype", "inside"), [("fp32", "highest"), ("bf16", "highest")])
def test_fp32_pins_ieee_matmuls_and_restores_the_setting(
    dtype: str, inside: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    original = ceiling_module._best_seconds

    def spy(*args: object) -> tuple[float, int, int]:
        seen.append(torch.get_float32_matmul_precision())
        return original(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(ceiling_module, "_best_seconds", spy)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")  # as a process that enabled TF32 would
    try:
        measure("cpu", dtype, size=SIZE)
        assert torch.get_float32_matmul_precision() == "high"
    finally:
        torch.set_float32_matmul_precision(before)
    assert seen == [inside]


def test_measure_ignores_the_cache(cache: Path) -> None:
    _assert_measured(measure("cpu", "bf16", size=SIZE))
    assert not cache.exists()


def test_cache_key_separates_torch_versions_sizes_and_dtypes() -> None:
    keys = {
        cache_key("AMD EPYC (2 threads)", "fp32", 1024, "2.5.0"),
        cache_key("AMD EPYC (2 threads)", "fp32", 1024, "2.6.0"),
        cache_key("AMD EPYC (2 threads)", "fp32", 128, "2.5.0"),
        cache_key("AMD EPYC (2 threads)", "bf16", 1024, "2.5.0"),
        cache_key("AMD EPYC (4 threads)", "fp32", 1024, "2.5.0"),
    }
    assert len(keys) == 5


@pytest.mark.parametrize(("text", "model"), [(CPUINFO_X86, "AMD EPYC"), (CPUINFO_ARM64, None), ("", None)])
def test_cpu_model_reads_model_name(text: str, model: str | None) -> None:
    assert cpu_model(text) == model


@pytest.mark.parametrize(
    ("dtype", "device_type", "key"),
    [("fp32", "cpu", "fp32"), (torch.bfloat16, "cpu", "bf16"), ("half", "cpu", "fp16"), ("tf32", "cuda", "tf32")],
)
def test_check_dtype_accepts(dtype: object, device_type: str, key: str) -> None:
    assert check_dtype(dtype, device_type) == key


@pytest.mark.parametrize(
    ("dtype", "device_type", "message"),
    [
        ("tf32", "cpu", "on the CPU measure fp32"),
        ("fp8", "cuda", "valid are fp32, tf32, bf16, fp16"),
        (torch.int8, "cpu", "valid are"),
        ("fp64", "cpu", "cannot measure dtype 'fp64'"),
    ],
)
def test_check_dtype_rejects_with_what_is_valid(dtype: object, device_type: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_dtype(dtype, device_type)


def test_bad_devices_are_refused(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="valid are 'cpu', 'cuda'"):
        measured_ceiling("meta", cache=cache)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        measured_ceiling("cuda", "bf16", cache=cache)
    assert not cache.exists()


def test_from_json_rejects_what_it_did_not_write() -> None:
    good = Ceiling(1e9, "cpu x", "fp32", 128, 3, 0.5, "2026-01-01T00:00:00+00:00", "2.5.0")
    assert Ceiling.from_json(asdict(good)) == good
    for broken in [None, [], {}, asdict(good) | {"flops_per_s": -1.0}, asdict(good) | {"matmul_size": "128"}]:
        assert Ceiling.from_json(broken) is None
    assert Ceiling.from_json(asdict(good) | {"flops_per_s": float("nan")}) is None
