"""The dense peak-FLOPS table and NVML name parsing, on tables of cases.

NVML_NAMES are device names as NVML / torch.cuda.get_device_name report them on real machines.
SPARSE_PRINTED is an independent transcription of the starred ("with sparsity") numbers that
NVIDIA's datasheets print: the table must hold half of each, never the number itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cl_hpc.profile.peaks import DTYPES, GPUS, GpuPeaks, gpu_peaks, normalize_dtype, parse_device_name, peak_flops

T = 1e12

# name as reported -> (table key, dense bf16, fp32 on CUDA cores)
NVML_NAMES: list[tuple[str, str, float | None, float]] = [
    ("NVIDIA H100 80GB HBM3", "h100-sxm", 989.4 * T, 66.9 * T),
    ("NVIDIA H100 PCIe", "h100-pcie", 756 * T, 51.2 * T),
    ("NVIDIA H100 NVL", "h100-nvl", 835.5 * T, 60 * T),
    ("NVIDIA H200", "h200-sxm", 989.4 * T, 66.9 * T),
    ("NVIDIA H200 NVL", "h200-nvl", 835.5 * T, 60 * T),
    ("NVIDIA GH200 480GB", "gh200", 989.4 * T, 66.9 * T),
    ("NVIDIA B200", "b200", 2250 * T, 75 * T),
    ("NVIDIA A100-SXM4-80GB", "a100", 312 * T, 19.5 * T),
    ("NVIDIA A100-SXM4-40GB", "a100", 312 * T, 19.5 * T),
    ("NVIDIA A100-PCIE-40GB", "a100", 312 * T, 19.5 * T),
    ("NVIDIA A100 80GB PCIe", "a100", 312 * T, 19.5 * T),
    ("NVIDIA A40", "a40", 149.7 * T, 37.4 * T),
    ("NVIDIA A10", "a10", 125 * T, 31.2 * T),
    ("NVIDIA A10G", "a10g", 70 * T, 35 * T),
    ("NVIDIA L40S", "l40s", 362.05 * T, 91.6 * T),
    ("NVIDIA L40", "l40", 181.05 * T, 90.5 * T),
    ("NVIDIA L4", "l4", 121 * T, 30.3 * T),
    ("Tesla V100-SXM2-16GB", "v100-sxm2", None, 15.7 * T),
    ("Tesla V100-SXM2-32GB", "v100-sxm2", None, 15.7 * T),
    ("Tesla V100-PCIE-32GB", "v100-pcie", None, 14 * T),
    ("Tesla T4", "t4", None, 8.1 * T),
]


@pytest.mark.parametrize(("name", "key", "bf16", "fp32"), NVML_NAMES)
def test_nvml_name_maps_to_key_and_peaks(name: str, key: str, bf16: float | None, fp32: float) -> None:
    assert parse_device_name(name) == key
    if bf16 is None:
        assert peak_flops(name, "bf16") is None
    else:
        assert peak_flops(name, "bf16") == pytest.approx(bf16)
    assert peak_flops(name, "fp32") == pytest.approx(fp32)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        # older drivers drop the "NVIDIA " prefix; case and spacing vary
        ("A100-SXM4-40GB", "a100"),
        ("H100 PCIe", "h100-pcie"),
        ("nvidia  h100   nvl", "h100-nvl"),
        ("TESLA T4", "t4"),
        ("  NVIDIA L40S  ", "l40s"),
        ("NVIDIA H100 SXM5 80GB", "h100-sxm"),
        ("V100-SXM2-16GB", "v100-sxm2"),
    ],
)
def test_names_are_robust_to_prefix_case_and_spacing(name: str, key: str) -> None:
    assert parse_device_name(name) == key


@pytest.mark.parametrize(
    "name",
    [
        "NVIDIA GeForce RTX 4090",
        "NVIDIA RTX A6000",
        "NVIDIA RTX A1000",  # "A10" must not match a prefix of another model
        "NVIDIA A100X",
        "NVIDIA GB200",  # 1200 W part with higher clocks than the B200 row
        "NVIDIA H100",  # SXM, PCIe or NVL: peaks differ by 30 %, so no guess
        "Tesla V100S-PCIE-32GB",
        "Tesla V100-FHHL-16GB",
        "NVIDIA A100-SXM4-40GB MIG 1g.5gb",  # a slice has a fraction of the SMs
        "NVIDIA H100 80GB HBM3 MIG 3g.40gb",
        "NVIDIA",
        "",
    ],
)
def test_unknown_names_give_none(name: str) -> None:
    assert parse_device_name(name) is None
    assert gpu_peaks(name) is None
    assert peak_flops(name, "bf16") is None


@pytest.mark.parametrize(
    ("name", "other"),
    [("NVIDIA L40S", "l40"), ("NVIDIA A10G", "a10"), ("NVIDIA H100 NVL", "h100-sxm"), ("NVIDIA H200 NVL", "h200-sxm")],
)
def test_near_names_do_not_collide(name: str, other: str) -> None:
    assert parse_device_name(name) not in (other, None)


@pytest.mark.parametrize("key", sorted(GPUS))
def test_table_keys_map_to_themselves(key: str) -> None:
    assert parse_device_name(key) == key
    assert peak_flops(key, "fp32") == GPUS[key].fp32


@pytest.mark.parametrize("row", GPUS.values(), ids=lambda row: row.key)
def test_every_row_cites_a_source_and_is_ordered(row: GpuPeaks) -> None:
    assert row.name and "http" in row.source
    values = [row.peak(dtype) for dtype in DTYPES]
    assert any(value is not None for value in values)
    assert all(value is None or value > 1e12 for value in values)
    # tensor paths are faster than the CUDA-core fp32 path, and fp8 at least as fast as bf16
    for fast, slow in [("tf32", "fp32"), ("bf16", "tf32"), ("fp16", "fp32"), ("fp8", "bf16")]:
        if row.peak(fast) is not None and row.peak(slow) is not None:
            assert row.peak(fast) >= row.peak(slow), (row.key, fast, slow)


# key -> dtype -> the starred "with sparsity" number the datasheet prints, in TFLOPS / TOPS
SPARSE_PRINTED: dict[str, dict[str, float]] = {
    "h100-sxm": {"tf32": 989.4, "bf16": 1978.9, "fp16": 1978.9, "fp8": 3957.8, "int8": 3957.8},
    "h100-pcie": {"tf32": 756, "bf16": 1513, "fp16": 1513, "fp8": 3026, "int8": 3026},
    "h100-nvl": {"tf32": 835, "bf16": 1671, "fp16": 1671, "fp8": 3341, "int8": 3341},
    "h200-sxm": {"tf32": 989, "bf16": 1979, "fp16": 1979, "fp8": 3958, "int8": 3958},
    "h200-nvl": {"tf32": 835, "bf16": 1671, "fp16": 1671, "fp8": 3341, "int8": 3341},
    "gh200": {"tf32": 989, "bf16": 1979, "fp16": 1979, "fp8": 3958, "int8": 3958},
    "b200": {"tf32": 2200, "bf16": 4500, "fp16": 4500, "fp8": 9000, "int8": 9000},
    "a100": {"tf32": 312, "bf16": 624, "fp16": 624, "int8": 1248},
    "a40": {"tf32": 149.6, "bf16": 299.4, "fp16": 299.4, "int8": 598.6},
    "a10": {"tf32": 125, "bf16": 250, "fp16": 250, "int8": 500},
    "l40s": {"tf32": 366, "fp8": 1466, "int8": 1466},  # bf16: see the next test
    "l40": {"tf32": 181, "bf16": 362.1, "fp16": 362.1, "fp8": 724, "int8": 724},
    "l4": {"tf32": 120, "bf16": 242, "fp16": 242, "fp8": 485, "int8": 485},
}


@pytest.mark.parametrize(
    ("key", "dtype", "sparse"),
    [(key, dtype, sparse) for key, row in SPARSE_PRINTED.items() for dtype, sparse in row.items()],
)
def test_table_holds_half_the_sparse_number(key: str, dtype: str, sparse: float) -> None:
    # the datasheets round the sparse numbers to 3-4 digits, hence the tolerance
    assert GPUS[key].peak(dtype) == pytest.approx(sparse * T / 2, rel=2e-3)


def test_h100_sxm_is_dense_and_l40s_keeps_its_printed_dense_value() -> None:
    h100 = GPUS["h100-sxm"]
    assert h100.bf16 == 989.4e12
    assert h100.fp8 == pytest.approx(2 * h100.bf16, rel=1e-4)
    assert h100.tf32 == pytest.approx(h100.bf16 / 2, rel=1e-4)
    # the L40S sheet prints "362.05 | 733*", not half of its own sparse number
    assert GPUS["l40s"].bf16 == 362.05e12


def test_h200_has_h100_sxm_compute_and_nvl_parts_are_slower() -> None:
    for dtype in DTYPES:
        assert GPUS["h200-sxm"].peak(dtype) == GPUS["h100-sxm"].peak(dtype)
        assert GPUS["h200-nvl"].peak(dtype) == GPUS["h100-nvl"].peak(dtype)
    assert GPUS["h100-nvl"].bf16 < GPUS["h100-sxm"].bf16  # per GPU, not a 2-GPU pair


@pytest.mark.parametrize(
    ("name", "dtype"),
    [
        ("Tesla V100-SXM2-16GB", "bf16"),
        ("Tesla V100-SXM2-16GB", "tf32"),
        ("Tesla V100-SXM2-16GB", "fp8"),
        ("Tesla T4", "bf16"),
        ("Tesla T4", "fp8"),
        ("NVIDIA A100-SXM4-80GB", "fp8"),
        ("NVIDIA A100-SXM4-80GB", "fp64"),  # not a table dtype
        ("NVIDIA A100-SXM4-80GB", "torch.float64"),
        ("NVIDIA A100-SXM4-80GB", "source"),  # a field name, not a dtype
        ("NVIDIA A100-SXM4-80GB", "key"),
    ],
)
def test_missing_dtype_gives_none(name: str, dtype: str) -> None:
    assert peak_flops(name, dtype) is None


def test_row_peak_answers_dtype_keys_only() -> None:
    row = GPUS["a100"]
    assert [row.peak(dtype) for dtype in DTYPES] == [19.5e12, 156e12, 312e12, 312e12, None, 624e12]
    assert row.peak("source") is None and row.peak("key") is None and row.peak("bfloat16") is None


@pytest.mark.parametrize(
    ("dtype", "tf32", "key"),
    [
        (torch.float32, False, "fp32"),
        (torch.float32, True, "tf32"),
        (torch.float, False, "fp32"),
        (torch.bfloat16, False, "bf16"),
        (torch.bfloat16, True, "bf16"),  # the tf32 switch touches fp32 only
        (torch.float16, False, "fp16"),
        (torch.half, False, "fp16"),
        (torch.float8_e4m3fn, False, "fp8"),
        (torch.float8_e5m2, False, "fp8"),
        (torch.int8, False, "int8"),
        (torch.float64, False, None),
        ("torch.bfloat16", False, "bf16"),
        ("bfloat16", False, "bf16"),
        ("BF16", False, "bf16"),
        ("float32", True, "tf32"),
        ("tf32", False, "tf32"),
        ("tfloat32", False, "tf32"),
        ("int4", False, None),
    ],
)
def test_dtype_aliases(dtype: object, tf32: bool, key: str | None) -> None:
    assert normalize_dtype(dtype, tf32=tf32) == key


def test_torch_dtypes_reach_the_table() -> None:
    assert peak_flops("NVIDIA A100-SXM4-80GB", torch.float32) == 19.5e12
    assert peak_flops("NVIDIA A100-SXM4-80GB", torch.float32, tf32=True) == 156e12
    assert peak_flops("NVIDIA H100 80GB HBM3", torch.float8_e4m3fn) == 1978.9e12
    assert peak_flops("Tesla T4", torch.int8) == 130e12


def test_importing_peaks_does_not_import_torch() -> None:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    code = "import sys, cl_hpc.profile.peaks; sys.exit(2 if 'torch' in sys.modules else 0)"
    done = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, check=False)
    assert done.returncode == 0  # 2: torch was imported; 1: the import itself failed
