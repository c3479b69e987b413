"""What one look of the controller decides, whatever the experiment's kind (defined once: the canary,
the A/B and shadow tests, the bandit and interleaving all answer with a :class:`Step`, and
cl_hpc/rollout/controller.py's ``apply`` writes any of them)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from cl_hpc.rollout.judge import Judgement
from cl_hpc.rollout.stats import SrmResult

CHAMPION, CHALLENGER = "champion", "challenger"


class Decision(enum.Enum):
    WAIT = "wait"  # not enough evidence yet: nothing is written
    STEP = "step"  # new weights (a canary's next step, a bandit's new split): the experiment runs on
    ROLLBACK = "rollback"  # a canary failed its judge: the champion takes all traffic, the challenger is rejected
    REJECT = "reject"  # a test found the challenger not better: it is tagged rejected, the champion stays
    PROMOTE = "promote"  # the winner becomes the champion through the registry
    HALT = "halt"  # the split itself is broken (sample-ratio mismatch): no comparison can be trusted


@dataclass(frozen=True)
class Step:
    decision: Decision
    reason: str
    weights: dict[str, float]  # the weights after the decision
    judgement: Optional[Judgement] = None
    srm: Optional[SrmResult] = None
    samples: dict[str, Any] = field(default_factory=dict)  # per arm: requests, labelled, windows
    # the arm that wins (a bandit's best); None: the challenger on PROMOTE, else the champion
    winner: Optional[str] = None
    detail: dict[str, Any] = field(default_factory=dict)  # kept with the event: a test's numbers, a posterior


@dataclass(frozen=True)
class Sources:
    """Where a look reads its evidence."""

    log_dir: Path  # the prediction log (serve.log_dir)
    label_dirs: tuple[Path, ...] = ()  # the label join's zones (a shadow's copies: a zone of their own)
    label_col: str = "y"  # the zones' label column
    output: str = "label"  # the logged output compared with the label
    window_s: float = 10.0  # canary: seconds of traffic per judged sample


def halted(srm: SrmResult, weights: dict[str, float]) -> Step:
    """A sample-ratio mismatch: the champion takes all traffic, since no comparison can be trusted."""
    return Step(Decision.HALT, f"sample-ratio mismatch: units {list(srm.counts)} vs expected "
                               f"{[round(e, 1) for e in srm.expected]} (p = {srm.p_value:.2g}): the split is "
                               f"broken, so no comparison can be trusted", all_champion(weights), srm=srm)


def all_champion(weights: dict[str, float]) -> dict[str, float]:
    return {name: 1.0 if name == CHAMPION else 0.0 for name in weights}
