"""Dense datasheet peak FLOP/s per GPU and dtype, and NVML device-name parsing.

Every value is DENSE. NVIDIA's Ampere, Ada, Hopper and Blackwell datasheets print tensor-core
numbers "with sparsity" (2:4 structured sparsity); training never uses that, so a value here is
the datasheet's starred number divided by two, unless a whitepaper prints the dense one itself.
Lightning's table uses sparse numbers for the H200; do not copy it.

A missing value is None: the GPU has no such tensor-core path (V100 bf16, T4 fp8) or no
datasheet states it. We never guess: a wrong peak silently corrupts every MFU computed from it.

Pure standard library: the job path and the right-sizer import this without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The dtype keys of the table, in the order a report lists them.
DTYPES: tuple[str, ...] = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8")


@dataclass(frozen=True)
class GpuPeaks:
    """One GPU's dense peaks in FLOP/s (int8 in OP/s); None where there is no such path."""

    key: str  # table key, e.g. "h100-sxm"; what parse_device_name returns
    name: str  # marketing name, for reports
    source: str  # the datasheet (and edition) the numbers come from
    fp32: float | None  # CUDA cores, not tensor cores: what fp32 matmuls get with TF32 off
    tf32: float | None  # tensor cores, fp32 inputs rounded to TF32
    bf16: float | None  # tensor cores, fp32 accumulate
    fp16: float | None  # tensor cores, fp32 accumulate
    fp8: float | None  # tensor cores (Hopper and later, Ada)
    int8: float | None  # tensor cores, OP/s

    def peak(self, dtype: str) -> float | None:
        """The peak for a canonical dtype key (see DTYPES); None for any other string."""
        return getattr(self, dtype) if dtype in DTYPES else None


_H100_DOCS = (
    "NVIDIA H100 Tensor Core GPU Architecture whitepaper (GTC22, dense columns), "
    "https://resources.nvidia.com/en-us-tensor-core/gtc22-whitepaper-hopper; "
    "H100 datasheet https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet"
)
_NVL_NOTE = (
    "per GPU, current edition (FP32 60, TF32 835*, BF16/FP16 1671*, FP8/INT8 3341*, *=sparse); "
    "an early edition quoted a 2-GPU NVLink pair, not used here"
)

