"""trigger.performance.source=served: the watch judges the champion by the answers it served, read
from a label zone that the real label join (cl_hpc/labels/join.py) wrote from real prediction-log
shards (cl_hpc/data/predictions.py), against a real registry; no model is loaded, which a champion
whose checkpoint file is gone proves (rescoring it fails, judging what it served does not)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cl_hpc.config.ml import DataConf
from cl_hpc.data.partitions import list_partitions
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
from cl_hpc.errors import ConfigError
from cl_hpc.labels.accuracy import served_accuracy, served_hits
from cl_hpc.labels.join import join
from cl_hpc.labels.write import parquet_bytes
from cl_hpc.learn.drift import DriftConf
from cl_hpc.learn.triggers import PerformanceTriggerConf, TriggerConf, evaluate_triggers, trigger_conf
from cl_hpc.registry import ModelRegistry, RegistryError
from cl_hpc.watch.state import Source, gather
from tests.unit.test_labels_join import at
from tests.unit.test_registry import make_checkpoint
from tests.unit.test_watch_state import make_champion


@dataclass
class Log:
    """A prediction log folder: every call writes one shard, as one flush of a server would."""

    root: Path
    seq: int = 0
    outcomes: list[Outcome] = field(default_factory=list)

    def served(self, request: str, t: float, version: str, answer: Any, label: Any = None) -> None:
        """One answered one-row request (inputs a, b, c; output ``label``), and its outcome when ``label``."""
        x = np.array([t % 97.0])
        batch = PredictionBatch(request, t, "m", version, Role.LIVE, 1.0, {"a": x, "b": -x, "c": x / 2},
                                {"label": np.array([answer])})
        self._write(Stream.PREDICTIONS, t, predictions_table([batch]))
        if label is not None:
            self.outcomes.append(Outcome(t + 60, request, 0, label=label))

    def join(self, now_hour: int, **over: Any) -> Path:
        """The outcomes so far as one shard, then the real join into <root>/../zone."""
        if self.outcomes:
            self._write(Stream.OUTCOMES, self.outcomes[0].at, outcomes_table(self.outcomes))
            self.outcomes = []
        zone = self.root.parent / "zone"
        join({"log_dir": str(self.root), "out_dir": str(zone), "window": "1h",
              "now": pd.Timestamp(at(now_hour), unit="s").isoformat(), **over})
        return zone

    def _write(self, stream: Stream, t: float, table: pa.Table) -> None:
        self.seq += 1
        write_shard(shard_path(self.root, stream, t, "test", self.seq), table)


@pytest.fixture
def log(tmp_path: Path) -> Log:
    return Log(tmp_path / "log")


def parts(zone: Path) -> list[Path]:
    return [p.path for p in list_partitions(zone)]


# --- config ---------------------------------------------------------------------------------------


def test_source_defaults_to_rescore_and_served_is_accepted() -> None:
    assert PerformanceTriggerConf().source == "rescore" and PerformanceTriggerConf().served_output == "label"
    conf = trigger_conf({"performance": {"source": "served", "served_output": "class", "metric": "accuracy"}})
    assert (conf.performance.source, conf.performance.served_output) == ("served", "class")


@pytest.mark.parametrize("params, expected", [
    ({"source": "logged"}, r"source='logged'; valid: \['rescore', 'served'\]"),
    ({"source": "served", "served_output": ""}, "served_output is empty: name the logged output"),
    ({"source": "served", "served_output": "  "}, "served_output is empty"),
])
def test_a_bad_source_or_served_output_is_a_config_error(params: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError, match=r"invalid performance trigger config: .*" + expected):
        trigger_conf({"performance": params})


# --- served_hits on partitions the real join wrote ------------------------------------------------


def test_served_hits_keeps_one_version_oldest_first_whatever_the_file_order(log: Log) -> None:
    # hour 1 is written first in the log but is the newer partition; within hour 0 the log is out of order
    log.served("r5", at(1, 30), "1.0", answer=1, label=0)
    log.served("r2", at(0, 50), "1.0", answer=0, label=1)
    log.served("r1", at(0, 10), "1.0", answer=1, label=1)
    log.served("r3", at(0, 30), "2.0", answer=1, label=0)  # another version's answer: never counted for 1.0
    log.served("r4", at(1, 10), "1.0", answer=1, label=1)
    zone = log.join(now_hour=4)
    files = parts(zone)
    assert len(files) == 2
    # oldest first: r1 hit, r2 miss, r4 hit, r5 miss, even when the newer file is read first
    assert served_hits(files[::-1], "y", "label", "1.0").tolist() == [1, 0, 1, 0]
    assert served_hits(files, "y", "label", "2.0").tolist() == [0]
    assert served_hits(files, "y", "label", "3.0").size == 0  # a version that served nothing
    # the same rows as the per-version report of the join's zone
    table = served_accuracy(zone, "y", "label").set_index("version")
    assert table.loc["1.0", "rows"] == 4 and table.loc["1.0", "correct"] == 2


def test_served_hits_leaves_out_defaulted_labels(log: Log) -> None:
    log.served("hit", at(0, 10), "1.0", answer=1, label=1)
    log.served("miss", at(0, 20), "1.0", answer=1, label=0)
    # no outcome: labelled default_label=0 by the join; its answer 0 would count as a hit if it were kept
    log.served("quiet", at(0, 30), "1.0", answer=0)
    zone = log.join(now_hour=3, missing="default", default_label=0)
    frame = pd.read_parquet(parts(zone)[0])
    assert frame["_defaulted"].tolist() == [False, False, True]  # the join did label it, as an assumption
    assert served_hits(parts(zone), "y", "label", "1.0").tolist() == [1, 0]


def test_numbers_compare_as_numbers_and_text_as_text(tmp_path: Path) -> None:
    # integer labels (an int64 column) against a model's float answers: 1 == 1.0
    numbers = Log(tmp_path / "numbers" / "log")
    numbers.served("n1", at(0, 10), "1.0", answer=1.0, label=1)
    numbers.served("n2", at(0, 20), "1.0", answer=0.0, label=1)
    # class names: a string label column against a model's string answers
    names = Log(tmp_path / "names" / "log")
    names.served("s1", at(0, 10), "1.0", answer="cat", label="cat")
    names.served("s2", at(0, 20), "1.0", answer="dog", label="cat")
    for log, kinds, hits in [(numbers, ("int64", "double"), [1, 0]), (names, ("string", "string"), [1, 0])]:
        files = parts(log.join(now_hour=3))
        schema = pq.read_schema(files[0])
        assert (str(schema.field("y").type), str(schema.field("_output.label").type)) == kinds
        assert served_hits(files, "y", "label", "1.0").tolist() == hits


def test_partitions_without_the_answer_label_or_version_are_skipped(log: Log, tmp_path: Path) -> None:
    log.served("r1", at(0, 10), "1.0", answer=1, label=1)
    zone = log.join(now_hour=3)
    assert served_hits(parts(zone), "y", "class", "1.0").size == 0  # no _output.class was logged
    assert served_hits(parts(zone), "label_col_that_is_not_there", "label", "1.0").size == 0
    # a plain landing-zone file (no _version), and a row whose label is null: neither counts
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"ts": pa.array([0], pa.timestamp("us", tz="UTC")), "a": [1.0], "y": [1]}), plain)
    nulls = tmp_path / "nulls.parquet"
    (nulls).write_bytes(parquet_bytes(pa.table({
        "ts": pa.array([1, 2], pa.timestamp("us", tz="UTC")), "y": pa.array([None, 1], pa.int64()),
        "_version": ["1.0", "1.0"], "_output.label": [1, 0]})))
    assert served_hits([plain, nulls, *parts(zone)], "y", "label", "1.0").tolist() == [0, 1]


# --- the watch's gather with source=served, on a real registry --------------------------------------


def served_conf(**performance: Any) -> TriggerConf:
    return trigger_conf({"performance": {"source": "served", "min_labelled": 1, **performance}})


@dataclass(frozen=True)
class Served:
    """A label zone: hours 0-1 the champion's window, hours 2-3 new traffic of 1.0 and 2.0."""

    zone: Path
    window: list[Path]
    errors_1_0: list[int]  # 1.0's 0/1 errors on the new rows, oldest first


