"""Interleaving's decision on a prediction log written as the server writes it (cl_hpc/serve/ranking.py's
rank and batches, the real PredictionLog writer): a challenger whose items get the clicks is promoted, one
whose items do not is rejected, few clicks wait, clicks are credited per position (once, shown ones only),
a biased first pick halts, and the controller's look writes the decision through a real registry."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import pytest

from cl_hpc.data.predictions import Outcome
from cl_hpc.learn.contract import Signature, Spec
from cl_hpc.rollout.assign import UnitKind
from cl_hpc.rollout.interleaving import credits, interleave_step
from cl_hpc.rollout.records import Action, Arm, Experiment, ExperimentEvent, ExperimentKind, ExperimentState
from cl_hpc.rollout.steps import CHALLENGER, CHAMPION, Decision
from cl_hpc.serve import ranking
from cl_hpc.serve.models import Loaded
from cl_hpc.serve.predlog import PredictionLog

T0 = time.time() - 3600
ARMS = (Arm(CHALLENGER, "2.0"), Arm(CHAMPION, "1.0"))
SIGNATURE = Signature((Spec("x", "float64"),), (Spec("score", "float64"),))
CONFIG = {"alpha": 0.05, "srm_alpha": 0.001, "min_samples": 20}
Clicker = Callable[[list[float], list[Any]], list[int]]  # (relevance per shown position, arms) -> clicked positions


def loaded(version: str) -> Loaded:
    return Loaded("demo", version, None, SIGNATURE, "test.Ranker", SIGNATURE.outputs, T0, 0.0)


VERSIONS = {CHALLENGER: loaded("2.0"), CHAMPION: loaded("1.0")}


def experiment(config: Mapping[str, Any] = CONFIG, kind: ExperimentKind = ExperimentKind.INTERLEAVE) -> Experiment:
    return Experiment(1, "demo", kind, UnitKind.REQUEST, "salt", ARMS, dict(config), T0 - 1, "test")


EVENTS = [ExperimentEvent(1, 1, T0 - 1, Action.START, ExperimentState.RUNNING, {CHALLENGER: 0.5, CHAMPION: 0.5},
                          "start")]


def scorer(better: str) -> Callable[[Loaded, pd.DataFrame], dict[str, np.ndarray]]:
    """The ``better`` arm scores items by their relevance x, the other by -x (it ranks the worst first)."""
    def predict(version: Loaded, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        x = frame["x"].to_numpy()
        return {"score": x if version is VERSIONS[better] else -x}
    return predict


def best_clicked(relevance: list[float], arms: list[Any]) -> list[int]:
    return [int(np.argmax(relevance))]


def write_log(log_dir: Path, impressions: int, better: str, clicker: Clicker = best_clicked,
              k: int = 6) -> list[tuple[str, list[Any]]]:
    """``impressions`` interleaved answers of 10 candidates each and their clicks; returns (request_id, arms)."""
    rng = np.random.default_rng(0)
    shown = []
    with PredictionLog(log_dir, flush_interval_s=60) as log:
        for i in range(impressions):
            request_id = f"req-{i}"
            asked = ranking.parse({"items": [{"id": f"item-{j}", "x": float(v)} for j, v in
                                             enumerate(rng.normal(size=10))], "k": k}, 100)
            ranked = ranking.rank(asked, request_id, VERSIONS, scorer(better))
            for batch in ranking.batches(ranked, asked, request_id, T0 + i, 1.0, None, 1):
                log.log(batch)
            relevance = [asked.items[j]["x"] for j in ranked.order]
            for position in clicker(relevance, ranked.arms):
                log.outcome(Outcome(at=T0 + i + 0.5, request_id=request_id, row=position, reward=1.0))
            shown.append((request_id, ranked.arms))
    return shown


def test_a_challenger_whose_items_get_the_clicks_is_promoted(tmp_path: Path) -> None:
    write_log(tmp_path, 40, better=CHALLENGER)
    step = interleave_step(experiment(), EVENTS, tmp_path)
    assert step.decision is Decision.PROMOTE, step.reason
    assert step.samples["wins"] == {CHALLENGER: 40, CHAMPION: 0} and step.samples["ties"] == 0
    assert step.samples["impressions"] == 40 and step.samples["clicks"] == 40
    assert step.weights == {CHALLENGER: 0.5, CHAMPION: 0.5} and step.detail["p_value"] < 1e-9


def test_a_challenger_whose_items_get_no_clicks_is_rejected(tmp_path: Path) -> None:
    write_log(tmp_path, 40, better=CHAMPION)
    step = interleave_step(experiment(), EVENTS, tmp_path)
    assert step.decision is Decision.REJECT, step.reason
    assert step.samples["wins"] == {CHALLENGER: 0, CHAMPION: 40}
    assert step.weights == {CHALLENGER: 0.0, CHAMPION: 1.0}


def test_too_few_decided_impressions_wait_with_the_counts(tmp_path: Path) -> None:
    write_log(tmp_path, 10, better=CHALLENGER)
    step = interleave_step(experiment(), EVENTS, tmp_path)
    assert step.decision is Decision.WAIT
    assert "10 impressions" in step.reason and "10 decided impressions of the 20 needed" in step.reason


def test_no_preference_waits(tmp_path: Path) -> None:
    """Clicks on the top position only: it goes to the round's coin winner, so neither team is preferred."""
    write_log(tmp_path, 40, better=CHALLENGER, clicker=lambda relevance, arms: [0])
    step = interleave_step(experiment(), EVENTS, tmp_path)
    assert step.decision is Decision.WAIT and "no significant preference" in step.reason, step.reason
    assert sum(step.samples["wins"].values()) == 40 and step.detail["p_value"] >= 0.05