_ROWS: tuple[GpuPeaks, ...] = (
    # Hopper. The whitepaper prints the dense numbers for SXM5 and PCIe, so no halving there.
    GpuPeaks(
        "h100-sxm", "H100 SXM5", _H100_DOCS,
        fp32=66.9e12, tf32=494.7e12, bf16=989.4e12, fp16=989.4e12, fp8=1978.9e12, int8=1978.9e12,
    ),
    GpuPeaks(
        "h100-pcie", "H100 PCIe", _H100_DOCS,
        fp32=51.2e12, tf32=378e12, bf16=756e12, fp16=756e12, fp8=1513e12, int8=1513e12,
    ),
    GpuPeaks(
        "h100-nvl", "H100 NVL", f"H100 datasheet, H100 NVL column, {_NVL_NOTE}; "
        "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet",
        fp32=60e12, tf32=417.5e12, bf16=835.5e12, fp16=835.5e12, fp8=1670.5e12, int8=1670.5e12,
    ),
    # The H200 is the H100 SXM5 die at the same clocks with more HBM: its datasheet prints the
    # same (rounded, sparse) numbers, so we use the H100 whitepaper's unrounded dense ones.
    GpuPeaks(
        "h200-sxm", "H200 SXM", "NVIDIA H200 datasheet (SC23), H200 SXM column: FP32 67, TF32 989*, "
        "BF16/FP16 1979*, FP8/INT8 3958* (*=sparse), equal to H100 SXM5, dense values from "
        "the H100 whitepaper; https://nvdam.widen.net/s/nb5zzzsjdf/hpc-datasheet-sc23-h200-datasheet-3002446",
        fp32=66.9e12, tf32=494.7e12, bf16=989.4e12, fp16=989.4e12, fp8=1978.9e12, int8=1978.9e12,
    ),
    GpuPeaks(
        "h200-nvl", "H200 NVL", "NVIDIA H200 datasheet, H200 NVL column: FP32 60, TF32 835*, "
        "BF16/FP16 1671*, FP8/INT8 3341* (*=sparse), halved; "
        "https://nvdam.widen.net/s/nb5zzzsjdf/hpc-datasheet-sc23-h200-datasheet-3002446",
        fp32=60e12, tf32=417.5e12, bf16=835.5e12, fp16=835.5e12, fp8=1670.5e12, int8=1670.5e12,
    ),
    # GH200's GPU is the H100 SXM5 compute (the datasheet prints the same sparse numbers); only
    # its memory and power envelope differ, and peaks ignore both.
    GpuPeaks(
        "gh200", "GH200 Grace Hopper (GPU)", "NVIDIA GH200 Grace Hopper Superchip datasheet: "
        "FP32 67, TF32 989*, BF16/FP16 1979*, FP8/INT8 3958* (*=sparse), same as H100 SXM5; "
        "https://resources.nvidia.com/en-us-grace-cpu/grace-hopper-superchip",
        fp32=66.9e12, tf32=494.7e12, bf16=989.4e12, fp16=989.4e12, fp8=1978.9e12, int8=1978.9e12,
    ),
    # Blackwell, HGX B200 (1000 W). NVML says "NVIDIA B200"; GB200 (1200 W, higher) is not here.
    GpuPeaks(
        "b200", "B200 (HGX, 1000 W)", "NVIDIA HGX B200 specifications, per GPU: FP32 75, "
        "TF32 2.2P*, BF16/FP16 4.5P*, FP8 9P*, INT8 9P* (*=sparse; 'dense is one-half sparse'); "
        "https://www.nvidia.com/en-us/data-center/hgx/",
        fp32=75e12, tf32=1.1e15, bf16=2.25e15, fp16=2.25e15, fp8=4.5e15, int8=4.5e15,
    ),
    # Ampere. The A100 datasheet prints dense | sparse; SXM4 and PCIe, 40 and 80 GB all agree.
    GpuPeaks(
        "a100", "A100 (SXM4 or PCIe, 40/80 GB)", "NVIDIA A100 datasheet r4 (dense column): "
        "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
        "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf",
        fp32=19.5e12, tf32=156e12, bf16=312e12, fp16=312e12, fp8=None, int8=624e12,
    ),
    GpuPeaks(
        "a40", "A40", "NVIDIA A40 datasheet (dense | sparse: TF32 74.8|149.6, BF16/FP16 149.7|299.4, "
        "INT8 299.3|598.6); https://images.nvidia.com/content/Solutions/data-center/a40/"
        "nvidia-a40-datasheet.pdf",
        fp32=37.4e12, tf32=74.8e12, bf16=149.7e12, fp16=149.7e12, fp8=None, int8=299.3e12,
    ),
    GpuPeaks(
        "a10", "A10", "NVIDIA A10 datasheet (dense | sparse: TF32 62.5|125, BF16/FP16 125|250, "
        "INT8 250|500); https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a10/pdf/"
        "a10-datasheet.pdf",
        fp32=31.2e12, tf32=62.5e12, bf16=125e12, fp16=125e12, fp8=None, int8=250e12,
    ),
    # The A10G is an AWS-only part with no NVIDIA datasheet. Its GA102 has 80 SMs at 1.71 GHz
    # with the GeForce-rate tensor cores (512 dense FLOP/clk/SM): 80 * 512 * 1.71e9 = 70.0e12,
    # which matches the figure below. TF32 and INT8 are published nowhere we trust: None.
    GpuPeaks(
        "a10g", "A10G (AWS)", "no NVIDIA datasheet; Baseten, 'NVIDIA A10 vs A10G for ML model "
        "inference' (FP32 35, FP16/BF16 tensor 70), "
        "https://www.baseten.co/blog/nvidia-a10-vs-a10g-for-ml-model-inference/",
        fp32=35e12, tf32=None, bf16=70e12, fp16=70e12, fp8=None, int8=None,
    ),
    # Ada. The L40S sheet prints BF16/FP16 "362.05 | 733*": its own dense value is not half its
    # sparse one (366.5); we keep the printed dense value.
    GpuPeaks(
        "l40s", "L40S", "NVIDIA L40S datasheet (dense | sparse: TF32 183|366, BF16/FP16 362.05|733, "
        "FP8/INT8 733|1466); https://resources.nvidia.com/en-us-l40s/l40s-datasheet-28413",
        fp32=91.6e12, tf32=183e12, bf16=362.05e12, fp16=362.05e12, fp8=733e12, int8=733e12,
    ),
    GpuPeaks(
        "l40", "L40", "NVIDIA L40 datasheet (dense | sparse: TF32 90.5|181, BF16/FP16 181.05|362.1, "
        "FP8/INT8 362|724); https://images.nvidia.com/content/Solutions/data-center/"
        "vgpu-L40-datasheet.pdf",
        fp32=90.5e12, tf32=90.5e12, bf16=181.05e12, fp16=181.05e12, fp8=362e12, int8=362e12,
    ),
    GpuPeaks(
        "l4", "L4", "NVIDIA L4 datasheet, sparse only (TF32 120*, BF16/FP16 242*, FP8/INT8 485*), "
        "halved; https://resources.nvidia.com/en-us-data-center-overview/l4-gpu-datasheet",
        fp32=30.3e12, tf32=60e12, bf16=121e12, fp16=121e12, fp8=242.5e12, int8=242.5e12,
    ),
    # Volta and Turing predate sparsity: their numbers are dense as printed. Volta's tensor
    # cores take only fp16; Turing adds int8 but neither has bf16, tf32 or fp8.
    GpuPeaks(
        "v100-sxm2", "V100 SXM2", "NVIDIA V100 datasheet (Tensor 125, FP32 15.7): "
        "https://images.nvidia.com/content/technologies/volta/pdf/"
        "volta-v100-datasheet-update-us-1165301-r5.pdf",
        fp32=15.7e12, tf32=None, bf16=None, fp16=125e12, fp8=None, int8=None,
    ),
    GpuPeaks(
        "v100-pcie", "V100 PCIe", "NVIDIA V100 datasheet (Tensor 112, FP32 14): "
        "https://images.nvidia.com/content/technologies/volta/pdf/"
        "volta-v100-datasheet-update-us-1165301-r5.pdf",
        fp32=14e12, tf32=None, bf16=None, fp16=112e12, fp8=None, int8=None,
    ),
    GpuPeaks(
        "t4", "T4", "NVIDIA T4 datasheet (FP32 8.1, mixed FP16/FP32 65, INT8 130): "
        "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/tesla-t4/"
        "t4-tensor-core-datasheet-951643.pdf",
        fp32=8.1e12, tf32=None, bf16=None, fp16=65e12, fp8=None, int8=130e12,
    ),
)

