"""Review fixes of the model contract: numpy values in a checkpoint's states, the batch check on what
predict_batch and evaluate_batch return, first-format checkpoints' moments count, a data module
state that no longer loads, a user's to_batch error in the watch, and the gate's forgetting window.

Real classes (the bundled tabular workload and small subclasses defined here), real torch
checkpoints on disk, a real SQLite registry and the real compare task."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import pytest
import torch

from cl_hpc.context import TaskContext
from cl_hpc.learn.checkpoint import load_workload, save_workload
from cl_hpc.learn.contract import CannotContinue, ContractError, Target
from cl_hpc.learn.monitor import score_rows
from cl_hpc.learn.nets import MLP
from cl_hpc.learn.strategies import Moments
from cl_hpc.learn.tabular import TabularClassifier, TabularData, moments_of
from cl_hpc.learn.workload import Workload, check_batches, data_from, model_for
from cl_hpc.registry import ModelRegistry
from tests.unit.test_registry import make_workload
from tests.unit.test_workload import CLASSIFIER, TABULAR, rows, tabular

HERE = __name__


def workload_with(data_class: str) -> Workload:
    target = Target(f"{HERE}.{data_class}", {"label_col": "y", "features": ["a", "b", "c"]})
    data = data_from(target)
    data.fit_state(rows())
    model, built = model_for(Target(CLASSIFIER, {"hidden": 8, "layers": 1}), data)
    return Workload(model, data, built, target)


# ---- 1. numpy values in what a checkpoint records --------------------------------------------------

class NumpyData(TabularData):
    """A user's state and model arguments as pandas and numpy give them: numpy scalars and arrays."""

    def state_dict(self) -> dict[str, Any]:
        top = pd.Series([3, 7, 5]).max()  # np.int64
        return {**super().state_dict(), "scaler": {"clip": np.float64(1.5), "top": top,
                                                    "centres": np.array([0.5, 1.5]), "names": np.array(["p", "q"])}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.scaler = state_dict["scaler"]

    def model_args(self) -> dict[str, Any]:
        return {"n_features": np.int64(len(self.features)), "n_classes": np.int64(len(self.classes))}


class Opaque:
    """Not something weights_only loads."""


class OpaqueData(TabularData):
    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "scaler": {"fn": Opaque()}}


def test_numpy_values_in_the_state_and_init_arguments_save_as_plain_values_that_load(tmp_path: Path) -> None:
    sha = save_workload(tmp_path / "model.pt", workload_with("NumpyData"), {})
    loaded = load_workload(tmp_path / "model.pt", sha)  # was an UnpicklingError on every load
    scaler = loaded.datamodule.scaler
    assert scaler["clip"] == 1.5 and type(scaler["clip"]) is float
    assert scaler["top"] == 7 and type(scaler["top"]) is int
    assert isinstance(scaler["centres"], torch.Tensor) and scaler["centres"].tolist() == [0.5, 1.5]
    assert scaler["names"] == ["p", "q"]
    assert loaded.model_target.args["n_classes"] == 2 and type(loaded.model_target.args["n_classes"]) is int


def test_a_state_that_would_not_load_is_refused_naming_its_key_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(ContractError) as caught:
        save_workload(tmp_path / "model.pt", workload_with("OpaqueData"), {})
    message = str(caught.value)
    assert f"datamodule_state['scaler']['fn'] is a {HERE}.Opaque" in message
    assert f"Unsupported global: GLOBAL {HERE}.Opaque" in message
    assert "must be tensors, Python numbers (int, float, bool), strings" in message
    assert "weights_only=False" not in message  # torch's advice to trust the file is not ours to give
    assert not (tmp_path / "model.pt").exists()


# ---- 2. what predict_batch and evaluate_batch return --------------------------------------------

class MeanScore(TabularClassifier):
    """evaluate_batch returns the batch mean, not one value per row."""

    def evaluate_batch(self, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"accuracy": (self.net(inputs).argmax(1) == targets).float().mean()}


