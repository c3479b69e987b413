"""The default ML pipeline's tasks, called in sequence with hand-built contexts: real Parquet files,
a real Lightning Trainer on CPU, real checkpoints. Data is shrunk so the module runs in seconds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from cl_hpc.context import TaskContext
from cl_hpc.errors import ConfigError, DataError
from cl_hpc.learn.metrics import classification_metrics, log_loss, macro_f1, roc_auc
from cl_hpc.tasks import evaluate, features, ingest, train

# The default data (SEA, abrupt drift at partitions 6 and 12, windows 8 + 4) at 400 rows a partition.
DATA = {"rows_per_partition": 400}
MODEL = {"max_epochs": 6}


def make_ctx(run_dir: Path, task: str, upstream: dict[str, Any]) -> TaskContext:
    task_dir = run_dir / task
    task_dir.mkdir(parents=True, exist_ok=True)
    return TaskContext(run_id="r1", task=task, key=task, task_dir=task_dir, run_dir=run_dir, attempt=1,
                       upstream=upstream, resources={"cpus": 1})


def run_pipeline(root: Path, data: dict[str, Any], model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """ingest -> features -> train -> evaluate, each fed its upstream outputs as an executor would."""
    run_dir, out = root / "run", {}
    steps = [(ingest, {"data": data}, []), (features, {"data": data}, ["ingest"]),
             (train, {"model": model}, ["features"]), (evaluate, {"model": model, "data": data}, ["train", "features"])]
    for module, params, deps in steps:
        name = module.__name__.rsplit(".", 1)[1]
        outputs = module.run(make_ctx(run_dir, name, {d: out[d] for d in deps}), **params)
        out[name] = json.loads(json.dumps(outputs))  # what the next process would read back
    return out


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    root = tmp_path_factory.mktemp("default")
    return run_pipeline(root, {**DATA, "landing_dir": str(root / "landing")}, MODEL)


def test_the_model_beats_the_majority_class_on_the_held_out_window(default_run: dict[str, Any]) -> None:
    result = default_run["evaluate"]
    assert result["rows"] == 4 * 400
    assert result["accuracy"] > result["baseline_accuracy"] + 0.2
    assert result["accuracy"] > 0.8 and result["roc_auc"] > 0.8
    assert 0 < result["log_loss"] < 0.6


def test_training_reports_its_work(default_run: dict[str, Any]) -> None:
    trained = default_run["train"]
    assert trained["epochs"] == 6 and trained["steps"] == 6 * 13  # 3200 rows in batches of 256
    assert trained["epoch_loss"][-1] < trained["epoch_loss"][0]
    assert trained["train_accuracy"] > 0.8 and trained["n_params"] > 0
    progress = json.loads((Path(trained["checkpoint_path"]).parent / "progress.json").read_text())
    assert progress["done"] == progress["total"] == trained["steps"]


def test_feature_scaling_is_fitted_on_the_train_window_only(tmp_path: Path) -> None:
    """A landing zone of our own whose eval window is shifted by +100: its scaled mean must show it."""
    landing = tmp_path / "landing"
    landing.mkdir()
    rng = np.random.default_rng(0)
    for hour in range(6):
        ts = pd.date_range(f"2026-02-01T{hour:02d}:00", periods=200, freq="18s")
        x = rng.normal(loc=100.0 if hour >= 4 else 0.0, scale=2.0, size=200)
        frame = pd.DataFrame({"ts": ts, "a": x, "b": rng.normal(size=200), "label": (x % 2 > 1).astype(int)})
        frame.to_parquet(landing / f"part-20260201T{hour:02d}0000.parquet", index=False)
    data = {"landing_dir": str(landing), "generator": "none", "label_col": "label", "features": ["a", "b"],
            "train_window": 4, "eval_window": 2}
    run_dir = tmp_path / "run"
    ingested = ingest.run(make_ctx(run_dir, "ingest", {}), data=data)
    stats = features.run(make_ctx(run_dir, "features", {"ingest": ingested}), data=data)
    raw_train = pq.read_table(ingested["train_path"]).to_pandas()
    assert stats["fitted_on"] == "train"
    assert np.allclose(stats["mean"], raw_train[["a", "b"]].mean().to_numpy())
    assert np.allclose(stats["std"], raw_train[["a", "b"]].std().to_numpy())
    assert json.loads(Path(stats["stats_path"]).read_text())["mean"] == stats["mean"]
    scaled_train = pq.read_table(stats["train_path"]).to_pandas()
    scaled_eval = pq.read_table(stats["eval_path"]).to_pandas()
    assert abs(scaled_train["a"].mean()) < 1e-5 and abs(scaled_train["a"].std() - 1) < 1e-4
    assert scaled_eval["a"].mean() > 20  # 100 train-stds away: eval data never touched the fit


def test_evaluate_refuses_a_tampered_checkpoint(default_run: dict[str, Any], tmp_path: Path) -> None:
    trained = default_run["train"]
    forged = tmp_path / "model.pt"
    shutil.copy(trained["checkpoint_path"], forged)
    blob = bytearray(forged.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    forged.write_bytes(bytes(blob))
    upstream = {"train": {**trained, "checkpoint_path": str(forged)}, "features": default_run["features"]}
    with pytest.raises(DataError, match="sha256"):
        evaluate.run(make_ctx(tmp_path / "run", "evaluate", upstream))
    upstream["train"] = {**trained, "checkpoint_path": str(tmp_path / "missing.pt")}
    with pytest.raises(DataError, match="does not exist"):
        evaluate.run(make_ctx(tmp_path / "run", "evaluate", upstream))


def test_training_is_reproducible(default_run: dict[str, Any], tmp_path: Path) -> None:
    upstream = {"features": default_run["features"]}
    again = train.run(make_ctx(tmp_path / "run", "train", upstream), model=MODEL)
    assert again["checkpoint_sha256"] == default_run["train"]["checkpoint_sha256"]


def test_a_task_without_its_upstream_says_which_dependency_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"depends_on: \[features\]"):
        train.run(make_ctx(tmp_path, "train", {}))


def test_unknown_model_settings_are_config_errors(default_run: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="hiden"):
        train.run(make_ctx(tmp_path, "train", {"features": default_run["features"]}), model={"hiden": 8})


# --- metrics against hand-computed values -------------------------------------------------------


def test_roc_auc_counts_ties_as_half() -> None:
    y = np.array([0, 0, 1, 1])
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), y) == pytest.approx(0.75)
    assert roc_auc(np.array([0.5, 0.5, 0.5, 0.5]), y) == pytest.approx(0.5)
    assert roc_auc(np.array([0.2, 0.9]), np.array([1, 1])) is None


def test_log_loss_and_macro_f1() -> None:
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.3, 0.1]])
    y = np.array([0, 1, 2])
    assert log_loss(probs, y) == pytest.approx(-(np.log(0.9) + np.log(0.8) + np.log(0.1)) / 3)
    # class 0: tp 1, 2 predicted, 1 true -> F1 2/3; class 1: F1 1; class 2: F1 0
    assert macro_f1(probs.argmax(axis=1), y, 3) == pytest.approx((2 / 3 + 1 + 0) / 3)
    metrics = classification_metrics(probs, y)
    assert metrics["roc_auc"] is None and metrics["accuracy"] == pytest.approx(2 / 3)
