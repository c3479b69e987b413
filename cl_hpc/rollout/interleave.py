"""Team-draft interleaving of two rankings, click credit, and a small ranking simulation with a click model.

Team-draft interleaving (Radlinski, Kurup and Joachims, "How does clickthrough data reflect retrieval
quality?", CIKM 2008, Algorithm 2): like captains picking teams, each round a fair coin decides which
ranker picks first, then each adds its highest-ranked item not yet shown. A click on an item credits the
team that picked it; the ranker whose team gets more clicks wins the impression. The coin is flipped
every round, not once per list: with one flip per list, the ranker that lost the flip would place
its items lower on every round of that list.

The simulation (:class:`RankingSim`) is what the interleaving-versus-A/B benchmark runs on. Each query
has candidates with graded relevance; how rich in relevant items a query is varies from query to query
(a Beta-distributed share), which is the variance that makes A/B slow and that interleaving cancels,
since both rankers answer the same query. Ranker A and ranker B score the candidates with noise of known
size: less noise, better ranker. Clicks follow the dependent click model (Guo, Liu and Wang, WSDM 2009;
Chuklin, Markov and de Rijke, "Click Models for Web Search", 2015, ch. 3): the user scans the page top
down, clicks an examined item with its attractiveness, and after a click goes on scanning with a fixed
probability (0 gives the cascade model of Craswell et al., WSDM 2008).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Generic, Hashable, Iterable, Optional, Sequence, TypeVar

import numpy as np

from cl_hpc.errors import ConfigError, DataError

__all__ = ["Team", "Outcome", "Interleaving", "team_draft", "credit", "outcome", "RankingSim", "Query",
           "simulate_query", "clicks", "interleaving_impressions", "ABImpressions", "ab_impressions"]

Item = TypeVar("Item", bound=Hashable)


class Team(str, Enum):
    A = "A"
    B = "B"

    @property
    def other(self) -> Team:
        return Team.B if self is Team.A else Team.A


class Outcome(str, Enum):
    """Who won one interleaved impression."""

    A = "A"
    B = "B"
    TIE = "tie"  # as many clicks for both teams, including none


@dataclass(frozen=True)
class Interleaving(Generic[Item]):
    """The shown list, the team that picked each position, and who picked first in each round."""

    items: tuple[Item, ...]
    teams: tuple[Team, ...]
    first: tuple[Team, ...]


def _checked(ranking: Sequence[Item], name: str) -> list[Item]:
    items = list(ranking)
    if len(set(items)) != len(items):
        repeated = sorted({str(i) for i in items if items.count(i) > 1})
        raise DataError(f"ranking {name} lists an item more than once: {repeated}; "
                        "a ranking is a list of distinct items")
    return items


class _Drafter(Generic[Item]):
    """One team's pointer into its ranking: the next item not yet shown."""

    def __init__(self, ranking: list[Item]) -> None:
        self.ranking, self.at = ranking, 0

    def pick(self, shown: set[Item]) -> Optional[Item]:
        while self.at < len(self.ranking) and self.ranking[self.at] in shown:
            self.at += 1
        return self.ranking[self.at] if self.at < len(self.ranking) else None


def team_draft(a: Sequence[Item], b: Sequence[Item], rng: np.random.Generator,
               k: Optional[int] = None) -> Interleaving[Item]:
    """Interleave rankings ``a`` and ``b`` into ``k`` items (default: all items of either, deduplicated).

    A team whose ranking has no unshown item left passes its pick to the other team.
    """
    ranking_a, ranking_b = _checked(a, "A"), _checked(b, "B")
    union = len(set(ranking_a) | set(ranking_b))
    if k is not None and k < 0:
        raise ConfigError(f"an interleaved list has k >= 0 items; got k={k}")
    size = union if k is None else min(k, union)
    drafters = {Team.A: _Drafter(ranking_a), Team.B: _Drafter(ranking_b)}
    items: list[Item] = []
    teams: list[Team] = []
    firsts: list[Team] = []
    shown: set[Item] = set()
    while len(items) < size:
        first = Team.A if rng.random() < 0.5 else Team.B
        firsts.append(first)
        for team in (first, first.other):
            item = drafters[team].pick(shown)
            if item is None or len(items) == size:
                continue
            items.append(item)
            teams.append(team)
            shown.add(item)
    return Interleaving(tuple(items), tuple(teams), tuple(firsts))


def credit(teams: Sequence[Team], clicked_positions: Iterable[int]) -> tuple[int, int]:
    """Clicks credited to team A and to team B; a position clicked twice counts once."""
    positions = set(clicked_positions)
    outside = sorted(p for p in positions if not 0 <= p < len(teams))
    if outside:
        raise DataError(f"clicked positions {outside} are outside the shown list of {len(teams)} items "
                        f"(valid: 0..{len(teams) - 1})")
    wins_a = sum(teams[p] is Team.A for p in positions)
    return wins_a, len(positions) - wins_a