def served_zone(log: Log) -> Served:
    for hour in (0, 1):
        for i in range(4):
            log.served(f"w{hour}{i}", at(hour, 10 * i), "1.0", answer=i % 2, label=i % 2)
    # the new hours: 1.0 right on 3 of its 5 rows (in time order: hit, miss, hit, hit, miss); 2.0
    # wrong on all of its rows, so counting them for 1.0 would change its accuracy
    for t, answer, label in [(at(2, 5), 1, 1), (at(2, 15), 1, 0), (at(3, 5), 0, 0), (at(3, 10), 1, 1),
                             (at(3, 40), 0, 1)]:
        log.served(f"c{t}", t, "1.0", answer, label)
    for t in (at(2, 10), at(3, 20), at(3, 30)):
        log.served(f"x{t}", t, "2.0", answer=1, label=0)
    zone = log.join(now_hour=6)
    files = parts(zone)
    assert len(files) == 4
    return Served(zone, files[:2], [0, 1, 0, 0, 1])


def register(store: Path, window: Sequence[Path], accuracy: float = 1.0) -> Path:
    """Champion 1.0 (trained on ``window``) and a challenger 2.0; returns the champion's checkpoint."""
    checkpoint = make_champion(store, "m", list(window), accuracy=accuracy)
    other = store.parent / "other.pt"
    sha = make_checkpoint(other, seed=3)
    with ModelRegistry.open(store) as registry:
        registry.register("m", other, strategy="stateless", checkpoint_sha256=sha, window_partitions=[],
                          metrics={"accuracy": 0.5})
        assert [str(v.version) for v in registry.versions("m")] == ["1.0", "2.0"]
        assert str(registry.get("m", "champion").version) == "1.0"
    return checkpoint