#: Every GPU the table knows, by key.
GPUS: dict[str, GpuPeaks] = {row.key: row for row in _ROWS}

# ------------------------------------------------------------------ NVML device names

# Models whose name alone fixes the peaks, whatever follows (memory size, form factor).
_PLAIN_MODELS: dict[str, str] = {
    "gh200": "gh200", "b200": "b200", "a100": "a100", "a40": "a40", "a10": "a10",
    "a10g": "a10g", "l40s": "l40s", "l40": "l40", "l4": "l4", "t4": "t4",
}
_VENDOR_WORDS = ("nvidia", "tesla")
_SXM_WORDS = frozenset({"sxm", "sxm5", "hbm3"})


def _h100(qualifiers: frozenset[str]) -> str | None:
    if "nvl" in qualifiers:
        return "h100-nvl"
    if "pcie" in qualifiers:
        return "h100-pcie"
    # SXM5 reports "H100 80GB HBM3". A bare or unfamiliar H100 name could be any of three
    # parts whose peaks differ by 30 %, so it gets None, not a guess.
    return "h100-sxm" if qualifiers & _SXM_WORDS else None


def _h200(qualifiers: frozenset[str]) -> str | None:
    if "nvl" in qualifiers:
        return "h200-nvl"
    # NVML reports the SXM part as plain "NVIDIA H200"; the only other H200 says "NVL".
    return "h200-sxm" if qualifiers <= _SXM_WORDS | {"141gb", "hbm3e"} else None


