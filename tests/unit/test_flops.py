"""FLOPs per training step: the three sources, their precedence, the count against hand formulas,
the cache, and that counting leaves the model and torch's RNG exactly as they were."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from cl_hpc.learn.tabular import TabularClassifier
from cl_hpc.profile import flops as fl
from cl_hpc.profile.flops import FlopsError, StepFlops, TransformerSpec, flops_per_step, mfu

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def fresh_cache() -> None:
    fl.clear_cache()


def within_1pct(counted: float, analytic: float) -> bool:
    return abs(counted / analytic - 1.0) < 0.01


# ---- hand formulas (multiply-add = 2 FLOPs; matmul/conv/attention only) ---------------------------

def mlp_flops(batch: int, widths: list[int]) -> int:
    """6 x batch x sum(in*out): forward, input gradient and weight gradient, one matmul each, less the
    first layer's input gradient: the data does not require grad, so autograd never computes it."""
    pairs = list(zip(widths, widths[1:]))
    return 6 * batch * sum(i * o for i, o in pairs) - 2 * batch * pairs[0][0] * pairs[0][1]


def conv_flops(batch: int, layers: list[tuple[int, int, int, int, int]], size: int) -> int:
    """layers: (c_in, c_out, kernel, stride, padding). Forward 2*Cout*Hout*Wout*Cin*k*k*batch; backward
    the same for the weight gradient, and again for the input gradient except at the first layer."""
    total = 0
    for index, (c_in, c_out, k, stride, pad) in enumerate(layers):
        size = (size + 2 * pad - k) // stride + 1
        forward = 2 * c_out * size * size * c_in * k * k * batch
        total += forward * (2 if index == 0 else 3)
    return total


def attention_flops(batch: int, seq: int, dim: int) -> int:
    """Q, K, V and output projections (4 dim^2 per token) and QK^T, AV (2 seq*dim per token each).
    Backward is twice forward, except the QKV projections' input gradient (the input is data)."""
    tokens = batch * seq
    qkv, out_proj = 2 * tokens * dim * 3 * dim, 2 * tokens * dim * dim
    core = 2 * (2 * batch * seq * seq * dim)
    return 2 * qkv + 3 * out_proj + 3 * core


# ---- small models --------------------------------------------------------------------------------

