"""The replay simulator, part two: the canary, the bandit, interleaving, and every method at once.

The types, the settings, the A/B and shadow replays and the derived challengers are in
cl_hpc/rollout/simulate.py, whose docstring says what a replay is.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Optional

import numpy as np

from cl_hpc.rollout.assign import ramp_steps
from cl_hpc.rollout.bandit import ArmState
from cl_hpc.rollout.bandit_loop import decide
from cl_hpc.rollout.canary import MIN_WINDOWS, decide_step
from cl_hpc.rollout.interleave import Outcome, RankingSim, interleaving_impressions
from cl_hpc.rollout.judge import Thresholds, judge
from cl_hpc.rollout.records import ExperimentKind
from cl_hpc.rollout.simulate import (
    ACCURACY,
    VERDICTS,
    Method,
    Result,
    Settings,
    Stream,
    Verdict,
    _finish,
    _looks,
    _Served,
    ab,
    buckets,
    experiment_for,
    seed_of,
    shadow,
)
from cl_hpc.rollout.stats import Side, sign_test, sign_test_always_valid
from cl_hpc.rollout.steps import CHALLENGER, CHAMPION, Decision, Step

# -- the canary -------------------------------------------------------------------------------------


def per_window(rows: np.ndarray, values: np.ndarray, origin: int, window: int) -> np.ndarray:
    """The mean of ``values`` per window of ``window`` rows from ``origin`` (windows without rows left
    out): canary._per_window with the row index as the clock, without a DataFrame per look."""
    index = (rows - origin) // window
    sums, counts = np.bincount(index, weights=values), np.bincount(index)
    return sums[counts > 0] / counts[counts > 0]


def _canary_samples(correct: Mapping[str, np.ndarray], to_chall: np.ndarray, since: int, base_since: int,
                    matured: int, s: Settings) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Per arm, accuracy per window of the step's matured rows (the champion's from ``base_since``: at
    100 % it answers nothing, and the step before is its baseline), as canary._samples reads them."""
    out: dict[str, dict[str, np.ndarray]] = {CHAMPION: {}, CHALLENGER: {}}
    counts: dict[str, Any] = {}
    for arm, start in ((CHALLENGER, since), (CHAMPION, base_since)):
        rows = np.arange(start, max(matured, start))
        rows = rows[to_chall[rows] == (arm == CHALLENGER)]
        counts[arm] = {"requests": int(rows.size), "labelled": int(rows.size)}
        if rows.size >= s.min_samples:
            out[arm]["accuracy"] = per_window(rows, correct[arm][rows].astype(float), base_since, s.window)
        counts[arm]["windows"] = {k: int(len(v)) for k, v in out[arm].items()}
    return out, counts


def canary(stream: Stream, name: str, settings: Settings, salt: str) -> Result:
    """The ramp, judged per step by canary.py's judge and decided by its step decision."""
    experiment = experiment_for(ExperimentKind.CANARY, settings, salt)
    correct = {CHAMPION: stream.champion, CHALLENGER: stream.challengers[name]}
    first = ramp_steps(settings.steps)[0] / 100
    weights = {CHALLENGER: first, CHAMPION: 1 - first}
    bucket_of, served = buckets(salt, stream.units), _Served(np.zeros(len(stream.champion), dtype=bool))
    thresholds = Thresholds(settings.pass_score, settings.marginal_score)
    since = base_since = 0
    step: Optional[Step] = None
    labelled = 0
    for t in _looks(len(stream.champion), settings.look_every):
        served.serve(bucket_of, t, weights)
        samples, counts = _canary_samples(correct, served.to_challenger, since, base_since, t - settings.delay,
                                          settings)
        labelled = counts[CHALLENGER]["labelled"] + counts[CHAMPION]["labelled"]
        verdict = judge(ACCURACY, samples[CHAMPION], samples[CHALLENGER], alpha=settings.alpha,
                        thresholds=thresholds, min_samples=MIN_WINDOWS)
        step = decide_step(experiment, weights, verdict, None, counts)
        if step.decision is Decision.STEP:
            weights, since = step.weights, t
            base_since = base_since if weights[CHAMPION] == 0 else t  # at 100 %: the step before stays the baseline
        elif step.decision in (Decision.ROLLBACK, Decision.PROMOTE):
            return _finish(Method.CANARY, name, step, t, labelled, served.to_challenger, correct,
                           100 * weights[CHALLENGER])
    return _finish(Method.CANARY, name, step, None, labelled, served.to_challenger, correct, 100 * weights[CHALLENGER])


# -- the bandit -------------------------------------------------------------------------------------


