"""Team-draft interleaving: each team's picks, a permutation of the union, a fair first pick; click credit;
the ranking simulation (a better ranker wins, seeds reproduce)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from scipy import stats

from cl_hpc.errors import ConfigError, DataError
from cl_hpc.rollout.interleave import (
    Outcome,
    RankingSim,
    Team,
    ab_impressions,
    clicks,
    credit,
    interleaving_impressions,
    outcome,
    simulate_query,
    team_draft,
)


def random_rankings(rng: np.random.Generator, n: int = 12, overlap: int = 8) -> tuple[list[int], list[int]]:
    """Two rankings of n items each that share `overlap` items, in independent random orders."""
    shared = list(range(overlap))
    a = shared + list(range(100, 100 + n - overlap))
    b = shared + list(range(200, 200 + n - overlap))
    return [int(x) for x in rng.permutation(a)], [int(x) for x in rng.permutation(b)]


def test_each_pick_is_the_highest_ranked_remaining_item_of_its_team() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        a, b = random_rankings(rng)
        result = team_draft(a, b, rng)
        for position, (item, team) in enumerate(zip(result.items, result.teams)):
            before = set(result.items[:position])
            ranking = a if team is Team.A else b
            assert item == next(x for x in ranking if x not in before)


def test_the_result_is_a_permutation_of_the_union_cut_at_k() -> None:
    rng = np.random.default_rng(1)
    for k in (None, 0, 1, 5, 16, 50):
        a, b = random_rankings(rng)
        result = team_draft(a, b, rng, k=k)
        union = set(a) | set(b)
        size = len(union) if k is None else min(k, len(union))
        assert len(result.items) == len(result.teams) == size
        assert len(set(result.items)) == size and set(result.items) <= union


def test_every_round_flips_a_coin_and_both_teams_pick_once_per_round() -> None:
    rng = np.random.default_rng(2)
    a, b = list(range(10)), list(range(9, -1, -1))
    result = team_draft(a, b, rng)
    assert len(result.first) == 5
    for r, first in enumerate(result.first):
        assert result.teams[2 * r: 2 * r + 2] == (first, first.other)
    assert set(result.first) == {Team.A, Team.B}  # a flip per round, not one per list (2**-4 odds to fail: seeded)


def test_a_team_out_of_items_passes_its_pick() -> None:
    result = team_draft(["x"], ["x", "y", "z"], np.random.default_rng(3))
    assert sorted(result.items) == ["x", "y", "z"]
    assert result.teams.count(Team.A) <= 1


def test_identical_rankings_give_the_same_list() -> None:
    ranking = list("abcdefgh")
    result = team_draft(ranking, ranking, np.random.default_rng(4))
    assert list(result.items) == ranking
    assert Counter(result.teams) == {Team.A: 4, Team.B: 4}


def test_the_first_pick_is_fair() -> None:
    rng = np.random.default_rng(5)
    firsts = [t for _ in range(2000) for t in team_draft(list(range(10)), list(range(10))[::-1], rng).first]
    assert len(firsts) == 10_000
    assert stats.binomtest(firsts.count(Team.A), len(firsts), 0.5).pvalue > 0.01


def test_credit_and_outcome() -> None:
    teams = (Team.A, Team.B, Team.B, Team.A)
    assert credit(teams, []) == (0, 0)
    assert credit(teams, [0, 3, 1]) == (2, 1)
    assert credit(teams, [1, 1, 2]) == (0, 2)  # a position counts once
    assert outcome(teams, [0, 3, 1]) is Outcome.A
    assert outcome(teams, [2]) is Outcome.B
    assert outcome(teams, [0, 1]) is Outcome.TIE
    assert outcome(teams, []) is Outcome.TIE


def test_bad_inputs_are_clear_errors() -> None:
    rng = np.random.default_rng(6)
    with pytest.raises(DataError, match=r"ranking B lists an item more than once: \['c'\]"):
        team_draft(["a", "b"], ["c", "c"], rng)
    with pytest.raises(ConfigError, match="k >= 0"):
        team_draft(["a"], ["a"], rng, k=-1)
    with pytest.raises(DataError, match=r"positions \[4\] are outside the shown list of 4 items"):
        credit((Team.A,) * 4, [4])
    with pytest.raises(ConfigError, match="shows 1..candidates"):
        RankingSim(candidates=5, shown=10)
    with pytest.raises(ConfigError, match="probability"):
        RankingSim(continue_after_click=1.5)


def test_cascade_clicks_stop_after_a_click() -> None:
    sim = RankingSim(continue_after_click=0.0)
    rng = np.random.default_rng(7)
    relevance = np.full(sim.candidates, sim.grades - 1)  # every item is clicked once examined
    assert clicks(sim, relevance, list(range(sim.candidates)), rng) == [0]
    everything = RankingSim(continue_after_click=1.0)
    assert clicks(everything, relevance, list(range(20)), rng) == list(range(everything.shown))
    assert clicks(sim, np.zeros(sim.candidates, dtype=int), list(range(20)), rng) == []


def test_the_better_ranker_wins_more_clicks() -> None:
    sim = RankingSim(noise_a=0.5, noise_b=1.0)
    counts = Counter(interleaving_impressions(sim, 2000, seed=8))
    assert counts[Outcome.A] > counts[Outcome.B]
    p = stats.binomtest(counts[Outcome.A], counts[Outcome.A] + counts[Outcome.B], 0.5).pvalue
    assert p < 0.001
    ab = ab_impressions(sim, 20_000, seed=8)
    assert ab.ctr(Team.A) > ab.ctr(Team.B)
    assert 0.45 < ab.is_a.mean() < 0.55


def test_equal_rankers_do_not_separate() -> None:
    counts = Counter(interleaving_impressions(RankingSim(noise_a=1.0, noise_b=1.0), 2000, seed=9))
    assert stats.binomtest(counts[Outcome.A], counts[Outcome.A] + counts[Outcome.B], 0.5).pvalue > 0.01


def test_seeds_reproduce_the_simulation() -> None:
    sim = RankingSim()
    assert interleaving_impressions(sim, 300, seed=10) == interleaving_impressions(sim, 300, seed=10)
    assert interleaving_impressions(sim, 300, seed=10) != interleaving_impressions(sim, 300, seed=11)
    one, two = ab_impressions(sim, 300, seed=10), ab_impressions(sim, 300, seed=10)
    assert np.array_equal(one.is_a, two.is_a) and np.array_equal(one.clicks, two.clicks)
    q1, q2 = simulate_query(sim, np.random.default_rng(12)), simulate_query(sim, np.random.default_rng(12))
    assert q1.ranking_a == q2.ranking_a and np.array_equal(q1.relevance, q2.relevance)
