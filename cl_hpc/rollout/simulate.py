"""The replay simulator: a stream of answers, with delayed outcomes, through every experiment method.

Input: per stream row (oldest first) whether the champion's answer was right (0/1), its unit key, and
per challenger the same 0/1. Each method replays the rows in order with the production decision code:

- assignment: the experiment's salt and the row's unit hashed into buckets (assign.bucket/boundaries,
  i.e. ``arm_for`` for a whole array), challenger first, so a canary's steps only move units to it;
- outcomes are delayed: the label of row i is seen from row ``i + delay`` on, and every look uses only
  matured rows, as the controller reads only the joined labels;
- the controller looks every ``look_every`` rows and decides with the functions the live controller
  uses: A/B and shadow by abtest's mSPRT (or fixed-horizon) look, the canary by canary.py's judge and
  its step decision (per-window accuracy on matured labels, windows of ``window`` rows), the bandit by
  bandit_loop's posterior and split (batched Thompson sampling or epsilon-greedy), interleaving by the
  sign test (always valid with sequential, as interleaving.py decides) on RankingSim impressions (a
  ranking world: rows of a tabular stream have nothing to rank, so the challenger ranker's quality
  follows the challenger's effect).

The row index is the clock: ``delay``, ``window`` and ``look_every`` count rows (impressions for
interleaving). No sample-ratio check runs: the hash split of a replay cannot be broken.

Per (method, challenger) it answers a :class:`Result`: the decision, the rows it took to decide, the
matured outcomes the deciding look used, the rows the challenger answered users (a shadow's answers are
never returned: 0) and the regret, against the better arm's accuracy over the whole stream, of what
users got until the stream ends (the winner serves every row after a decision).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from cl_hpc.errors import ConfigError, DataError
from cl_hpc.rollout.abtest import fixed_horizon_look, sequential_look
from cl_hpc.rollout.assign import Share, UnitKind, boundaries, bucket, ramp_steps
from cl_hpc.rollout.canary import SPECS
from cl_hpc.rollout.records import Arm, Experiment, ExperimentKind
from cl_hpc.rollout.steps import CHALLENGER, CHAMPION, Decision, Step

# The canary judges accuracy only: a replay has no latency, and a metric with no data keeps the judge
# waiting for good (judge.py: a missing metric could still change the verdict).
ACCURACY = tuple(s for s in SPECS if s.name == "accuracy")
ARMS = (CHALLENGER, CHAMPION)  # challenger first, as start lays them out


class Method(str, Enum):
    SHADOW = "shadow"
    AB = "ab"
    CANARY = "canary"
    INTERLEAVE = "interleave"
    BANDIT = "bandit"


class Verdict(str, Enum):
    """What a method decided about the challenger by the end of the stream."""

    PROMOTE = "promote"
    ROLLBACK = "rollback"  # a canary's judge failed it
    REJECT = "reject"  # a test found it not better (or the bandit found the champion best)
    NONE = "none"  # no decision within the stream


VERDICTS = {Decision.PROMOTE: Verdict.PROMOTE, Decision.ROLLBACK: Verdict.ROLLBACK, Decision.REJECT: Verdict.REJECT}


@dataclass(frozen=True)
class Settings:
    """The experiment's settings (experiment.* of the config) and the replay's clock, in rows."""

    delay: int = 200  # rows between an answer and its label becoming visible
    look_every: int = 100  # rows between two looks of the controller
    window: int = 500  # canary: rows of traffic per judged sample
    steps: tuple[float, ...] = (1.0, 5.0, 25.0, 50.0, 100.0)
    min_samples: int = 100  # per arm before a decision (canary: per step)
    alpha: float = 0.05
    mde: float = 0.02
    power: float = 0.8
    sequential: bool = True
    pass_score: float = 95.0
    marginal_score: float = 75.0
    ab_share: float = 0.5  # the challenger's share in an A/B test
    shadow_share: float = 1.0
    policy: str = "thompson"
    epsilon: float = 0.1
    ranking_noise: float = 1.0  # interleaving: the champion ranker's scoring noise (RankingSim)

    def __post_init__(self) -> None:
        problems = [f"{name}={value!r} must be {rule}" for name, value, ok, rule in (
            ("delay", self.delay, self.delay >= 0, "an integer >= 0 (rows)"),
            ("look_every", self.look_every, self.look_every >= 1, "an integer >= 1 (rows)"),
            ("window", self.window, self.window >= 1, "an integer >= 1 (rows)"),
            ("min_samples", self.min_samples, self.min_samples >= 1, "an integer >= 1"),
            ("ab_share", self.ab_share, 0 < self.ab_share < 1, "in (0, 1)"),
            ("shadow_share", self.shadow_share, 0 < self.shadow_share <= 1, "in (0, 1]"),
            ("ranking_noise", self.ranking_noise, self.ranking_noise > 0, "> 0"),
        ) if not ok]
        if problems:
            raise ConfigError("simulate: " + "; ".join(problems))
        ramp_steps(self.steps)

    def config(self) -> dict[str, Any]:
        """The experiment config the production decision functions read."""
        return {"steps": list(self.steps), "min_samples": self.min_samples, "alpha": self.alpha, "mde": self.mde,
                "power": self.power, "sequential": self.sequential, "pass_score": self.pass_score,
                "marginal_score": self.marginal_score, "policy": self.policy, "epsilon": self.epsilon,
                "metric": "accuracy"}


@dataclass(frozen=True)
class Stream:
    """What a replay needs of the landing zone: per row, the champion's correctness and the unit key."""

    champion: np.ndarray  # 0/1 per row, oldest first
    units: Sequence[str]  # the key hashed for each row (its unit, else its position)
    challengers: Mapping[str, np.ndarray] = field(default_factory=dict)  # name -> 0/1 per row
    # interleaving: each challenger's ranker noise (RankingSim), by the same name
    ranking_noise: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.champion)
        if n == 0:
            raise DataError("the replayed stream has no rows: nothing to simulate (is the landing zone empty?)")
        bad = {name: len(c) for name, c in self.challengers.items() if len(c) != n}
        if len(self.units) != n or bad:
            raise DataError(f"every arm needs one value per stream row ({n}); units {len(self.units)}, "
                            f"challengers {bad}")


