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

**A bad challenger** (cl_hpc/rollout/replay.py, the controller's decision code): a stream whose champion is
right 85 % of the time, and a challenger derived from it that gets every right answer wrong (label-flipped,
effect 1.0) or a quarter of them (0.25). Over --bad-runs replays (new salt each), outcomes 200 rows late: how
often the canary rolls it back, at which step, the share of traffic it answered until then against that
step's share (what its first steps imply), and how often A/B promotes it.

**Interleaving vs A/B** on the ranking simulation (interleave.RankingSim: ranker A's scoring noise 0.5, B's
1.0): the impressions each needs for 80 % power at alpha 0.05, by bootstrap from simulated pools
(team-draft outcomes decided by the sign test; A/B clicks per impression by Welch's t), over a grid of sizes.

**Bandit vs 50/50:** the regret (rows x accuracy lost against the better arm) of the batched Thompson
bandit against a 50/50 split of the same rows, median over --bandit-runs replays, for a better and a worse
challenger.

**Shadow** (scripts/bench_shadow.py): the live p50/p99 and throughput of the real server at half its
capacity, with and without a shadow experiment, alternated over rounds.

Asserts nothing: prints the tables. ``--only aa|bad|interleave|bandit|shadow`` runs one section.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any, Optional

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


def _stream(effect: float, seed: int, run: int, rows: int = 30_000) -> Any:
    from cl_hpc.rollout.simulate import known_challengers

    champion = (np.random.default_rng(seed_of("champion", seed, run)).random(rows) < 0.85).astype(np.int8)
    return known_challengers(champion, [str(i) for i in range(rows)], effect, seed, run)


def seed_of(*parts: object) -> int:
    from cl_hpc.rollout.simulate import seed_of as seeded

    return seeded(*parts)


def bad_challenger(runs: int, seed: int) -> dict[str, Any]:
    """Per effect: the canary's rollbacks, steps and exposure, and A/B's promotions of the worse challenger."""
    from cl_hpc.rollout.replay import canary
    from cl_hpc.rollout.simulate import Settings, Verdict, ab

    settings = Settings(delay=200, min_samples=100)
    out: dict[str, Any] = {"runs": runs, "steps": list(settings.steps), "effects": {}}
    for effect in (1.0, 0.25):
        canaries, promoted = [], 0
        for run in range(runs):
            stream = _stream(effect, seed, run)
            canaries.append(canary(stream, "worse", settings, f"bad-{seed}-{run}"))
            promoted += ab(stream, "worse", settings, f"bad-{seed}-{run}").decision is Verdict.PROMOTE
        rolled = [c for c in canaries if c.decision is Verdict.ROLLBACK]
        out["effects"][effect] = {
            "rollbacks": len(rolled), "ab_promoted": promoted,
            "steps": {str(st): sum(c.step == st for c in rolled) for st in sorted({c.step for c in rolled})},
            "exposed_rows_median": float(np.median([c.exposed for c in canaries])),
            "exposed_rows_max": max(c.exposed for c in canaries),
            "exposed_share_max": max(c.exposed_share for c in canaries),
            "over_step_share": sum(c.exposed_share > (c.step or 100) / 100 * 1.5 for c in canaries),
            "rows_to_rollback_median": float(np.median([c.rows for c in rolled])) if rolled else None}
    return out


def _print_bad(res: dict[str, Any]) -> None:
    print(f"\nBad challenger: {res['runs']} replays of 30 000 rows per effect, ramp {res['steps']} %, "
          f"100 outcomes per arm per step, outcomes 200 rows late")
    print(f"{'worse by':<10} {'canary rollbacks':>17} {'at step (%: runs)':>20} {'rows to rollback':>17} "
          f"{'exposed rows med/max':>21} {'max share':>10} {'share > 1.5x step':>18} {'A/B promoted':>13}")
    for effect, row in res["effects"].items():
        steps = ", ".join(f"{k}: {v}" for k, v in row["steps"].items())
        rows = row["rows_to_rollback_median"] or math.nan
        print(f"{effect:<10} {row['rollbacks']:>8}/{res['runs']:<8} {steps:>20} {rows:>17,.0f} "
              f"{row['exposed_rows_median']:>10,.0f}/{row['exposed_rows_max']:<10,} {row['exposed_share_max']:>10.2%} "
              f"{row['over_step_share']:>18} {row['ab_promoted']:>8}/{res['runs']}")


POWER, GRID = 0.8, [int(50 * 1.25**i) for i in range(45)]


def _power_n(reject: Any, resamples: int) -> tuple[Optional[int], dict[int, float]]:
    """The first size of GRID whose share of ``resamples`` rejections (in the right direction) reaches POWER."""
    seen: dict[int, float] = {}
    for n in GRID:
        seen[n] = float(np.mean([reject(n, r) for r in range(resamples)]))
        if seen[n] >= POWER:
            return n, seen
    return None, seen


def interleave_vs_ab(seed: int, resamples: int = 200) -> dict[str, Any]:
    from cl_hpc.rollout.interleave import Outcome, RankingSim, Team, ab_impressions, interleaving_impressions
    from cl_hpc.rollout.stats import Side, sign_test, welch_ttest

    sim = RankingSim()
    outcomes = np.array([{Outcome.A: 1, Outcome.B: -1, Outcome.TIE: 0}[o]
                         for o in interleaving_impressions(sim, 20_000, seed)])
    pool = ab_impressions(sim, 120_000, seed + 1)
    arm_a, arm_b = pool.clicks[pool.is_a], pool.clicks[~pool.is_a]
    rng = np.random.default_rng(seed)

    def interleaved(n: int, _: int) -> bool:
        drawn = rng.choice(outcomes, n)
        return sign_test(int((drawn == 1).sum()), int((drawn == -1).sum())).preferred is Side.A

    def split(n: int, _: int) -> bool:
        test = welch_ttest(rng.choice(arm_b, n // 2), rng.choice(arm_a, n - n // 2))  # estimate A - B
        return test.significant and test.estimate > 0

    n_int, _ = _power_n(interleaved, resamples)
    n_ab, _ = _power_n(split, resamples)
    return {"resamples": resamples, "power": POWER, "interleaving": n_int, "ab": n_ab,
            "ctr": {"A": pool.ctr(Team.A), "B": pool.ctr(Team.B)},
            "wins": {"A": int((outcomes == 1).sum()), "B": int((outcomes == -1).sum()),
                     "ties": int((outcomes == 0).sum())}}


def _print_interleave(res: dict[str, Any]) -> None:
    ratio = res["ab"] / res["interleaving"] if res["ab"] and res["interleaving"] else math.nan
    print(f"\nInterleaving vs A/B (RankingSim, ranker A better): impressions for {res['power']:.0%} power at alpha "
          f"0.05, {res['resamples']} bootstrap resamples per size (grid x1.25)")
    print(f"  A/B clicks per impression: A {res['ctr']['A']:.4f}, B {res['ctr']['B']:.4f}; interleaving wins "
          f"A {res['wins']['A']}, B {res['wins']['B']}, ties {res['wins']['ties']} of 20 000")
    print(f"  interleaving: {res['interleaving']:,} impressions   A/B: {res['ab']:,} impressions   "
          f"A/B / interleaving = {ratio:.1f}x (goal >= 10x)")


def bandit_vs_split(runs: int, seed: int) -> dict[str, Any]:
    from cl_hpc.rollout.replay import bandit, fifty_fifty_regret
    from cl_hpc.rollout.simulate import Settings

    settings = Settings(delay=200, min_samples=100)
    out: dict[str, Any] = {"runs": runs, "challengers": {}}
    for name in ("better", "worse"):
        pairs = []
        for run in range(runs):
            stream, salt = _stream(0.25, seed, run), f"bandit-{seed}-{run}"
            pairs.append((bandit(stream, name, settings, salt).regret or 0.0, fifty_fifty_regret(stream, name, salt)))
        played, split = np.array(pairs).T
        out["challengers"][name] = {"bandit": float(np.median(played)), "split": float(np.median(split)),
                                    "bandit_lower": int((played < split).sum())}
    return out


def _print_bandit(res: dict[str, Any]) -> None:
    print(f"\nBandit vs 50/50 of the same 30 000 rows (champion 85 % right, challenger effect 0.25), "
          f"median regret over {res['runs']} replays")
    for name, row in res["challengers"].items():
        print(f"  {name:<7} bandit {row['bandit']:>8.1f}   50/50 {row['split']:>8.1f}   50/50 / bandit = "
              f"{row['split'] / row['bandit'] if row['bandit'] else math.inf:>6.1f}x   bandit lower in "
              f"{row['bandit_lower']}/{res['runs']}")


def _shadow(rounds: int) -> None:
    """The live server with and without a shadow at half its capacity (scripts/bench_shadow.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_shadow

    bench_shadow.main(["--rounds", str(rounds)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2000, help="A/A experiments per stream kind (>= 200)")
    parser.add_argument("--bad-runs", type=int, default=100, help="bad-challenger replays per effect")
    parser.add_argument("--bandit-runs", type=int, default=50, help="bandit replays per challenger")
    parser.add_argument("--resamples", type=int, default=200, help="bootstrap resamples per size (interleaving)")
    parser.add_argument("--only", choices=("aa", "bad", "interleave", "bandit", "shadow"), default=None)
    parser.add_argument("--shadow-rounds", type=int, default=5, help="alternated rounds of the shadow section")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sections = {"aa": lambda: _print_aa(aa(args.runs, args.seed)),
                "bad": lambda: _print_bad(bad_challenger(args.bad_runs, args.seed)),
                "interleave": lambda: _print_interleave(interleave_vs_ab(args.seed, args.resamples)),
                "bandit": lambda: _print_bandit(bandit_vs_split(args.bandit_runs, args.seed)),
                "shadow": lambda: _shadow(args.shadow_rounds)}
    for name, run in sections.items():
        if args.only in (None, name):
            start = time.perf_counter()
            run()
            print(f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
