"""The watch's trigger state, gathered from a real registry (SQLite, a real checkpoint written with
save_checkpoint) and a real landing zone of Parquet partitions; then the real triggers on it.

The champion is a logistic regression with hand-set weights: on scaled features z it predicts
class 1 when z0 + z1 > 0, which is how the zone's labels are made. So its accuracy is exactly 1 on
data of the same concept, exactly 0 on data whose labels are flipped, and it is wrong on every row
if its stored mean/std were not applied (the raw features are far from 0).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cl_hpc.atomic import write_json_atomic
from cl_hpc.config.ml import DataConf
from cl_hpc.data.landing import partition_name
from cl_hpc.errors import ChecksumError
from cl_hpc.learn.drift import DriftConf
from cl_hpc.learn.triggers import TriggerConf, evaluate_triggers, fired, trigger_conf
from cl_hpc.registry import ModelRegistry
from cl_hpc.watch.state import Source, gather

MEAN, STD = np.array([10.0, -5.0, 0.0]), np.array([2.0, 3.0, 1.0])
START = pd.Timestamp("2026-01-01T00:00:00")
ROWS = 300


def write_partition(zone: Path, index: int, seed: int, shift: float = 0.0, flip: bool = False,
                    unlabelled: int = 0, rows: int = ROWS) -> Path:
    """Partition ``index`` (hourly from START): raw features MEAN + STD * z, label z0 + z1 > 0."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(rows, 3)) + shift
    raw = MEAN + STD * z
    y = ((z[:, 0] + z[:, 1]) > 0).astype("int64")
    labels = pd.array(1 - y if flip else y, dtype="Int64")
    labels[:unlabelled] = pd.NA
    start = START + pd.Timedelta(hours=index)
    frame = pd.DataFrame({"ts": start + pd.to_timedelta(np.arange(rows), unit="s"),
                          "a": raw[:, 0], "b": raw[:, 1], "c": raw[:, 2], "y": labels})
    path = zone / partition_name(start)
    zone.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return path


def make_zone(zone: Path, n: int = 4) -> list[Path]:
    return [write_partition(zone, i, seed=i) for i in range(n)]


def save_champion_checkpoint(path: Path) -> str:
    import torch

    from cl_hpc.learn.checkpoint import save_checkpoint
    from cl_hpc.learn.nets import MLP

    hparams = {"n_features": 3, "n_classes": 2, "hidden": 4, "layers": 0, "dropout": 0.0}
    net = MLP(**hparams)
    with torch.no_grad():
        net.body[0].weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [50.0, 50.0, 0.0]]))
        net.body[0].bias.zero_()
    meta = {"features": ["a", "b", "c"], "classes": [0, 1], "mean": MEAN.tolist(), "std": STD.tolist(),
            "label_col": "y", "window_digest": "test"}
    return save_checkpoint(path, net, hparams, meta)


def make_champion(store: Path, name: str, window: list[Path], accuracy: float = 1.0,
                  metrics: Optional[dict[str, Any]] = None, as_paths: bool = False,
                  run_id: Optional[str] = None) -> Path:
    checkpoint = store.parent / "model.pt"
    sha = save_champion_checkpoint(checkpoint)
    with ModelRegistry.open(store) as registry:
        version = registry.register(name, checkpoint, strategy="stateless", checkpoint_sha256=sha,
                                    window_partitions=[str(p) if as_paths else p.name for p in window],
                                    metrics={"accuracy": accuracy, **(metrics or {})}, run_id=run_id)
        registry.promote(name, version.version, "champion", reason="test champion")
    return checkpoint


def data_for(zone: Path) -> DataConf:
    return DataConf(landing_dir=str(zone), generator="none")


def gathered(tmp_path: Path, conf: Optional[TriggerConf] = None, hours: float = 1.0) -> Any:
    now = datetime.now(timezone.utc) + timedelta(hours=hours)
    source = Source(tmp_path / "store", "m", run_root=tmp_path / "runs")
    return gather(source, data_for(tmp_path / "zone"), conf or TriggerConf(), DriftConf(), now)


@pytest.fixture
def champion(tmp_path: Path) -> list[Path]:
    window = make_zone(tmp_path / "zone")
    make_champion(tmp_path / "store", "m", window)
    return window


def test_without_a_store_nothing_is_created_and_the_time_trigger_fires(tmp_path: Path) -> None:
    got = gathered(tmp_path)
    assert got.champion is None and got.state.last_trained_at is None and "a first model is due" in got.notes[0]
    assert not (tmp_path / "store").exists()
    assert [r.name for r in fired(evaluate_triggers(TriggerConf(), got.state))] == ["time"]


def test_a_fresh_champion_without_new_data_fires_nothing(tmp_path: Path, champion: list[Path]) -> None:
    got = gathered(tmp_path)
    assert got.champion is not None and got.champion.label == "m 1.0" and got.champion.metric == 1.0
    assert got.champion.train_rows == 4 * ROWS  # counted from its window's Parquet footers
    assert got.new == () and got.state.new_rows == 0 and got.state.metric_now is None and got.state.drift is None
    results = evaluate_triggers(TriggerConf(), got.state)
    assert not fired(results)
    assert next(r for r in results if r.name == "time").value == pytest.approx(1.0, abs=0.01)


