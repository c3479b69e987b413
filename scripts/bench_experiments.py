#!/usr/bin/env python3
"""Benchmarks of the experiment statistics (issue 14), measured side by side in one run.

    PYTHONPATH=. python scripts/bench_experiments.py                 # 2000 A/A experiments per stream kind
    PYTHONPATH=. python scripts/bench_experiments.py --runs 400 --seed 7

**A/A with continuous peeking.** Both arms draw from the same distribution, so every rejection is a false
positive. Each simulated experiment looks after every batch (50 batches of 100 units per arm) and stops at
the first look that rejects. Side by side, on the same data: the mSPRT's always-valid p-value
(cl_hpc.rollout.sequential.MSPRT), the naive fixed-horizon z-test read at every look (which inflates: the
reason the mSPRT exists), and the same z-test read once at the end (the honest fixed-horizon test). Two
stream kinds: a continuous metric (normal, unit variance; Welch's z) and a binary one (rate 0.1; pooled
two-proportion z). Each rate comes with its binomial standard error sqrt(r(1 - r)/runs); the mSPRT must
stay <= alpha + 2 * sqrt(alpha(1 - alpha)/runs).

Asserts nothing: prints the table.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np
from scipy import stats

from cl_hpc.rollout.sequential import MSPRT, StreamKind

BATCHES = 50
BATCH = 100
ALPHA = 0.05
# stream name -> (kind, tau2 ~ the square of the effect worth detecting)
STREAMS: dict[str, tuple[StreamKind, float]] = {
    "continuous N(0,1)": (StreamKind.TWO_SAMPLE, 0.1**2),
    "binary p=0.1": (StreamKind.BERNOULLI, 0.02**2),
}


def _draw(kind: StreamKind, rng: np.random.Generator) -> np.ndarray:
    if kind is StreamKind.BERNOULLI:
        return (rng.random((2, BATCHES, BATCH)) < 0.1).astype(np.float64)
    return rng.normal(size=(2, BATCHES, BATCH))


def _one_experiment(kind: StreamKind, tau2: float, data: np.ndarray, z_crit: float) -> tuple[bool, bool, bool]:
    """(mSPRT rejected at some look, naive z rejected at some look, z rejected at the last look)."""
    test = MSPRT(kind, tau2, alpha=ALPHA)
    naive = False
    z = 0.0
    for look in range(BATCHES):
        test.update(data[0, look], data[1, look])
        theta_hat, v_n = test.estimate()  # Welch's (or the pooled two-proportion) z from the same state
        z = theta_hat / math.sqrt(v_n) if v_n > 0 else 0.0
        naive = naive or abs(z) > z_crit
    return test.rejected, naive, abs(z) > z_crit


def _rate(hits: int, runs: int) -> dict[str, float]:
    r = hits / runs
    return {"rate": r, "se": math.sqrt(r * (1.0 - r) / runs)}


def aa(runs: int = 2000, seed: int = 0) -> dict[str, Any]:
    """False-positive rates of A/A experiments peeked after every batch, per stream kind."""
    rng = np.random.default_rng(seed)
    z_crit = float(stats.norm.ppf(1.0 - ALPHA / 2.0))
    out: dict[str, Any] = {"runs": runs, "seed": seed, "alpha": ALPHA, "looks": BATCHES, "batch": BATCH,
                           "bound": ALPHA + 2.0 * math.sqrt(ALPHA * (1.0 - ALPHA) / runs), "streams": {}}
    for name, (kind, tau2) in STREAMS.items():
        hits = np.array([_one_experiment(kind, tau2, _draw(kind, rng), z_crit) for _ in range(runs)])
        out["streams"][name] = {"tau2": tau2, "msprt": _rate(int(hits[:, 0].sum()), runs),
                                "naive_peeking": _rate(int(hits[:, 1].sum()), runs),
                                "fixed_horizon": _rate(int(hits[:, 2].sum()), runs)}
    return out


def _print_aa(res: dict[str, Any]) -> None:
    print(f"A/A: {res['runs']} experiments per stream, {res['looks']} looks of {res['batch']} units per arm, "
          f"alpha {res['alpha']}; mSPRT bound alpha + 2 SE = {res['bound']:.4f}")
    print(f"{'stream':<20} {'mSPRT (peeked)':>16} {'naive z (peeked)':>18} {'z at end only':>15} {'naive/mSPRT':>12}")
    for name, row in res["streams"].items():
        cells = [f"{row[k]['rate']:.4f}±{row[k]['se']:.4f}" for k in ("msprt", "naive_peeking", "fixed_horizon")]
        ratio = row["naive_peeking"]["rate"] / row["msprt"]["rate"] if row["msprt"]["rate"] > 0 else math.inf
        print(f"{name:<20} {cells[0]:>16} {cells[1]:>18} {cells[2]:>15} {ratio:>11.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2000, help="A/A experiments per stream kind (>= 200)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    _print_aa(aa(args.runs, args.seed))
    print(f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
