"""Which units a resumed run must run again, and which it can reuse."""

from __future__ import annotations

from typing import Mapping

from cl_hpc.dag.model import Plan
from cl_hpc.states import State


def plan_resume(new: Plan, old: Plan, old_states: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """(todo, reused), both in plan order.

    A unit is reused when it completed before, its fingerprint (its own target, params and item,
    chained with its upstream units' fingerprints) is unchanged, and every upstream unit is reused
    too, so the upstream outputs it consumed are the very same files. Everything else runs again:
    what failed or never ran, what changed, and everything downstream of those.
    """
    reused: set[str] = set()
    for key, unit in new.units.items():
        before = old.units.get(key)
        if (
            before is not None
            and old_states.get(key) == State.COMPLETED
            and before.fingerprint == unit.fingerprint
            and all(dep in reused for dep in unit.deps)
        ):
            reused.add(key)
    return [k for k in new.units if k not in reused], [k for k in new.units if k in reused]