class TensorPredict(TabularClassifier):
    """predict_batch returns a tensor, not a dict."""

    def predict_batch(self, inputs: torch.Tensor) -> Any:
        return torch.softmax(self.net(inputs), 1)


class ListScores(TabularClassifier):
    """evaluate_batch returns a list of tensors."""

    def evaluate_batch(self, inputs: torch.Tensor, targets: torch.Tensor) -> Any:
        return [(self.net(inputs).argmax(1) == targets).float()]


class ShortPredict(TabularClassifier):
    """predict_batch returns one row fewer than it was given."""

    def predict_batch(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v[1:] for k, v in super().predict_batch(inputs).items()}


@pytest.mark.parametrize("model, expected", [
    ("MeanScore", r"evaluate_batch returned 'accuracy' = a torch\.Tensor of shape \(\) for 8 input rows \(a batch "
                  r"mean\?"),
    ("TensorPredict", r"predict_batch returned a torch\.Tensor of shape \(8, 2\); expected a dict of name -> tensor"),
    ("ListScores", r"evaluate_batch returned a builtins\.list; expected a dict"),
    ("ShortPredict", r"predict_batch returned 'class' = a torch\.Tensor of shape \(7,\) for 8 input rows; expected"),
])
def test_outputs_that_are_not_a_dict_of_per_row_values_are_a_contract_error_naming_both(model: str,
                                                                                        expected: str) -> None:
    with pytest.raises(ContractError, match=rf"data module cl_hpc\.learn\.tabular\.TabularData with model "
                                            rf"{HERE}\.{model}: {expected}"):
        check_batches(tabular(f"{HERE}.{model}"), rows())


# ---- 3. first-format checkpoints without stored moments ------------------------------------------

def _v1_file(path: Path) -> tuple[str, dict[str, Any]]:
    shape = {"n_features": 3, "n_classes": 2, "hidden": 8, "layers": 1, "dropout": 0.0}
    old = {"format": "cl_hpc.mlp/1", "net": shape, "state_dict": MLP(**shape).state_dict(),  # type: ignore[arg-type]
           "features": ["a", "b", "c"], "classes": [0, 1], "label_col": "y",
           "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}  # from before `moments` was stored
    torch.save(old, path)
    return hashlib.sha256(path.read_bytes()).hexdigest(), old


def test_a_first_format_file_without_moments_merges_with_the_registrys_train_rows(tmp_path: Path) -> None:
    sha, _ = _v1_file(tmp_path / "old.pt")
    with ModelRegistry.open(tmp_path / "store") as reg:
        reg.register("m", tmp_path / "old.pt", strategy="stateless", checkpoint_sha256=sha,
                     metrics={"train_rows": 8000})
        parent = reg.load_model("m", "1.0")
    assert parent.datamodule.moments.count == 8000
    new = rows(1000, seed=5)
    new[["a", "b", "c"]] += 5.0  # features far from the parent's mean of 0
    parent.datamodule.update_state(new)
    want = Moments.from_std(8000, [0.0] * 3, [1.0] * 3).merge(moments_of(new[["a", "b", "c"]].to_numpy()))
    assert np.allclose(parent.datamodule.moments.mean, want.mean)
    assert parent.datamodule.moments.mean[0] < 1.0  # not moved almost entirely to the new rows' ~5


def test_a_first_format_file_without_moments_or_train_rows_refuses_a_stateful_update(tmp_path: Path) -> None:
    sha, _ = _v1_file(tmp_path / "old.pt")
    loaded = load_workload(tmp_path / "old.pt", sha)
    assert loaded.datamodule.moments.std == (1.0, 1.0, 1.0)  # the scaling still applies
    carried = data_from(TABULAR)  # the train task moves the parent's state into the config's data module
    carried.load_state_dict(loaded.datamodule.state_dict())
    with pytest.raises(CannotContinue, match="first-format checkpoint without its feature statistics' row count"):
        carried.update_state(rows(100, seed=5))
    carried.fit_state(rows(100, seed=5))  # a stateless fit starts over
    carried.update_state(rows(50, seed=6))


# ---- 4. a data module state that no longer loads -------------------------------------------------

class VersionedData(TabularData):
    """Its state format changes with ``FORMAT`` (the user's code as it was, then as it is now)."""

    FORMAT = 1

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), f"scaling_v{self.FORMAT}": 1}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.scaling = state_dict[f"scaling_v{self.FORMAT}"]


