"""Interleaving's decision: the clicks on logged team-draft impressions credit the teams, a sign test decides.

What the log holds (``POST /rank``, cl_hpc/serve/ranking.py): an interleaved answer is one impression,
and each item it showed is one row of the prediction log with ``row`` = its position, ``arm`` = the team
that placed it (challenger or champion, under its own version), and the outputs ``item`` (the item's
id), ``score`` (its team's score) and ``first`` (the pick opened its round: the round's coin chose that
team). A click is an outcome (``POST /outcomes``) naming the impression's ``request_id`` and the clicked
position as ``row``, with a positive ``reward`` or the label ``true`` (or a positive number); a reward of
0 or a label ``false`` says "shown, not clicked". Outcomes without a row, or naming a position not shown,
credit nobody and are counted as ignored.

Credit (Radlinski, Kurup and Joachims, CIKM 2008; cl_hpc/rollout/interleave.py): a click credits the
team that placed the clicked item, a position clicked twice counts once, and the team with more credited
clicks wins the impression (as many, including none, is a tie). The decision, one look:

- the first picks are not split evenly between the teams (chi-square against 50/50, p < srm_alpha): HALT,
  since a biased coin favours one ranker's items with higher positions and no comparison can be trusted;
- fewer than ``min_samples`` decided (not tied) impressions: WAIT;
- the sign test (ties left out) prefers the challenger at ``alpha``: PROMOTE; it prefers the champion:
  REJECT (the challenger is tagged rejected, the champion stays);
- otherwise WAIT, with the counts in the reason.

The sign test is the always-valid one (stats.sign_test_always_valid, a Beta-mixture likelihood ratio)
while ``experiment.sequential`` is true, the default: the controller looks at every poll, and the exact
binomial test (stats.sign_test, ``sequential: false``) read at every look would raise the false-positive
rate above ``alpha``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import pandas as pd

from cl_hpc.data.predictions import OUTPUT_PREFIX, Stream, decode_label, read_stream
from cl_hpc.rollout.records import Experiment, ExperimentEvent, ExperimentKind, current_split
from cl_hpc.rollout.report import logged_rows
from cl_hpc.rollout.stats import (
    Side,
    SignResult,
    SrmResult,
    count_wins,
    sample_ratio_mismatch,
    sign_test,
    sign_test_always_valid,
)
from cl_hpc.rollout.steps import CHALLENGER, CHAMPION, Decision, Step, all_champion

# The outputs of a logged ranking row (written by cl_hpc/serve/ranking.py, read here).
ITEM, SCORE, FIRST = "item", "score", "first"
MIN_ROUNDS_CHECKED = 20  # first picks before the coin's fairness is tested
TEAMS = (CHAMPION, CHALLENGER)  # the sign test's A and B: B is the challenger


@dataclass(frozen=True)
class Credit:
    """The experiment's impressions and their credited clicks, per team."""

    impressions: int
    clicks: int  # credited clicks: distinct clicked positions that were shown
    wins: dict[str, int]  # team -> impressions it won
    ties: int
    first_picks: dict[str, int]  # team -> rounds it picked first
    ignored: int  # click outcomes of these impressions that credit nobody (no row, a position not shown)

    @property
    def decided(self) -> int:
        return sum(self.wins.values())


def interleave_step(experiment: Experiment, events: Sequence[ExperimentEvent], log_dir: Path) -> Step:
    """The decision of an interleave experiment from its logged impressions and clicks (nothing written).
    Settings from the experiment's config: ``alpha``, ``srm_alpha``, ``min_samples`` (decided impressions)."""
    if experiment.kind is not ExperimentKind.INTERLEAVE:
        raise ValueError(f"experiment {experiment.id} is a {experiment.kind.value}, not an interleave")
    config = experiment.config
    weights = dict(current_split(events).weights)
    credit = credits(experiment, log_dir)
    srm = _first_picks(credit, float(config.get("srm_alpha", 0.001)))
    if srm is not None and srm.mismatch:
        return Step(Decision.HALT, f"first picks {credit.first_picks} are not an even split (p = {srm.p_value:.2g}): "
                                   f"the coin is biased, so the teams' clicks cannot be compared",
                    all_champion(weights), srm=srm, samples=asdict(credit))
    # Sequential (the default): the controller looks at every poll, so only an always-valid p may decide.
    test = sign_test_always_valid if bool(config.get("sequential", True)) else sign_test
    result = test(credit.wins[CHAMPION], credit.wins[CHALLENGER], ties=credit.ties,
                  alpha=float(config.get("alpha", 0.05)))
    return _decide(credit, result, int(config.get("min_samples", 500)), weights, srm)