def test_new_rows_of_the_same_concept_score_the_champion_after_its_own_scaling(tmp_path: Path,
                                                                               champion: list[Path]) -> None:
    zone = tmp_path / "zone"
    new = [write_partition(zone, 4, seed=10, unlabelled=20), write_partition(zone, 5, seed=11)]
    got = gathered(tmp_path)
    assert [p.path for p in got.new] == new
    assert got.state.new_rows == 2 * ROWS and got.state.labelled_rows == 2 * ROWS - 20  # null labels left out
    assert got.state.metric_now == 1.0 and not np.asarray(got.state.errors).any()
    assert got.drift is not None and not got.drift.drifted
    by_name = {r.name: r for r in evaluate_triggers(TriggerConf(), got.state)}
    assert by_name["volume"].value == pytest.approx((2 * ROWS) / (4 * ROWS)) and by_name["volume"].fired
    assert not by_name["performance"].fired and not by_name["drift"].fired


def test_flipped_labels_fire_the_performance_trigger_and_the_detector_but_not_drift(tmp_path: Path,
                                                                                  champion: list[Path]) -> None:
    write_partition(tmp_path / "zone", 4, seed=10, flip=True)
    conf = trigger_conf({"performance": {"detector": "page_hinkley"}, "volume": {"min_new_fraction": 0.9}})
    got = gathered(tmp_path, conf)
    assert got.state.metric_now == 0.0 and np.asarray(got.state.errors).all()
    assert got.drift is not None and not got.drift.drifted
    assert {r.name for r in fired(evaluate_triggers(conf, got.state))} == {"performance"}
    # a stream that starts right and then goes wrong: the detector sees the rise
    write_partition(tmp_path / "zone", 5, seed=11, flip=True)
    (tmp_path / "zone" / partition_name(START + pd.Timedelta(hours=4))).unlink()
    write_partition(tmp_path / "zone", 4, seed=10)
    got = gathered(tmp_path, conf)
    assert list(np.asarray(got.state.errors)) == [0] * ROWS + [1] * ROWS
    assert {r.name for r in fired(evaluate_triggers(conf, got.state))} == {"performance", "performance.page_hinkley"}


def test_shifted_features_drift_while_accuracy_holds(tmp_path: Path, champion: list[Path]) -> None:
    write_partition(tmp_path / "zone", 4, seed=10, shift=1.5)
    got = gathered(tmp_path, trigger_conf({"volume": {"min_new_fraction": 0.9}}))
    assert got.state.metric_now == 1.0
    assert got.drift is not None and got.drift.drifted and set(got.drift.drifted_features) >= {"a", "b", "c"}
    results = evaluate_triggers(TriggerConf(), got.state)
    drift = next(r for r in results if r.name == "drift")
    assert drift.fired and drift.severe and drift.value == 1.0


def test_unknown_labels_count_as_errors(tmp_path: Path, champion: list[Path]) -> None:
    path = write_partition(tmp_path / "zone", 4, seed=10)
    table = pq.read_table(path)
    labels = table.column("y").to_pandas().to_numpy().copy()
    labels[:30] = 7  # a class the champion never saw
    pq.write_table(table.set_column(table.schema.get_field_index("y"), "y", pa.array(labels)), path)
    got = gathered(tmp_path)
    assert got.state.metric_now == pytest.approx(1 - 30 / ROWS) and int(np.asarray(got.state.errors).sum()) == 30


def test_window_as_paths_and_recorded_train_rows_and_window_end(tmp_path: Path) -> None:
    window = make_zone(tmp_path / "zone")
    write_partition(tmp_path / "zone", 4, seed=10)
    # window_end (the newest row trained on) may reach past the named files: partition 4 is then seen
    end = (START + pd.Timedelta(hours=4, minutes=30)).isoformat()
    make_champion(tmp_path / "store", "m", window, metrics={"train_rows": 999, "window_end": end}, as_paths=True)
    got = gathered(tmp_path)
    assert got.champion is not None and got.champion.train_rows == 999 and got.new == ()


@pytest.mark.parametrize("recorded, new", [("metrics", [6]), ("run_dir", [6]), ("nowhere", [4, 5, 6])])
def test_the_eval_window_the_champion_was_gated_on_is_not_new(tmp_path: Path, recorded: str, new: list[int]) -> None:
    parts = make_zone(tmp_path / "zone", 7)  # trained on 0-3, gated on 4-5; 6 landed later
    gated = [p.name for p in parts[4:6]]
    metrics = {"eval_partitions": gated} if recorded == "metrics" else {}
    make_champion(tmp_path / "store", "m", parts[:4], metrics=metrics, run_id="r1")
    if recorded == "run_dir":  # the champion's run dir: its ingest task's outputs
        write_json_atomic(tmp_path / "runs" / "r1" / "tasks" / "ingest" / "outputs.json", {"eval_partitions": gated})
    got = gathered(tmp_path)
    assert [p.path for p in got.new] == [parts[i] for i in new] and got.state.new_rows == len(new) * ROWS
    assert got.state.train_rows == 4 * ROWS


def test_a_champion_without_a_window_leaves_volume_unjudged(tmp_path: Path) -> None:
    make_zone(tmp_path / "zone")
    make_champion(tmp_path / "store", "m", [])
    got = gathered(tmp_path)
    assert got.state.train_rows is None and "records no landing-zone partitions" in got.notes[0]
    volume = next(r for r in evaluate_triggers(TriggerConf(), got.state) if r.name == "volume")
    assert volume.value is None and not volume.fired


def test_an_altered_checkpoint_is_refused_and_quarantined(tmp_path: Path, champion: list[Path]) -> None:
    write_partition(tmp_path / "zone", 4, seed=10)
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(checkpoint.read_bytes() + b"tampered")
    with pytest.raises(ChecksumError, match="quarantined"):
        gathered(tmp_path)
    with ModelRegistry.open(tmp_path / "store") as registry:
        assert registry.get("m", "champion").quarantined
