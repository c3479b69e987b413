"""What a finished fit computed and what it could have: FLOPs per step, the datasheet peak of its
device and dtype, and the measured matmul ceiling. Imports torch: call it from a training task."""

from __future__ import annotations

from typing import Any

import torch

from cl_hpc.profile import ceiling, flops, peaks

_PRECISION = {"32-true": "fp32", "32": "fp32", "bf16-mixed": "bf16", "bf16-true": "bf16", "bf16": "bf16",
              "16-mixed": "fp16", "16-true": "fp16", "16": "fp16", "transformer-engine": "fp8"}


def compute_dtype(precision: str, device: str) -> str | None:
    """The matmul dtype of a Lightning precision setting; fp32 matmuls run as TF32 on a GPU when
    torch allows it (``torch.set_float32_matmul_precision("high")``)."""
    dtype = _PRECISION.get(precision)
    if dtype == "fp32" and device.startswith("cuda") and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return dtype


def fit_compute(module: torch.nn.Module, example_batch: Any, device: str, precision: str, world_size: int,
                measure_ceiling: bool) -> dict[str, Any]:
    """FLOPs per step of one process and the peaks its MFU is taken against; every failure to
    find a figure is a ``why`` entry, never an exception: the task succeeded whatever this says."""
    out: dict[str, Any] = {"device": device, "precision": precision, "why": []}
    dtype = out["dtype"] = compute_dtype(precision, device)
    out["device_name"] = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") \
        else ceiling.device_name("cpu")
    _add_flops(out, module, example_batch, world_size)
    if device.startswith("cuda") and dtype:
        out["peak_flops_per_s"] = peaks.peak_flops(out["device_name"], dtype)
        if out["peak_flops_per_s"] is None:
            out["why"].append(f"no datasheet peak for {out['device_name']!r} in {dtype} (cl_hpc/profile/peaks.py)")
    else:
        out["peak_flops_per_s"] = None
        out["why"].append("datasheet MFU is for GPUs; CPUs are measured against the matmul ceiling")
    if measure_ceiling and dtype:
        _add_ceiling(out, device, dtype)
    return out


def _add_flops(out: dict[str, Any], module: torch.nn.Module, batch: Any, world_size: int) -> None:
    given = hasattr(module, "flops_per_step") or hasattr(module, "transformer_spec")
    if world_size > 1 and not given:
        # Counting runs a backward; under DDP its gradient hooks would start collectives on one
        # rank only. A model that states its FLOPs (flops_per_step) avoids the count.
        out["flops_per_step"] = out["flops_method"] = None
        out["why"].append("FLOPs are not counted under DDP: define flops_per_step(batch_size) on the model")
        return
    try:
        counted = flops.flops_per_step(module, batch)
    except Exception as exc:  # a model the counter cannot run: report, never fail the task
        out["flops_per_step"] = out["flops_method"] = None
        out["why"].append(f"FLOPs not counted: {type(exc).__name__}: {exc}")
        return
    out.update(flops_per_step=counted.flops, flops_method=counted.method, flops_batch_size=counted.batch_size)


def _add_ceiling(out: dict[str, Any], device: str, dtype: str) -> None:
    try:
        measured = ceiling.measured_ceiling(device, dtype)
    except (ValueError, RuntimeError) as exc:
        out["ceiling_flops_per_s"] = None
        out["why"].append(f"no measured ceiling: {exc}")
        return
    out["ceiling_flops_per_s"] = measured.flops_per_s
    out["ceiling"] = {"matmul_size": measured.matmul_size, "measured_at": measured.measured_at}
