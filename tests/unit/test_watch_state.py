"""The watch's trigger state, gathered from a real registry (SQLite, a real checkpoint written with
save_workload) and a real landing zone of Parquet partitions; then the real triggers on it.

The champion is the bundled tabular workload as a logistic regression with hand-set weights: on
scaled features z it predicts class 1 when z0 + z1 > 0, which is how the zone's labels are made. So
its accuracy is exactly 1 on data of the same concept, exactly 0 on data whose labels are flipped,
and it is wrong on every row if its data module's scaling were not applied (the raw features are
far from 0). A tiny GPT on a token stream without labels checks the other side of the contract: a
metric where lower is better, no 0/1 errors, drift on its token columns.
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
from cl_hpc.learn.contract import ContractError, Direction
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


def tabular_champion() -> Any:
    """TabularClassifier + TabularData: class 1 when z0 + z1 > 0 on the data module's scaled inputs."""
    import torch

    from cl_hpc.learn.contract import Target
    from cl_hpc.learn.strategies import Moments
    from cl_hpc.learn.tabular import TabularClassifier, TabularData
    from cl_hpc.learn.workload import Workload

    data_args = {"label_col": "y", "features": ["a", "b", "c"]}
    data = TabularData(**data_args)
    data.load_state_dict({"features": ["a", "b", "c"], "classes": [0, 1], "class_counts": [1, 1],
                          "moments": Moments.from_std(2.0, MEAN, STD).to_dict()})
    args = {"n_features": 3, "n_classes": 2, "hidden": 4, "layers": 0, "dropout": 0.0}
    model = TabularClassifier(**args)
    with torch.no_grad():
        model.net.body[0].weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [50.0, 50.0, 0.0]]))
        model.net.body[0].bias.zero_()
    return Workload(model, data, Target("cl_hpc.learn.tabular.TabularClassifier", args),
                    Target("cl_hpc.learn.tabular.TabularData", data_args))


def register_champion(store: Path, name: str, workload: Any, window: list[Path], metrics: dict[str, Any],
                      as_paths: bool = False, run_id: Optional[str] = None) -> Path:
    from cl_hpc.learn.checkpoint import save_workload

    checkpoint = store.parent / "model.pt"
    sha = save_workload(checkpoint, workload, {"window_digest": "test"})
    with ModelRegistry.open(store) as registry:
        version = registry.register(name, checkpoint, strategy="stateless", checkpoint_sha256=sha,
                                    window_partitions=[str(p) if as_paths else p.name for p in window],
                                    metrics=metrics, run_id=run_id, model_class=workload.model_target.path,
                                    init_args=workload.model_target.args,
                                    datamodule_class=workload.data_target.path,
                                    signature=workload.signature.to_dict())
        registry.promote(name, version.version, "champion", reason="test champion")
    return checkpoint


def make_champion(store: Path, name: str, window: list[Path], accuracy: float = 1.0,
                  metrics: Optional[dict[str, Any]] = None, as_paths: bool = False,
                  run_id: Optional[str] = None) -> Path:
    return register_champion(store, name, tabular_champion(), window, {"accuracy": accuracy, **(metrics or {})},
                             as_paths, run_id)


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


# --- any model: its own metric and direction, label-less data, old versions --------------------------


def test_a_metric_where_lower_is_better_worsens_upward(tmp_path: Path) -> None:
    window = make_zone(tmp_path / "zone")
    make_champion(tmp_path / "store", "m", window, metrics={"log_loss": 0.05})
    write_partition(tmp_path / "zone", 4, seed=10, flip=True)
    conf = trigger_conf({"performance": {"metric": "log_loss", "detector": None}, "volume": {"enabled": False}})
    got = gathered(tmp_path, conf)
    assert got.state.metric == "log_loss" and got.state.direction is Direction.LOWER
    assert got.state.metric_now is not None and got.state.metric_now > 1.0  # confidently wrong on every row
    performance = next(r for r in evaluate_triggers(conf, got.state) if r.name == "performance")
    assert performance.fired and performance.value > 1.0 and "lower is better" in performance.detail


def test_a_null_metric_is_the_models_primary_one(tmp_path: Path, champion: list[Path]) -> None:
    got = gathered(tmp_path)
    assert (got.state.metric, got.state.direction, got.champion.metric) == ("accuracy", Direction.HIGHER, 1.0)


def test_a_metric_the_model_does_not_report_names_those_it_does(tmp_path: Path, champion: list[Path]) -> None:
    with pytest.raises(ContractError, match=r"'perplexity' is not reported .*'accuracy', 'log_loss'"):
        gathered(tmp_path, trigger_conf({"performance": {"metric": "perplexity"}}))


VOCAB, SEQ = 16, 8


