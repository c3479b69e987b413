"""Deterministic, sticky assignment of traffic units to the arms of an experiment.

A unit (the request, a user or session, or the UTC day of the request) is hashed together with the
experiment's salt into one of :data:`BUCKETS` buckets. The hash is blake2b, never Python's ``hash()``,
which is salted per process: two server workers, or one server before and after a restart, must put a
unit in the same bucket.

Arms own contiguous ranges of buckets, in the order they are given: the first arm owns
``[0, w0 * BUCKETS)``, the next ``[w0 * BUCKETS, (w0 + w1) * BUCKETS)``, and so on. For a canary the
challenger comes first and the champion second, so raising the challenger's weight only extends the
challenger's range into the champion's: units move from champion to challenger, never back, and the
share that moves is the weight change. Weights are resolved to whole buckets (1 / 10 000 = 0.01 %).
"""

from __future__ import annotations

import bisect
import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Optional, Sequence, Union

from cl_hpc.errors import ConfigError, DataError

__all__ = ["BUCKETS", "UnitKind", "Share", "unit_kind", "validate_arms", "boundaries", "bucket", "arm_for",
           "unit_key", "ramp_steps", "ramp_increments"]

BUCKETS = 10_000
WEIGHT_TOLERANCE = 1e-9


class UnitKind(str, Enum):
    """What one assignment decision covers."""

    REQUEST = "request"  # every request is assigned on its own
    USER = "user"  # a user or session: sticky across its requests (when the models interact with users)
    DAY = "day"  # all traffic of one UTC day goes to one arm (when units interact with each other)


@dataclass(frozen=True)
class Share:
    """One version under test and its share of the traffic, in [0, 1]."""

    name: str
    weight: float


def unit_kind(name: str) -> UnitKind:
    """The UnitKind called ``name`` (from config), or a ConfigError that lists the valid ones."""
    try:
        return UnitKind(name)
    except ValueError:
        valid = ", ".join(k.value for k in UnitKind)
        raise ConfigError(f"unknown experiment unit {name!r}; valid units: {valid}") from None


def validate_arms(arms: Sequence[Share]) -> tuple[Share, ...]:
    """The arms, checked: at least one, unique non-empty names, each weight in [0, 1], summing to 1."""
    if not arms:
        raise ConfigError("an experiment needs at least one arm (a version and its weight)")
    names = [a.name for a in arms]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates or not all(names):
        raise ConfigError(f"arm names must be unique and non-empty; got {names} (repeated: {duplicates})")
    weights = [a.weight for a in arms]
    bad = [a for a in arms if not (math.isfinite(a.weight) and 0.0 <= a.weight <= 1.0)]
    if bad:
        raise ConfigError(f"arm weights must lie in [0, 1]; got {dict(zip(names, weights))}")
    total = math.fsum(weights)
    if abs(total - 1.0) > WEIGHT_TOLERANCE:
        raise ConfigError(f"arm weights must sum to 1 (within {WEIGHT_TOLERANCE:g}); got {dict(zip(names, weights))},"
                          f" which sum to {total!r}")
    return tuple(arms)


def boundaries(arms: Sequence[Share]) -> tuple[int, ...]:
    """The end bucket (exclusive) of each arm's range; the last is always BUCKETS.

    Bounds are rounded cumulative sums, not per-arm roundings, so they never overlap or leave a gap.
    """
    validate_arms(arms)
    cumulative = 0.0
    bounds = []
    for arm in arms:
        cumulative += arm.weight
        bounds.append(min(BUCKETS, round(cumulative * BUCKETS)))
    bounds[-1] = BUCKETS
    return tuple(bounds)


def bucket(salt: str, key: str) -> int:
    """The bucket of ``key`` under ``salt``, in [0, BUCKETS): stable across processes and machines."""
    digest = hashlib.blake2b(f"{salt}:{key}".encode(), digest_size=8).digest()
    # 2**64 mod 10**4 leaves a bias of ~1e-15 per bucket: negligible.
    return int.from_bytes(digest, "big") % BUCKETS


def arm_for(salt: str, key: str, arms: Sequence[Share]) -> str:
    """The name of the arm that ``key`` is assigned to (the arm whose bucket range holds its bucket)."""
    bounds = boundaries(arms)
    return arms[bisect.bisect_right(bounds, bucket(salt, key))].name


def unit_key(kind: UnitKind, request_id: str, unit: Optional[str], at: Union[float, datetime]) -> str:
    """The key hashed for one request: its id, its unit (user/session) or its UTC date.

    ``at`` is when the request came, as unix seconds (the prediction log's ``at``) or an aware datetime.
    """
    if kind is UnitKind.REQUEST:
        if not request_id:
            raise DataError("the experiment assigns by request, but this request has an empty request_id")
        return request_id
    if kind is UnitKind.USER:
        if unit is None or unit == "":
            raise ConfigError(
                f"the experiment assigns by user, but request {request_id!r} carries no unit: a unit field that the "
                "requests do not carry. Send the user or session id as the request's `unit`, or assign by "
                f"{UnitKind.REQUEST.value!r}")
        return unit
    return _utc_date(at)


def _utc_date(at: Union[float, datetime]) -> str:
    if isinstance(at, datetime):
        if at.tzinfo is None or at.utcoffset() is None:
            raise DataError(f"a request time without a time zone ({at.isoformat()}) has no UTC day; "
                            "pass an aware datetime or unix seconds")
        return at.astimezone(timezone.utc).date().isoformat()
    if not math.isfinite(at):
        raise DataError(f"a request time of {at!r} has no UTC day; pass unix seconds or an aware datetime")
    return datetime.fromtimestamp(at, tz=timezone.utc).date().isoformat()


def ramp_steps(steps: Sequence[float]) -> list[float]:
    """A canary's ramp in percent: the steps, checked, ending at 100 even where the config stops short.

    Flagger's step weights could stop short of full traffic (flagger#189); here a ramp that does not
    reach 100 gets a final 100 % step, so a passing canary is always promoted at full traffic.
    """
    if not steps:
        raise ConfigError("a canary ramp needs at least one step, in percent (e.g. [1, 5, 25, 50, 100])")
    values = [float(s) for s in steps]
    if not all(math.isfinite(s) and 0.0 < s <= 100.0 for s in values):
        raise ConfigError(f"canary ramp steps are percentages in (0, 100]; got {list(steps)}")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ConfigError(f"canary ramp steps must strictly increase; got {list(steps)}")
    return values if values[-1] == 100.0 else [*values, 100.0]


def ramp_increments(step_weight: float, max_weight: float = 100.0) -> list[float]:
    """A ramp by a fixed increment, Flagger's ``stepWeight``: 30 -> [30, 60, 90, 100] (flagger#189).

    Each step is ``i * step_weight``, computed by multiplication, so that 0.1 % steps do not drift.
    """
    if not (math.isfinite(step_weight) and 0.0 < step_weight <= 100.0):
        raise ConfigError(f"a canary step weight is a percentage in (0, 100]; got {step_weight!r}")
    if not (math.isfinite(max_weight) and step_weight <= max_weight <= 100.0):
        raise ConfigError(f"a canary's max weight lies in [step weight, 100]; got {max_weight!r}")
    count = math.floor(max_weight / step_weight + 1e-9)
    steps = [round(i * step_weight, 9) for i in range(1, count + 1)]
    return ramp_steps([s for s in steps if s <= max_weight])