def gather_served(tmp_path: Path, zone: Path, conf: TriggerConf, drift: bool = True) -> Any:
    source = Source(tmp_path / "store", "m", run_root=tmp_path / "runs")
    if not drift:
        conf = trigger_conf({"performance": vars(conf.performance), "drift": {"enabled": False}})
    return gather(source, DataConf(landing_dir=str(zone), generator="none"), conf, DriftConf(),
                  datetime.now(timezone.utc) + timedelta(hours=1))  # after the champion's registration


def test_gather_judges_the_champion_on_the_answers_its_version_served(tmp_path: Path, log: Log) -> None:
    served = served_zone(log)
    register(tmp_path / "store", served.window)
    got = gather_served(tmp_path, served.zone, served_conf())
    assert [p.path for p in got.new] == parts(served.zone)[2:]
    assert got.state.new_rows == 8  # both versions' rows are new data
    assert (got.state.metric, got.state.metric_at_promotion) == ("accuracy", 1.0)
    assert got.state.labelled_rows == 5 and got.state.metric_now == pytest.approx(3 / 5)
    assert np.asarray(got.state.errors).tolist() == served.errors_1_0
    # a fall from 1.0 to 0.6 is a 40 % drop: the performance trigger fires on it
    by_name = {r.name: r for r in evaluate_triggers(served_conf(), got.state)}
    assert by_name["performance"].fired and by_name["performance"].value == pytest.approx(0.4)


def test_served_needs_no_model_loaded_where_rescore_does(tmp_path: Path, log: Log) -> None:
    served = served_zone(log)
    register(tmp_path / "store", served.window).unlink()  # the champion's checkpoint is gone
    got = gather_served(tmp_path, served.zone, served_conf(), drift=False)
    assert got.state.labelled_rows == 5 and got.state.metric_now == pytest.approx(3 / 5)
    with pytest.raises(RegistryError, match="does not exist"):  # rescoring has to load it
        gather_served(tmp_path, served.zone, trigger_conf({"performance": {"min_labelled": 1}}), drift=False)


def test_a_champion_that_served_none_of_the_new_rows_gets_a_note(tmp_path: Path, log: Log) -> None:
    for hour in (0, 1):
        log.served(f"w{hour}", at(hour, 5), "1.0", answer=1, label=1)
    log.served("x", at(2, 5), "2.0", answer=1, label=1)
    zone = log.join(now_hour=5)
    register(tmp_path / "store", parts(zone)[:2])
    got = gather_served(tmp_path, zone, served_conf(), drift=False)
    assert got.state.metric_now is None and got.state.labelled_rows == 0
    assert any("no labelled row in the new partitions was served by 1.0" in n and "_output.label" in n
               for n in got.notes), got.notes
    assert not {r.name for r in evaluate_triggers(served_conf(), got.state) if r.fired} & {"performance"}


def test_a_metric_that_is_not_an_accuracy_is_a_config_error_naming_the_fix(tmp_path: Path, log: Log) -> None:
    served = served_zone(log)
    register(tmp_path / "store", served.window)
    with pytest.raises(ConfigError, match="source=served compares the answers served with their labels.*"
                                          "'log_loss'.*set trigger.performance.metric to the model's accuracy "
                                          "metric, or source=rescore"):
        gather_served(tmp_path, served.zone, served_conf(metric="log_loss"), drift=False)


def test_served_output_names_the_logged_output_compared(tmp_path: Path, log: Log) -> None:
    served = served_zone(log)
    register(tmp_path / "store", served.window)
    got = gather_served(tmp_path, served.zone, served_conf(served_output="class"), drift=False)
    assert got.state.metric_now is None and any("_output.class" in n for n in got.notes), got.notes