@dataclass(frozen=True)
class Result:
    method: Method
    challenger: str
    decision: Verdict
    rows: Optional[int]  # rows (interleaving: impressions) served until the decision; None: no decision
    samples: int  # matured outcomes (impressions) the deciding look used, or the last look's
    exposed: int  # rows the challenger answered users (interleaving: impressions that showed its items)
    exposed_share: float  # exposed / rows served until the decision (or the whole stream)
    regret: Optional[float]  # sum over rows of (best arm's accuracy - the served arm's); None: interleaving
    step: Optional[float] = None  # canary: the challenger's share (%) when it decided or the stream ended
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method.value, "challenger": self.challenger, "decision": self.decision.value,
                "rows": self.rows, "samples": self.samples, "exposed": self.exposed,
                "exposed_share": self.exposed_share, "regret": self.regret, "step": self.step, "reason": self.reason}


# -- known challengers derived from the champion --------------------------------------------------


class Effect(str, Enum):
    BETTER = "better"  # fixes a share ``effect`` of the champion's wrong answers
    WORSE = "worse"  # gets a share ``effect`` of the champion's right answers wrong (label-flipped at 1.0)
    EQUAL = "equal"  # the champion's accuracy, with errors independent of the champion's


EQUAL_BLOCK = 1000  # rows within which the equal challenger's errors are shuffled (keeps drift local)


