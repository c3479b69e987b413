"""Evaluate and predict with any workload: the one code path the evaluate task, the gate, the watch
and the server share (never a copy of it), in chunks to bound memory, in eval mode, without grad.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch

from cl_hpc.learn.contract import ContractError, Evaluation, class_path
from cl_hpc.learn.workload import Workload

CHUNK_ROWS = 8192  # rows per forward pass: bounds memory on big windows


def evaluate(workload: Workload, frame: pd.DataFrame, chunk_rows: int = CHUNK_ROWS) -> Evaluation:
    """The model's per-row values and window metrics on labelled ``frame`` (raw rows), with the data
    module's baseline rows when it defines a trivial predictor."""
    model, data = workload.model, workload.datamodule
    parts: dict[str, list[np.ndarray]] = {}
    for chunk in _chunks(frame, chunk_rows):
        inputs, targets = data.to_batch(chunk)
        if targets is None:
            raise ContractError(f"{class_path(data)}.to_batch gave no targets for labelled rows (columns "
                                f"{list(frame.columns)}): evaluation needs them")
        for name, values in _run(model, "evaluate_batch", inputs, targets).items():
            parts.setdefault(name, []).append(values)
    per_row = {name: np.concatenate(chunks) for name, chunks in parts.items()}
    metrics = model.summarize(per_row) if len(frame) else {name: None for name in per_row}
    probs, y = per_row.pop("probs", None), per_row.pop("target", None)
    baseline = getattr(data, "baseline_rows", None)
    return Evaluation(rows=len(frame), metrics=dict(metrics), per_row=per_row, probs=probs,
                      y=None if y is None else y.astype(np.int64),
                      baseline=dict(baseline(frame)) if callable(baseline) and len(frame) else {})


def predict(workload: Workload, frame: pd.DataFrame, chunk_rows: int = CHUNK_ROWS) -> dict[str, Any]:
    """The model's outputs for raw rows, decoded by the data module (class indices to labels)."""
    parts: dict[str, list[np.ndarray]] = {}
    for chunk in _chunks(frame, chunk_rows):
        inputs, _ = workload.datamodule.to_batch(chunk)
        for name, values in _run(workload.model, "predict_batch", inputs).items():
            parts.setdefault(name, []).append(values)
    outputs = {name: np.concatenate(chunks) for name, chunks in parts.items()}
    decode = getattr(workload.datamodule, "decode", None)
    return dict(decode(outputs)) if callable(decode) else outputs


def place(workload: Workload, gpus: int) -> Workload:
    """The model on a GPU when the task was given one and CUDA sees it (scoring then runs there, in
    bf16 autocast as training did); on the CPU otherwise. Returns the same workload."""
    if gpus > 0 and torch.cuda.is_available():
        workload.model.cuda()
    return workload


def _run(model: Any, method: str, *args: Any) -> dict[str, np.ndarray]:
    was_training = model.training
    if was_training:  # eval() walks every submodule: a loaded model is already in eval mode
        model.eval()
    device = next(model.parameters(), torch.empty(0)).device
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()
    try:
        with torch.no_grad(), autocast:
            out = getattr(model, method)(*(_to(a, device) for a in args))
    finally:
        if was_training:
            model.train()
    if not isinstance(out, dict):
        raise ContractError(f"{class_path(model)}.{method} returned {type(out).__name__}; it must return a dict "
                            f"of name -> tensor (one row per input row)")
    return {str(k): (v.detach().cpu().double().numpy() if v.is_floating_point() else v.detach().cpu().numpy())
            if isinstance(v, torch.Tensor) else np.asarray(v) for k, v in out.items()}


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to(v, device) for v in batch)
    return batch


def _chunks(frame: pd.DataFrame, size: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(frame), size):
        yield frame.iloc[start:start + size]
