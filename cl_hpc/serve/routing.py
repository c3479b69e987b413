"""Routing by the running experiment: which arm answers a request, and which requests a shadow copies.

The model watcher reads the model's running experiment from the store on every poll (its newest
event: weights change with a canary's steps) and, when it changed, loads the arms' versions off the
request path and swaps one :class:`Routing` reference, as it does for the alias. A request reads it
once. Assignment is cl_hpc/rollout/assign.py's: the experiment's salt and the request's unit (the
request, its ``unit``, or its UTC day) hashed into buckets that the arms own in order, so a unit
stays on its arm, and a canary's rising weight only moves units to the challenger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from cl_hpc.errors import ClHpcError
from cl_hpc.rollout.assign import BUCKETS, Share, UnitKind, arm_for, bucket, unit_key
from cl_hpc.rollout.records import ExperimentKind
from cl_hpc.serve.inputs import RequestError
from cl_hpc.serve.models import Loaded

CHALLENGER, CHAMPION = "challenger", "champion"  # the arms cl_hpc.experiment start makes
# Kinds whose live traffic is split by the weights; a shadow's live answer is always the champion's.
SPLIT_KINDS = (ExperimentKind.AB, ExperimentKind.CANARY, ExperimentKind.BANDIT)


@dataclass(frozen=True)
class Routing:
    experiment_id: int
    event_id: int  # the experiment's newest event when this was built (a new one rebuilds it)
    kind: ExperimentKind
    unit: UnitKind
    salt: str
    shares: tuple[Share, ...]  # the arms in bucket order, with their weights now
    arms: dict[str, Loaded]  # arm name -> its loaded version
    shadow_share: float  # shadow: share of requests copied to the challenger
    config_queue: int = 1000  # shadow: copies waiting at most before one is dropped

    def route(self, request_id: str, unit: Optional[str], at: float) -> tuple[str, Loaded]:
        """The arm that answers this request, and its version."""
        if self.unit is UnitKind.USER and not unit:
            raise RequestError(f"experiment {self.experiment_id} assigns by user: send the request's `unit` (a "
                               f"non-empty user or session id), so that each user stays on one arm", "unit")
        try:
            key = unit_key(self.unit, request_id, unit, at)
        except ClHpcError as exc:  # the request's own unit or time: the client's to fix
            raise RequestError(f"experiment {self.experiment_id}: {exc}", "unit") from None
        name = arm_for(self.salt, key, self.shares)
        return name, self.arms[name]

    def copies(self, request_id: str) -> bool:
        """Whether a shadow gets a copy of this request (the same share on every server)."""
        return bucket(self.salt, request_id) < self.shadow_share * BUCKETS

    @property
    def splits(self) -> bool:
        return self.kind in SPLIT_KINDS


def routing_for(experiments: Any, name: str, load: Callable[[str], Loaded],
                current: Optional[Routing]) -> Optional[Routing]:
    """The routing of model ``name``'s running experiment (``current`` when nothing changed); None
    when none runs. ``load``: a version by number (the slot's cache)."""
    active = experiments.active(name)
    if active is None:
        return None
    experiment, latest = active
    if current is not None and (current.experiment_id, current.event_id) == (experiment.id, latest.id):
        return current
    arms = {arm.name: load(arm.version) for arm in experiment.arms}
    shares = tuple(Share(arm.name, float(latest.weights[arm.name])) for arm in experiment.arms)
    return Routing(experiment_id=experiment.id, event_id=latest.id, kind=experiment.kind, unit=experiment.unit,
                   salt=experiment.salt, shares=shares, arms=arms,
                   shadow_share=float(experiment.config.get("shadow_share", 1.0)),
                   config_queue=int(experiment.config.get("shadow_queue", 1000)))