def derive(champion: np.ndarray, kind: Effect, effect: float, rng: np.random.Generator) -> np.ndarray:
    """A challenger's 0/1 correctness per row, derived from the champion's with a known effect."""
    if not 0 < effect <= 1:
        raise ConfigError(f"a challenger's effect is a share of answers in (0, 1], got {effect!r}")
    right = np.asarray(champion, dtype=np.int8)
    draw = rng.random(right.size) < effect
    if kind is Effect.BETTER:
        return np.where(draw, 1, right).astype(np.int8)
    if kind is Effect.WORSE:
        return np.where(draw, 0, right).astype(np.int8)
    # A permutation within each block keeps the block's accuracy exactly and breaks any tie to the
    # champion's own errors (a fresh Bernoulli would change the accuracy by chance).
    out = right.copy()
    for start in range(0, out.size, EQUAL_BLOCK):
        out[start:start + EQUAL_BLOCK] = rng.permutation(out[start:start + EQUAL_BLOCK])
    return out


def known_challengers(champion: np.ndarray, units: Sequence[str], effect: float, seed: int, run: int,
                      champion_noise: float = 1.0) -> Stream:
    """The stream with a better, a worse and an equal challenger derived for one run."""
    rng = np.random.default_rng(seed_of("challengers", seed, run))
    return Stream(np.asarray(champion, dtype=np.int8), units,
                  {kind.value: derive(champion, kind, effect, rng) for kind in Effect},
                  {kind.value: ranker_noise(kind, effect, champion_noise) for kind in Effect})


def ranker_noise(kind: Effect, effect: float, champion_noise: float) -> float:
    """The challenger ranker's scoring noise in RankingSim: less noise is a better ranker."""
    if kind is Effect.BETTER:
        return champion_noise * (1 - effect)
    if kind is Effect.WORSE:
        return champion_noise / max(1 - effect, 0.05)  # bounded: a fully flipped ranker is still a ranker
    return champion_noise


# -- the replay ---------------------------------------------------------------------------------------


def seed_of(*parts: object) -> int:
    """A 64-bit seed from any parts, stable across processes (unlike ``hash``)."""
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "little")


def buckets(salt: str, units: Sequence[str]) -> np.ndarray:
    return np.fromiter((bucket(salt, key) for key in units), dtype=np.int64, count=len(units))


def to_challenger(bucket_of: np.ndarray, weights: Mapping[str, float]) -> np.ndarray:
    """True where the row goes to the challenger: ``assign.arm_for`` over a whole array (challenger first)."""
    bounds = boundaries([Share(CHALLENGER, weights[CHALLENGER]), Share(CHAMPION, weights[CHAMPION])])
    return np.searchsorted(bounds, bucket_of, side="right") == 0


def experiment_for(kind: ExperimentKind, settings: Settings, salt: str, arms: Sequence[str] = ARMS) -> Experiment:
    return Experiment(0, "simulated", kind, UnitKind.REQUEST, salt, tuple(Arm(a, a) for a in arms),
                      settings.config(), 0.0, "replay simulation")


@dataclass
class _Served:
    """Which arm answered each row (1: the challenger), filled as the replay goes."""

    to_challenger: np.ndarray
    served: int = 0

    def serve(self, bucket_of: np.ndarray, until: int, weights: Mapping[str, float]) -> None:
        self.to_challenger[self.served:until] = to_challenger(bucket_of[self.served:until], weights)
        self.served = until


def _looks(n: int, every: int) -> list[int]:
    return [*range(every, n, every), n]


def _regret(stream_values: Mapping[str, np.ndarray], served: np.ndarray) -> float:
    """Regret of the rows served (1: challenger) against the arm of higher accuracy over the stream."""
    means = {arm: float(np.mean(values)) for arm, values in stream_values.items()}
    best = max(means.values())
    challenger_rows = int(served.sum())
    return (best - means[CHALLENGER]) * challenger_rows + (best - means[CHAMPION]) * (served.size - challenger_rows)


