"""The label join on real log shards (written with cl_hpc/data/predictions.py) and a real landing
zone, with the clock set through labels.now: which outcome labels which prediction, the window's
edges, default and drop, maturity, exactly-once partitions, late and unmatched outcomes kept and
counted once, crash recovery, and the zone read back by the landing-zone readers."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from cl_hpc.config.ml import DataConf
from cl_hpc.data.partitions import check_partitions, list_partitions
from cl_hpc.data.predictions import (
    Outcome,
    PredictionBatch,
    Role,
    Stream,
    outcomes_table,
    predictions_table,
    shard_path,
    write_shard,
)
from cl_hpc.data.windows import check_windows, dask_threads, read_window, select_windows
from cl_hpc.errors import ConfigError, DataError
from cl_hpc.labels.accuracy import served_accuracy
from cl_hpc.labels.join import join
from cl_hpc.labels.report import JoinReport

T0 = 1_780_000_000.0 - 1_780_000_000.0 % 3600  # an hour boundary, UTC


def at(hour: float, seconds: float = 0.0) -> float:
    return T0 + hour * 3600 + seconds


def iso(t: float) -> str:
    return pd.Timestamp(t, unit="s").isoformat()


class Log:
    """A prediction log folder; every call writes one shard, as one flush of a server would."""

    def __init__(self, root: Path) -> None:
        self.root, self.seq = root, 0

    def predict(self, request: str, t: float, rows: int = 1, unit: Optional[str] = None, version: str = "1.0",
                role: Role = Role.LIVE, classes: Any = None) -> None:
        x = np.arange(rows, dtype=np.float64) + t % 1000
        out = np.asarray(classes if classes is not None else np.zeros(rows, dtype=np.int64))
        probs = np.full((rows, 2), 0.5, dtype=np.float32)
        batch = PredictionBatch(request, t, "m", version, role, 1.0, {"x0": x, "x1": -x},
                                {"class": out, "probs": probs}, unit)
        self._write(Stream.PREDICTIONS, t, predictions_table([batch]))

    def outcomes(self, *items: Outcome) -> None:
        self._write(Stream.OUTCOMES, items[0].at, outcomes_table(items))

    def _write(self, stream: Stream, t: float, table: Any) -> None:
        self.seq += 1
        write_shard(shard_path(self.root, stream, t, "test", self.seq), table)


@pytest.fixture
def log(tmp_path: Path) -> Log:
    return Log(tmp_path / "log")


def run(log: Log, now: float, **over: Any) -> JoinReport:
    return join({"log_dir": str(log.root), "out_dir": str(log.root.parent / "zone"), "window": "1h",
                 "now": iso(now), **over})


def zone(log: Log) -> pd.DataFrame:
    parts = list_partitions(log.root.parent / "zone")
    return pd.concat([pd.read_parquet(p.path) for p in parts], ignore_index=True) if parts else pd.DataFrame()


def by_key(frame: pd.DataFrame) -> dict[tuple[str, int], Any]:
    return {(r, int(i)): y for r, i, y in zip(frame["_request_id"], frame["_row"], frame["y"])}


def side(log: Log, folder: str) -> pd.DataFrame:
    files = sorted((log.root.parent / "zone" / folder).glob("*.parquet"))
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else pd.DataFrame()


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.parquet"))}


# --- which outcome labels which prediction --------------------------------------------------------


def test_outcomes_by_request_row_by_request_and_by_unit(log: Log) -> None:
    log.predict("a", at(0, 10), rows=2)
    log.predict("b", at(0, 20), unit="u1")
    log.predict("c1", at(0, 30), unit="u2")
    log.predict("c2", at(0, 90), unit="u2")
    log.outcomes(Outcome(at(0, 100), "a", 0, label=1), Outcome(at(0, 200), "a", None, label=0),
                 Outcome(at(0, 300), unit="u1", label=1), Outcome(at(0, 120), unit="u2", label=1))
    report = run(log, at(3))
    rows = zone(log)
    # a/0: its own outcome (at 100) is earlier than the request's (at 200); a/1 only has the request's;
    # u2's outcome labels u2's latest prediction before it (c2), not c1
    assert by_key(rows) == {("a", 0): 1, ("a", 1): 0, ("b", 0): 1, ("c2", 0): 1}
    delays = dict(zip(rows["_request_id"] + rows["_row"].astype(str), rows["_label_delay_s"]))
    assert delays == {"a0": 90.0, "a1": 190.0, "b0": 280.0, "c20": 30.0}
    assert (report.mature, report.labelled, report.dropped, report.defaulted) == (5, 4, 1, 0)
    assert report.coverage == pytest.approx(0.8)
    assert report.outcomes["used"] == 4 and report.delays.max == 280.0
    assert report.written == ("part-" + pd.Timestamp(at(0), unit="s").strftime("%Y%m%dT%H%M%S") + ".parquet",)


def test_a_later_outcome_of_a_labelled_row_is_superseded(log: Log) -> None:
    log.predict("a", at(0, 10))
    log.outcomes(Outcome(at(0, 50), "a", 0, label=1), Outcome(at(0, 60), "a", 0, label=0))
    report = run(log, at(3))
    assert by_key(zone(log)) == {("a", 0): 1}
    assert report.outcomes["used"] == 1 and report.outcomes["superseded"] == 1
    assert side(log, "_outcomes")["_status"].tolist() == ["superseded"]


def test_window_edges_and_an_outcome_before_its_prediction(log: Log) -> None:
    log.predict("edge", at(0, 0))
    log.predict("over", at(0, 10))
    log.predict("early", at(0, 20))
    log.outcomes(Outcome(at(0, 600), "edge", 0, label=1), Outcome(at(0, 611), "over", 0, label=1),
                 Outcome(at(0, 19), "early", 0, label=1))
    report = run(log, at(3), window="10min")
    assert by_key(zone(log)) == {("edge", 0): 1}  # [t, t + window] includes its end, and only it
    kept = side(log, "_outcomes").set_index("request_id")["_status"].to_dict()
    assert kept == {"over": "outside_window", "early": "unmatched"}
    assert (report.outcomes["outside_window"], report.outcomes["unmatched"]) == (1, 1)


def test_shadow_predictions_are_left_out_and_match_nothing(log: Log) -> None:
    log.predict("a", at(0, 10), version="1.0")
    log.predict("a", at(0, 10), version="2.0", role=Role.SHADOW)
    log.outcomes(Outcome(at(0, 20), "a", 0, label=1))
    report = run(log, at(3))
    rows = zone(log)
    assert rows["_version"].tolist() == ["1.0"] and report.mature == 1
    assert run(log, at(3), role="shadow", out_dir=str(log.root.parent / "shadow")).mature == 1


# --- default or drop, maturity --------------------------------------------------------------------


def test_missing_outcomes_get_the_default_label_or_are_dropped(log: Log) -> None:
    log.predict("seen", at(0, 10))
    log.predict("silent", at(0, 20))
    log.outcomes(Outcome(at(0, 30), "seen", 0, label=1))
    kept = run(log, at(3), missing="default", default_label=0)
    rows = zone(log).set_index("_request_id")
    assert rows["y"].to_dict() == {"seen": 1, "silent": 0} and str(rows["y"].dtype) == "int64"
    assert rows["_defaulted"].to_dict() == {"seen": False, "silent": True}
    assert np.isnan(rows.loc["silent", "_label_delay_s"])
    assert (kept.labelled, kept.defaulted, kept.dropped, kept.coverage) == (1, 1, 0, 0.5)
    dropped = run(log, at(3), out_dir=str(log.root.parent / "dropped"))
    assert (dropped.labelled, dropped.defaulted, dropped.dropped) == (1, 0, 1)
    assert pd.read_parquet(next((log.root.parent / "dropped").glob("part-*")))["_request_id"].tolist() == ["seen"]


def test_immature_predictions_wait_for_a_later_run(log: Log) -> None:
    log.predict("h0", at(0, 10))
    log.predict("h1", at(1, 10))
    log.outcomes(Outcome(at(1, 50), "h1", 0, label=1), Outcome(at(0, 50), "h0", 0, label=0))
    first = run(log, at(2, 30))  # hour 0 + 1 h + window 1 h <= now; hour 1 is not mature yet
    assert len(first.written) == 1 and first.pending == 1 and first.outcomes["pending"] == 1
    assert by_key(zone(log)) == {("h0", 0): 0}
    second = run(log, at(3))
    assert len(second.written) == 1 and second.pending == 0 and second.outcomes["used"] == 1
    assert by_key(zone(log)) == {("h0", 0): 0, ("h1", 0): 1}


# --- exactly once ---------------------------------------------------------------------------------


def test_a_second_run_adds_nothing_and_rewrites_nothing(log: Log) -> None:
    for hour in range(3):
        log.predict(f"r{hour}", at(hour, 10), rows=3)
        log.outcomes(Outcome(at(hour, 20), f"r{hour}", None, label=hour))
    first = run(log, at(3, 30))
    files = digests(log.root.parent / "zone")
    again = run(log, at(3, 30))
    assert again.written == () and again.run is None and again.mature == 0
    assert again.outcomes_read == again.outcomes["pending"] == 1  # the last hour's, read again until it matures
    assert digests(log.root.parent / "zone") == files
    later = run(log, at(5))  # the last hour matures now; the first two stay as they were
    assert len(first.written) == 2 and len(later.written) == 1
    rows = zone(log)
    assert len(rows) == 9 and not rows.duplicated(["_request_id", "_row"]).any()
    now = digests(log.root.parent / "zone")
    assert all(now[name] == digest for name, digest in files.items())
    assert sorted(k for k in now if k.startswith("part-")) == sorted([*first.written, *later.written])


def test_a_run_that_crashed_before_its_ledger_is_completed_without_duplicates(log: Log) -> None:
    log.predict("a", at(0, 10))
    log.outcomes(Outcome(at(0, 20), "a", 0, label=1))
    run(log, at(3))
    ledger = log.root.parent / "zone" / "_ledger"
    for path in ledger.glob("*.parquet"):
        path.unlink()  # as if the run died after writing its partition
    report = run(log, at(3))
    assert report.written == () and len(report.skipped) == 1
    assert report.late_predictions == 0 and report.outcomes["late"] == 0 and report.outcomes["used"] == 1
    assert not (log.root.parent / "zone" / "_late").exists()
    assert by_key(zone(log)) == {("a", 0): 1} and len(list(ledger.glob("*.parquet"))) == 1


# --- late and unmatched: counted once, kept ---------------------------------------------------------


def test_late_outcomes_are_counted_once_and_kept(log: Log) -> None:
    log.predict("a", at(0, 10))
    log.predict("b", at(0, 20))
    log.outcomes(Outcome(at(0, 30), "a", 0, label=1))
    run(log, at(3))
    # After the partition was written: b's outcome, 4 h late; a's second one, stamped inside the window but
    # logged late (a file of labels copied in); one for a request never logged
    log.outcomes(Outcome(at(4, 0), "b", 0, label=0))
    log.outcomes(Outcome(at(0, 40), "a", 0, label=0))
    log.outcomes(Outcome(at(4, 5), "ghost", 0, label=1))
    second = run(log, at(6))
    assert second.outcomes["late"] == 2 and second.outcomes["unmatched"] == 1 and second.written == ()
    kept = side(log, "_outcomes")
    assert sorted(zip(kept["request_id"], kept["_status"])) == [("a", "late"), ("b", "late"), ("ghost", "unmatched")]
    third = run(log, at(9))
    assert third.outcomes["late"] == 0 and third.outcomes["unmatched"] == 0
    assert len(side(log, "_outcomes")) == 3
    assert by_key(zone(log)) == {("a", 0): 1}  # the zone is never rewritten


def test_an_outcome_older_than_the_lookback_is_unmatched(log: Log) -> None:
    log.predict("a", at(0, 10))
    log.predict("b", at(0, 20))
    run(log, at(3))
    log.outcomes(Outcome(at(2, 0), "a", 0, label=1), Outcome(at(5, 0), "b", 0, label=1))
    report = run(log, at(8), lookback="3h")
    kept = side(log, "_outcomes").set_index("request_id")["_status"].to_dict()
    assert kept == {"a": "late", "b": "unmatched"} and report.outcomes["late"] == report.outcomes["unmatched"] == 1


def test_late_outcomes_of_the_window_just_written_are_not_counted_twice(log: Log) -> None:
    log.predict("a", at(0, 3590))  # the last seconds of hour 0
    log.outcomes(Outcome(at(1, 3000), "a", 0, label=1))  # 50 min later: after the watermark of the first run
    first = run(log, at(2, 10))
    assert by_key(zone(log)) == {("a", 0): 1} and first.outcomes["used"] == 1
    second = run(log, at(5))  # reads that outcome shard again (rows at or after the old watermark)
    assert second.outcomes_read == 0 and sum(second.outcomes.values()) == 0


def test_predictions_logged_after_their_partition_was_written_are_kept_apart(log: Log) -> None:
    log.predict("a", at(0, 10))
    log.outcomes(Outcome(at(0, 20), "a", 0, label=1))
    run(log, at(3))
    before = {k: v for k, v in digests(log.root.parent / "zone").items() if k.startswith("part-")}
    log.predict("tardy", at(0, 30))  # a server that flushed hours late
    log.outcomes(Outcome(at(0, 40), "tardy", 0, label=0))
    report = run(log, at(3, 10))
    assert report.late_predictions == 1 and report.outcomes["late"] == 1
    late = side(log, "_late")
    assert late["_request_id"].tolist() == ["tardy"] and late["y"].tolist() == [0]
    assert {k: v for k, v in digests(log.root.parent / "zone").items() if k.startswith("part-")} == before


# --- the zone as the continual pipeline reads it --------------------------------------------------


def test_the_zone_reads_back_without_metadata_as_features(log: Log) -> None:
    for hour in range(2):
        log.predict(f"r{hour}", at(hour, 10), rows=4)
        log.outcomes(Outcome(at(hour, 20), f"r{hour}", None, label=hour))
    run(log, at(4))
    root = log.root.parent / "zone"
    parts = list_partitions(root)  # _ledger/, _outcomes/ and .lock are not partitions
    assert [p.start for p in parts] == [pd.Timestamp(at(0), unit="s"), pd.Timestamp(at(1), unit="s")]
    conf = DataConf(landing_dir=str(root), generator="none", features=[], train_window=1, eval_window=1)
    cols, rows = check_partitions(parts, conf)
    assert cols.features == ("x0", "x1") and cols.label == "y" and cols.timestamp == "ts"
    assert sum(rows.values()) == 8
    assert any(c.startswith("_output.") for c in pq.read_schema(parts[0].path).names)
    train, held_out = select_windows(parts, conf)  # as the ingest task reads a zone
    cols = check_windows({"train": train, "eval": held_out}, conf)
    with dask_threads(1):
        frame = read_window(train, cols).compute()
    assert list(frame.columns) == ["ts", "x0", "x1", "y"] and frame["y"].tolist() == [0] * 4


@pytest.mark.parametrize("labels,kind", [
    (["cat", "dog"], "string"), ([True, False], "bool"), ([1, 2.5], "double"), ([1, "x"], "string"),
])
def test_the_label_column_has_one_type_per_partition(log: Log, labels: list[Any], kind: str) -> None:
    log.predict("a", at(0, 10), rows=2)
    log.outcomes(*[Outcome(at(0, 20), "a", i, label=v) for i, v in enumerate(labels)])
    run(log, at(3))
    part = next((log.root.parent / "zone").glob("part-*"))
    assert str(pq.read_schema(part).field("y").type) == kind
    values = pd.read_parquet(part)["y"].tolist()
    assert values == (labels if kind != "string" or all(isinstance(v, str) for v in labels)
                      else [json.dumps(v) for v in labels])


def test_rewards_as_labels(log: Log) -> None:
    log.predict("a", at(0, 10), rows=2)
    log.outcomes(Outcome(at(0, 20), "a", 0, reward=0.25), Outcome(at(0, 20), "a", 1, label=1))
    report = run(log, at(3), value="reward")
    assert by_key(zone(log)) == {("a", 0): 0.25}
    assert report.outcomes["no_value"] == 1


def test_served_accuracy_per_version(log: Log) -> None:
    log.predict("v1", at(0, 10), rows=4, version="1.0", classes=[0, 1, 1, 0])
    log.predict("v2", at(0, 20), rows=2, version="2.0", classes=[1, 1])
    log.predict("silent", at(0, 30), version="2.0", classes=[0])
    log.outcomes(*[Outcome(at(0, 40), "v1", i, label=y) for i, y in enumerate([0, 1, 0, 0])],
                 Outcome(at(0, 40), "v2", None, label=1))
    run(log, at(3), missing="default", default_label=0)
    table = served_accuracy(log.root.parent / "zone")
    assert table.to_dict(orient="records") == [
        {"version": "1.0", "rows": 4, "correct": 3, "accuracy": 0.75},
        {"version": "2.0", "rows": 2, "correct": 2, "accuracy": 1.0},  # the defaulted row is no observation
    ]
    assert served_accuracy(log.root.parent / "zone", with_defaulted=True)["rows"].tolist() == [4, 3]
    assert served_accuracy(log.root.parent / "zone", output="nothing").empty


# --- bad settings fail before anything is written -------------------------------------------------


@pytest.mark.parametrize("over,fragments", [
    ({"missing": "keep"}, ["missing='keep'", "['drop', 'default']"]),
    ({"window": "soon"}, ["window='soon' is not a duration", "'30min'"]),
    ({"missing": "default"}, ["needs default_label"]),
    ({"lookback": "10min"}, ["lookback='10min' must be >= window='1h'"]),
    ({"windw": "1h"}, ["unknown labels key(s) ['windw']", "window"]),
    ({"log_dir": "/nonexistent/log"}, ["prediction log /nonexistent/log does not exist", "labels.log_dir"]),
])
def test_bad_settings_are_named_and_nothing_is_written(log: Log, over: dict[str, Any], fragments: list[str]) -> None:
    log.predict("a", at(0, 10))
    with pytest.raises((ConfigError, DataError)) as caught:
        run(log, at(3), **over)
    for fragment in fragments:
        assert fragment in str(caught.value)
    assert not (log.root.parent / "zone").exists()
