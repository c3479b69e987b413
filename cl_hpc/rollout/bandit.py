"""Bandit policies over two or more versions (arms): Thompson sampling (Beta-Bernoulli) and epsilon-greedy.

Rewards lie in [0, 1]. Thompson sampling keeps a Beta(alpha, beta) posterior per arm (Chapelle and Li,
"An Empirical Evaluation of Thompson Sampling", NeurIPS 2011) and plays the arm whose posterior draw is
highest. A binary reward r adds r to alpha and 1 - r to beta, the conjugate update. A fractional reward
r in (0, 1) is updated the same way, as a fractional success: the posterior mean still tracks the
mean reward. Agrawal and Goyal (COLT 2012, section 2) instead draw a Bernoulli(r) success and update
with that, which keeps their regret bound exact. The fractional update here is deterministic, so a
replay of a reward log gives the same posterior.

Why not river.bandit (river 0.26 is installed): its policies draw from their own ``random.Random``
seeded at construction, and each arm's Beta gets its own seeded generator. A caller cannot pass the
generator, and resuming after a restart would mean serialising Mersenne-Twister states; the objects
pickle but have no JSON form for the store. Its ``proba.Beta.update`` also counts any truthy reward as
a whole success (0.3 -> +1 alpha). The Beta posterior is a few lines, so it is written here. Its state
is plain counts (:meth:`Policy.to_dict`), and the caller's numpy Generator draws the samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import Any, Mapping, Sequence, Union

import numpy as np

from cl_hpc.errors import ConfigError, DataError

__all__ = ["BanditKind", "ArmState", "ThompsonSampling", "EpsilonGreedy", "Policy", "policy_from_dict",
           "regret", "regret_curve"]


class BanditKind(str, Enum):
    THOMPSON = "thompson"
    EPSILON_GREEDY = "epsilon_greedy"


@dataclass(frozen=True)
class ArmState:
    """What one arm has seen: pulls and the sum of their rewards (plus the prior, for Thompson)."""

    pulls: int = 0
    reward_sum: float = 0.0

    @property
    def mean(self) -> float:
        return self.reward_sum / self.pulls if self.pulls else float("nan")


def _check_arms(arms: Sequence[str]) -> tuple[str, ...]:
    if len(arms) < 2 or len(set(arms)) != len(arms) or not all(arms):
        raise ConfigError(f"a bandit needs two or more distinct, non-empty arm names; got {list(arms)}")
    return tuple(arms)


def _check_reward(arms: Mapping[str, ArmState], arm: str, reward: float) -> None:
    if arm not in arms:
        raise DataError(f"reward for unknown arm {arm!r}; the bandit's arms are {list(arms)}")
    if not (math.isfinite(reward) and 0.0 <= reward <= 1.0):
        raise DataError(f"a bandit reward lies in [0, 1]; got {reward!r} for arm {arm!r}")


def _argmax(arms: Sequence[str], values: Sequence[float]) -> str:
    """The arm with the highest value; ties go to the earliest arm (numpy's argmax)."""
    return arms[int(np.argmax(values))]


class ThompsonSampling:
    """Beta-Bernoulli Thompson sampling; the posterior of arm i is Beta(prior_a + s_i, prior_b + f_i)."""

    kind = BanditKind.THOMPSON

    def __init__(self, arms: Sequence[str], prior: tuple[float, float] = (1.0, 1.0)) -> None:
        self.arms = _check_arms(arms)
        if not all(math.isfinite(p) and p > 0 for p in prior) or len(prior) != 2:
            raise ConfigError(f"a Beta prior is two positive numbers (alpha, beta); got {prior}")
        self.prior = (float(prior[0]), float(prior[1]))
        self.state = {arm: ArmState() for arm in self.arms}

    def posterior(self, arm: str) -> tuple[float, float]:
        """(alpha, beta) of the arm's Beta posterior."""
        seen = self.state[arm]
        return self.prior[0] + seen.reward_sum, self.prior[1] + seen.pulls - seen.reward_sum

    def choose(self, rng: np.random.Generator) -> str:
        """One posterior draw per arm, in arm order; the highest draw is played."""
        alphas, betas = zip(*(self.posterior(arm) for arm in self.arms))
        return _argmax(self.arms, rng.beta(alphas, betas).tolist())

    def update(self, arm: str, reward: float) -> None:
        _check_reward(self.state, arm, reward)
        seen = self.state[arm]
        self.state[arm] = ArmState(seen.pulls + 1, seen.reward_sum + reward)

    def prob_best(self, rng: np.random.Generator, draws: int = 10_000) -> dict[str, float]:
        """The posterior probability that each arm is the best, by Monte Carlo over ``draws`` draws."""
        alphas, betas = zip(*(self.posterior(arm) for arm in self.arms))
        samples = rng.beta(alphas, betas, size=(draws, len(self.arms)))
        wins = np.bincount(samples.argmax(axis=1), minlength=len(self.arms))
        return {arm: float(w) / draws for arm, w in zip(self.arms, wins)}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "prior": list(self.prior), "arms": _arms_dict(self.state)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ThompsonSampling:
        alpha, beta = data["prior"]
        policy = cls(list(data["arms"]), (float(alpha), float(beta)))
        policy.state = _arms_state(data["arms"])
        return policy


class EpsilonGreedy:
    """Plays a uniformly random arm with probability epsilon, else the arm of highest mean reward.

    Arms not yet pulled are played first, in arm order, so that every mean is defined.
    """

    kind = BanditKind.EPSILON_GREEDY

    def __init__(self, arms: Sequence[str], epsilon: float = 0.1) -> None:
        self.arms = _check_arms(arms)
        if not (math.isfinite(epsilon) and 0.0 <= epsilon <= 1.0):
            raise ConfigError(f"epsilon is a probability in [0, 1]; got {epsilon!r}")
        self.epsilon = float(epsilon)
        self.state = {arm: ArmState() for arm in self.arms}

    def choose(self, rng: np.random.Generator) -> str:
        # Both draws happen on every call, so the generator advances the same way whatever the branch.
        explore, pick = rng.random() < self.epsilon, int(rng.integers(len(self.arms)))
        unpulled = [arm for arm in self.arms if self.state[arm].pulls == 0]
        if unpulled:
            return unpulled[0]
        if explore:
            return self.arms[pick]
        return _argmax(self.arms, [self.state[arm].mean for arm in self.arms])

    def update(self, arm: str, reward: float) -> None:
        _check_reward(self.state, arm, reward)
        seen = self.state[arm]
        self.state[arm] = ArmState(seen.pulls + 1, seen.reward_sum + reward)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "epsilon": self.epsilon, "arms": _arms_dict(self.state)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EpsilonGreedy:
        policy = cls(list(data["arms"]), float(data["epsilon"]))
        policy.state = _arms_state(data["arms"])
        return policy


Policy = Union[ThompsonSampling, EpsilonGreedy]


def _arms_dict(state: Mapping[str, ArmState]) -> dict[str, dict[str, float]]:
    # A dict keeps the arm order through JSON (json.dumps/loads preserve insertion order).
    return {arm: {"pulls": s.pulls, "reward_sum": s.reward_sum} for arm, s in state.items()}


def _arms_state(arms: Mapping[str, Mapping[str, float]]) -> dict[str, ArmState]:
    state = {arm: ArmState(int(s["pulls"]), float(s["reward_sum"])) for arm, s in arms.items()}
    bad = [arm for arm, s in state.items() if not 0.0 <= s.reward_sum <= s.pulls]
    if bad:
        raise ValueError(f"arms {bad} have a reward sum outside [0, pulls]")
    return state


def policy_from_dict(data: Mapping[str, Any]) -> Policy:
    """The policy that ``to_dict`` wrote (read back from the store), or a DataError naming what is wrong."""
    kinds: dict[str, type[ThompsonSampling] | type[EpsilonGreedy]] = {
        BanditKind.THOMPSON.value: ThompsonSampling, BanditKind.EPSILON_GREEDY.value: EpsilonGreedy}
    kind = data.get("kind")
    if kind not in kinds:
        raise DataError(f"stored bandit state has kind {kind!r}; valid kinds: {', '.join(kinds)}")
    try:
        return kinds[kind].from_dict(data)
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"stored {kind} bandit state is malformed ({err!r}): {dict(data)}") from err


def regret(true_means: Mapping[str, float], pulls: Mapping[str, int]) -> float:
    """Cumulative (pseudo-)regret: sum over arms of pulls * (best true mean - the arm's true mean)."""
    unknown = sorted(set(pulls) - set(true_means))
    if unknown:
        raise DataError(f"pulls of arms {unknown} that have no true mean; known arms: {sorted(true_means)}")
    best = max(true_means.values())
    return float(sum(n * (best - true_means[arm]) for arm, n in pulls.items()))


def regret_curve(true_means: Mapping[str, float], chosen: Sequence[str]) -> np.ndarray:
    """The cumulative regret after each pull of the sequence ``chosen``."""
    unknown = sorted(set(chosen) - set(true_means))
    if unknown:
        raise DataError(f"pulls of arms {unknown} that have no true mean; known arms: {sorted(true_means)}")
    best = max(true_means.values())
    gaps = [best - true_means[arm] for arm in chosen]
    return np.cumsum(np.asarray(gaps, dtype=float))