def outcome(teams: Sequence[Team], clicked_positions: Iterable[int]) -> Outcome:
    """The impression's winner: the team with more credited clicks, else a tie."""
    wins_a, wins_b = credit(teams, clicked_positions)
    return Outcome.A if wins_a > wins_b else Outcome.B if wins_b > wins_a else Outcome.TIE


# ---- the ranking simulation -------------------------------------------------------------------------


@dataclass(frozen=True)
class RankingSim:
    """A ranking world with a known better ranker. Ranker X scores an item relevance + N(0, noise_x)."""

    candidates: int = 20  # items per query
    shown: int = 10  # items per result page (k)
    grades: int = 5  # relevance grades 0..grades-1: Binomial(grades - 1, richness) per item
    richness: tuple[float, float] = (1.0, 1.0)  # Beta(a, b) of a query's share of relevant items
    noise_a: float = 0.5  # the scoring noise of ranker A (lower is better)
    noise_b: float = 1.0
    continue_after_click: float = 0.3  # 0: the cascade model (one click at most)

    def __post_init__(self) -> None:
        if not 1 <= self.shown <= self.candidates:
            raise ConfigError(f"a ranking sim shows 1..candidates items; got shown={self.shown}, "
                              f"candidates={self.candidates}")
        if self.grades < 2 or min(self.noise_a, self.noise_b, *self.richness) < 0 or min(self.richness) == 0:
            raise ConfigError(f"a ranking sim needs grades >= 2, noise >= 0 and richness > 0; got {self}")
        if not 0 <= self.continue_after_click <= 1:
            raise ConfigError(f"continue_after_click is a probability; got {self.continue_after_click}")

    def attractiveness(self, relevance: np.ndarray) -> np.ndarray:
        """Click probability once examined: (2**g - 1) / 2**g_max, the ERR mapping (Chapelle et al. 2009)."""
        return (2.0 ** relevance - 1) / 2.0 ** (self.grades - 1)


@dataclass(frozen=True)
class Query:
    """One query: the candidates' relevance grades and each ranker's ranking (item indices, best first)."""

    relevance: np.ndarray
    ranking_a: tuple[int, ...]
    ranking_b: tuple[int, ...]


def simulate_query(sim: RankingSim, rng: np.random.Generator) -> Query:
    share = rng.beta(*sim.richness)
    relevance = rng.binomial(sim.grades - 1, share, size=sim.candidates)
    noise = rng.standard_normal((2, sim.candidates))
    order_a = np.argsort(-(relevance + sim.noise_a * noise[0]), kind="stable")
    order_b = np.argsort(-(relevance + sim.noise_b * noise[1]), kind="stable")
    return Query(relevance, tuple(int(i) for i in order_a), tuple(int(i) for i in order_b))


def clicks(sim: RankingSim, relevance: np.ndarray, shown: Sequence[int], rng: np.random.Generator) -> list[int]:
    """The clicked positions of one result page under the dependent click model (top-down scan)."""
    items = np.asarray(shown[: sim.shown], dtype=int)
    attractive = rng.random(len(items)) < sim.attractiveness(relevance[items])
    goes_on = rng.random(len(items)) < sim.continue_after_click  # drawn for every position: same rng use per page
    clicked = []
    for position in np.flatnonzero(attractive):
        clicked.append(int(position))
        if not goes_on[position]:
            break
    return clicked


def interleaving_impressions(sim: RankingSim, n: int, seed: int) -> list[Outcome]:
    """``n`` team-draft impressions, one query each: the outcome of each (A, B or a tie)."""
    rng = np.random.default_rng(seed)
    outcomes = []
    for _ in range(n):
        query = simulate_query(sim, rng)
        shown = team_draft(query.ranking_a, query.ranking_b, rng, k=sim.shown)
        clicked = clicks(sim, query.relevance, shown.items, rng)
        outcomes.append(outcome(shown.teams, clicked))
    return outcomes


@dataclass(frozen=True)
class ABImpressions:
    """An A/B split of impressions: the arm of each (True = A) and its click count."""

    is_a: np.ndarray
    clicks: np.ndarray

    def ctr(self, arm: Team) -> float:
        """Mean clicks per impression of one arm."""
        mask = self.is_a if arm is Team.A else ~self.is_a
        return float(self.clicks[mask].mean()) if mask.any() else float("nan")


def ab_impressions(sim: RankingSim, n: int, seed: int) -> ABImpressions:
    """``n`` impressions, each randomly shown A's or B's ranking (50/50), with its number of clicks."""
    rng = np.random.default_rng(seed)
    is_a = np.zeros(n, dtype=bool)
    counts = np.zeros(n, dtype=int)
    for i in range(n):
        query = simulate_query(sim, rng)
        is_a[i] = rng.random() < 0.5
        ranking = query.ranking_a if is_a[i] else query.ranking_b
        counts[i] = len(clicks(sim, query.relevance, ranking, rng))
    return ABImpressions(is_a, counts)
