"""The experiment page (cl_hpc/report/experiment_page.py) from real experiments: a real registry of tiny
checkpoints, the real experiment store, the real controller (evaluate + apply, as ``experiment decide``
runs it) and traffic written as the server and the label join write it (a prediction-log shard and a
label-zone partition, tests/rollout_traffic.py). Only the store's clock is fake, so that traffic lands
between the experiment's events. Pages are read with the stdlib parser through the ids and data
attributes a browser test uses, and their numbers checked against the store's events and the terminal
report (cl_hpc/rollout/report.py build)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import pytest

from cl_hpc.errors import ClHpcError
from cl_hpc.registry import ModelRegistry
from cl_hpc.report.experiment_page import ExperimentReport, experiment_report, render_experiment
from cl_hpc.rollout.assign import UnitKind
from cl_hpc.rollout.controller import Decision, Sources, apply, evaluate
from cl_hpc.rollout.experiments import ExperimentStore, RolloutError
from cl_hpc.rollout.records import Arm, Experiment, ExperimentKind
from cl_hpc.rollout.report import build
from cl_hpc.store.db import DB_NAME, Store
from tests.rollout_traffic import traffic
from tests.serving import NAME, register_tabular
from tests.test_report_model_page import Page

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC: the store's clock at each experiment's start
ARMS = (Arm("challenger", "2.0"), Arm("champion", "1.0"))
LATENCY = {"champion": 1.0, "challenger": 1.3}
WINDOW_S = 10.0  # a canary's seconds per judged sample


class Lab:
    """A store with two versions, its experiment store on a settable clock, and the log and label zone."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.root, self.now = tmp, tmp / "store", T0
        register_tabular(self.root, seeds=(0, 1))
        self.registry = ModelRegistry.open(self.root)
        self.experiments = ExperimentStore(Store(self.root), clock=lambda: self.now)

    def start(self, kind: ExperimentKind, challenger: float, **config: Any) -> Experiment:
        experiment, _ = self.experiments.start(self.registry, NAME, kind, ARMS,
                                               {"challenger": challenger, "champion": 1 - challenger},
                                               unit=UnitKind.USER, reason=f"page test: {kind.value}", config=config)
        return experiment

    def look(self, experiment: Experiment, at: float) -> Any:
        """One look of the controller at ``at``, written as ``python -m cl_hpc.experiment decide`` writes it."""
        self.now = at
        step = evaluate(experiment, self.experiments.events(experiment.id), self.sources)
        apply(step, experiment, self.experiments, self.registry)
        return step

    @property
    def sources(self) -> Sources:
        return Sources(self.tmp / "log", (self.tmp / "labels",), window_s=WINDOW_S)

    def report(self, experiment_id: int, now: float) -> ExperimentReport:
        return experiment_report(self.root, experiment_id, self.tmp / "log", [self.tmp / "labels"],
                                 window_s=WINDOW_S, now=now)

    def close(self) -> None:
        self.experiments.close()
        self.registry.close()


@pytest.fixture(scope="module")
def ab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """An A/B test: 50 users an arm (too few: the controller waits, nothing written; the page then), then
    800 more an arm with the challenger clearly better: the mSPRT promotes it at T0 + 200."""
    lab = Lab(tmp_path_factory.mktemp("ab-page"))
    experiment = lab.start(ExperimentKind.AB, 0.5, min_samples=100, alpha=0.05, mde=0.05, sequential=True)
    traffic(lab.tmp, experiment, T0 + 1, {"champion": 50, "challenger": 50}, {"champion": 0.7, "challenger": 0.85},
            LATENCY, seed=1)
    waited = lab.look(experiment, T0 + 90)
    running = lab.report(experiment.id, T0 + 90)
    traffic(lab.tmp, experiment, T0 + 100, {"champion": 800, "challenger": 800},
            {"champion": 0.7, "challenger": 0.85}, LATENCY, seed=2)
    promoted = lab.look(experiment, T0 + 200)
    report = lab.report(experiment.id, T0 + 300)
    yield {"lab": lab, "experiment": experiment, "waited": waited, "promoted": promoted, "report": report,
           "page": Page(render_experiment(report)), "running": Page(render_experiment(running))}
    lab.close()


def test_the_sections_are_there_and_the_page_loads_nothing(ab: dict[str, Any]) -> None:
    page = ab["page"]
    assert [e["attrs"]["id"] for e in page.find("section")][:4] == ["traffic", "intervals", "ramp", "decisions"]
    assert "<script" not in page.text and " src=" not in page.text and 'href="http' not in page.text
    assert set(re.findall(r"https?://[^\s\"')]+", page.text)) <= {"http://www.w3.org/2000/svg",
                                                                  "http://www.w3.org/1999/xlink"}
    assert page.text.count("<svg") == 2  # traffic and intervals: an A/B test draws no ramp


