#!/usr/bin/env python3
"""Counted vs analytic FLOPs per training step, side by side, for an MLP, a conv net and an attention
block at several sizes: the ratio, PASS/FAIL against the 1% target, and what the count costs.

    PYTHONPATH=. python scripts/bench_flops.py            # CPU
    PYTHONPATH=. python scripts/bench_flops.py --device cuda

Analytic formulas (multiply-add = 2 FLOPs; matmul, conv and attention only, as MFU counts them):
forward F, backward 2F, except the first layer's input gradient, which nobody needs (the data does
not require grad). The count is cold (cache cleared) each time; 'x step' is its time over one uncounted
forward + backward of the same batch, measured just before. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import torch
from torch import nn

from cl_hpc.profile import flops as fl

Case = tuple[str, Callable[[], nn.Module], Callable[[], torch.Tensor], float]


def mlp_case(batch: int, widths: list[int]) -> Case:
    pairs = list(zip(widths, widths[1:]))
    analytic = 6 * batch * sum(i * o for i, o in pairs) - 2 * batch * pairs[0][0] * pairs[0][1]
    layers = [m for i, o in pairs for m in (nn.Linear(i, o), nn.ReLU())][:-1]
    return (f"mlp b={batch} {widths}", lambda: nn.Sequential(*layers),
            lambda: torch.randn(batch, widths[0]), analytic)


def conv_case(batch: int, size: int, channels: list[int]) -> Case:
    """3x3 convolutions, padding 1, stride 2 after the first."""
    analytic, side, layers = 0, size, []
    for index, (c_in, c_out) in enumerate(zip(channels, channels[1:])):
        stride = 1 if index == 0 else 2
        side = (side + 2 - 3) // stride + 1
        analytic += 2 * c_out * side * side * c_in * 9 * batch * (2 if index == 0 else 3)
        layers += [nn.Conv2d(c_in, c_out, 3, stride, 1), nn.ReLU()]
    return (f"conv b={batch} {size}px {channels}", lambda: nn.Sequential(*layers),
            lambda: torch.randn(batch, channels[0], size, size), analytic)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mha(x, x, x, need_weights=False)[0]


def attention_case(batch: int, seq: int, dim: int, heads: int) -> Case:
    tokens = batch * seq
    # QKV projections: forward + weight gradient; output projection 3x; QK^T and AV 3x.
    analytic = 2 * (2 * tokens * dim * 3 * dim) + 3 * (2 * tokens * dim * dim) + 3 * (4 * batch * seq * seq * dim)
    return (f"mha b={batch} T={seq} d={dim}", lambda: Attention(dim, heads),
            lambda: torch.randn(batch, seq, dim), analytic)


CASES = [mlp_case(64, [784, 256, 10]), mlp_case(512, [1024, 4096, 4096, 1024]),
         conv_case(8, 32, [3, 32, 64, 128]), conv_case(32, 64, [3, 64, 128, 256]),
         attention_case(8, 128, 256, 8), attention_case(4, 1024, 512, 8)]


def plain_step_s(model: nn.Module, x: torch.Tensor) -> float:
    """One uncounted forward + backward, the yardstick for what the count costs."""
    start = time.perf_counter()
    model(x).sum().backward()
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="torch device to count on (default: cpu)")
    args = parser.parse_args()
    warmup = fl.flops_per_step(nn.Linear(4, 4).to(args.device), torch.randn(2, 4, device=args.device))
    print(f"torch {torch.__version__} on {args.device}; first count in the process "
          f"(lazy imports): {warmup.detail['count_s'] * 1e3:.0f} ms")
    print(f"{'case':34} {'counted':>10} {'analytic':>10} {'ratio':>8} {'<1%':>5} {'count ms':>9} {'x step':>7}")
    for name, make_model, make_input, analytic in CASES:
        fl.clear_cache()
        model, x = make_model().to(args.device), make_input().to(args.device)
        plain_step_s(model, x)  # warm the kernels for both sides
        step_s = plain_step_s(model, x)
        result = fl.flops_per_step(model, x)
        ratio, count_s = result.flops / analytic, result.detail["count_s"]
        verdict = "PASS" if abs(ratio - 1) < 0.01 else "FAIL"
        print(f"{name:34} {result.flops:10.4g} {analytic:10.4g} {ratio:8.5f} {verdict:>5} "
              f"{count_s * 1e3:9.1f} {count_s / step_s:7.2f}")


if __name__ == "__main__":
    main()