def test_ties_decide_nothing(tmp_path: Path) -> None:
    """Clicks on the first round's two picks, one per team: every impression ties and none counts."""
    write_log(tmp_path, 40, better=CHALLENGER, clicker=lambda relevance, arms: [0, 1])
    step = interleave_step(experiment(), EVENTS, tmp_path)
    assert step.decision is Decision.WAIT and "0 decided impressions of the 20 needed" in step.reason, step.reason
    assert step.samples["ties"] == 40 and step.samples["clicks"] == 80


def test_clicks_are_credited_per_shown_position_once(tmp_path: Path) -> None:
    def on_champion_twice(relevance: list[float], arms: list[Any]) -> list[int]:
        mine = [p for p, arm in enumerate(arms) if arm == CHAMPION]
        return [mine[0], mine[0]]  # the same position twice counts once

    shown = write_log(tmp_path, 3, better=CHALLENGER, clicker=on_champion_twice)
    theirs = [p for p, arm in enumerate(shown[2][1]) if arm == CHALLENGER]
    with PredictionLog(tmp_path, flush_interval_s=60) as log:
        for outcome in [Outcome(at=T0 + 99, request_id="req-0", row=None, reward=1.0),  # no position: ignored
                        Outcome(at=T0 + 99, request_id="req-0", row=50, reward=1.0),  # not shown (k=6): ignored
                        Outcome(at=T0 + 99, request_id="req-1", row=0, reward=0.0),  # shown, not clicked
                        Outcome(at=T0 + 99, request_id="req-1", row=1, label=False),
                        Outcome(at=T0 + 99, request_id="req-2", row=theirs[0], label=True),  # clicks by label
                        Outcome(at=T0 + 99, request_id="req-2", row=theirs[1], label=1),
                        Outcome(at=T0 + 99, request_id="other", row=0, reward=1.0)]:  # not this experiment's
            log.outcome(outcome)
    credit = credits(experiment(), tmp_path)
    assert credit.impressions == 3 and credit.ignored == 2
    assert credit.clicks == 5, credit  # one champion click on each, two challenger clicks on req-2
    assert credit.wins == {CHALLENGER: 1, CHAMPION: 2} and credit.ties == 0
    assert sum(credit.first_picks.values()) == 3 * 3  # k=6: three rounds per impression