def _finish(method: Method, name: str, step: Optional[Step], at: Optional[int], samples: int, served: np.ndarray,
            values: Mapping[str, np.ndarray], share: Optional[float] = None) -> Result:
    """The result, with the rows after a decision served by the winner."""
    n = served.size
    until = n if at is None else at
    exposed = int(served[:until].sum())
    if step is not None and at is not None:
        served[at:] = step.decision is Decision.PROMOTE
    verdict = VERDICTS.get(step.decision, Verdict.NONE) if step is not None and at is not None else Verdict.NONE
    return Result(method, name, verdict, at, samples, exposed, exposed / until if until else 0.0,
                  _regret(values, served), share, step.reason if step is not None else "no look yet")


def ab(stream: Stream, name: str, settings: Settings, salt: str) -> Result:
    """A fixed split, decided by abtest's mSPRT (or fixed-horizon) look on matured labels."""
    experiment = experiment_for(ExperimentKind.AB, settings, salt)
    weights = {CHALLENGER: settings.ab_share, CHAMPION: 1 - settings.ab_share}
    values = {CHAMPION: stream.champion, CHALLENGER: stream.challengers[name]}
    bucket_of, served = buckets(salt, stream.units), _Served(np.zeros(len(stream.champion), dtype=bool))
    step: Optional[Step] = None
    samples = 0
    for t in _looks(len(stream.champion), settings.look_every):
        served.serve(bucket_of, t, weights)
        step, samples = _test_look(experiment, values, served.to_challenger, t - settings.delay, weights)
        if step is not None and step.decision in (Decision.PROMOTE, Decision.REJECT):
            return _finish(Method.AB, name, step, t, samples, served.to_challenger, values)
    return _finish(Method.AB, name, step, None, samples, served.to_challenger, values)


def _test_look(experiment: Experiment, values: Mapping[str, np.ndarray], to_chall: np.ndarray, matured: int,
               weights: dict[str, float], copies: Optional[np.ndarray] = None) -> tuple[Optional[Step], int]:
    """One look of the A/B (or, with ``copies``, the shadow) test at the rows matured so far."""
    if matured <= 0:
        return None, 0
    if copies is None:
        arm = {CHALLENGER: to_chall[:matured], CHAMPION: ~to_chall[:matured]}
    else:  # a shadow: the champion answered every row, the challenger its copies
        arm = {CHAMPION: np.ones(matured, dtype=bool), CHALLENGER: copies[:matured]}
    seen = {a: values[a][:matured][arm[a]].astype(float) for a in ARMS}
    counts = {a: int(v.size) for a, v in seen.items()}
    if min(counts.values()) < int(experiment.config["min_samples"]):
        return None, sum(counts.values())
    decide = sequential_look if experiment.config["sequential"] else fixed_horizon_look
    return decide(experiment, "accuracy", seen, weights, None, counts), sum(counts.values())


def shadow(stream: Stream, name: str, settings: Settings, salt: str) -> Result:
    """The challenger answers copies (``shadow_share`` of units), never returned; the same test decides."""
    experiment = experiment_for(ExperimentKind.SHADOW, settings, salt)
    values = {CHAMPION: stream.champion, CHALLENGER: stream.challengers[name]}
    copies = to_challenger(buckets(salt, stream.units), {CHALLENGER: settings.shadow_share,
                                                          CHAMPION: 1 - settings.shadow_share})
    live = np.zeros(len(stream.champion), dtype=bool)  # users only ever get the champion's answers
    weights = {CHALLENGER: 0.0, CHAMPION: 1.0}
    step: Optional[Step] = None
    samples = 0
    for t in _looks(len(stream.champion), settings.look_every):
        step, samples = _test_look(experiment, values, live, t - settings.delay, weights, copies)
        if step is not None and step.decision in (Decision.PROMOTE, Decision.REJECT):
            return _finish(Method.SHADOW, name, step, t, samples, live, values)
    return _finish(Method.SHADOW, name, step, None, samples, live, values)


def agreement(stream: Stream, name: str) -> float:
    """Share of rows where the challenger was right exactly where the champion was (a binary label: the
    share of equal answers)."""
    return float(np.mean(stream.champion == stream.challengers[name]))
