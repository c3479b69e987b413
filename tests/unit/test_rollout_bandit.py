"""Bandit policies: posterior updates by hand, JSON persistence that resumes identically, convergence to the
best arm and lower regret than a 50/50 split, on seeded Bernoulli reward streams."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from scipy import stats

from cl_hpc.errors import ConfigError, DataError
from cl_hpc.rollout.bandit import (
    EpsilonGreedy,
    Policy,
    ThompsonSampling,
    policy_from_dict,
    regret,
    regret_curve,
)

TRUE_MEANS = {"1.0": 0.10, "1.1": 0.13}


def play(policy: Policy, means: dict[str, float], steps: int, seed: int) -> list[str]:
    """Run ``steps`` pulls against Bernoulli arms; the policy and the rewards share one seeded generator."""
    rng = np.random.default_rng(seed)
    chosen = []
    for _ in range(steps):
        arm = policy.choose(rng)
        policy.update(arm, float(rng.random() < means[arm]))
        chosen.append(arm)
    return chosen


def test_thompson_posterior_updates_by_hand() -> None:
    policy = ThompsonSampling(["a", "b"], prior=(2.0, 3.0))
    for reward in (1, 0, 1, 1, 0):
        policy.update("a", reward)
    assert policy.posterior("a") == (2.0 + 3, 3.0 + 2)
    assert policy.posterior("b") == (2.0, 3.0)
    policy.update("b", 0.25)  # a fractional reward: a quarter success, three quarters failure
    assert policy.posterior("b") == (2.25, 3.75)
    assert policy.state["a"].pulls == 5 and policy.state["a"].mean == pytest.approx(0.6)


def test_thompson_draws_from_the_posterior() -> None:
    policy = ThompsonSampling(["a", "b"])
    for _ in range(30):
        policy.update("a", 1.0)
    for _ in range(70):
        policy.update("a", 0.0)
    # P(draw_a > draw_b) with a ~ Beta(31, 71), b ~ Beta(1, 1) = Uniform(0, 1) is E[F_b(a)] = E[a]
    expected = stats.beta(31, 71).mean()
    assert policy.prob_best(np.random.default_rng(0), draws=200_000)["a"] == pytest.approx(expected, abs=0.005)
    rng = np.random.default_rng(1)
    share = Counter(policy.choose(rng) for _ in range(20_000))["a"] / 20_000
    assert share == pytest.approx(expected, abs=0.015)


def test_epsilon_greedy_plays_unpulled_arms_first_then_the_best_mean() -> None:
    policy = EpsilonGreedy(["a", "b", "c"], epsilon=0.0)
    rng = np.random.default_rng(2)
    assert [policy.choose(rng) for _ in range(1)] == ["a"]
    for arm, reward in (("a", 0.2), ("b", 0.9), ("c", 0.5)):
        assert policy.choose(rng) == arm
        policy.update(arm, reward)
    assert {policy.choose(rng) for _ in range(50)} == {"b"}
    explorer = EpsilonGreedy(["a", "b"], epsilon=1.0)
    explorer.update("a", 1.0)
    explorer.update("b", 0.0)
    picks = Counter(explorer.choose(rng) for _ in range(4000))
    assert stats.binomtest(picks["a"], 4000, 0.5).pvalue > 0.01


@pytest.mark.parametrize("make", [lambda: ThompsonSampling(list(TRUE_MEANS), prior=(1.0, 2.0)),
                                  lambda: EpsilonGreedy(list(TRUE_MEANS), epsilon=0.2)])
def test_persistence_round_trip_continues_identically(make: object) -> None:
    steps = 300
    straight: Policy = make()  # type: ignore[operator]
    rng = np.random.default_rng(3)
    chosen = [_step(straight, rng) for _ in range(2 * steps)]
    first: Policy = make()  # type: ignore[operator]
    rng = np.random.default_rng(3)
    resumed_chosen = [_step(first, rng) for _ in range(steps)]
    stored = json.dumps(first.to_dict())  # what the store keeps
    resumed = policy_from_dict(json.loads(stored))
    assert type(resumed) is type(first) and resumed.to_dict() == first.to_dict()
    resumed_chosen += [_step(resumed, rng) for _ in range(steps)]
    assert resumed_chosen == chosen
    assert resumed.to_dict() == straight.to_dict()


def _step(policy: Policy, rng: np.random.Generator) -> str:
    arm = policy.choose(rng)
    policy.update(arm, float(rng.random() < TRUE_MEANS[arm]))
    return arm


def test_thompson_converges_to_the_best_arm() -> None:
    policy = ThompsonSampling(list(TRUE_MEANS))
    chosen = play(policy, TRUE_MEANS, 20_000, seed=4)
    assert Counter(chosen[-5000:])["1.1"] / 5000 > 0.9
    assert policy.prob_best(np.random.default_rng(5))["1.1"] > 0.99


@pytest.mark.parametrize("make", [lambda: ThompsonSampling(list(TRUE_MEANS)),
                                  lambda: EpsilonGreedy(list(TRUE_MEANS), epsilon=0.1)])
def test_lower_regret_than_a_fifty_fifty_split(make: object) -> None:
    steps = 20_000
    chosen = play(make(), TRUE_MEANS, steps, seed=6)  # type: ignore[operator]
    bandit_regret = regret(TRUE_MEANS, Counter(chosen))
    split_regret = regret(TRUE_MEANS, {"1.0": steps // 2, "1.1": steps // 2})
    assert split_regret == pytest.approx(300.0)  # 10 000 pulls of the worse arm, 0.03 short each
    assert bandit_regret < split_regret / 2


def test_three_arms() -> None:
    means = {"a": 0.05, "b": 0.10, "c": 0.20}
    chosen = play(ThompsonSampling(list(means)), means, 5000, seed=7)
    assert Counter(chosen).most_common(1)[0][0] == "c"


def test_regret_helpers() -> None:
    assert regret({"a": 0.5, "b": 0.3}, {"a": 10, "b": 5}) == pytest.approx(1.0)
    curve = regret_curve({"a": 0.5, "b": 0.3}, ["a", "b", "b", "a"])
    assert np.allclose(curve, [0.0, 0.2, 0.4, 0.4])
    with pytest.raises(DataError, match=r"arms \['z'\] that have no true mean"):
        regret({"a": 0.5}, {"z": 1})
    with pytest.raises(DataError, match="no true mean"):
        regret_curve({"a": 0.5}, ["z"])


def test_bad_inputs_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="two or more distinct"):
        ThompsonSampling(["only"])
    with pytest.raises(ConfigError, match="two or more distinct"):
        EpsilonGreedy(["a", "a"])
    with pytest.raises(ConfigError, match="positive"):
        ThompsonSampling(["a", "b"], prior=(0.0, 1.0))
    with pytest.raises(ConfigError, match=r"epsilon is a probability"):
        EpsilonGreedy(["a", "b"], epsilon=1.5)
    policy = ThompsonSampling(["a", "b"])
    with pytest.raises(DataError, match=r"unknown arm 'c'.*\['a', 'b'\]"):
        policy.update("c", 1.0)
    for reward in (1.5, -0.1, float("nan")):
        with pytest.raises(DataError, match=r"in \[0, 1\]"):
            policy.update("a", reward)
    assert policy.state["a"].pulls == 0  # nothing changed
    with pytest.raises(DataError, match="valid kinds: thompson, epsilon_greedy"):
        policy_from_dict({"kind": "ucb"})
    with pytest.raises(DataError, match="malformed"):
        policy_from_dict({"kind": "thompson", "prior": [1, 1], "arms": {"a": {"pulls": 1, "reward_sum": 3},
                                                                         "b": {"pulls": 0, "reward_sum": 0}}})
    with pytest.raises(DataError, match="malformed"):
        policy_from_dict({"kind": "epsilon_greedy", "arms": {}})
