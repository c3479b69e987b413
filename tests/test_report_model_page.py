"""The model page (cl_hpc/report/model_page.py) from real sources: a real registry of tiny real
checkpoints (stateless retrains and stateful fine-tunes with parents, tags, a quarantine from a
changed file, promotions and a rollback with reasons), a watch log written by a real
``python -m cl_hpc.watch`` (launching the tiny diamond pipeline), and a backtest report written by the
real replay of a tiny generated landing zone. Only the registry's clock is fake (an hour per write),
so the alias timeline has stretches to draw. The rendered HTML is parsed with the stdlib parser and
checked through the ids and data attributes a browser test uses."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from cl_hpc.errors import ChecksumError, DataError
from cl_hpc.learn.triggers import TriggerResult
from cl_hpc.registry import ModelRegistry, RegistryError
from cl_hpc.report.model_page import CheckOutcome, Kind, ModelReport, model_report, render_model
from cl_hpc.store.db import Store
from cl_hpc.watch.check import Journal
from tests.test_watch_cli import Watch, out
from tests.unit.test_registry import REPO, make_checkpoint

NAME = "shop"
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC


class Clock:
    """The registry's clock: one hour later at every call."""

    def __init__(self, start: float = T0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 3600.0
        return self.now


def register(reg: ModelRegistry, tmp: Path, seed: int, strategy: str, parent: Optional[str] = None,
             name: str = NAME, **metrics: Any) -> str:
    path = tmp / f"{name}-ckpt-{seed}" / "model.pt"
    sha = make_checkpoint(path, seed)
    return str(reg.register(name, path, strategy=strategy, parent=parent, checkpoint_sha256=sha, workdir=REPO,
                            metrics=metrics, run_id=f"run-{seed}").version)


def gate(value: float, champion: Optional[float], passed: bool) -> dict[str, Any]:
    """What the promote task records: the challenger's scores, the champion's at the gate, the verdict."""
    scores = {"accuracy": value, "log_loss": 1 - value, "gate_metric": "accuracy", "gate_passed": passed,
              "train_rows": 400, "window_end": "2026-01-01T00:00:00"}
    return {**scores, **({"champion_accuracy": champion, "champion_log_loss": 1 - champion} if champion else {})}


def build_registry(root: Path, tmp: Path) -> None:
    """1.0 -> 1.1 -> 1.2 (rejected); 2.0 retrains from 1.1 and is rolled back; 2.1 loses a race
    (stale-gate); 3.0's checkpoint changes after registration (quarantined)."""
    with ModelRegistry(Store(root), clock=Clock()) as reg:
        register(reg, tmp, 0, "stateless", **gate(0.80, None, True))
        reg.promote(NAME, "1.0", reason="cold start: no champion yet")
        register(reg, tmp, 1, "stateful", "1.0", **gate(0.84, 0.80, True))
        reg.promote(NAME, "1.1", reason="gate passed: accuracy 0.84 >= 0.80")
        register(reg, tmp, 2, "stateful", "1.1", **gate(0.79, 0.84, False))
        reg.tag(NAME, "1.2", ["rejected"])
        register(reg, tmp, 3, "hybrid-stateless", "1.1", **gate(0.88, 0.84, True))
        reg.promote(NAME, "2.0", reason="gate passed: accuracy 0.88 >= 0.84")
        reg.rollback(NAME, reason="accuracy dropped in production")
        register(reg, tmp, 4, "stateful", "2.0", **gate(0.86, 0.84, True))
        reg.tag(NAME, "2.1", ["stale-gate"])
        reg.promote(NAME, "2.1", "challenger", reason="canary at 10% of traffic")
        register(reg, tmp, 5, "stateless")
        (tmp / f"{NAME}-ckpt-5" / "model.pt").write_bytes(b"changed")
        with pytest.raises(ChecksumError):
            reg.verify(NAME, "3.0")
        register(reg, tmp, 6, "stateless", name="other")


def tiny_backtest(tmp: Path) -> Path:
    """A real replay of a 6-partition generated zone, two strategies retraining every 2 windows (a few s)."""
    from cl_hpc.backtest.conf import BacktestConf, cells, workload_conf
    from cl_hpc.backtest.history import load_history
    from cl_hpc.backtest.local import Setup
    from cl_hpc.backtest.replay import run_cell
    from cl_hpc.backtest.report import build_report, write_report
    from cl_hpc.config.ml import DataConf

    data = DataConf(landing_dir=str(tmp / "zone"), n_partitions=6, rows_per_partition=200, drift_at=[3],
                    train_window=2, eval_window=1)
    workload = workload_conf({"_target_": "cl_hpc.learn.tabular.TabularClassifier", "hidden": 8, "layers": 1},
                             {"_target_": "cl_hpc.learn.tabular.TabularData", "label_col": "y", "batch_size": 64},
                             {"max_epochs": 1})
    conf = BacktestConf(cadences=[2], strategies=["stateless", "stateful"])
    history = load_history(data)
    results = [run_cell(history, cell, workload, conf, data.train_window) for cell in cells(conf)]
    write_report(build_report(results, conf.tolerance, Setup(data, workload, conf, {}).meta()), tmp / "bt")
    return tmp / "bt"


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("model-page")
    build_registry(tmp / "registry", tmp)
    # The real watch, on a store of its own with no champion of "shop": the time trigger fires and it
    # launches the tiny diamond pipeline, journalling state, five verdicts, launch and launched.
    watch = Watch(tmp)
    proc = watch("--model", NAME, "pipeline=diamond")
    assert proc.returncode == 0, out(proc)
    return {"store": tmp / "registry", "run_root": watch.run_root, "backtest": tiny_backtest(tmp)}


@pytest.fixture(scope="module")
def report(sources: dict[str, Path]) -> ModelReport:
    return model_report(sources["store"], NAME, sources["run_root"], sources["backtest"], now=T0 + 30 * 3600)


@pytest.fixture(scope="module")
def page(report: ModelReport) -> "Page":
    return Page(render_model(report))


# ---- reading the page ----------------------------------------------------------------------------

_VOID = {"br", "meta", "img", "hr", "input", "link", "col", "wbr"}


class Page(HTMLParser):
    """Every element with its attributes, its text and the ids of the sections around it."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text, self.elements, self._open = text, [], []  # type: ignore[var-annotated]
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        element = {"tag": tag, "attrs": dict(attrs), "text": [], "in": [e["attrs"].get("id") for e in self._open]}
        self.elements.append(element)
        if tag not in _VOID:
            self._open.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        self.elements.append({"tag": tag, "attrs": dict(attrs), "text": [],
                              "in": [e["attrs"].get("id") for e in self._open]})

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()["tag"] == tag:
                break

    def handle_data(self, data: str) -> None:
        for element in self._open:
            element["text"].append(data)

    def find(self, tag: str, section: Optional[str] = None, **attrs: str) -> Iterator[dict[str, Any]]:
        for e in self.elements:
            if e["tag"] == tag and (section is None or section in e["in"]) and \
                    all(e["attrs"].get(k.rstrip("_").replace("_", "-")) == v for k, v in attrs.items()):
                yield e

    def rows(self, section: str, key: str) -> list[dict[str, Optional[str]]]:
        """The data attributes of the section's <tr> elements that have ``data-<key>``."""
        return [e["attrs"] for e in self.find("tr", section) if f"data-{key}" in e["attrs"]]

    def text_of(self, element: dict[str, Any]) -> str:
        return " ".join("".join(element["text"]).split())


# ---- the page from real sources --------------------------------------------------------------------


def test_the_sections_are_there_and_the_page_loads_nothing(page: Page) -> None:
    assert [e["attrs"]["id"] for e in page.find("section")] == ["lineage", "aliases", "metrics", "triggers",
                                                                 "freshness"]
    assert "<script" not in page.text and " src=" not in page.text and 'href="http' not in page.text
    # no URL but the SVG namespaces (as the run page: tests/test_report_cli.py)
    assert set(re.findall(r"https?://[^\s\"')]+", page.text)) <= {"http://www.w3.org/2000/svg",
                                                                  "http://www.w3.org/1999/xlink"}


def test_the_lineage_shows_every_version_its_strategy_and_its_parent(page: Page) -> None:
    nodes = {e["attrs"]["data-version"]: e["attrs"] for e in page.find("g", "lineage", class_="version")}
    assert list(nodes) == ["1.0", "1.1", "1.2", "2.0", "2.1", "3.0"]  # "other"'s 1.0 is another model
    assert {v: n["data-strategy"] for v, n in nodes.items()} == {
        "1.0": "stateless", "1.1": "stateful", "1.2": "stateful", "2.0": "stateless", "2.1": "stateful",
        "3.0": "stateless"}
    assert nodes["2.0"]["data-strategy-name"] == "hybrid-stateless"
    assert {v: n["data-tags"] for v, n in nodes.items() if n["data-tags"]} == {
        "1.2": "rejected", "2.1": "stale-gate", "3.0": "quarantined"}
    assert nodes["1.1"]["data-aliases"] == "champion" and nodes["2.1"]["data-aliases"] == "challenger"
    edges = {(e["attrs"]["data-from"], e["attrs"]["data-to"]): e["attrs"]["data-kind"]
             for e in page.find("path", "lineage", class_="edge")}
    assert edges == {("1.0", "1.1"): "fine-tune", ("1.1", "1.2"): "fine-tune", ("1.1", "2.0"): "retrain",
                     ("2.0", "2.1"): "fine-tune"}
    [quarantined] = page.find("g", "lineage", data_version="3.0")
    assert "quarantined: checkpoint sha256 was" in page.text_of(quarantined)


def test_the_alias_history_lists_every_move_in_order_with_its_reason(page: Page) -> None:
    moves = [(r["data-alias"], r["data-action"], r["data-from"], r["data-version"])
             for r in page.rows("aliases", "alias")]
    assert moves == [("champion", "promote", "", "1.0"), ("champion", "promote", "1.0", "1.1"),
                     ("champion", "promote", "1.1", "2.0"), ("champion", "rollback", "2.0", "1.1"),
                     ("challenger", "promote", "", "2.1")]
    reasons = [page.text_of(e) for e in page.find("td", "aliases", **{"class": "reason"})]
    assert reasons == ["cold start: no champion yet", "gate passed: accuracy 0.84 >= 0.80",
                       "gate passed: accuracy 0.88 >= 0.84", "accuracy dropped in production",
                       "canary at 10% of traffic"]
    [rollback] = page.find("tr", "aliases", data_action="rollback")
    assert "2026-01-01 " in page.text_of(rollback)  # the registry's (fake) clock, in UTC
    section = page.text[page.text.index('id="aliases"'):page.text.index('id="metrics"')]
    assert len(re.findall(r'<svg[^>]* class="chart"', section)) == 1  # the timeline beside the table


def test_the_metrics_table_has_each_score_and_the_champions_at_the_gate(page: Page) -> None:
    rows = page.rows("metrics", "version")
    assert [(r["data-version"], r["data-strategy"], r["data-parent"]) for r in rows] == [
        ("1.0", "stateless", ""), ("1.1", "stateful", "1.0"), ("1.2", "stateful", "1.1"),
        ("2.0", "stateless", "1.1"), ("2.1", "stateful", "2.0"), ("3.0", "stateless", "")]

    def cell(version: str, metric: str) -> str:
        [row] = page.find("tr", "metrics", data_version=version)
        children = {id(e) for e in _children(page, row)}
        [td] = [e for e in page.find("td", "metrics", data_metric=metric) if id(e) in children]
        return page.text_of(td)

    assert (cell("1.1", "accuracy"), cell("1.1", "champion_accuracy")) == ("0.84", "0.8")
    assert (cell("1.2", "accuracy"), cell("1.2", "champion_accuracy")) == ("0.79", "0.84")
    assert (cell("1.0", "champion_accuracy"), cell("3.0", "accuracy")) == ("-", "-")
    assert cell("2.0", "train_rows") == "400"
    [rejected] = page.find("tr", "metrics", data_version="1.2")
    assert "accuracy 0.79 vs 0.84: failed" in page.text_of(rejected)
    section = page.text[page.text.index('id="metrics"'):page.text.index('id="triggers"')]
    assert "accuracy (the gate&#39;s metric)" in section or "accuracy (the gate's metric)" in section


def _children(page: Page, row: dict[str, Any]) -> list[dict[str, Any]]:
    start = page.elements.index(row)
    end = next((i for i in range(start + 1, len(page.elements)) if page.elements[i]["tag"] == "tr"),
               len(page.elements))
    return page.elements[start + 1:end]


def test_the_triggers_come_from_the_real_watch_log(report: ModelReport, page: Page) -> None:
    assert report.watch is not None
    [check] = report.watch.checks
    assert [t.name for t in check.triggers] == ["time", "volume", "performance", "performance.adwin", "drift"]
    assert check.outcome is CheckOutcome.LAUNCHED and check.exit_code == 0 and check.run_id
    [row] = page.find("tr", "triggers", class_="check")
    assert row["attrs"]["data-outcome"] == "launched" and row["attrs"]["data-run"] == check.run_id
    assert row["attrs"]["data-fired"] == "time"
    [fired] = page.find("div", "triggers", data_trigger="time")
    assert "no model has been trained yet" in page.text_of(fired)
    verdicts = {r["data-trigger"]: r["data-fired"] for r in page.rows("latest-check", "trigger")}
    assert verdicts == {"time": "true", "volume": "false", "performance": "false", "performance.adwin": "false",
                        "drift": "false"}


def test_the_freshness_curve_comes_from_the_real_backtest(report: ModelReport, page: Page,
                                                          sources: dict[str, Path]) -> None:
    written = json.loads((sources["backtest"] / "backtest.json").read_text())
    assert report.backtest is not None and report.backtest.metric == written["metric"] == "accuracy"
    points = {(r["data-strategy"], r["data-staleness"]) for r in page.rows("freshness", "staleness")}
    assert points == {(r["strategy"], str(r["staleness"])) for r in written["freshness"]}
    assert {p.staleness for p in report.backtest.freshness} == {0, 1}  # retrained every 2 windows: a curve
    assert {r["data-cell"] for r in page.rows("freshness", "cell")} == {"every-2/stateless", "every-2/stateful"}
    [pick] = [r for r in page.rows("freshness", "cell") if r["data-recommended"] == "true"]
    assert pick["data-cell"] == written["recommendation"]["cell"]
    [line] = page.find("p", "freshness", id="recommendation")
    assert written["recommendation"]["why"] in page.text_of(line)
    assert report.problems == []  # the backtest replayed the versions' own model class


# ---- absent parts and bad input ----------------------------------------------------------------------


def test_a_model_with_one_version_and_nothing_else_says_what_is_absent(sources: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    report = model_report(sources["store"], "other", None, None)
    page = Page(render_model(report))
    assert [e["attrs"]["data-version"] for e in page.find("g", "lineage", class_="version")] == ["1.0"]
    assert list(page.find("path", "lineage", class_="edge")) == []
    for absent, words in (("no-aliases", "no alias of other was ever set"), ("no-metrics", "no version recorded"),
                          ("no-triggers", "no run root given"), ("no-backtest", "no backtest given")):
        [element] = page.find("p", id=absent)
        assert words in page.text_of(element), absent
    missing = model_report(sources["store"], "other", tmp_path, None)
    assert missing.watch is None and f"no watch log at {tmp_path / 'watch.log.jsonl'}" in missing.watch_note
    of_shop = model_report(sources["store"], "other", sources["run_root"], None)
    assert of_shop.watch is None and "has no check of model 'other'" in of_shop.watch_note


def test_an_unknown_model_names_the_models_there_are(sources: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match=r"no model named 'nope' in .*cl_hpc.db; models: other, shop"):
        model_report(sources["store"], "nope", None, None)
    with pytest.raises(RegistryError, match="no store at .*: pass --store-root"):
        model_report(tmp_path / "empty", NAME, None, None)
    assert not (tmp_path / "empty").exists()  # looking made no store


def test_a_backtest_that_is_not_there_or_not_a_report_is_a_data_error(sources: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no backtest report at .*backtest.json: --backtest takes the --out folder"):
        model_report(sources["store"], NAME, None, tmp_path)
    (tmp_path / "backtest.json").write_text(json.dumps({"metric": "accuracy"}))
    with pytest.raises(DataError, match="is not a backtest report .*KeyError: 'freshness'"):
        model_report(sources["store"], NAME, None, tmp_path / "backtest.json")


def test_a_log_of_several_models_checks_and_a_broken_line(sources: dict[str, Path], tmp_path: Path) -> None:
    """Written by the watch's own Journal (the records' format is its, not a copy): two checks of
    "shop" (the second skipped while a run goes on, with an experiment look), one of another model,
    and a line cut short."""
    log = tmp_path / "watch.log.jsonl"
    first = Journal(log, NAME, lambda line: None)
    first.check_id = "2026-01-02T00:00:00+00:00"
    first.event("state", champion="shop 1.1", new_rows=600, new_partitions=["p4", "p5"], notes=["window note"])
    for result in (TriggerResult("volume", 0.5, 0.5, True, "600 new rows"),
                   TriggerResult("drift", 1.0, 0.5, True, "3 of 3 features drifted", severe=True)):
        first.event("trigger", **result.to_dict())
    first.event("launch", run_id="20260102-000000-abcd", reason="volume: 0.5 >= 0.5; drift: 1 >= 0.5 (severe)",
                command=["python", "-m", "cl_hpc.launch"])
    second = Journal(log, NAME, lambda line: None)
    second.check_id = "2026-01-02T00:15:00+00:00"
    second.event("experiment", experiment=7, decision="wait", reason="120 of 500 outcomes")
    second.event("skipped", why="run 20260102-000000-abcd is still going")
    Journal(log, "other", lambda line: None).event("idle")
    with log.open("a") as f:
        f.write('{"time": "2026-01-02T00:30:00+00:00", "check": "x", "mod\n')
    report = model_report(sources["store"], NAME, None, None, watch_log=log)
    assert report.watch is not None
    launched, skipped = report.watch.checks
    assert [t.name for t in launched.fired] == ["volume", "drift"] and launched.fired[1].severe
    assert launched.outcome is CheckOutcome.LAUNCHING and launched.run_id == "20260102-000000-abcd"
    assert skipped.outcome is CheckOutcome.SKIPPED and skipped.reason == "run 20260102-000000-abcd is still going"
    assert skipped.notes == ["experiment 7: wait: 120 of 500 outcomes"]
    assert report.problems == [f"1 line(s) of {log} are not JSON records; skipped"]
    page = Page(render_model(report))
    rows = page.rows("triggers", "check")
    assert [(r["data-outcome"], r["data-fired"]) for r in rows] == [("skipped", ""), ("launching", "volume drift")]


def test_thirty_versions_make_one_row_per_major(tmp_path: Path) -> None:
    with ModelRegistry(Store(tmp_path / "store"), clock=Clock()) as reg:
        for seed in range(30):
            major_start = seed % 5 == 0
            register(reg, tmp_path, seed, "stateless" if major_start else "stateful",
                     None if major_start else f"{seed // 5 + 1}.{seed % 5 - 1}", **gate(0.7 + seed / 100, 0.7, True))
            reg.promote(NAME, f"{seed // 5 + 1}.{seed % 5}", reason=f"step {seed}")
    report = model_report(tmp_path / "store", NAME, None, None)
    page = Page(render_model(report))
    nodes = list(page.find("g", "lineage", class_="version"))
    assert len(nodes) == 30 and sum(n["attrs"]["data-strategy"] == "stateful" for n in nodes) == 24
    assert len(list(page.find("path", "lineage", class_="edge"))) == 24
    assert len(page.rows("aliases", "alias")) == 30
    assert {v.kind for v in report.versions} == {Kind.STATELESS, Kind.STATEFUL}