def test_a_data_module_state_that_no_longer_loads_names_the_class_and_the_recorded_keys(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sha = save_workload(tmp_path / "model.pt", workload_with("VersionedData"), {})
    monkeypatch.setattr(VersionedData, "FORMAT", 2)  # the user changed the state's format since
    with pytest.raises(ContractError) as caught:
        load_workload(tmp_path / "model.pt", sha)
    message = str(caught.value)
    assert f"the data module state recorded for {HERE}.VersionedData (keys ['class_counts', 'classes', " in message
    assert "'scaling_v1']) does not load into the class as it is now: KeyError: 'scaling_v2'" in message


# ---- 5. the watch: a user's to_batch error on new rows is a note --------------------------------

def test_rows_the_users_to_batch_cannot_read_give_a_note_not_a_crash() -> None:
    workload = tabular()
    frame = rows(20, seed=3).astype({"a": object})
    frame.loc[frame.index[:5], "a"] = "n/a"  # a feature column arriving as strings
    got = score_rows(workload, frame, "accuracy")
    assert got.metric is None and got.labelled == 0
    assert got.note is not None and got.note.startswith(
        "cl_hpc.learn.tabular.TabularClassifier cannot score 20 new rows: ValueError: could not convert string")


# ---- 6. the gate: the champion's own rows under the same guard -----------------------------------

def _window(path: Path, start: str, n: int, seed: int, labels: Optional[list[int]] = None) -> None:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "c"])
    frame["y"] = labels if labels is not None else [0, 1] * (n // 2)
    frame["ts"] = pd.date_range(start, periods=n, freq="min")
    frame.to_parquet(path)


@pytest.mark.parametrize("allow", [False, True])
def test_a_label_the_champion_never_saw_in_its_own_rows_is_not_comparable_not_a_crash(tmp_path: Path,
                                                                                       allow: bool) -> None:
    from cl_hpc.tasks import compare

    root = tmp_path / "store"
    save = {name: save_workload(tmp_path / f"{name}.pt", make_workload(seed), {}) for name, seed in
            (("champion", 0), ("challenger", 1))}
    with ModelRegistry.open(root) as reg:
        record = reg.register("m", tmp_path / "champion.pt", strategy="stateless", checkpoint_sha256=save["champion"],
                              metrics={"window_end": "2026-01-01T02:00:00", "train_rows": 120})
        reg.promote("m", record.version, reason="first model")
    _window(tmp_path / "train.parquet", "2026-01-01T00:00:00", 120, seed=2, labels=[0, 1, 2] * 40)
    _window(tmp_path / "eval.parquet", "2026-01-01T03:00:00", 100, seed=3)  # labels 0 and 1 only
    upstream = {"train": {"checkpoint_path": str(tmp_path / "challenger.pt"), "checkpoint_sha256": save["challenger"]},
                "ingest": {"eval_path": str(tmp_path / "eval.parquet"), "train_path": str(tmp_path / "train.parquet"),
                           "timestamp_col": "ts"}}
    run_dir = tmp_path / "run"
    (run_dir / "tasks" / "compare").mkdir(parents=True)
    ctx = TaskContext(run_dir.name, "compare", "compare", run_dir / "tasks" / "compare", run_dir, 1, upstream=upstream)

    verdict = compare.run(ctx, registry={"root": str(root), "name": "m"}, allow_signature_change=allow)

    assert verdict["champion"] == "1.0" and verdict["scored_against"] is None
    assert verdict["reasons"][0].startswith("not comparable: the challenger cannot score the 120 train-window rows "
                                            "champion 1.0 trained on (the forgetting check): DataError: label values "
                                            "[2]"), verdict["reasons"]
    if not allow:
        assert verdict["passed"] is False
    else:
        assert "allow_signature_change=true: judged against the baseline instead" in verdict["reasons"][0]