def write_tokens(zone: Path, index: int, seed: int, bad_token: bool = False) -> Path:
    """A label-less partition of token rows tok_000 .. tok_008 (SEQ + 1 tokens), uniform over VOCAB."""
    tokens = np.random.default_rng(seed).integers(0, VOCAB, size=(ROWS, SEQ + 1))
    if bad_token:
        tokens[5, 3] = VOCAB + 3  # outside the vocabulary
    start = START + pd.Timedelta(hours=index)
    frame = pd.DataFrame({"ts": start + pd.to_timedelta(np.arange(ROWS), unit="s"),
                          **{f"tok_{i:03d}": tokens[:, i] for i in range(SEQ + 1)}})
    zone.mkdir(parents=True, exist_ok=True)
    path = zone / partition_name(start)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return path


@pytest.fixture
def gpt_champion(tmp_path: Path) -> list[Path]:
    """An untrained tiny GPT on uniform tokens (loss about ln 16 = 2.77), recorded at a loss of 1.0."""
    from cl_hpc.learn.contract import Target
    from cl_hpc.learn.tokens import TokenData
    from cl_hpc.learn.workload import Workload, model_for

    window = [write_tokens(tmp_path / "zone", i, seed=i) for i in range(3)]
    data_target = Target("cl_hpc.learn.tokens.TokenData", {"vocab_size": VOCAB})
    data = TokenData(vocab_size=VOCAB)
    data.fit_state(pd.concat([pd.read_parquet(p) for p in window], ignore_index=True))
    model, built = model_for(Target("cl_hpc.learn.gpt.GPT", {"d_model": 16, "n_layers": 1, "n_heads": 2}), data)
    register_champion(tmp_path / "store", "m", Workload(model, data, built, data_target), window, {"loss": 1.0})
    return window


def test_a_label_less_model_is_judged_on_its_loss_without_an_error_stream(tmp_path: Path,
                                                                           gpt_champion: list[Path]) -> None:
    write_tokens(tmp_path / "zone", 3, seed=10)
    source = Source(tmp_path / "store", "m", run_root=tmp_path / "runs")
    data = DataConf(landing_dir=str(tmp_path / "zone"), generator="none", label_col=None)
    now = datetime.now(timezone.utc) + timedelta(hours=1)
    got = gather(source, data, TriggerConf(), DriftConf(), now)
    assert (got.state.metric, got.state.direction) == ("loss", Direction.LOWER)
    assert got.state.labelled_rows == ROWS and got.state.metric_now == pytest.approx(np.log(VOCAB), rel=0.2)
    assert np.asarray(got.state.errors).size == 0  # a language model reports no per-row `correct`
    assert got.drift is not None and got.drift.features and not got.drift.drifted
    assert [f.feature for f in got.drift.features] == [f"tok_{i:03d}" for i in range(SEQ)]  # its inputs
    by_name = {r.name: r for r in evaluate_triggers(TriggerConf(), got.state)}
    assert by_name["performance"].fired and by_name["performance"].value == pytest.approx(got.state.metric_now - 1)
    assert not by_name["performance.adwin"].fired and by_name["performance.adwin"].value is None
    # a token outside its vocabulary: the rows cannot be scored, which is said, not raised
    write_tokens(tmp_path / "zone", 4, seed=11, bad_token=True)
    got = gather(source, data, TriggerConf(), DriftConf(), now)
    assert got.state.metric_now is None and got.state.labelled_rows == 0
    assert any("cannot score" in n and "holds 19" in n for n in got.notes), got.notes


def save_first_format(path: Path) -> str:
    """A checkpoint of the first format (cl_hpc.mlp/1): the same logistic regression, scaled by mean/std."""
    import hashlib

    import torch

    net = tabular_champion().model.net
    payload = {"format": "cl_hpc.mlp/1", "net": {"n_features": 3, "n_classes": 2, "hidden": 4, "layers": 0,
                                                 "dropout": 0.0},
               "state_dict": net.state_dict(), "features": ["a", "b", "c"], "classes": [0, 1],
               "mean": MEAN.tolist(), "std": STD.tolist(), "label_col": "y"}
    torch.save(payload, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("performance", [True, False])
def test_a_first_format_version_is_scored_and_its_recorded_features_drift(tmp_path: Path, performance: bool) -> None:
    window = make_zone(tmp_path / "zone")
    checkpoint = tmp_path / "model.pt"
    sha = save_first_format(checkpoint)
    with ModelRegistry.open(tmp_path / "store") as registry:  # no class, no signature: an old version
        version = registry.register("m", checkpoint, strategy="stateless", checkpoint_sha256=sha,
                                    window_partitions=[p.name for p in window], metrics={"accuracy": 1.0})
        registry.promote("m", version.version, "champion", reason="test champion")
    write_partition(tmp_path / "zone", 4, seed=10, shift=1.5)
    got = gathered(tmp_path, trigger_conf({"performance": {"enabled": performance}}))
    assert got.state.metric_now == (1.0 if performance else None)
    assert got.drift is not None and got.drift.drifted and [f.feature for f in got.drift.features] == ["a", "b", "c"]
