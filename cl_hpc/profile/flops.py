"""FLOPs per training step, the numerator of model FLOPs utilization (MFU).

Three sources, in order of preference; ``StepFlops.method`` says which one answered:

- ``"model"``: the module defines ``flops_per_step(batch_size) -> float`` (or a number attribute of
  that name). The model's author knows best.
- ``"analytic-transformer"``: the module has ``transformer_spec: TransformerSpec``.
- ``"counted"``: one forward + backward of an example batch under torch's ``FlopCounterMode``,
  cached in memory (and optionally in a JSON file) by a signature of the model and the batch.

Convention (MFU as in PaLM, Chowdhery et al. 2022, appendix B): a multiply-add is 2 FLOPs, and only
matmuls, convolutions and attention count. Elementwise ops, norms, softmax, the loss, the optimizer
step and rematerialization (recomputed attention scores: that is HFU, not MFU) do not.

torch is imported inside functions only: the submit side imports this module without paying for it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, cast

from cl_hpc.atomic import read_json, write_json_atomic
from cl_hpc.errors import ClHpcError

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)

LossFn = Callable[[Any], "torch.Tensor"]

# signature key -> {"flops", "batch_size", "ops", "count_s"}; one count per model shape per process.
_MEMORY: dict[str, dict[str, Any]] = {}


class FlopsError(ClHpcError):
    """FLOPs per step could not be determined, or an MFU input is invalid."""


@dataclass(frozen=True)
class TransformerSpec:
    """What the analytic formula needs; a model declares itself a transformer by carrying one."""

    n_params: int  # all parameters
    n_layers: int  # L
    n_heads: int  # H
    head_dim: int  # Q
    seq_len: int  # T, tokens per sequence
    non_embedding_params: int | None = None  # N in 6N when known (embeddings do no matmul forward)

    def __post_init__(self) -> None:
        for name in ("n_params", "n_layers", "n_heads", "head_dim", "seq_len"):
            _require_positive(f"TransformerSpec.{name}", getattr(self, name))
        if self.non_embedding_params is not None:
            _require_positive("TransformerSpec.non_embedding_params", self.non_embedding_params)


@dataclass(frozen=True)
class StepFlops:
    flops: float  # forward + backward FLOPs of one training step at batch_size
    method: str  # "model", "analytic-transformer" or "counted"
    batch_size: int
    detail: dict[str, Any] = field(default_factory=dict, hash=False)


def flops_per_step(model: nn.Module, example_batch: Any = None, *, batch_size: int | None = None,
                   loss_fn: LossFn | None = None, cache_path: Path | str | None = None) -> StepFlops:
    """FLOPs of one training step (forward + backward, no optimizer step) at ``batch_size``.

    ``example_batch`` is what the dataloader yields: a LightningModule is counted through
    ``training_step(batch, 0)``, any other module through ``model(batch)`` (``*batch`` for a
    tuple, ``**batch`` for a dict) and ``loss_fn(output)`` (default: the sum of the outputs).
    ``batch_size`` defaults to the leading dimension of the batch's first tensor; a count on a
    small example batch is scaled linearly to it. Counting runs the step once for real, in train
    mode, and leaves parameters, ``.grad``, buffers, train/eval modes and torch's RNG as they were.
    Count the bare module, before DDP/FSDP wraps it. Like MFU, the count covers matmuls,
    convolutions and attention (torch's FlopCounterMode) and leaves out elementwise ops.
    """
    size = batch_size if batch_size is not None else _infer_batch_size(example_batch)
    _require_positive("batch_size", size)
    given = getattr(model, "flops_per_step", None)
    if given is not None:
        return _given_by_model(given, size)
    spec = getattr(model, "transformer_spec", None)
    if spec is not None:
        if not isinstance(spec, TransformerSpec):
            raise FlopsError(f"{type(model).__name__}.transformer_spec is a {type(spec).__name__}; "
                             "it must be a cl_hpc.profile.flops.TransformerSpec")
        return transformer_step_flops(spec, size)
    if example_batch is None:
        raise FlopsError(f"{type(model).__name__} defines neither flops_per_step nor transformer_spec, "
                         "so FLOPs must be counted: pass an example batch")
    return _counted(model, example_batch, size, loss_fn, None if cache_path is None else Path(cache_path))


def transformer_flops_per_token(spec: TransformerSpec) -> float:
    """Forward + backward FLOPs per token: 6N + 12*L*H*Q*T.

    nanoGPT model.py ``estimate_mfu``, after PaLM (Chowdhery et al. 2022) appendix B: 6N for the
    weight matmuls (2N forward, 4N backward), 12*L*H*Q*T for attention scores and their weighted
    sum (no causal discount, no recomputation).
    """
    n = spec.non_embedding_params if spec.non_embedding_params is not None else spec.n_params
    return 6.0 * n + 12.0 * spec.n_layers * spec.n_heads * spec.head_dim * spec.seq_len


def transformer_step_flops(spec: TransformerSpec, batch_size: int) -> StepFlops:
    tokens = batch_size * spec.seq_len
    per_token = transformer_flops_per_token(spec)
    detail = {"flops_per_token": per_token, "tokens_per_step": tokens, "spec": vars(spec).copy()}
    return StepFlops(per_token * tokens, "analytic-transformer", batch_size, detail)


def mfu(flops_per_step: float, step_time_s: float, peak_flops_per_s: float) -> float:
    """Model FLOPs utilization: achieved FLOP/s over the device's peak (a fraction, not a percent)."""
    for name, value in (("flops_per_step", flops_per_step), ("step_time_s", step_time_s),
                        ("peak_flops_per_s", peak_flops_per_s)):
        _require_positive(name, value)
    return flops_per_step / step_time_s / peak_flops_per_s


def clear_cache() -> None:
    """Forget the in-memory counts (tests; or after changing a model in place)."""
    _MEMORY.clear()


def _require_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise FlopsError(f"{name} must be a finite number > 0, got {value!r}")


def _given_by_model(given: Any, batch_size: int) -> StepFlops:
    source = "method" if callable(given) else "attribute"
    value = given(batch_size) if callable(given) else given
    try:
        flops = float(value)
    except (TypeError, ValueError):
        raise FlopsError(f"the model's flops_per_step gave {value!r}; it must be a number of FLOPs") from None
    _require_positive("the model's flops_per_step", flops)
    return StepFlops(flops, "model", batch_size, {"source": source})


# ---- counting ------------------------------------------------------------------------------------


def _counted(model: nn.Module, batch: Any, size: int, loss_fn: LossFn | None,
             cache_path: Path | None) -> StepFlops:
    signature = _signature(model, batch, loss_fn)
    key = hashlib.sha256(json.dumps(signature, sort_keys=True).encode()).hexdigest()[:20]
    entry, source = _cached(key, cache_path)
    if entry is None:
        entry, source = _count(model, batch, loss_fn), "counted-now"
        _store(key, entry, signature, cache_path)
    # Every counted op is linear in the batch size, so a small example batch stands for a big one.
    flops = entry["flops"] * size / entry["batch_size"]
    detail = {"example_flops": entry["flops"], "example_batch_size": entry["batch_size"],
              "ops": entry.get("ops", {}), "count_s": entry.get("count_s"), "cache": source, "key": key}
    return StepFlops(flops, "counted", size, detail)


def _cached(key: str, cache_path: Path | None) -> tuple[dict[str, Any] | None, str]:
    if key in _MEMORY:
        return _MEMORY[key], "memory"
    if cache_path is None:
        return None, ""
    try:
        stored = read_json(cache_path) or {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable FLOPs cache %s (%s); counting again", cache_path, exc)
        return None, ""
    entry = stored.get(key) if isinstance(stored, dict) else None
    if isinstance(entry, dict) and {"flops", "batch_size"} <= entry.keys():
        _MEMORY[key] = {k: v for k, v in entry.items() if k != "signature"}
        return _MEMORY[key], "file"
    return None, ""


def _store(key: str, entry: dict[str, Any], signature: dict[str, Any], cache_path: Path | None) -> None:
    _MEMORY[key] = entry
    if cache_path is None:
        return
    try:
        stored = read_json(cache_path)
    except (OSError, ValueError):
        stored = None
    stored = stored if isinstance(stored, dict) else {}
    # Read-modify-write without a lock: two writers may drop one entry, which costs a recount only.
    stored[key] = {**entry, "signature": signature}
    write_json_atomic(cache_path, stored)


def _signature(model: nn.Module, batch: Any, loss_fn: LossFn | None) -> dict[str, Any]:
    """What the count depends on. Frozen parameters change the backward, so requires_grad is in."""
    import torch

    cls = type(model)
    params = [[name, list(p.shape), str(p.dtype), p.requires_grad, p.device.type]
              for name, p in model.named_parameters()]
    inputs = [[list(x.shape), str(x.dtype), x.device.type] if isinstance(x, torch.Tensor) else repr(x)[:80]
              for x in _leaves(batch)]
    loss = None if loss_fn is None else getattr(loss_fn, "__qualname__", type(loss_fn).__name__)
    return {"model": f"{cls.__module__}.{cls.__qualname__}", "params": params, "inputs": inputs,
            "loss_fn": loss, "torch": torch.__version__}


def _count(model: nn.Module, batch: Any, loss_fn: LossFn | None) -> dict[str, Any]:
    from torch.utils.flop_counter import FlopCounterMode

    batch = _to_device(batch, _device_of(model))
    start = time.perf_counter()
    with _preserved_state(model, batch), FlopCounterMode(display=False, custom_mapping=_sdpa_rules()) as counter:
        _gradients(model, _loss(model, batch, loss_fn))
    ops = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return {"flops": float(counter.get_total_flops()), "batch_size": _infer_batch_size(batch),
            "ops": ops, "count_s": time.perf_counter() - start}


@contextmanager
def _preserved_state(model: nn.Module, batch: Any) -> Iterator[None]:
    """Train mode for the count; afterwards every mode, buffer (BatchNorm statistics) and RNG as before,
    so a seeded run gives the same checkpoint whether or not it was counted."""
    import torch

    modes = [(module, module.training) for module in model.modules()]
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    tensors = [*model.parameters(), *(x for x in _leaves(batch) if isinstance(x, torch.Tensor))]
    cuda = sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        model.train()
        try:
            yield
        finally:
            for module, mode in modes:
                module.training = mode  # per module: .train(mode) would overwrite the children's own modes
            with torch.no_grad():
                for live, saved in buffers:
                    live.copy_(saved)


def _loss(model: nn.Module, batch: Any, loss_fn: LossFn | None) -> torch.Tensor:
    if loss_fn is None and callable(getattr(model, "training_step", None)):
        return _training_step_loss(model, batch)
    if isinstance(batch, dict):
        out = model(**batch)
    else:
        out = model(*batch) if isinstance(batch, (tuple, list)) else model(batch)
    return loss_fn(out) if loss_fn is not None else _sum_of_outputs(out)


def _training_step_loss(model: nn.Module, batch: Any) -> torch.Tensor:
    import torch

    # A LightningModule's (the caller checked); nn.Module's typed __getattr__ would call it a Tensor.
    step = cast(Callable[..., Any], model.training_step)
    out = step(batch, 0)
    loss = out.get("loss") if isinstance(out, dict) else out
    if not isinstance(loss, torch.Tensor):
        raise FlopsError(f"{type(model).__name__}.training_step returned {type(out).__name__}; counting "
                         "needs a loss tensor or a dict with 'loss' (manual optimization: pass loss_fn)")
    return loss


def _sum_of_outputs(out: Any) -> torch.Tensor:
    """Stands for any loss built from elementwise ops and reductions: none of those is counted."""
    import torch

    return sum((x.sum() for x in _leaves(out) if isinstance(x, torch.Tensor) and x.requires_grad),
               torch.zeros(()))


def _gradients(model: nn.Module, loss: torch.Tensor) -> None:
    """The one backward. autograd.grad returns the gradients instead of adding them to .grad, and frees
    the graph: parameters, .grad, gradient-accumulation hooks and the optimizer never see the count."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if not params or not loss.requires_grad:
        raise FlopsError(f"{type(model).__name__}: no trainable parameter reaches the loss, so there is no "
                         "training step to count (are all parameters frozen, or is the loss detached?)")
    torch.autograd.grad(loss, params, allow_unused=True)


def _sdpa_rules() -> dict[Any, Callable[..., int]]:
    """Counting rules that make every attention kernel count the same model FLOPs.

    torch has no rule for the CPU flash kernel (it counts 0 there), and its backward rules include
    recomputing the scores (QK^T) that flash kernels do to save memory; MFU leaves that out. The math
    kernel (plain bmm's) then agrees with the fused ones: 2 bmm forward, 4 backward.
    """
    import torch
    from torch.utils import flop_counter as fc

    aten, rules = torch.ops.aten, {}
    cpu_forward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_forward is not None and cpu_forward not in fc.flop_registry:
        rules[cpu_forward] = _sdpa_forward_shapes  # FlopCounterMode passes shapes
    cpu_backward = getattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if cpu_backward is not None:
        rules[cpu_backward] = _without_recompute(fc.flop_registry.get(cpu_backward)
                                                 or fc.shape_wrapper(_sdpa_backward_shapes))
    for kernel in ("flash", "efficient", "cudnn"):
        op = getattr(aten, f"_scaled_dot_product_{kernel}_attention_backward", None)
        if op is not None and op in fc.flop_registry:
            rules[op] = _without_recompute(fc.flop_registry[op])
    return rules


def _sdpa_forward_shapes(q: Any, k: Any, v: Any, *_: Any, **__: Any) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(q, k, v)


def _sdpa_backward_shapes(grad_out: Any, q: Any, k: Any, v: Any, *_: Any, **__: Any) -> int:
    from torch.utils.flop_counter import sdpa_backward_flop_count

    return sdpa_backward_flop_count(grad_out, q, k, v)


def _without_recompute(torch_rule: Callable[..., int]) -> Callable[..., int]:
    def rule(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
        flops = torch_rule(*args, out_val=out_val, **kwargs)
        q, k = args[1], args[2]
        if q.dim() == 4:  # dense [batch, heads, seq, dim]; variable-length kernels keep torch's count
            flops -= 2 * q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2] * q.shape[3]
        return flops

    rule._get_raw = True  # type: ignore[attr-defined]  # FlopCounterMode: pass tensors, not shapes
    return rule


# ---- batches -------------------------------------------------------------------------------------


def _leaves(tree: Any) -> list[Any]:
    if isinstance(tree, dict):
        return [leaf for value in tree.values() for leaf in _leaves(value)]
    if isinstance(tree, (tuple, list)):
        return [leaf for value in tree for leaf in _leaves(value)]
    return [tree]


def _to_device(tree: Any, device: torch.device) -> Any:
    import torch

    if isinstance(tree, dict):
        return {key: _to_device(value, device) for key, value in tree.items()}
    if isinstance(tree, (tuple, list)):
        moved = [_to_device(value, device) for value in tree]
        return type(tree)(*moved) if hasattr(tree, "_fields") else type(tree)(moved)  # namedtuples too
    return tree.to(device) if isinstance(tree, torch.Tensor) else tree


def _device_of(model: nn.Module) -> torch.device:
    import torch

    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _infer_batch_size(batch: Any) -> int:
    for leaf in _leaves(batch):
        shape = getattr(leaf, "shape", None)
        if shape is not None and len(shape) > 0:
            return int(shape[0])
    raise FlopsError("cannot tell the batch size: the example batch has no tensor with a leading "
                     f"dimension (got {type(batch).__name__}); pass batch_size=")
