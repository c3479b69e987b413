"""An experiment's settings (``experiment:``; conf/experiment/<kind>.yaml picks the kind and its
defaults). Read by ``python -m cl_hpc.experiment``; the server routes by the experiment the store
records, not by this config. Light: composed on login nodes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from cl_hpc.errors import ConfigError

KINDS = ("shadow", "ab", "canary", "interleave", "bandit")
UNITS = ("request", "user", "day")
POLICIES = ("thompson", "epsilon_greedy")
METRICS = ("accuracy", "latency_ms")  # what an A/B or shadow test decides on (cl_hpc/rollout/abtest.py)


@dataclass
class ExperimentConf:
    kind: str = "ab"  # shadow | ab | canary | interleave | bandit (conf/experiment/<kind>.yaml)
    model: Optional[str] = None  # registry model; None = the only one registered
    champion: str = "champion"  # the control arm: an alias or X.Y
    challenger: Optional[str] = None  # the version under test: X.Y or an alias; required to start
    # bandit only: more versions to play beside champion and challenger (arms named by version, e.g. "v1.3")
    more_arms: List[str] = field(default_factory=list)
    # what one assignment covers: request | user (the request's `unit`) | day (the request's UTC date)
    unit: str = "user"
    # share of units per arm {champion: .., challenger: ..}; empty = the kind's start (ab 50/50, canary its
    # first step, bandit even, shadow all live traffic to the champion)
    weights: Dict[str, float] = field(default_factory=dict)
    # what an A/B or shadow test decides on: accuracy (0/1 per answer on matured labels) | latency_ms (per request)
    metric: str = "accuracy"
    alpha: float = 0.05  # significance of every test; the sample-ratio check alarms at srm_alpha
    srm_alpha: float = 0.001
    power: float = 0.8  # with mde: the sample size printed up front
    # minimum detectable effect in the metric's units (absolute; the mSPRT's tau = mde): 0.02 is two points of
    # accuracy; for latency_ms set milliseconds (e.g. 1.0), or the test will hardly ever decide
    mde: float = 0.02
    sequential: bool = True  # A/B decides by the always-valid mSPRT, so looking early is safe
    shadow_share: float = 1.0  # shadow: share of live requests copied to the challenger
    shadow_queue: int = 1000  # shadow: copies waiting at most; beyond it a copy is dropped and counted
    steps: List[float] = field(default_factory=lambda: [1.0, 5.0, 25.0, 50.0, 100.0])  # canary ramp, percent
    # before any decision: canary, labelled rows per arm and step (and requests for latency); ab/shadow, values
    # of the metric per arm; bandit, rewards per arm; interleave, impressions with a winner
    min_samples: int = 500
    pass_score: float = 95.0  # canary judge: score >= it passes the step
    marginal_score: float = 75.0  # below it the canary rolls back; between: the step is repeated
    policy: str = "thompson"  # bandit: thompson | epsilon_greedy
    epsilon: float = 0.1  # bandit epsilon_greedy: share of exploration


def check_experiment(conf: ExperimentConf) -> None:
    """Every bad value at once, before anything is written."""
    problems = [msg for ok, msg in (
        (conf.kind in KINDS, f"experiment.kind={conf.kind!r}; valid: {', '.join(KINDS)}"),
        (conf.unit in UNITS, f"experiment.unit={conf.unit!r}; valid: {', '.join(UNITS)}"),
        (conf.policy in POLICIES, f"experiment.policy={conf.policy!r}; valid: {', '.join(POLICIES)}"),
        (conf.metric in METRICS, f"experiment.metric={conf.metric!r}; valid: {', '.join(METRICS)}"),
        (0 < conf.alpha < 1 and 0 < conf.srm_alpha < 1, "experiment.alpha and srm_alpha must lie in (0, 1)"),
        (0 < conf.power < 1, f"experiment.power={conf.power} must lie in (0, 1)"),
        (conf.mde > 0, f"experiment.mde={conf.mde} must be > 0"),
        (0 < conf.shadow_share <= 1, f"experiment.shadow_share={conf.shadow_share} must lie in (0, 1]"),
        (conf.shadow_queue >= 1, f"experiment.shadow_queue={conf.shadow_queue} must be >= 1"),
        (conf.min_samples >= 1, f"experiment.min_samples={conf.min_samples} must be >= 1"),
        (not conf.more_arms or conf.kind == "bandit",
         f"experiment.more_arms={list(conf.more_arms)}: only a bandit plays more than two versions"),
        (0 <= conf.marginal_score <= conf.pass_score <= 100,
         f"experiment scores: need 0 <= marginal_score ({conf.marginal_score}) <= pass_score ({conf.pass_score}) "
         f"<= 100"),
        (0 <= conf.epsilon <= 1, f"experiment.epsilon={conf.epsilon} must lie in [0, 1]"),
        (bool(conf.steps) and all(0 < s <= 100 for s in conf.steps)
         and all(a < b for a, b in zip(conf.steps, conf.steps[1:])),
         f"experiment.steps={list(conf.steps)}: increasing percentages in (0, 100]"),
    ) if not ok]
    if problems:
        raise ConfigError("; ".join(problems) + " (see conf/experiment/*.yaml, cl_hpc/config/experiment.py)")