def _decide(credit: Credit, result: SignResult, min_samples: int, weights: dict[str, float],
            srm: Optional[SrmResult]) -> Step:
    counts = (f"{credit.impressions} impressions, {credit.clicks} credited clicks; wins challenger "
              f"{credit.wins[CHALLENGER]}, champion {credit.wins[CHAMPION]}, ties {credit.ties}")
    detail = {"p_value": result.p_value, "alpha": result.alpha}
    samples = asdict(credit)
    if credit.decided < min_samples:
        return Step(Decision.WAIT, f"interleaving: {counts}; {credit.decided} decided impressions of the "
                                   f"{min_samples} needed (experiment.min_samples)", weights, srm=srm,
                    samples=samples, detail=detail)
    test = f"sign test p = {result.p_value:.3g} (alpha {result.alpha:g})"  # always valid unless sequential: false
    if result.preferred is Side.B:
        return Step(Decision.PROMOTE, f"interleaving prefers the challenger: {counts}; {test}", weights, srm=srm,
                    samples=samples, detail=detail)
    if result.preferred is Side.A:
        return Step(Decision.REJECT, f"interleaving prefers the champion: {counts}; {test}", all_champion(weights),
                    srm=srm, samples=samples, detail=detail)
    return Step(Decision.WAIT, f"interleaving: no significant preference yet: {counts}; {test}", weights, srm=srm,
                samples=samples, detail=detail)


def credits(experiment: Experiment, log_dir: Path) -> Credit:
    """Every logged impression of ``experiment`` with its clicks credited to the teams."""
    shown = _shown(logged_rows(experiment, log_dir))
    impressions = pd.Index(shown["request_id"].unique())
    clicked, ignored = _clicks(log_dir, experiment, impressions)
    credited = clicked.merge(shown[["request_id", "row", "arm"]], on=["request_id", "row"], how="left")
    ignored += int(credited["arm"].isna().sum())  # clicks on positions the impression did not show
    credited = credited.dropna(subset=["arm"])
    per_team = (credited.groupby(["request_id", "arm"]).size().unstack(fill_value=0)
                .reindex(index=impressions, columns=list(TEAMS), fill_value=0))
    wins_champion, wins_challenger, ties = count_wins(per_team[CHAMPION], per_team[CHALLENGER])
    firsts = shown[shown[OUTPUT_PREFIX + FIRST].eq(True)]["arm"].value_counts()
    return Credit(impressions=len(impressions), clicks=len(credited),
                  wins={CHALLENGER: wins_challenger, CHAMPION: wins_champion}, ties=ties,
                  first_picks={team: int(firsts.get(team, 0)) for team in (CHALLENGER, CHAMPION)}, ignored=ignored)


def _shown(logged: pd.DataFrame) -> pd.DataFrame:
    """The rows of interleaved answers (not the experiment's /predict rows, nor single rankings)."""
    columns = ["request_id", "row", "arm", OUTPUT_PREFIX + FIRST]
    if not len(logged) or OUTPUT_PREFIX + FIRST not in logged.columns:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c == "row" else object) for c in columns})
    rows = logged[(logged["role"] == "live") & logged[OUTPUT_PREFIX + FIRST].notna() & logged["arm"].isin(TEAMS)]
    return rows[columns].astype({"row": "int64"}).reset_index(drop=True)


def _clicks(log_dir: Path, experiment: Experiment, impressions: pd.Index) -> tuple[pd.DataFrame, int]:
    """The distinct clicked (request_id, row) of these impressions, and the clicks that name no row."""
    outcomes = read_stream(log_dir, Stream.OUTCOMES, since=experiment.created).frame
    outcomes = outcomes[outcomes["request_id"].isin(impressions)]
    clicked = outcomes[_is_click(outcomes)]
    placed = clicked.dropna(subset=["row"])
    pairs = placed[["request_id", "row"]].astype({"row": "int64"}).drop_duplicates()
    return pairs.reset_index(drop=True), len(clicked) - len(placed)


def _is_click(outcomes: pd.DataFrame) -> pd.Series:
    """A positive reward, or a label of true or a positive number."""
    reward = pd.to_numeric(outcomes["reward"], errors="coerce").fillna(0) > 0
    return reward | outcomes["label"].map(lambda text: _positive(decode_label(text))).astype(bool)


def _positive(label: Any) -> bool:
    if isinstance(label, bool):
        return label
    return isinstance(label, (int, float)) and label > 0


def _first_picks(credit: Credit, threshold: float) -> Optional[SrmResult]:
    counts = [credit.first_picks[CHALLENGER], credit.first_picks[CHAMPION]]
    if sum(counts) < MIN_ROUNDS_CHECKED:
        return None
    return sample_ratio_mismatch(counts, [0.5, 0.5], threshold=threshold)

