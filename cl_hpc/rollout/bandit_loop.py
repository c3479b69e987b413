"""The bandit's live loop: rewards from the joined outcomes, a posterior per arm, the new split.

The servers stay stateless: they route by the weights of the experiment's newest event, like any
split (cl_hpc/serve/routing.py). At each look the controller rebuilds the policy from the reward
stream of the experiment's answers (a row's ``_reward`` where the outcome sent one, else whether the
answer equalled its label), and writes the new weights with the posterior in the event's detail. So
the posterior lives in the store: a restarted server routes by it at once, every replica routes
alike, and ``status``/``report`` show it. This is batched Thompson sampling (probability matching):
each arm's share is the posterior probability that it is the best, floored at ``FLOOR`` so that no
arm stops learning; epsilon-greedy gives the best mean 1 - epsilon and shares epsilon evenly.

The policy is rebuilt from every reward, not updated from the last snapshot: outcomes arrive late
and out of order, and a rebuild counts each exactly once (bandit.py's update is deterministic, so a
replay gives the same posterior). A decision needs ``min_samples`` rewards on every arm and one arm
best with posterior probability >= 1 - alpha (Beta posteriors, whatever the policy): that arm is
promoted (or, if it is the champion, the others are rejected).
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

import numpy as np
import pandas as pd

from cl_hpc.rollout.bandit import ArmState, EpsilonGreedy, Policy, ThompsonSampling, regret
from cl_hpc.rollout.records import Experiment, ExperimentEvent, ExperimentKind, current_split
from cl_hpc.rollout.report import labelled_in
from cl_hpc.rollout.steps import CHAMPION, Decision, Sources, Step

FLOOR = 0.01  # the least share of traffic an arm keeps while the bandit runs
DRAWS = 20_000  # Monte Carlo draws of the probability that each arm is the best


def bandit_step(experiment: Experiment, events: Sequence[ExperimentEvent], sources: Sources) -> Step:
    """The bandit's new split, or its decision, at this look (nothing written)."""
    if experiment.kind is not ExperimentKind.BANDIT:
        raise ValueError(f"experiment {experiment.id} is a {experiment.kind.value}, not a bandit")
    weights = dict(current_split(events).weights)
    seen = rewards(experiment, sources)
    total = sum(s.pulls for s in seen.values())
    if total == _last_total(events) or total == 0:  # no evidence: a split drawn from the prior only moves units
        return Step(Decision.WAIT, f"no new rewards since the last look ({total} in all)", weights,
                    samples=_counts(seen), detail=_last_posterior(events))
    return decide(experiment, seen)


def decide(experiment: Experiment, seen: dict[str, ArmState]) -> Step:
    """The new split, or the decision, from the rewards each arm has ``seen`` (the replay simulator
    decides with it too, from its own reward stream)."""
    config, names = experiment.config, [a.name for a in experiment.arms]
    total = sum(s.pulls for s in seen.values())
    beta = ThompsonSampling(names)
    beta.state = dict(seen)
    # Seeded by the experiment and the evidence: a look at the same rewards gives the same split.
    rng = np.random.default_rng(int.from_bytes(hashlib.sha256(f"{experiment.salt}:{total}".encode()).digest()[:8],
                                               "little"))
    best = beta.prob_best(rng, DRAWS)
    policy = _policy(experiment, seen)
    detail: dict[str, Any] = {"posterior": policy.to_dict(), "prob_best": best, "rewards": total,
                              "regret": _regret(seen)}
    leader = max(best, key=lambda arm: best[arm])
    need = int(config.get("min_samples", 500))
    if min(s.pulls for s in seen.values()) >= need and best[leader] >= 1 - float(config.get("alpha", 0.05)):
        decision = Decision.REJECT if leader == CHAMPION else Decision.PROMOTE
        return Step(decision, f"arm {leader} ({experiment.arm(leader).version}) is the best with posterior probability "
                              f"{best[leader]:.3f} after {total} rewards", {n: float(n == leader) for n in names},
                    samples=_counts(seen), winner=leader, detail=detail)
    split = _split(policy, best)
    shown = ", ".join(f"{n} {split[n]:.1%} (mean {seen[n].mean:.3f}, n {seen[n].pulls})" for n in names)
    return Step(Decision.STEP, f"{policy.kind.value} after {total} rewards: {shown}", split, samples=_counts(seen),
                detail=detail)


def rewards(experiment: Experiment, sources: Sources) -> dict[str, ArmState]:
    """Per arm, its rewards so far: pulls (answers with an outcome) and their sum."""
    labelled = labelled_in(experiment, sources.label_dirs, sources.label_col, sources.output, graded=False)
    out = {}
    for arm in experiment.arms:
        rows = labelled[labelled["arm"] == arm.name] if len(labelled) else labelled
        values = (rows["reward"].astype("float64").fillna(rows["hit"].astype("float64")).dropna() if len(rows)
                  else pd.Series(dtype="float64"))
        # a reward outside [0, 1] is the sender's mistake; it is clipped, not allowed to break the posterior
        out[arm.name] = ArmState(int(len(values)), float(np.clip(values, 0.0, 1.0).sum()))
    return out


def _policy(experiment: Experiment, seen: dict[str, ArmState]) -> Policy:
    names = [a.name for a in experiment.arms]
    policy: Policy = (EpsilonGreedy(names, float(experiment.config.get("epsilon", 0.1)))
                      if experiment.config.get("policy") == "epsilon_greedy" else ThompsonSampling(names))
    policy.state = dict(seen)
    return policy


def _split(policy: Policy, best: dict[str, float]) -> dict[str, float]:
    names = list(policy.arms)
    if isinstance(policy, EpsilonGreedy):
        means = [policy.state[n].mean if policy.state[n].pulls else 0.0 for n in names]
        top = names[int(np.argmax(means))]
        share = {n: policy.epsilon / len(names) + (1 - policy.epsilon) * (n == top) for n in names}
    else:
        share = dict(best)
    floored = {n: max(share[n], FLOOR) for n in names}
    total = sum(floored.values())
    return {n: round(v / total, 6) for n, v in floored.items()}


def _regret(seen: dict[str, ArmState]) -> float:
    """Regret so far against the best arm, at the arms' observed means (the true means are unknown)."""
    means = {n: s.mean if s.pulls else 0.0 for n, s in seen.items()}
    return float(regret(means, {n: s.pulls for n, s in seen.items()}))


def _last_posterior(events: Sequence[ExperimentEvent]) -> dict[str, Any]:
    """The posterior the store holds (the newest look that wrote one), shown while no reward is new."""
    for event in reversed(events):
        if "posterior" in event.detail:
            return {k: event.detail[k] for k in ("posterior", "prob_best", "rewards", "regret") if k in event.detail}
    return {}


def _last_total(events: Sequence[ExperimentEvent]) -> int:
    for event in reversed(events):
        if "rewards" in event.detail:
            return int(event.detail["rewards"])
    return -1


def _counts(seen: dict[str, ArmState]) -> dict[str, Any]:
    return {n: {"rewards": s.pulls, "reward_sum": s.reward_sum} for n, s in seen.items()}