def _v100(qualifiers: frozenset[str]) -> str | None:
    if "sxm2" in qualifiers:
        return "v100-sxm2"
    # "PCIE" but not "FHHL": the low-profile FHHL card runs at lower clocks.
    return "v100-pcie" if "pcie" in qualifiers and "fhhl" not in qualifiers else None


_VARIANT_MODELS = {"h100": _h100, "h200": _h200, "v100": _v100}


def _words(nvml_name: str) -> list[str]:
    """Lower-case words with the vendor prefix dropped: "Tesla V100-SXM2-16GB" -> [v100, sxm2, 16gb]."""
    words = nvml_name.lower().replace("-", " ").replace("_", " ").split()
    while words and words[0] in _VENDOR_WORDS:
        words = words[1:]
    return words


def parse_device_name(nvml_name: str) -> str | None:
    """The table key for a device name as NVML (or torch.cuda.get_device_name) reports it.

    None for a GPU the table lacks and for a MIG slice ("... MIG 1g.10gb"): a slice has a
    fraction of the SMs, so the whole GPU's peak would overstate it. Table keys map to themselves.
    """
    words = _words(nvml_name)
    if not words or "mig" in words:
        return None
    model, qualifiers = words[0], frozenset(words[1:])
    if model in _PLAIN_MODELS:
        return _PLAIN_MODELS[model]
    variant = _VARIANT_MODELS.get(model)
    return variant(qualifiers) if variant else None


def gpu_peaks(device_name: str) -> GpuPeaks | None:
    """The table row for an NVML device name or a table key; None if unknown."""
    key = parse_device_name(device_name)
    return GPUS.get(key) if key else None


# ------------------------------------------------------------------ dtypes

_DTYPE_ALIASES: dict[str, str] = {
    "fp32": "fp32", "float32": "fp32", "float": "fp32",
    "tf32": "tf32", "tfloat32": "tf32",
    "bf16": "bf16", "bfloat16": "bf16",
    "fp16": "fp16", "float16": "fp16", "half": "fp16",
    "fp8": "fp8", "float8_e4m3fn": "fp8", "float8_e5m2": "fp8",
    "int8": "int8",
}


def normalize_dtype(dtype: object, *, tf32: bool = False) -> str | None:
    """A canonical dtype key (see DTYPES) for a key, alias or torch dtype; None if unknown.

    A torch dtype is read through str() ("torch.bfloat16"), so torch is never imported here.
    fp32 becomes "tf32" only when the caller says TF32 matmuls are on (on CUDA that is
    torch.get_float32_matmul_precision() != "highest"): the hardware path, not the storage
    dtype, sets the peak.
    """
    text = str(dtype).strip().lower().removeprefix("torch.")
    key = _DTYPE_ALIASES.get(text)
    return "tf32" if key == "fp32" and tf32 else key


def peak_flops(device_name: str, dtype: object, *, tf32: bool = False) -> float | None:
    """Dense datasheet peak in FLOP/s (OP/s for int8) for one GPU, or None; never a guess.

    device_name is what NVML reports ("NVIDIA H100 80GB HBM3") or a table key ("h100-sxm");
    dtype is a key of DTYPES, an alias ("bfloat16") or a torch dtype (torch.bfloat16).
    """
    row = gpu_peaks(device_name)
    key = normalize_dtype(dtype, tf32=tf32)
    return row.peak(key) if row and key else None

