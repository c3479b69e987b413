"""The drifting token stream (cl_hpc/data/tokens.py) and its data module (cl_hpc/learn/tokens.py), on real
Parquet files: determinism, appending, drift, label-less ingest and validation, the module's state."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from cl_hpc.config.ml import DataConf, data_conf
from cl_hpc.context import TaskContext
from cl_hpc.data.__main__ import main as data_main
from cl_hpc.data.files import sha256_file
from cl_hpc.data.landing import append_partitions, ensure_landing_zone, generation_spec
from cl_hpc.data.simulate import PRESETS
from cl_hpc.data.tokens import chain, token_columns, token_frame
from cl_hpc.data.windows import list_partitions
from cl_hpc.errors import ConfigError, DataError
from cl_hpc.learn.contract import CannotContinue, Spec
from cl_hpc.learn.tokens import TokenData
from cl_hpc.learn.validation import Expectations, validate_window
from cl_hpc.tasks import ingest, validate

REPO = Path(__file__).resolve().parents[2]


def tiny(root: Path, **over: Any) -> dict[str, Any]:
    """The bundled token stream shrunk: vocab 32, 8 + 1 tokens a row, 40 rows a partition, drift at 3."""
    base = {"landing_dir": str(root), "generator": "tokens", "label_col": None, "noise": 0.0,
            "generator_params": {"vocab_size": 32, "seq_len": 8, "branching": 3}, "concepts": [0, 1],
            "drift_at": [3], "n_partitions": 5, "rows_per_partition": 40, "train_window": 3, "eval_window": 1}
    return {**base, **over}


def hashes(root: Path) -> dict[str, str]:
    return {p.path.name: sha256_file(p.path) for p in list_partitions(root)}


def ctx_for(tmp_path: Path, task: str, upstream: dict[str, Any] | None = None) -> TaskContext:
    task_dir = tmp_path / "run" / task
    task_dir.mkdir(parents=True, exist_ok=True)
    return TaskContext(run_id="r1", task=task, key=task, task_dir=task_dir, run_dir=tmp_path / "run",
                       attempt=1, upstream=upstream or {})


# --- the stream -----------------------------------------------------------------------------------


def test_rows_are_token_columns_in_order_with_a_timestamp_and_no_label(tmp_path: Path) -> None:
    frame = token_frame(data_conf(tiny(tmp_path)), 0, 2)
    assert list(frame.columns) == ["ts", *token_columns(8)] and token_columns(8)[-1] == "tok_008"
    assert token_columns(1024)[:2] == ["tok_0000", "tok_0001"]  # zero-padded: name order is position order
    assert len(frame) == 80 and frame["ts"].is_monotonic_increasing
    tokens = frame[token_columns(8)].to_numpy()
    assert tokens.dtype == np.int64 and tokens.min() >= 0 and tokens.max() < 32


def test_the_stream_is_deterministic_and_appending_keeps_earlier_files(tmp_path: Path) -> None:
    ensure_landing_zone(data_conf(tiny(tmp_path / "a", n_partitions=4)))
    before = hashes(tmp_path / "a")
    append_partitions(data_conf(tiny(tmp_path / "a")), 2)
    after = hashes(tmp_path / "a")
    assert len(after) == 6 and {k: after[k] for k in before} == before
    ensure_landing_zone(data_conf(tiny(tmp_path / "b", n_partitions=6)))  # all at once: the same files
    assert hashes(tmp_path / "b") == after
    conf = data_conf(tiny(tmp_path / "c"))
    whole, slice_ = token_frame(conf, 0, 6), token_frame(conf, 2, 3)
    pd.testing.assert_frame_equal(whole.iloc[80:200].reset_index(drop=True), slice_)


def test_simulate_appends_to_a_token_zone(tmp_path: Path, capsys: Any) -> None:
    zone = tmp_path / "sim"
    assert data_main(["simulate", "--landing-dir", str(zone), "--generator", "tokens", "--rows", "16",
                      "--param", "seq_len=4", "--partitions", "2"]) == 0
    assert data_main(["simulate", "--landing-dir", str(zone), "--partitions", "1"]) == 0  # the zone's settings
    out = capsys.readouterr().out
    assert "tokens (seed=42" in out and "the zone holds 2 -> 3" in out
    frames = [pd.read_parquet(p.path) for p in list_partitions(zone)]
    assert [len(f) for f in frames] == [16, 16, 16] and list(frames[0].columns)[-1] == "tok_004"
    assert data_main(["simulate", "--landing-dir", str(zone), "--corrupt", "flipped-labels"]) == 2
    assert "needs a label column" in capsys.readouterr().err


def test_drift_changes_the_bigram_statistics(tmp_path: Path) -> None:
    conf = data_conf(tiny(tmp_path))
    frame = token_frame(conf, 0, 5)
    tokens = frame[token_columns(8)].to_numpy()
    support = chain(conf, 0).bigram() > 0
    # share of each partition's bigrams that concept 0's chain can produce (noise is 0)
    within = [float(support[t[:, :-1], t[:, 1:]].mean()) for t in np.split(tokens, 5)]
    assert within[:3] == [1.0, 1.0, 1.0]
    assert max(within[3:]) < 0.3, within  # concept 1 from partition 3 on: another chain
    assert not np.array_equal(chain(conf, 0).successors, chain(conf, 1).successors)
    assert np.allclose(chain(conf, 1).bigram().sum(axis=1), 1.0)


def test_a_drift_width_blends_the_concepts_over_rows(tmp_path: Path) -> None:
    conf = data_conf(tiny(tmp_path, drift_width=40))
    tokens = token_frame(conf, 2, 2)[token_columns(8)].to_numpy()
    support = chain(conf, 0).bigram() > 0
    per_row = support[tokens[:, :-1], tokens[:, 1:]].all(axis=1)
    before, after = per_row[:40], per_row[40:]
    assert 0.5 < before.mean() < 1.0 and 0.0 < after.mean() < 0.5  # some rows of each concept on both sides


def test_preset_matches_the_bundled_data_config() -> None:
    values = yaml.safe_load((REPO / "conf" / "data" / "tokens.yaml").read_text())
    values.pop("defaults", None)
    assert generation_spec(DataConf(**PRESETS["tokens"])) == generation_spec(DataConf(**values))
    data_conf(values)


@pytest.mark.parametrize("override, match", [
    ({"label_col": "y"}, "writes no label column"),
    ({"generator_params": {"vocab": 10}}, "not settings of the token stream"),
    ({"generator_params": {"vocab_size": 1}}, "vocab_size=1"),
    ({"generator_params": {"seq_len": 0}}, "seq_len=0"),
    ({"concepts": [0, -1]}, "chain seed"),
])
def test_bad_token_settings_are_config_errors(tmp_path: Path, override: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ensure_landing_zone(data_conf(tiny(tmp_path, **override)))
    assert not list(tmp_path.glob("*.parquet"))


def test_a_river_stream_needs_its_label_column(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must name it"):
        data_conf({"landing_dir": str(tmp_path), "generator": "sea", "label_col": None})


# --- ingest and validate without a label ----------------------------------------------------------


def test_ingest_and_validate_a_label_less_window(tmp_path: Path) -> None:
    out = ingest.run(ctx_for(tmp_path, "ingest"), data=tiny(tmp_path / "zone"))
    assert json.loads(json.dumps(out)) == out
    assert out["label_col"] is None and out["train_labels"] == {} and out["eval_labels"] == {}
    assert (out["train_rows"], out["eval_rows"]) == (120, 40)
    assert out["features"] == token_columns(8)
    checked = validate.run(ctx_for(tmp_path, "validate", {"ingest": out}))
    assert checked["passed"] and checked["rows"] == 120 and checked["classes"] == []
    assert checked["label_distribution"] == {}


def test_validation_without_a_label_still_checks_schema_and_nans() -> None:
    frame = pd.DataFrame({"tok_000": [1, 2, 3], "tok_001": [4.0, np.nan, 6.0], "extra": [0, 0, 0]})
    expect = Expectations(columns={"tok_000": "int", "tok_001": "int"}, label=None, classes=())
    checks = {issue.check for issue in validate_window(frame, expect).issues}
    assert checks == {"extra_column", "dtype", "nan_rate"}


# --- the data module ------------------------------------------------------------------------------


@pytest.fixture()
def frame(tmp_path: Path) -> pd.DataFrame:
    return token_frame(data_conf(tiny(tmp_path)), 0, 3)


def fitted(frame: pd.DataFrame) -> TokenData:
    data = TokenData(vocab_size=32, batch_size=16)
    data.fit_state(frame)
    return data


def test_batches_are_inputs_and_next_tokens(frame: pd.DataFrame) -> None:
    data = fitted(frame)
    assert data.model_args() == {"vocab_size": 32, "seq_len": 8}
    inputs, targets = data.to_batch(frame)
    assert targets is not None and inputs.dtype == targets.dtype == torch.int64
    assert inputs.shape == targets.shape == (120, 8)
    assert torch.equal(inputs[:, 1:], targets[:, :-1])
    request = frame[token_columns(8)[:-1]]  # a request carries the context only: the input signature
    assert data.input_signature() == [Spec(name, "int64") for name in request.columns]
    alone, none = data.to_batch(request)
    assert none is None and torch.equal(alone, inputs)
    data.use(frame)
    x, y = next(iter(data.train_dataloader()))
    assert x.shape == y.shape == (16, 8)


def test_state_round_trips_through_a_weights_only_load(frame: pd.DataFrame) -> None:
    data = fitted(frame)
    assert int(data.counts.sum()) == 120 * 9
    buffer = io.BytesIO()
    torch.save(data.state_dict(), buffer)
    buffer.seek(0)
    fresh = TokenData(vocab_size=32)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(fresh.counts, data.counts) and fresh.columns == data.columns
    assert fresh.model_args() == data.model_args()


def test_update_state_adds_the_new_rows_counts(frame: pd.DataFrame, tmp_path: Path) -> None:
    data = fitted(frame)
    before = data.counts.clone()
    new = token_frame(data_conf(tiny(tmp_path)), 3, 1)
    data.update_state(new)
    expected = np.bincount(new[token_columns(8)].to_numpy().ravel(), minlength=32)
    assert torch.equal(data.counts - before, torch.from_numpy(expected))
    longer = token_frame(data_conf(tiny(tmp_path / "z", generator_params={"vocab_size": 32, "seq_len": 9})), 0, 1)
    with pytest.raises(CannotContinue, match="9 token columns.*10"):
        data.update_state(longer)


def test_a_token_outside_the_vocabulary_names_its_column_and_the_range(frame: pd.DataFrame) -> None:
    data = fitted(frame)
    bad = frame.copy()
    bad.loc[5, "tok_004"] = 32
    with pytest.raises(DataError, match=r"'tok_004' holds 32 \(row 5.*\[0, 32\)"):
        data.to_batch(bad)
    with pytest.raises(DataError, match=r"tok_000 \.\. tok_007"):
        data.to_batch(frame.drop(columns=["tok_008", "tok_007"]))
    with pytest.raises(DataError, match="positions \\[3\\] are missing"):
        data.to_batch(frame.drop(columns=["tok_003"]))


def test_baseline_rows_are_the_smoothed_unigram_predictor(frame: pd.DataFrame) -> None:
    data = fitted(frame)
    rows = data.baseline_rows(frame.iloc[:10])
    counts = data.counts.numpy().astype(float)
    p = (counts + 1) / (counts.sum() + 32)
    targets = frame[token_columns(8)].to_numpy()[:10, 1:]
    assert np.allclose(rows["loss"], -np.log(p[targets]).mean(axis=1))
    assert np.allclose(rows["token_accuracy"], (targets == counts.argmax()).mean(axis=1))
    assert rows["loss"].shape == rows["token_accuracy"].shape == (10,)