def mlp(widths: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, o in zip(widths, widths[1:]):
        layers += [nn.Linear(i, o), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class ConvNet(nn.Module):
    def __init__(self, layers: list[tuple[int, int, int, int, int]]) -> None:
        super().__init__()
        self.body = nn.Sequential(*(nn.Sequential(nn.Conv2d(ci, co, k, s, p), nn.BatchNorm2d(co), nn.ReLU())
                                    for ci, co, k, s, p in layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class MHABlock(nn.Module):
    def __init__(self, dim: int, heads: int, need_weights: bool = False) -> None:
        super().__init__()
        self.attn, self.need_weights = nn.MultiheadAttention(dim, heads, batch_first=True), need_weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=self.need_weights)[0]


class SDPABlock(nn.Module):
    """The explicit form: fused QKV projection, F.scaled_dot_product_attention, output projection."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads, self.qkv, self.out = heads, nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in self.qkv(x).chunk(3, -1))
        return self.out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d))


class Given(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.transformer_spec = TransformerSpec(n_params=100, n_layers=1, n_heads=1, head_dim=4, seq_len=8)

    def flops_per_step(self, batch_size: int) -> float:
        return 1000.0 * batch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


class SpecOnly(nn.Module):
    def __init__(self, spec: TransformerSpec) -> None:
        super().__init__()
        self.lin, self.transformer_spec = nn.Linear(4, 4), spec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def forbid_counting(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*_: object) -> None:
        raise AssertionError("counted although it should not have")

    monkeypatch.setattr(fl, "_count", fail)


# ---- sources and precedence ----------------------------------------------------------------------

def test_import_does_not_load_torch() -> None:
    code = "import cl_hpc.profile.flops, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_model_given_beats_transformer_spec_and_counting(monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_counting(monkeypatch)
    result = flops_per_step(Given(), torch.randn(3, 4))
    assert result == StepFlops(3000.0, "model", 3, {"source": "method"})


def test_model_attribute_is_used_as_is() -> None:
    model = nn.Linear(2, 2)
    model.flops_per_step = 7e9  # type: ignore[assignment]
    assert flops_per_step(model, batch_size=16) == StepFlops(7e9, "model", 16, {"source": "attribute"})


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), "many", None])
def test_model_given_nonsense_is_an_error(bad: object) -> None:
    model = nn.Linear(2, 2)
    model.flops_per_step = lambda batch_size: bad  # type: ignore[assignment]
    with pytest.raises(FlopsError, match="flops_per_step"):
        flops_per_step(model, batch_size=4)


def test_transformer_spec_beats_counting(monkeypatch: pytest.MonkeyPatch) -> None:
    forbid_counting(monkeypatch)
    spec = TransformerSpec(n_params=124_000_000, n_layers=12, n_heads=12, head_dim=64, seq_len=1024)
    result = flops_per_step(SpecOnly(spec), torch.randn(2, 4), batch_size=8)
    per_token = 6 * 124_000_000 + 12 * 12 * 12 * 64 * 1024
    assert result.method == "analytic-transformer"
    assert result.flops == per_token * 8 * 1024
    assert result.detail["tokens_per_step"] == 8 * 1024


def test_transformer_formula_prefers_non_embedding_params() -> None:
    spec = TransformerSpec(n_params=1000, n_layers=2, n_heads=3, head_dim=4, seq_len=5, non_embedding_params=600)
    assert fl.transformer_flops_per_token(spec) == 6 * 600 + 12 * 2 * 3 * 4 * 5


def test_transformer_spec_of_the_wrong_type_is_an_error() -> None:
    model = nn.Linear(2, 2)
    model.transformer_spec = {"n_layers": 2}  # type: ignore[assignment]
    with pytest.raises(FlopsError, match="must be a cl_hpc.profile.flops.TransformerSpec"):
        flops_per_step(model, torch.randn(3, 2))


@pytest.mark.parametrize("field", ["n_params", "n_layers", "n_heads", "head_dim", "seq_len"])
def test_transformer_spec_rejects_nonpositive(field: str) -> None:
    values = {"n_params": 10, "n_layers": 1, "n_heads": 1, "head_dim": 1, "seq_len": 1, field: 0}
    with pytest.raises(FlopsError, match=field):
        TransformerSpec(**values)


def test_counted_when_nothing_is_declared() -> None:
    result = flops_per_step(mlp([8, 16, 4]), torch.randn(5, 8))
    assert (result.method, result.batch_size, result.flops) == ("counted", 5, mlp_flops(5, [8, 16, 4]))


# ---- counted vs analytic -------------------------------------------------------------------------

@pytest.mark.parametrize("batch,widths", [(32, [64, 256, 10]), (7, [300, 512, 512, 2]), (1, [3, 5])])
def test_counted_mlp_matches_formula(batch: int, widths: list[int]) -> None:
    result = flops_per_step(mlp(widths), torch.randn(batch, widths[0]))
    assert within_1pct(result.flops, mlp_flops(batch, widths)), (result.flops, mlp_flops(batch, widths))


CONV_NETS = [[(3, 16, 3, 1, 1), (16, 32, 3, 2, 1)], [(1, 8, 5, 1, 0), (8, 8, 3, 1, 1), (8, 4, 1, 1, 0)]]


@pytest.mark.parametrize("layers", CONV_NETS)
@pytest.mark.parametrize("input_requires_grad", [False, True])
def test_counted_conv_matches_formula(layers: list[tuple[int, int, int, int, int]],
                                      input_requires_grad: bool) -> None:
    # Even an input that requires grad gets no gradient: the count asks autograd for parameters only.
    x = torch.randn(4, layers[0][0], 20, 20, requires_grad=input_requires_grad)
    result = flops_per_step(ConvNet(layers), x)
    assert within_1pct(result.flops, conv_flops(4, layers, 20)), (result.flops, conv_flops(4, layers, 20))


@pytest.mark.parametrize("block", [lambda: MHABlock(64, 4), lambda: MHABlock(64, 4, need_weights=True),
                                   lambda: SDPABlock(64, 4)])
@pytest.mark.parametrize("seq", [16, 128])
def test_counted_attention_matches_formula(block, seq: int) -> None:  # type: ignore[no-untyped-def]
    result = flops_per_step(block(), torch.randn(3, seq, 64))
    assert within_1pct(result.flops, attention_flops(3, seq, 64)), (result.flops, attention_flops(3, seq, 64))


def test_every_attention_kernel_counts_the_same() -> None:
    """torch counts 0 for the CPU flash kernel and adds a recompute to fused backwards; ours must not."""
    block, x = SDPABlock(32, 2), torch.randn(2, 24, 32)
    fused = flops_per_step(block, x).flops
    fl.clear_cache()
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        math_kernel = flops_per_step(block, x)
    assert "aten.bmm" in math_kernel.detail["ops"]
    assert fused == math_kernel.flops


def test_project_classifier_training_step_matches_mlp_formula() -> None:
    model = TabularClassifier(n_features=12, n_classes=3, hidden=32, layers=2)
    batch = (torch.randn(50, 12), torch.randint(0, 3, (50,)))
    result = flops_per_step(model, batch)
    assert result.method == "counted" and result.batch_size == 50
    assert within_1pct(result.flops, mlp_flops(50, [12, 32, 32, 3]))


def test_counted_scales_to_the_training_batch_size() -> None:
    model = mlp([16, 32, 2])
    result = flops_per_step(model, torch.randn(4, 16), batch_size=256)
    assert result.detail["example_batch_size"] == 4
    assert result.flops == mlp_flops(256, [16, 32, 2])


# ---- the count changes nothing -------------------------------------------------------------------

class Stateful(nn.Module):
    """Dropout draws from the RNG, BatchNorm updates buffers in train mode, one layer is frozen."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn, self.drop, self.b = nn.Linear(6, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 2)
        self.frozen = nn.Linear(2, 2).requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.frozen(self.b(self.drop(self.bn(self.a(x)))))


def test_counting_leaves_parameters_grads_buffers_modes_and_rng_unchanged() -> None:
    torch.manual_seed(0)
    model = Stateful()
    model.eval()
    model.drop.train()  # a mixed mode must come back mixed
    old_grad = torch.ones_like(model.a.weight)
    model.a.weight.grad = old_grad
    x = torch.randn(16, 6)
    params = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    rng = torch.get_rng_state()

    flops_per_step(model, x)

    assert all(torch.equal(params[k], v) for k, v in model.state_dict().items())
    assert model.a.weight.grad is old_grad and torch.equal(old_grad, torch.ones_like(old_grad))
    assert [n for n, p in model.named_parameters() if p.grad is not None] == ["a.weight"]
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(torch.get_rng_state(), rng)


def checkpoint_sha(count_first: bool) -> str:
    torch.manual_seed(42)
    model = TabularClassifier(n_features=6, n_classes=2, hidden=16, layers=2)
    x, y = torch.randn(64, 6), torch.randint(0, 2, (64,))
    if count_first:
        flops_per_step(model, (x[:8], y[:8]))
    optimizer = model.configure_optimizers()
    for step in range(3):
        optimizer.zero_grad()
        model.training_step((x, y), step)["loss"].backward()
        optimizer.step()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def test_seeded_training_gives_the_same_checkpoint_with_or_without_a_count() -> None:
    assert checkpoint_sha(count_first=True) == checkpoint_sha(count_first=False)


# ---- cache ---------------------------------------------------------------------------------------

def test_second_call_uses_the_memory_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x = mlp([8, 8, 2]), torch.randn(4, 8)
    first = flops_per_step(model, x)
    forbid_counting(monkeypatch)
    second = flops_per_step(model, torch.randn(4, 8), batch_size=8)
    assert (first.detail["cache"], second.detail["cache"]) == ("counted-now", "memory")
    assert second.flops == 2 * first.flops


def test_other_shapes_are_counted_again() -> None:
    model = SDPABlock(16, 2)
    short, long = flops_per_step(model, torch.randn(2, 8, 16)), flops_per_step(model, torch.randn(2, 32, 16))
    assert long.detail["cache"] == "counted-now" and long.flops > 4 * short.flops * 0.99


def test_file_cache_survives_the_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "flops.json"
    first = flops_per_step(mlp([8, 8, 2]), torch.randn(4, 8), cache_path=path)
    stored = json.loads(path.read_text())
    assert list(stored) == [first.detail["key"]] and stored[first.detail["key"]]["flops"] == first.flops
    fl.clear_cache()
    forbid_counting(monkeypatch)
    again = flops_per_step(mlp([8, 8, 2]), torch.randn(4, 8), cache_path=path)
    assert again.detail["cache"] == "file" and again.flops == first.flops


def test_unreadable_file_cache_is_recounted(tmp_path: Path) -> None:
    path = tmp_path / "flops.json"
    path.write_text("{not json")
    result = flops_per_step(mlp([8, 8, 2]), torch.randn(4, 8), cache_path=path)
    assert result.detail["cache"] == "counted-now" and result.detail["key"] in json.loads(path.read_text())


# ---- errors and mfu ------------------------------------------------------------------------------

def test_counting_needs_an_example_batch() -> None:
    with pytest.raises(FlopsError, match="example batch"):
        flops_per_step(mlp([2, 2]), batch_size=4)


def test_batch_size_must_be_inferable() -> None:
    with pytest.raises(FlopsError, match="batch_size="):
        flops_per_step(mlp([2, 2]), {"x": 3})


def test_frozen_model_has_no_training_step_to_count() -> None:
    with pytest.raises(FlopsError, match="no trainable parameter"):
        flops_per_step(mlp([4, 2]).requires_grad_(False), torch.randn(2, 4))


def test_training_step_without_a_loss_is_an_error() -> None:
    model = TabularClassifier(n_features=4, n_classes=2)
    model.training_step = lambda batch, batch_idx: None  # type: ignore[method-assign]
    with pytest.raises(FlopsError, match="loss_fn"):
        flops_per_step(model, (torch.randn(2, 4), torch.tensor([0, 1])))


def test_loss_fn_is_used_for_a_plain_module() -> None:
    calls: list[tuple[int, ...]] = []

    def loss_fn(out: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(out.shape))
        return out.pow(2).mean()

    result = flops_per_step(mlp([4, 6, 3]), torch.randn(5, 4), loss_fn=loss_fn)
    assert calls == [(5, 3)] and result.flops == mlp_flops(5, [4, 6, 3])


def test_mfu() -> None:
    assert mfu(4e12, 0.5, 1e13) == pytest.approx(0.8)


@pytest.mark.parametrize("args", [(0.0, 1.0, 1.0), (1.0, 0.0, 1.0), (1.0, 1.0, -5.0), (1.0, float("inf"), 1.0)])
def test_mfu_rejects_nonpositive(args: tuple[float, float, float]) -> None:
    with pytest.raises(FlopsError, match="must be a finite number > 0"):
        mfu(*args)
