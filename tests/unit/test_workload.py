"""The model contract's records and checks: signatures, _target_ configs, building a workload from
them (and every way that fails), the batch check before training, and checkpoints that rebuild the
recorded classes, including classes that moved or changed since, and first-format MLP files.

Real classes (the bundled tabular workload, small ones defined here or written to a module on
sys.path), real torch checkpoints on disk."""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import pytest
import torch

from cl_hpc.learn.base import LoopModule
from cl_hpc.learn.checkpoint import load_workload, read_payload, save_workload
from cl_hpc.learn.contract import ContractError, Signature, Spec, Target
from cl_hpc.learn.nets import MLP
from cl_hpc.learn.scoring import predict
from cl_hpc.learn.strategies import Moments
from cl_hpc.learn.tabular import TabularClassifier, TabularData, moments_of
from cl_hpc.learn.workload import Workload, check_batches, data_from, model_for

CLASSIFIER = "cl_hpc.learn.tabular.TabularClassifier"
TABULAR = Target("cl_hpc.learn.tabular.TabularData", {"label_col": "y", "features": ["a", "b", "c"]})
HERE = __name__  # tests.unit.test_workload: the classes below are importable by this path


def rows(n: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(loc=[0.0, 5.0, -3.0], scale=[1.0, 2.0, 0.5], size=(n, 3))
    return pd.DataFrame(x, columns=["a", "b", "c"]).assign(y=(x[:, 0] > 0).astype(np.int64))


def fitted_data(frame: Optional[pd.DataFrame] = None) -> Any:
    data = data_from(TABULAR)
    data.fit_state(rows() if frame is None else frame)
    return data


def tabular(model_path: str = CLASSIFIER, args: Optional[dict[str, Any]] = None, seed: int = 0) -> Workload:
    data = fitted_data()
    torch.manual_seed(seed)
    model, built = model_for(Target(model_path, {"hidden": 8, "layers": 1, **(args or {})}), data)
    return Workload(model, data, built, TABULAR)


# ---- signatures ---------------------------------------------------------------------------------

SIGNATURE = Signature(
    inputs=(Spec("a", "float64"), Spec("n", "int64"), Spec("flag", "bool"), Spec("text", "str"),
            Spec("tokens", "int64", (16,))),
    outputs=(Spec("class", "int64"), Spec("probs", "float32", (2,))),
)


def test_a_signature_is_recorded_as_mlflow_records_one_and_reads_back() -> None:
    recorded = SIGNATURE.to_dict()
    assert recorded["inputs"][:4] == [{"type": "double", "name": "a", "required": True},
                                      {"type": "long", "name": "n", "required": True},
                                      {"type": "boolean", "name": "flag", "required": True},
                                      {"type": "string", "name": "text", "required": True}]
    assert recorded["inputs"][4] == {"type": "tensor", "name": "tokens",
                                     "tensor-spec": {"dtype": "int64", "shape": [-1, 16]}}
    assert recorded["outputs"][1] == {"type": "tensor", "name": "probs",
                                      "tensor-spec": {"dtype": "float32", "shape": [-1, 2]}}
    assert Signature.from_dict(recorded) == SIGNATURE
    assert Signature.from_dict(json.loads(json.dumps(recorded))) == SIGNATURE  # through the registry's JSON
    # MLflow's own MLmodel file keeps each side as JSON text
    as_mlflow = {side: json.dumps(specs) for side, specs in recorded.items()}
    assert Signature.from_dict(as_mlflow) == SIGNATURE
    assert SIGNATURE.describe().startswith("inputs (a: float64, n: int64, flag: bool, text: str, tokens: int64[16])")


def test_signature_differences_name_each_input_and_output() -> None:
    assert SIGNATURE.differences(SIGNATURE) == []
    other = Signature(
        inputs=(Spec("a", "float32"), Spec("n", "int64"), Spec("flag", "bool"), Spec("text", "str"),
                Spec("tokens", "int64", (16,)), Spec("extra", "float64")),
        outputs=(Spec("class", "int64"), Spec("probs", "float32", (3,))),
    )
    assert SIGNATURE.differences(other) == [
        "input 'a': a: float64 vs a: float32",
        "input 'extra': absent vs extra: float64",
        "output 'probs': probs: float32[2] vs probs: float32[3]",
    ]
    reordered = Signature(tuple(reversed(SIGNATURE.inputs)), SIGNATURE.outputs)
    (line,) = SIGNATURE.differences(reordered)
    assert line.startswith("inputs in another order: ['a', 'n', 'flag', 'text', 'tokens'] vs ['tokens',")


def test_the_tabular_workload_signature_is_its_features_in_and_class_and_probs_out() -> None:
    assert tabular().signature == Signature(
        (Spec("a", "float64"), Spec("b", "float64"), Spec("c", "float64")),
        (Spec("class", "int64"), Spec("probs", "float32", (2,))))


# ---- _target_ configs --------------------------------------------------------------------------

@pytest.mark.parametrize("conf", [None, {}, {"hidden": 8}, {"_target_": "  "}, {"_target_": 5}])
def test_a_config_without_a_target_says_how_to_give_one(conf: Any) -> None:
    with pytest.raises(ContractError, match=r"model: no `_target_`; give the class to instantiate, e\.g\. model: "
                                            r"\{_target_: my_pkg"):
        Target.from_config(conf, "model")


def test_a_target_config_keeps_its_arguments_as_plain_values() -> None:
    target = Target.from_config({"_target_": " pkg.Model ", "hidden": 8, "sizes": (1, 2), "opt": {"lr": 0.1},
                                 "_partial_": True}, "model")
    assert target == Target("pkg.Model", {"hidden": 8, "sizes": [1, 2], "opt": {"lr": 0.1}})


# ---- building a workload: every failure names the class and what is wrong -----------------------

class NoEvaluate(LoopModule):
    """Everything the loop needs but evaluate_batch, left as the base class's stub."""

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        return None

    def configure_optimizers(self) -> Any:
        return None

    def predict_batch(self, inputs: Any) -> dict[str, torch.Tensor]:
        return {}

    def output_signature(self) -> list[Spec]:
        return [Spec("y", "float64")]


class Bare:
    """A plain class: none of the contract (duck typing finds nothing)."""


class HalfData:
    """A data module with its state methods only."""

    def fit_state(self, frame: pd.DataFrame) -> None: ...

    def update_state(self, frame: pd.DataFrame) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def test_a_class_that_does_not_import_or_is_not_a_class_is_named() -> None:
    data = fitted_data()
    with pytest.raises(ContractError, match=r"model: cannot import module 'no_such_pkg\.models' of "
                                            r"'no_such_pkg\.models\.Net': ModuleNotFoundError.*PYTHONPATH"):
        model_for(Target("no_such_pkg.models.Net", {}), data)
    with pytest.raises(ContractError, match=r"'cl_hpc\.learn\.contract\.class_path' names a function, not a class"):
        model_for(Target("cl_hpc.learn.contract.class_path", {}), data)
    with pytest.raises(ContractError, match=r"'cl_hpc\.learn\.tabular\.Nope' names nothing, not a class"):
        model_for(Target("cl_hpc.learn.tabular.Nope", {}), data)
    with pytest.raises(ContractError, match=r"datamodule: 'TabularData' is not a dotted path"):
        data_from(Target("TabularData", {}))


def test_missing_contract_methods_are_listed_stubs_included() -> None:
    data = fitted_data()
    with pytest.raises(ContractError, match=rf"model {HERE}\.NoEvaluate lacks what the loop needs: evaluate_batch "
                                            r"\(see the model contract"):
        model_for(Target(f"{HERE}.NoEvaluate", {}), data)
    with pytest.raises(ContractError, match=rf"model {HERE}\.Bare lacks what the loop needs: training_step, "
                                            r"configure_optimizers, evaluate_batch, predict_batch, output_signature"):
        model_for(Target(f"{HERE}.Bare", {}), data)
    with pytest.raises(ContractError, match=rf"datamodule {HERE}\.HalfData lacks what the loop needs: model_args, "
                                            r"input_signature, to_batch, use, train_dataloader"):
        data_from(Target(f"{HERE}.HalfData", {}))


def test_a_config_value_that_contradicts_the_data_is_an_error_not_replaced() -> None:
    data = fitted_data()  # three features, two classes
    with pytest.raises(ContractError, match=rf"model {CLASSIFIER}: n_features=5 but the data gives 3; drop the value "
                                            r"from the config \(the data module cl_hpc\.learn\.tabular\.TabularData "
                                            r"sets it\)"):
        model_for(Target(CLASSIFIER, {"n_features": 5}), data)
    model, built = model_for(Target(CLASSIFIER, {"n_features": 3, "hidden": 4}), data)  # agreeing is fine
    assert built.args == {"n_features": 3, "n_classes": 2, "hidden": 4} and model.net.body[0].out_features == 4


def test_an_argument_the_class_does_not_take_names_its_signature() -> None:
    with pytest.raises(ContractError, match=rf"model: {CLASSIFIER}\(n_features: 'int', n_classes: 'int', hidden: "
                                            r"'int' = 64.*cannot take the arguments \['hiden', 'n_classes', "
                                            r"'n_features'\]: got an unexpected keyword argument 'hiden'"):
        model_for(Target(CLASSIFIER, {"hiden": 8}), fitted_data())
    with pytest.raises(ContractError, match=r"datamodule: cl_hpc\.learn\.tabular\.TabularData\(.*cannot take the "
                                            r"arguments \['batchsize', 'label_col'\]"):
        data_from(Target(TABULAR.path, {"label_col": "y", "batchsize": 8}))


# ---- the batch check before a training step -----------------------------------------------------

class ExtraOutput(TabularClassifier):
    """predict_batch returns an output its signature does not name."""

    def predict_batch(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {**super().predict_batch(inputs), "logits": self.net(inputs)}


def test_a_data_module_whose_batches_do_not_fit_the_model_fails_before_training_naming_both() -> None:
    data = fitted_data()  # three features
    model = TabularClassifier(n_features=5, n_classes=2)  # built for five
    misfit = Workload(model, data, Target(CLASSIFIER, {"n_features": 5, "n_classes": 2}), TABULAR)
    with pytest.raises(ContractError, match=r"data module cl_hpc\.learn\.tabular\.TabularData with model "
                                            r"cl_hpc\.learn\.tabular\.TabularClassifier: a batch of 8 rows does not "
                                            r"fit the model: RuntimeError"):
        check_batches(misfit, rows())
    check_batches(tabular(), rows())  # the right pair passes
    with pytest.raises(ContractError, match=r"predict_batch returned \['class', 'logits', 'probs'\], but "
                                            r"output_signature\(\) names \['class', 'probs'\]"):
        check_batches(tabular(f"{HERE}.ExtraOutput"), rows())


# ---- checkpoints ----------------------------------------------------------------------------------

def test_a_saved_workload_loads_back_and_predicts_identically(tmp_path: Path) -> None:
    original = tabular(seed=3)
    sha = save_workload(tmp_path / "model.pt", original, {"window_digest": "d"})
    loaded = load_workload(tmp_path / "model.pt", sha)
    assert type(loaded.model) is TabularClassifier and type(loaded.datamodule) is TabularData
    assert not loaded.model.training
    assert loaded.model_target == original.model_target and loaded.data_target == original.data_target
    assert loaded.signature == original.signature
    assert loaded.datamodule.state_dict() == original.datamodule.state_dict()
    fresh = rows(25, seed=9)
    want, got = predict(original, fresh), predict(loaded, fresh)
    assert np.array_equal(want["probs"], got["probs"]) and np.array_equal(want["class"], got["class"])
    assert got["label"] == want["label"] and set(got["label"]) <= {0, 1}
    payload = read_payload(tmp_path / "model.pt", sha)
    assert payload["format"] == "cl_hpc.model/2" and payload["meta"] == {"window_digest": "d"}
    assert Signature.from_dict(payload["signature"]) == original.signature


USER_MODULE = '''
from cl_hpc.learn.tabular import TabularClassifier


class {name}(TabularClassifier):
    def __init__(self, n_features: int, n_classes: int, {extra}hidden: int = 8, layers: int = 1) -> None:
        super().__init__(n_features, n_classes, hidden=hidden, layers=layers)
'''


def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str = "UserNet", extra: str = "") -> str:
    """(Re)write a user's module on sys.path, and make the next import read the file as it is now."""
    module = f"user_models_{tmp_path.name}"
    (tmp_path / f"{module}.py").write_text(USER_MODULE.format(name=name, extra=extra))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # no stale .pyc of the same second and size
    importlib.invalidate_caches()
    sys.modules.pop(module, None)
    monkeypatch.delitem(sys.modules, module, raising=False)
    return module


def test_a_recorded_class_that_moved_names_the_recorded_path(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    module = user_module(tmp_path, monkeypatch)
    sha = save_workload(tmp_path / "model.pt", tabular(f"{module}.UserNet"), {})
    assert type(load_workload(tmp_path / "model.pt", sha).model).__name__ == "UserNet"
    user_module(tmp_path, monkeypatch, name="RenamedNet")  # the user renamed the class since
    with pytest.raises(ContractError) as caught:
        load_workload(tmp_path / "model.pt", sha)
    message = str(caught.value)
    assert f"recorded model: '{module}.UserNet' names nothing, not a class" in message
    assert str(tmp_path / f"{module}.py") in message  # the module as it is now
    assert f"the version was trained with {module}.UserNet: install the code that defines it, or retrain" in message


def test_a_recorded_class_whose_init_changed_names_both_shapes(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    module = user_module(tmp_path, monkeypatch)
    sha = save_workload(tmp_path / "model.pt", tabular(f"{module}.UserNet"), {})
    user_module(tmp_path, monkeypatch, extra="width: int, ")  # a new required argument, hidden renamed away
    with pytest.raises(ContractError) as caught:
        load_workload(tmp_path / "model.pt", sha)
    message = str(caught.value)
    assert f"checkpoint {tmp_path / 'model.pt'}: recorded model: {module}.UserNet(n_features: int, n_classes: int, " \
           f"width: int, hidden: int = 8, layers: int = 1) -> None cannot take the arguments " \
           f"['hidden', 'layers', 'n_classes', 'n_features']: missing a required argument: 'width'" in message


@pytest.mark.parametrize("with_moments", [True, False])
def test_a_first_format_mlp_checkpoint_loads_and_predicts_like_its_mlp(tmp_path: Path, with_moments: bool) -> None:
    frame = rows(60, seed=4)
    raw = frame[["a", "b", "c"]].to_numpy()
    moments = moments_of(raw)
    torch.manual_seed(1)
    shape = {"n_features": 3, "n_classes": 2, "hidden": 8, "layers": 1, "dropout": 0.0}
    net = MLP(**shape).eval()  # type: ignore[arg-type]
    old: dict[str, Any] = {"format": "cl_hpc.mlp/1", "net": shape, "state_dict": net.state_dict(),
                           "features": ["a", "b", "c"], "classes": [0, 1], "label_col": "y",
                           "mean": list(moments.mean), "std": list(moments.std), "window_digest": "w1"}
    if with_moments:
        old["moments"] = moments.to_dict()
    path = tmp_path / "old.pt"
    torch.save(old, path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()

    loaded = load_workload(path, sha)
    assert type(loaded.model) is TabularClassifier and loaded.datamodule.features == ["a", "b", "c"]
    assert loaded.model_target.args == shape and read_payload(path, sha)["meta"] == {"window_digest": "w1"}
    assert isinstance(loaded.datamodule.moments, Moments)
    assert np.allclose(loaded.datamodule.moments.std, moments.std) and np.allclose(
        loaded.datamodule.moments.mean, moments.mean)
    fresh = rows(30, seed=8)
    scaled = (fresh[["a", "b", "c"]].to_numpy() - np.asarray(moments.mean)) / np.asarray(moments.std)
    with torch.no_grad():
        want = torch.softmax(net(torch.from_numpy(scaled.astype(np.float32))), dim=1).numpy()
    got = predict(loaded, fresh)
    assert np.allclose(got["probs"], want, atol=1e-6) and np.array_equal(got["class"], want.argmax(axis=1))
