"""The replay simulator (cl_hpc/rollout/simulate.py, replay.py): known challengers get the decisions
they should, through the production decision code, and a replay is deterministic for a seed."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cl_hpc.errors import ConfigError, DataError
from cl_hpc.rollout.assign import Share, arm_for
from cl_hpc.rollout.canary import _per_window
from cl_hpc.rollout.replay import bandit, canary, fifty_fifty_regret, per_window, run_all
from cl_hpc.rollout.simulate import (
    Effect,
    Method,
    Settings,
    Stream,
    Verdict,
    ab,
    buckets,
    derive,
    known_challengers,
    shadow,
    to_challenger,
)

ROWS = 30_000
SETTINGS = Settings(delay=200, look_every=100, window=500, min_samples=100)


def _stream(run: int, effect: float = 0.25, rows: int = ROWS) -> Stream:
    champion = (np.random.default_rng(123).random(rows) < 0.85).astype(np.int8)
    return known_challengers(champion, [str(i) for i in range(rows)], effect, seed=7, run=run)


def test_derived_challengers_have_the_known_effect() -> None:
    champion = (np.random.default_rng(0).random(50_000) < 0.8).astype(np.int8)
    rng = np.random.default_rng(1)
    better, worse, equal = (derive(champion, kind, 0.25, rng) for kind in (Effect.BETTER, Effect.WORSE, Effect.EQUAL))
    assert better.mean() == pytest.approx(0.8 + 0.25 * 0.2, abs=0.01) and (better >= champion).all()
    assert worse.mean() == pytest.approx(0.8 * 0.75, abs=0.01) and (worse <= champion).all()
    assert equal.sum() == champion.sum()  # the same accuracy, block by block
    assert np.corrcoef(equal, champion)[0, 1] == pytest.approx(0.0, abs=0.03)  # errors independent
    assert derive(champion, Effect.WORSE, 1.0, rng).sum() == 0  # label-flipped: every right answer wrong
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        derive(champion, Effect.BETTER, 0.0, rng)


def test_assignment_is_arm_for_and_windows_are_the_canarys() -> None:
    units = [f"user-{i}" for i in range(500)]
    weights = {"challenger": 0.05, "champion": 0.95}
    mine = to_challenger(buckets("salt", units), weights)
    theirs = [arm_for("salt", u, [Share("challenger", 0.05), Share("champion", 0.95)]) == "challenger"
              for u in units]
    assert mine.tolist() == theirs
    rows = np.array([3, 4, 10, 11, 12, 40])
    values = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    expected = _per_window(pd.Series(pd.to_datetime(rows, unit="s")), pd.Series(values),
                           pd.Timestamp(2, unit="s", tz="UTC"), 5.0, lambda v: float(np.mean(v)))
    assert per_window(rows, values, 2, 5).tolist() == expected.tolist()


@pytest.mark.parametrize("run", range(3))
def test_better_is_promoted_by_ab_and_canary(run: int) -> None:
    stream = _stream(run)
    assert ab(stream, "better", SETTINGS, f"s{run}").decision is Verdict.PROMOTE
    promoted = canary(stream, "better", SETTINGS, f"s{run}")
    assert promoted.decision is Verdict.PROMOTE and promoted.step == 100.0


@pytest.mark.parametrize("run", range(5))
def test_worse_is_rolled_back_early_and_never_promoted(run: int) -> None:
    stream = _stream(run)
    rolled = canary(stream, "worse", SETTINGS, f"s{run}")
    assert rolled.decision is Verdict.ROLLBACK
    # rolled back in its first steps, having answered about their share of the traffic and no more
    assert rolled.step is not None and rolled.step <= SETTINGS.steps[1]
    assert rolled.exposed_share <= 2 * rolled.step / 100
    assert rolled.rows is not None and rolled.exposed < 0.05 * rolled.rows
    assert ab(stream, "worse", SETTINGS, f"s{run}").decision is not Verdict.PROMOTE
    assert shadow(stream, "worse", SETTINGS, f"s{run}").decision is not Verdict.PROMOTE


@pytest.mark.parametrize("run", range(3))
def test_equal_is_not_promoted_by_the_tests(run: int) -> None:
    stream = _stream(run)
    assert ab(stream, "equal", SETTINGS, f"s{run}").decision is not Verdict.PROMOTE
    assert shadow(stream, "equal", SETTINGS, f"s{run}").decision is not Verdict.PROMOTE


def test_a_shadow_never_exposes_users() -> None:
    result = shadow(_stream(0), "worse", SETTINGS, "s")
    assert result.exposed == 0 and result.regret == 0.0


@pytest.mark.parametrize("run", range(3))
def test_bandit_regret_is_below_a_fifty_fifty_split(run: int) -> None:
    stream = _stream(run)
    for name in ("worse", "better"):
        played = bandit(stream, name, SETTINGS, f"s{run}")
        assert played.regret is not None and played.regret < fifty_fifty_regret(stream, name, f"s{run}")


def test_a_replay_is_deterministic_for_a_seed() -> None:
    small = Settings(min_samples=50)
    first = [r.to_json() for r in run_all(_stream(0, rows=6000), small, seed=3)]
    again = [r.to_json() for r in run_all(_stream(0, rows=6000), small, seed=3)]
    other = [r.to_json() for r in run_all(_stream(0, rows=6000), small, seed=4)]
    assert first == again and first != other
    assert {(r["method"], r["challenger"]) for r in first} == {(m.value, e.value) for m in Method for e in Effect}


def test_bad_input_is_refused() -> None:
    with pytest.raises(DataError, match="no rows"):
        Stream(np.zeros(0, dtype=np.int8), [])
    with pytest.raises(ConfigError, match="delay"):
        Settings(delay=-1)
    with pytest.raises(ConfigError, match="ramp steps"):
        Settings(steps=(5.0, 1.0))