def bandit(stream: Stream, name: str, settings: Settings, salt: str) -> Result:
    """Batched Thompson sampling (or epsilon-greedy) on the matured rewards, as bandit_loop looks."""
    experiment = experiment_for(ExperimentKind.BANDIT, settings, salt)
    rewards = {CHAMPION: stream.champion, CHALLENGER: stream.challengers[name]}
    weights = {CHALLENGER: 0.5, CHAMPION: 0.5}
    bucket_of, served = buckets(salt, stream.units), _Served(np.zeros(len(stream.champion), dtype=bool))
    step: Optional[Step] = None
    last, total = -1, 0
    for t in _looks(len(stream.champion), settings.look_every):
        served.serve(bucket_of, t, weights)
        seen = _seen(rewards, served.to_challenger, t - settings.delay)
        total = sum(s.pulls for s in seen.values())
        if total == last:
            continue
        last = total
        step = decide(experiment, seen)
        if step.decision is Decision.STEP:
            weights = step.weights
        else:
            return _finish(Method.BANDIT, name, step, t, total, served.to_challenger, rewards)
    return _finish(Method.BANDIT, name, step, None, total, served.to_challenger, rewards)


def _seen(rewards: Mapping[str, np.ndarray], to_chall: np.ndarray, matured: int) -> dict[str, ArmState]:
    rows = to_chall[:max(matured, 0)]
    return {arm: ArmState(int(mask.sum()), float(rewards[arm][:rows.size][mask].sum()))
            for arm, mask in ((CHALLENGER, rows), (CHAMPION, ~rows))}


def fifty_fifty_regret(stream: Stream, name: str, salt: str) -> float:
    """The regret of a 50/50 split of the same rows held to the end (the bandit's yardstick)."""
    values = {CHAMPION: stream.champion, CHALLENGER: stream.challengers[name]}
    served = _Served(np.zeros(len(stream.champion), dtype=bool))
    served.serve(buckets(salt, stream.units), len(stream.champion), {CHALLENGER: 0.5, CHAMPION: 0.5})
    return _finish(Method.AB, name, None, None, 0, served.to_challenger, values).regret or 0.0


# -- interleaving -----------------------------------------------------------------------------------


def interleave(stream: Stream, name: str, settings: Settings, salt: str, impressions: int) -> Result:
    """Team-draft impressions of RankingSim (champion ranker A, challenger B), decided by the sign test."""
    sim = RankingSim(noise_a=settings.ranking_noise, noise_b=stream.ranking_noise.get(name, settings.ranking_noise))
    wins = _Wins(sim, salt)
    for t in _looks(impressions, settings.look_every):
        matured = t - settings.delay
        if matured <= 0:
            continue
        a, b = wins.until(matured)
        test = sign_test_always_valid if settings.sequential else sign_test  # as interleaving.py decides
        result = test(a, b, ties=matured - a - b, alpha=settings.alpha)
        if a + b < settings.min_samples or result.preferred is Side.NONE:
            continue
        decision = Decision.PROMOTE if result.preferred is Side.B else Decision.REJECT
        why = f"sign test p = {result.p_value:.3g}: wins challenger {b}, champion {a}, ties {matured - a - b}"
        return Result(Method.INTERLEAVE, name, VERDICTS[decision], t, matured, t, 1.0, None, reason=why)
    return Result(Method.INTERLEAVE, name, Verdict.NONE, None, max(impressions - settings.delay, 0), impressions, 1.0,
                  None, reason="no significant preference within the impressions")


class _Wins:
    """Cumulative wins of each ranker over the impressions, simulated in chunks as the replay needs them
    (a decision after 2 000 impressions does not pay for 48 000)."""

    CHUNK = 2000

    def __init__(self, sim: RankingSim, salt: str) -> None:
        self.sim, self.salt = sim, salt
        self.a, self.b = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)

    def until(self, n: int) -> tuple[int, int]:
        """(wins of A, wins of B) over the first ``n`` impressions."""
        while self.a.size < n:
            chunk = interleaving_impressions(self.sim, self.CHUNK, seed_of(self.salt, self.a.size))
            start_a, start_b = (int(self.a[-1]), int(self.b[-1])) if self.a.size else (0, 0)
            self.a = np.concatenate([self.a, start_a + np.cumsum([o is Outcome.A for o in chunk])])
            self.b = np.concatenate([self.b, start_b + np.cumsum([o is Outcome.B for o in chunk])])
        return int(self.a[n - 1]), int(self.b[n - 1])


# -- every method -----------------------------------------------------------------------------------

Runner = Callable[[Stream, str, Settings, str], Result]
RUNNERS: dict[Method, Runner] = {Method.SHADOW: shadow, Method.AB: ab, Method.CANARY: canary, Method.BANDIT: bandit}


def run_all(stream: Stream, settings: Settings, seed: int, run: int = 0,
            methods: tuple[Method, ...] = tuple(Method)) -> Iterator[Result]:
    """Every method on every challenger of ``stream`` (one run: one salt). Deterministic for a seed."""
    for method in methods:
        for name in stream.challengers:
            salt = f"simulate-{seed}-{run}-{method.value}"
            if method is Method.INTERLEAVE:
                yield interleave(stream, name, settings, salt, len(stream.champion))
            else:
                yield RUNNERS[method](stream, name, settings, salt)
