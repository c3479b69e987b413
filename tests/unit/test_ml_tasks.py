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
from cl_hpc.learn.checkpoint import load_workload
from cl_hpc.learn.contract import ContractError
from cl_hpc.learn.metrics import classification_metrics, log_loss, macro_f1, roc_auc
from cl_hpc.tasks import evaluate, ingest, train

# The default data (SEA, abrupt drift at partitions 6 and 12, windows 8 + 4) at 400 rows a partition.
DATA = {"rows_per_partition": 400}
# conf/model/mlp.yaml, resolved: the bundled tabular workload with its defaults
MODEL = {"_target_": "cl_hpc.learn.tabular.TabularClassifier"}
DATAMODULE = {"_target_": "cl_hpc.learn.tabular.TabularData", "label_col": "y"}
FIT = {"max_epochs": 6}


def make_ctx(run_dir: Path, task: str, upstream: dict[str, Any]) -> TaskContext:
    task_dir = run_dir / task
    task_dir.mkdir(parents=True, exist_ok=True)
    return TaskContext(run_id="r1", task=task, key=task, task_dir=task_dir, run_dir=run_dir, attempt=1,
                       upstream=upstream, resources={"cpus": 1})


def run_pipeline(root: Path, data: dict[str, Any], datamodule: dict[str, Any] = DATAMODULE,
                 fit: dict[str, Any] = FIT) -> dict[str, dict[str, Any]]:
    """ingest -> train -> evaluate, each fed its upstream outputs as an executor would."""
    run_dir = root / "run"
    out: dict[str, dict[str, Any]] = {}
    workload = {"model": MODEL, "datamodule": datamodule, "fit": fit}
    steps = [(ingest, {"data": data}, []), (train, workload, ["ingest"]),
             (evaluate, {**workload, "data": data}, ["train", "ingest"])]
    for module, params, deps in steps:
        name = module.__name__.rsplit(".", 1)[1]
        outputs = module.run(make_ctx(run_dir, name, {d: out[d] for d in deps}), **params)
        out[name] = json.loads(json.dumps(outputs))  # what the next process would read back
    return out


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    root = tmp_path_factory.mktemp("default")
    return run_pipeline(root, {**DATA, "landing_dir": str(root / "landing")})


def test_the_model_beats_the_majority_class_on_the_held_out_window(default_run: dict[str, Any]) -> None:
    result = default_run["evaluate"]
    assert result["rows"] == 4 * 400
    assert result["accuracy"] > result["baseline_accuracy"] + 0.2
    assert result["accuracy"] > 0.8 and result["roc_auc"] > 0.8
    assert 0 < result["log_loss"] < 0.6 and result["log_loss"] < result["baseline_log_loss"]
    assert result["model_class"] == "cl_hpc.learn.tabular.TabularClassifier"


def test_training_reports_its_work(default_run: dict[str, Any]) -> None:
    trained = default_run["train"]
    assert trained["epochs"] == 6 and trained["steps"] == 6 * 13  # 3200 rows in batches of 256
    assert trained["epoch_loss"][-1] < trained["epoch_loss"][0]
    assert trained["epoch_accuracy"][-1] > trained["epoch_accuracy"][0]
    assert trained["train_metrics"]["accuracy"] > 0.8 and trained["train_metrics"]["rows"] == 3200
    assert trained["n_params"] > 0 and trained["strategy"] == "stateless"
    # the data gives the feature and class counts; the registry records them with the config's arguments
    assert trained["init_args"]["n_features"] == 3 and trained["init_args"]["n_classes"] == 2
    assert trained["model_class"] == MODEL["_target_"] and trained["datamodule_class"] == DATAMODULE["_target_"]
    assert [s["name"] for s in trained["signature"]["inputs"]] == ["x0", "x1", "x2"]
    progress = json.loads((Path(trained["checkpoint_path"]).parent / "progress.json").read_text())
    assert progress["done"] == progress["total"] == trained["steps"]


def _own_landing(landing: Path, eval_label: int | None = None) -> dict[str, Any]:
    """Six hourly partitions whose eval window (the last two) has feature a shifted by +100, a
    constant feature c, and (``eval_label``) that label on the eval window's first rows."""
    landing.mkdir()
    rng = np.random.default_rng(0)
    for hour in range(6):
        ts = pd.date_range(f"2026-02-01T{hour:02d}:00", periods=200, freq="18s")
        x = rng.normal(loc=100.0 if hour >= 4 else 0.0, scale=2.0, size=200)
        label = (x % 2 > 1).astype(int)
        if eval_label is not None and hour >= 4:
            label[:5] = eval_label
        frame = pd.DataFrame({"ts": ts, "a": x, "b": rng.normal(size=200), "c": 5.0, "label": label})
        frame.to_parquet(landing / f"part-20260201T{hour:02d}0000.parquet", index=False)
    return {"landing_dir": str(landing), "generator": "none", "label_col": "label", "features": ["a", "b", "c"],
            "train_window": 4, "eval_window": 2}