def test_an_ab_page_shows_the_traffic_per_arm_as_the_terminal_report_counts_it(ab: dict[str, Any]) -> None:
    page, lab, experiment = ab["page"], ab["lab"], ab["experiment"]
    rows = {r["data-arm"]: r for r in page.rows("traffic", "arm")}
    assert {arm: (r["data-requests"], r["data-labelled"]) for arm, r in rows.items()} == {
        "challenger": ("850", "850"), "champion": ("850", "850")}
    shown = build(experiment, lab.experiments.events(experiment.id), lab.tmp / "log", (lab.tmp / "labels",))
    assert {a.arm: int(rows[a.arm]["data-correct"]) for a in shown.arms} == {a.arm: a.correct for a in shown.arms}
    assert rows["challenger"]["data-version"] == "2.0" and rows["champion"]["data-version"] == "1.0"
    traffic_ = ab["report"].traffic
    assert {arm: sum(c) for arm, c in traffic_.routed.items()} == {"challenger": 850, "champion": 850}
    assert page.find("p", "traffic", id="srm")  # the sample-ratio check of the terminal report


def test_an_ab_page_draws_the_intervals_as_the_evidence_accrued(ab: dict[str, Any]) -> None:
    page, lab, experiment, report = ab["page"], ab["lab"], ab["experiment"], ab["report"]
    series = {r["data-series"]: r for r in page.rows("intervals", "series")}
    shown = build(experiment, lab.experiments.events(experiment.id), lab.tmp / "log", (lab.tmp / "labels",))
    # the newest point holds every row: it is the terminal report's test over everything
    diff = series["accuracy challenger - champion"]
    assert float(diff["data-estimate"]) == pytest.approx(shown.accuracy.estimate, rel=1e-5)
    assert float(diff["data-low"]) == pytest.approx(shown.accuracy.ci_low, rel=1e-5)
    assert int(diff["data-n"]) == 1700
    assert float(series["latency_ms challenger - champion"]["data-estimate"]) == pytest.approx(0.3, abs=0.01)
    champion = next(a for a in shown.arms if a.arm == "champion")
    assert float(series["accuracy champion"]["data-estimate"]) == pytest.approx(champion.correct / 850, rel=1e-5)
    # the interval narrows as the evidence accrues
    widths = [p.high - p.low for p in report.evidence.accuracy_diff]
    assert len(widths) >= 20 and widths[-1] < widths[0] / 2
    # the controller's own test, as it wrote it with the decision
    written = lab.experiments.latest(experiment.id).detail["test"]
    look = page.rows("intervals", "look")
    assert [(r["data-look"], r["data-test"], r["data-metric"]) for r in look] == [("written", "msprt", "accuracy")]
    assert float(look[0]["data-estimate"]) == pytest.approx(written["estimate"], rel=1e-5)
    assert float(look[0]["data-high"]) == pytest.approx(written["ci_high"], rel=1e-5)


def test_an_ab_page_lists_its_decisions_with_their_times_and_reasons(ab: dict[str, Any]) -> None:
    page, lab, experiment = ab["page"], ab["lab"], ab["experiment"]
    assert ab["waited"].decision is Decision.WAIT and ab["promoted"].decision is Decision.PROMOTE
    rows = page.rows("decisions", "decision")
    assert [(r["data-decision"], r["data-at"], r["data-state"]) for r in rows] == [
        ("start", f"{T0:.3f}", "running"), ("promote", f"{T0 + 200:.3f}", "decided")]
    reasons = [page.text_of(e) for e in page.find("td", "decisions", **{"class": "reason"})]
    assert reasons[0] == "page test: ab"
    assert reasons[1] == lab.experiments.latest(experiment.id).reason
    assert reasons[1].startswith("experiment 1 (ab): accuracy: the challenger is better")
    ramp = next(page.find("p", "ramp", id="no-ramp"))
    assert "has no ramp" in page.text_of(ramp)
    assert next(page.find("span", id="state"))["attrs"]["data-state"] == "decided"
    assert not list(page.find("div", id="running")) and not list(page.find("p", id="controller-now"))


def test_an_experiment_still_running_says_so_and_shows_what_is_known(ab: dict[str, Any]) -> None:
    page = ab["running"]
    banner = next(page.find("div", id="running"))
    assert "still running" in page.text_of(banner) and "wait" in page.text_of(banner)
    assert next(page.find("p", "decisions", id="controller-now"))["attrs"]["data-decision"] == "wait"
    assert [r["data-decision"] for r in page.rows("decisions", "decision")] == ["start"]  # a wait writes nothing
    assert {r["data-arm"]: r["data-requests"] for r in page.rows("traffic", "arm")} == {"challenger": "50",
                                                                                        "champion": "50"}
    assert next(page.find("span", id="state"))["attrs"]["data-state"] == "running"


