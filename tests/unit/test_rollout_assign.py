"""Assignment: stable buckets, sticky arms, a monotone canary ramp, uniform buckets, UTC days, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from scipy import stats

from cl_hpc.errors import ConfigError, DataError
from cl_hpc.rollout.assign import (
    BUCKETS,
    Share,
    UnitKind,
    arm_for,
    boundaries,
    bucket,
    ramp_increments,
    ramp_steps,
    unit_key,
    unit_kind,
    validate_arms,
)

KEYS = [f"user-{i}" for i in range(100_000)]
SALT = "exp-42"


def canary(weight: float) -> list[Share]:
    return [Share("challenger", weight), Share("champion", 1.0 - weight)]


def test_bucket_is_stable_across_processes() -> None:
    # Python's hash() of a str changes per process (PYTHONHASHSEED); the bucket must not.
    code = "from cl_hpc.rollout.assign import bucket; print([bucket('s', k) for k in ('a', 'b', 'user-7')])"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert outs == {str([bucket("s", k) for k in ("a", "b", "user-7")]) + "\n"}


def test_salt_changes_the_buckets() -> None:
    same = sum(bucket("a", k) == bucket("b", k) for k in KEYS[:10_000])
    assert same < 20  # ~1 expected by chance (1 / BUCKETS each)


def test_assignment_is_sticky_for_fixed_weights() -> None:
    arms = [Share("a", 0.3), Share("b", 0.3), Share("c", 0.4)]
    first = [arm_for(SALT, k, arms) for k in KEYS]
    assert [arm_for(SALT, k, list(arms)) for k in KEYS] == first
    shares = Counter(first)
    for arm in arms:  # 100 000 keys: the share is within ~5 standard errors of the weight
        assert shares[arm.name] / len(KEYS) == pytest.approx(arm.weight, abs=0.008)


def test_raising_the_canary_weight_only_moves_units_to_the_challenger() -> None:
    ramp = [0.01, 0.05, 0.25, 0.5, 1.0]
    before = [arm_for(SALT, k, canary(0.0)) for k in KEYS]
    assert set(before) == {"champion"}
    for weight in ramp:
        after = [arm_for(SALT, k, canary(weight)) for k in KEYS]
        moved = [(b, a) for b, a in zip(before, after) if b != a]
        assert all(m == ("champion", "challenger") for m in moved)
        assert after.count("challenger") / len(KEYS) == pytest.approx(weight, abs=0.006)
        before = after


def test_share_moved_matches_the_weight_change() -> None:
    before = [arm_for(SALT, k, canary(0.25)) for k in KEYS]
    after = [arm_for(SALT, k, canary(0.5)) for k in KEYS]
    moved = sum(b != a for b, a in zip(before, after))
    assert moved / len(KEYS) == pytest.approx(0.25, abs=0.006)


def test_buckets_are_uniform() -> None:
    counts = np.bincount([bucket(SALT, k) for k in KEYS], minlength=BUCKETS)
    assert len(counts) == BUCKETS
    assert stats.chisquare(counts).pvalue > 0.001


def test_boundaries_follow_the_arm_order_and_end_at_buckets() -> None:
    assert boundaries(canary(0.05)) == (500, BUCKETS)
    assert boundaries([Share("a", 1 / 3), Share("b", 1 / 3), Share("c", 1 / 3)]) == (3333, 6667, BUCKETS)
    assert boundaries([Share("off", 0.0), Share("on", 1.0)]) == (0, BUCKETS)
    assert {arm_for(SALT, k, [Share("off", 0.0), Share("on", 1.0)]) for k in KEYS[:1000]} == {"on"}


def test_request_and_user_keys() -> None:
    at = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
    assert unit_key(UnitKind.REQUEST, "r-1", "u-9", at) == "r-1"
    assert unit_key(UnitKind.USER, "r-1", "u-9", at) == "u-9"
    assert unit_kind("user") is UnitKind.USER


def test_day_units_switch_at_utc_midnight() -> None:
    midnight = datetime(2026, 3, 2, tzinfo=timezone.utc)
    just_before, at_midnight = midnight - timedelta(microseconds=1), midnight
    assert unit_key(UnitKind.DAY, "r", None, just_before) == "2026-03-01"
    assert unit_key(UnitKind.DAY, "r", None, at_midnight) == "2026-03-02"
    # the same instants as unix seconds (the prediction log's `at`) and in another zone
    assert unit_key(UnitKind.DAY, "r", None, midnight.timestamp() - 0.001) == "2026-03-01"
    assert unit_key(UnitKind.DAY, "r", None, midnight.timestamp()) == "2026-03-02"
    paris = timezone(timedelta(hours=1))
    assert unit_key(UnitKind.DAY, "r", None, datetime(2026, 3, 2, 0, 30, tzinfo=paris)) == "2026-03-01"
    day = [arm_for(SALT, unit_key(UnitKind.DAY, f"r{i}", None, midnight + timedelta(hours=i % 24)), canary(0.5))
           for i in range(200)]
    assert len(set(day)) == 1  # every request of one day goes to one arm


def test_user_unit_missing_is_a_clear_error() -> None:
    for unit in (None, ""):
        with pytest.raises(ConfigError, match="a unit field that the requests do not carry"):
            unit_key(UnitKind.USER, "r-1", unit, 0.0)


@pytest.mark.parametrize("at", [datetime(2026, 3, 1), float("nan")])
def test_day_unit_needs_a_known_instant(at: object) -> None:
    with pytest.raises(DataError, match="no UTC day"):
        unit_key(UnitKind.DAY, "r", None, at)  # type: ignore[arg-type]


def test_unknown_unit_kind_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="request, user, day"):
        unit_kind("session")


@pytest.mark.parametrize("arms, message", [
    ([Share("a", 0.5), Share("b", 0.4)], r"sum to 1 .*'a': 0.5, 'b': 0.4.*sum to 0.9"),
    ([Share("a", 0.7), Share("b", 0.7)], r"sum to 1.*sum to 1.4"),
    ([Share("a", 1.5), Share("b", -0.5)], r"in \[0, 1\]"),
    ([Share("a", float("nan")), Share("b", 1.0)], r"in \[0, 1\]"),
    ([Share("a", 0.5), Share("a", 0.5)], r"unique.*repeated: \['a'\]"),
    ([Share("", 1.0)], "non-empty"),
    ([], "at least one arm"),
])
def test_bad_weights_and_names_are_config_errors(arms: list[Share], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate_arms(arms)
    with pytest.raises(ConfigError):
        arm_for(SALT, "k", arms)


def test_weights_within_tolerance_are_accepted() -> None:
    assert validate_arms([Share("a", 0.1), Share("b", 0.2), Share("c", 0.7 + 1e-12)])


@pytest.mark.parametrize("steps, ramp", [
    ([1, 5, 25, 50, 100], [1, 5, 25, 50, 100]),
    ([10, 20], [10, 20, 100]),
    ([100], [100]),
    ([0.5, 2.5], [0.5, 2.5, 100]),
])
def test_ramp_steps_end_at_100(steps: list[float], ramp: list[float]) -> None:
    assert ramp_steps(steps) == ramp


@pytest.mark.parametrize("step, ramp", [
    (30, [30, 60, 90, 100]),  # flagger#189: 30 does not divide 100
    (25, [25, 50, 75, 100]),
    (100, [100]),
    (60, [60, 100]),
])
def test_ramp_increments_reach_100(step: float, ramp: list[float]) -> None:
    assert ramp_increments(step) == ramp


def test_small_increments_do_not_drift() -> None:
    ramp = ramp_increments(0.1)
    assert len(ramp) == 1000 and ramp[-1] == 100.0 and ramp[2] == 0.3


@pytest.mark.parametrize("steps, message", [
    ([], "at least one step"),
    ([0, 50], r"\(0, 100\]"),
    ([50, 150], r"\(0, 100\]"),
    ([5, 5, 50], "strictly increase"),
    ([50, 25], "strictly increase"),
])
def test_bad_ramps_are_config_errors(steps: list[float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ramp_steps(steps)


@pytest.mark.parametrize("step", [0.0, -5.0, 120.0, float("inf")])
def test_bad_step_weight_is_a_config_error(step: float) -> None:
    with pytest.raises(ConfigError, match="step weight"):
        ramp_increments(step)