def test_a_biased_first_pick_halts(tmp_path: Path) -> None:
    """A broken coin (the challenger always picks first) is caught by the sample-ratio check of first picks."""
    asked = ranking.parse({"items": [{"id": f"i{j}", "x": float(j)} for j in range(4)]}, 10)
    with PredictionLog(tmp_path, flush_interval_s=60) as log:
        for i in range(20):
            arms = [CHALLENGER, CHAMPION, CHALLENGER, CHAMPION]
            ranked = ranking.Ranked([0, 1, 2, 3], list(arms), [True, False, True, False], dict(VERSIONS),
                                    {arm: np.arange(4.0) for arm in VERSIONS},
                                    {arm: {"x": np.arange(4.0)} for arm in VERSIONS})
            for batch in ranking.batches(ranked, asked, f"r{i}", T0 + i, 1.0, None, 1):
                log.log(batch)
    step = interleave_step(experiment(), EVENTS, tmp_path)
    assert step.decision is Decision.HALT and "first picks" in step.reason, step.reason
    assert step.samples["first_picks"] == {CHALLENGER: 40, CHAMPION: 0}


def test_the_log_rows_are_the_shown_positions(tmp_path: Path) -> None:
    """Each team's items under its own arm and version, at the positions shown (what a click's row names)."""
    from cl_hpc.data.predictions import Stream, read_stream

    shown = write_log(tmp_path, 2, better=CHALLENGER, k=5)
    rows = read_stream(tmp_path, Stream.PREDICTIONS).frame.sort_values(["request_id", "row"])
    for request_id, arms in shown:
        mine = rows[rows["request_id"] == request_id]
        assert mine["row"].tolist() == list(range(5)) and mine["arm"].tolist() == arms
        assert mine["version"].tolist() == [VERSIONS[a].version for a in arms]
        assert mine["output.first"].tolist() == [True, False, True, False, True]


def test_only_an_interleave_is_decided_here(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is a canary, not an interleave"):
        interleave_step(experiment(kind=ExperimentKind.CANARY), EVENTS, tmp_path)


def test_no_log_waits(tmp_path: Path) -> None:
    step = interleave_step(experiment(), EVENTS, tmp_path / "nothing")
    assert step.decision is Decision.WAIT and step.samples["impressions"] == 0


@pytest.mark.parametrize("better,decision,champion", [(CHALLENGER, Decision.PROMOTE, "2.0"),
                                                      (CHAMPION, Decision.REJECT, "1.0")])
def test_the_look_writes_the_decision_through_the_registry(tmp_path: Path, better: str, decision: Decision,
                                                           champion: str) -> None:
    from cl_hpc.registry import ModelRegistry
    from cl_hpc.rollout.controller import look
    from cl_hpc.rollout.experiments import ExperimentStore
    from cl_hpc.rollout.steps import Sources
    from cl_hpc.store.db import Store
    from tests.serving import NAME, register_tabular

    root = tmp_path / "store"
    register_tabular(root, seeds=(0, 1))
    with ModelRegistry.open(root) as registry, ExperimentStore(Store(root), clock=lambda: T0 - 1) as experiments:
        started, _ = experiments.start(registry, NAME, ExperimentKind.INTERLEAVE, ARMS,
                                       {CHALLENGER: 0.5, CHAMPION: 0.5}, unit=UnitKind.REQUEST, reason="test",
                                       config=CONFIG)
        assert started.id == 1  # the log below names experiment 1
        write_log(tmp_path / "log", 30, better=better)
        result = look(experiments, registry, started.id, Sources(tmp_path / "log"))
        assert result.step.decision is decision and result.written is not None
        assert str(registry.aliases(NAME)["champion"]) == champion
        assert ("rejected" in registry.get(NAME, "2.0").tags) is (decision is Decision.REJECT)
        assert f"experiment {started.id} (interleave)" in result.written.reason