@pytest.fixture(scope="module")
def canary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A canary ramping 50 % -> 100 %: the judge passes the first step at T0 + 100 (the page while the
    second runs without traffic yet), then promotes at 100 % at T0 + 200."""
    lab = Lab(tmp_path_factory.mktemp("canary-page"))
    experiment = lab.start(ExperimentKind.CANARY, 0.5, min_samples=40, steps=[50.0, 100.0], alpha=0.05)
    traffic(lab.tmp, experiment, T0 + 1, {"champion": 300, "challenger": 300},
            {"champion": 0.85, "challenger": 0.86}, {"champion": 1.0, "challenger": 1.0}, seed=2)
    stepped = lab.look(experiment, T0 + 100)
    running = lab.report(experiment.id, T0 + 150)
    traffic(lab.tmp, experiment, T0 + 101, {"challenger": 300}, {"challenger": 0.86}, {"challenger": 1.0}, seed=3)
    promoted = lab.look(experiment, T0 + 200)
    report = lab.report(experiment.id, T0 + 250)
    yield {"lab": lab, "experiment": experiment, "steps": (stepped, promoted), "report": report,
           "page": Page(render_experiment(report)), "running": Page(render_experiment(running))}
    lab.close()


def test_a_canary_page_shows_its_ramp_and_the_checks_that_ended_each_step(canary: dict[str, Any]) -> None:
    page, lab, experiment = canary["page"], canary["lab"], canary["experiment"]
    assert [s.decision for s in canary["steps"]] == [Decision.STEP, Decision.PROMOTE]
    rows = page.rows("ramp", "step")
    assert [(r["data-step"], r["data-share"], r["data-at"], r["data-end"], r["data-ended-by"]) for r in rows] == [
        ("1", "0.5", f"{T0:.3f}", f"{T0 + 100:.3f}", "step"),
        ("2", "1", f"{T0 + 100:.3f}", f"{T0 + 200:.3f}", "promote")]
    events = lab.experiments.events(experiment.id)
    assert [r["data-score"] for r in rows] == [f"{events[1].detail['score']:g}", f"{events[2].detail['score']:g}"]
    assert events[1].detail["score"] == 100.0
    assert page.text.count("<svg") == 3  # traffic, intervals and the ramp
    decisions = page.rows("decisions", "decision")
    assert [(r["data-decision"], r["data-at"]) for r in decisions] == [
        ("start", f"{T0:.3f}"), ("step", f"{T0 + 100:.3f}"), ("promote", f"{T0 + 200:.3f}")]
    # each step's counts, as the judge kept them with the event that ended it
    first = next(page.find("tr", "ramp", data_step="1"))
    assert "challenger: 300 / 0 / 300" in page.text_of(first) and "champion: 300 / 0 / 300" in page.text_of(first)
    assert {r["data-arm"]: r["data-requests"] for r in page.rows("traffic", "arm")} == {"challenger": "600",
                                                                                        "champion": "300"}


def test_a_canary_still_ramping_shows_the_running_step_and_its_guard_check_now(canary: dict[str, Any]) -> None:
    page = canary["running"]
    rows = page.rows("ramp", "step")
    assert [(r["data-share"], r["data-ended-by"], r["data-end"]) for r in rows] == [("0.5", "step", f"{T0 + 100:.3f}"),
                                                                                   ("1", "running", "")]
    guard = next(page.find("table", "ramp", id="guard-now"))
    assert guard["attrs"]["data-verdict"] == "no_data"  # no traffic at 100 % yet: never a pass
    assert [r["data-metric"] for r in page.rows("ramp", "metric")] == ["error_rate", "latency_p99_ms", "accuracy"]
    assert next(page.find("p", id="controller-now"))["attrs"]["data-decision"] == "wait"


def test_an_experiment_without_traffic_says_so(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    try:
        experiment = lab.start(ExperimentKind.SHADOW, 0.0)
        report = lab.report(experiment.id, T0 + 60)  # no log written at all, the label zone absent
    finally:
        lab.close()
    assert report.traffic is None and report.evidence.empty and report.requests == 0
    assert any("do not exist" in p for p in report.problems)
    page = Page(render_experiment(report))
    assert "no traffic yet" in page.text_of(next(page.find("div", id="no-traffic")))
    assert list(page.find("p", "intervals", id="no-intervals"))
    assert "has no ramp" in page.text_of(next(page.find("p", "ramp", id="no-ramp")))
    assert {r["data-arm"]: r["data-requests"] for r in page.rows("traffic", "arm")} == {"challenger": "0",
                                                                                        "champion": "0"}


def test_an_unknown_experiment_names_the_experiments_there_are(ab: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(RolloutError, match=r"no experiment 9 in .*; experiments there: 1 \(ab on demo, decided\)"):
        experiment_report(ab["lab"].root, 9)
    assert issubclass(RolloutError, ClHpcError)  # the CLI prints it and exits 2
    with pytest.raises(RolloutError, match="no store at"):
        experiment_report(tmp_path / "nowhere", 1)
    assert not (tmp_path / "nowhere" / DB_NAME).exists()  # nothing created where no store was