def _own_datamodule(data: dict[str, Any]) -> dict[str, Any]:
    return {**DATAMODULE, "label_col": data["label_col"], "features": data["features"]}


def test_feature_scaling_is_fitted_on_the_train_window_only(tmp_path: Path) -> None:
    """A landing zone of our own whose eval window is shifted by +100: the data module's recorded
    scaling is the train window's, so the eval rows it preprocesses show the shift."""
    data = _own_landing(tmp_path / "landing")
    out = run_pipeline(tmp_path, data, _own_datamodule(data), {"max_epochs": 1})
    trained = out["train"]
    scaler = load_workload(Path(trained["checkpoint_path"]), trained["checkpoint_sha256"]).datamodule
    raw_train = pq.read_table(out["ingest"]["train_path"]).to_pandas()
    raw_eval = pq.read_table(out["ingest"]["eval_path"]).to_pandas()
    assert scaler.features == ["a", "b", "c"] and scaler.moments.count == len(raw_train) == 800
    assert np.allclose(scaler.moments.mean, raw_train[["a", "b", "c"]].mean().to_numpy())
    assert np.allclose(scaler.moments.std[:2], raw_train[["a", "b"]].std().to_numpy())
    scaled_train, _ = scaler.to_batch(raw_train)
    scaled_eval, _ = scaler.to_batch(raw_eval)
    assert abs(float(scaled_train[:, 0].mean())) < 1e-5 and abs(float(scaled_train[:, 0].std()) - 1) < 1e-4
    assert float(scaled_eval[:, 0].mean()) > 20  # 100 train-stds away: eval data never touched the fit
    # the constant feature is centred, not divided by zero: its recorded spread is 1.0, its values 0
    assert scaler.moments.std[2] == 1.0 and np.all(scaled_train[:, 2].numpy() == 0.0)
    assert np.isfinite(out["evaluate"]["log_loss"])


def test_an_eval_window_label_the_model_never_saw_is_a_data_error(tmp_path: Path) -> None:
    data = _own_landing(tmp_path / "landing", eval_label=7)
    with pytest.raises(DataError, match=r"label values \[7\] in column 'label' are not among the model's classes"):
        run_pipeline(tmp_path, data, _own_datamodule(data), {"max_epochs": 1})


def test_evaluate_refuses_a_tampered_checkpoint(default_run: dict[str, Any], tmp_path: Path) -> None:
    trained = default_run["train"]
    forged = tmp_path / "model.pt"
    shutil.copy(trained["checkpoint_path"], forged)
    blob = bytearray(forged.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    forged.write_bytes(bytes(blob))
    upstream = {"train": {**trained, "checkpoint_path": str(forged)}, "ingest": default_run["ingest"]}
    with pytest.raises(DataError, match="sha256"):
        evaluate.run(make_ctx(tmp_path / "run", "evaluate", upstream))
    upstream["train"] = {**trained, "checkpoint_path": str(tmp_path / "missing.pt")}
    with pytest.raises(DataError, match="does not exist"):
        evaluate.run(make_ctx(tmp_path / "run", "evaluate", upstream))


def test_training_is_reproducible(default_run: dict[str, Any], tmp_path: Path) -> None:
    upstream = {"ingest": default_run["ingest"]}
    again = train.run(make_ctx(tmp_path / "run", "train", upstream), model=MODEL, datamodule=DATAMODULE, fit=FIT)
    assert again["checkpoint_sha256"] == default_run["train"]["checkpoint_sha256"]


def test_a_task_without_its_upstream_says_which_dependency_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"depends_on: \[ingest\]"):
        train.run(make_ctx(tmp_path, "train", {}), model=MODEL, datamodule=DATAMODULE)


def test_unknown_model_and_fit_settings_are_errors(default_run: dict[str, Any], tmp_path: Path) -> None:
    upstream = {"ingest": default_run["ingest"]}
    with pytest.raises(ContractError, match="hiden"):
        train.run(make_ctx(tmp_path, "train", upstream), model={**MODEL, "hiden": 8}, datamodule=DATAMODULE)
    with pytest.raises(ConfigError, match="max_epoch"):
        train.run(make_ctx(tmp_path, "train", upstream), model=MODEL, datamodule=DATAMODULE, fit={"max_epoch": 1})
    with pytest.raises(ContractError, match="_target_"):
        train.run(make_ctx(tmp_path, "train", upstream), model={"hidden": 8}, datamodule=DATAMODULE)


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
