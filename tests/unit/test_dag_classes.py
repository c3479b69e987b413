"""The login-node check of a workload's classes (cl_hpc/dag/classes.py), on a user's own package written
to a temporary folder and put on sys.path: read from source, never imported."""

from __future__ import annotations

import json
import py_compile
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Optional

import pytest

from cl_hpc.dag.build import build_plan
from cl_hpc.dag.pysource import Sources
from cl_hpc.errors import DagError
from tests.conftest import REPO

OK = "tests.tasks.emit"

# A user's package "byom": a model through a re-export and a base class in a sibling module, a data
# module by duck typing on Lightning's, and the mistakes users make.
PACKAGE = {
    "__init__.py": "from .nets import Net\n",
    "core.py": """
        import pytorch_lightning as pl

        class Core(pl.LightningModule):
            def training_step(self, batch, batch_idx):
                return self(batch[0]).sum()

            def configure_optimizers(self):
                return None
        """,
    "nets.py": '''
        from typing import ClassVar, Mapping

        from cl_hpc.learn.base import LoopModule
        from cl_hpc.learn.contract import Direction

        from .core import Core

        SIZE = 3


        def make_net(n_inputs):
            return Net(n_inputs)


        class Net(Core):
            metrics: ClassVar[Mapping[str, Direction]] = {"accuracy": Direction.HIGHER, "brier": Direction.LOWER}

            def __init__(self, n_inputs: int, width: int = 8) -> None:
                super().__init__()

            def evaluate_batch(self, inputs, targets):
                """Per-row values."""
                return {"accuracy": targets}

            def predict_batch(self, inputs):
                return {"y": inputs}

            def output_signature(self):
                return []


        class NoEvaluate(Core):
            def predict_batch(self, inputs):
                return {}

            def output_signature(self):
                return []


        class Half(LoopModule):
            """Subclasses the contract's base but leaves its evaluate_batch stub in place."""

            metrics = dict(loss="lower")

            def training_step(self, batch, batch_idx):
                return None

            def configure_optimizers(self):
                return None

            def predict_batch(self, inputs):
                return {}

            def output_signature(self):
                return []


        class Lossy(Net):
            metrics = dict(loss="lower")


        class Flexible(Net):
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, **kwargs)
        ''',
    "data.py": """
        import pytorch_lightning as pl


        class Rows(pl.LightningDataModule):
            def __init__(self, label_col: str = "y", batch_size: int = 32) -> None:
                super().__init__()

            def fit_state(self, frame): ...
            def update_state(self, frame): ...
            def model_args(self): return {}
            def input_signature(self): return []
            def to_batch(self, frame): return frame, None
            def use(self, frame): ...
            def train_dataloader(self): return []
        """,
    "fast.py": """
        from fastbase import Base  # compiled: no source to read

        class Fast(Base):
            pass

        Dynamic = type("Dynamic", (Base,), {})
        """,
}
FASTBASE = "class Base:\n    def evaluate_batch(self, inputs, targets):\n        return {}\n"

DATA = {"_target_": "byom.data.Rows", "label_col": "y"}
CONTRACT = "see the model contract in README.md"
CASES: list[tuple[str, dict[str, Any], Optional[str], list[str]]] = [
    # (case, model config, gate metric, fragments of the one problem; [] = no problem)
    ("good class", {"_target_": "byom.Net", "n_inputs": 4, "width": 16}, "brier", []),
    ("missing top-level module", {"_target_": "nope.Missing"}, None,
     ["params.model._target_=nope.Missing", "no module named 'nope'", "is the package installed",
      "model takes a LightningModule class", CONTRACT]),
    ("missing module", {"_target_": "byom.netz.Net"}, None,
     ["no module named 'byom.netz'", "did you mean byom.nets?"]),
    ("missing name", {"_target_": "byom.nets.Nett"}, None,
     ["params.model._target_=byom.nets.Nett", "defines no 'Nett'", "did you mean byom.nets.Net?"]),
    ("function", {"_target_": "byom.nets.make_net"}, None, ["'byom.nets.make_net' is a function", "nets.py:12",
                                                            "not a class"]),
    ("variable", {"_target_": "byom.nets.SIZE"}, None, ["is a variable (a int)", "not a class"]),
    ("module", {"_target_": "byom.nets"}, None, ["'byom.nets' is a module, not a class"]),
    ("missing evaluate_batch", {"_target_": "byom.nets.NoEvaluate"}, None,
     ["class NoEvaluate (", "lacks what the loop needs: evaluate_batch; define it"]),
    ("base class stub", {"_target_": "byom.nets.Half"}, None,
     ["class Half", "lacks what the loop needs: evaluate_batch (LoopModule's only raises NotImplementedError)"]),
    ("compiled base", {"_target_": "byom.fast.Fast", "anything": 1}, None, []),
    ("dynamic class", {"_target_": "byom.fast.Dynamic", "anything": 1}, None, []),
    ("misspelt init arg", {"_target_": "byom.Net", "n_inputs": 4, "widht": 3}, None,
     ["params.model.widht=3", "Net.__init__ takes (n_inputs, width); did you mean width?"]),
    ("hydra's own keys", {"_target_": "byom.Net", "_partial_": True, "_recursive_": False}, None, []),
    ("**kwargs", {"_target_": "byom.nets.Flexible", "anything": 1, "depth": [1, 2]}, None, []),
    ("gate metric not reported", {"_target_": "byom.Net"}, "acuracy",
     ["pipeline.tasks.compare.params.gate.metric=acuracy", "a metric the model does not report",
      "Net reports accuracy, brier", "did you mean accuracy?", "null: its primary metric, accuracy"]),
    ("gate metric of a dict(...) attribute", {"_target_": "byom.nets.Lossy"}, "accuracy", ["Lossy reports loss"]),
]


@pytest.fixture
def byom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The package ``byom`` and a sourceless compiled module ``fastbase``, first on sys.path."""
    package = tmp_path / "byom"
    package.mkdir()
    for name, text in PACKAGE.items():
        (package / name).write_text(textwrap.dedent(text))
    (tmp_path / "fastbase.py").write_text(FASTBASE)
    py_compile.compile(str(tmp_path / "fastbase.py"), cfile=str(tmp_path / "fastbase.pyc"), doraise=True)
    (tmp_path / "fastbase.py").unlink()
    monkeypatch.syspath_prepend(str(tmp_path))  # also invalidates importlib's directory caches
    return tmp_path


def problems(model: dict[str, Any], datamodule: dict[str, Any], metric: Optional[str] = None) -> list[str]:
    pipeline = {"name": "p", "tasks": {
        "train": {"target": OK, "params": {"model": model, "datamodule": datamodule}},
        "compare": {"target": OK, "depends_on": ["train"], "params": {"gate": {"metric": metric, "margin": 0.0}}}}}
    try:
        build_plan(pipeline, None)
    except DagError as exc:
        return [line for line in str(exc).splitlines() if line.startswith("  - ")]
    return []


@pytest.mark.parametrize("case,model,metric,fragments", CASES, ids=[c[0] for c in CASES])
def test_a_model_class_is_checked_from_its_source(byom: Path, case: str, model: dict[str, Any], metric: Optional[str],
                                                  fragments: list[str]) -> None:
    found = problems(model, DATA, metric)
    assert len(found) == (1 if fragments else 0), found
    for fragment in fragments:
        assert fragment in found[0], f"{fragment!r} not in {found[0]}"
    assert "byom" not in sys.modules and "fastbase" not in sys.modules  # read, never imported


def test_a_data_module_is_checked_against_the_data_methods(byom: Path) -> None:
    model = {"_target_": "byom.Net"}
    assert problems(model, {"_target_": "byom.data.Rows", "labelcol": "y"}) == [
        "  - pipeline.tasks.train.params.datamodule.labelcol=y: Rows.__init__ takes (label_col, batch_size); "
        "did you mean label_col?"]
    (found,) = problems(model, {"_target_": "byom.Net"})  # a model where the data module goes
    assert "datamodule._target_=byom.Net: class Net" in found
    assert "lacks what the loop needs: fit_state, update_state, model_args" in found
    assert "state_dict" not in found  # Lightning's nn.Module gives it


def test_a_problem_shared_by_tasks_is_reported_once_naming_them(byom: Path) -> None:
    model = {"_target_": "byom.Net", "widht": 3}
    params = {"model": model, "datamodule": DATA}
    pipeline = {"name": "p", "tasks": {"train": {"target": OK, "params": params},
                                       "evaluate": {"target": OK, "depends_on": ["train"], "params": params}}}
    with pytest.raises(DagError) as caught:
        build_plan(pipeline, None)
    assert str(caught.value).count("widht") == 1
    assert "pipeline.tasks.train.params.model.widht=3 (also in task evaluate): " in str(caught.value)


def test_the_bundled_workloads_pass() -> None:
    for conf in ("mlp", "gpt"):
        model, datamodule = _workload(REPO / "cl_hpc" / "conf" / "model" / f"{conf}.yaml")
        metric = "accuracy" if conf == "mlp" else "perplexity"
        assert problems(model, datamodule, metric) == [], conf


def test_the_contract_read_from_source_is_the_contract() -> None:
    from cl_hpc.dag.classes import _contract
    from cl_hpc.learn import contract

    sources = Sources()
    for name in ("MODEL_METHODS", "DATA_METHODS", "CONTRACT_DOC"):
        assert _contract(sources, name) == getattr(contract, name)


def test_checking_the_classes_imports_neither_torch_nor_the_users_module() -> None:
    """The login node pays for no torch: the bundled MLP and the example user's model (whose module
    imports torch at its top) are checked in a fresh interpreter that never loads either."""
    workloads = [_workload(REPO / "cl_hpc" / "conf" / "model" / "mlp.yaml"),
                 _workload(REPO / "examples" / "my_models" / "conf" / "model" / "churn.yaml")]
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(REPO / "examples" / "my_models")!r})
        from cl_hpc.dag.build import build_plan
        for model, datamodule in json.loads({json.dumps(workloads)!r}):
            params = {{"model": model, "datamodule": datamodule}}
            build_plan({{"name": "p", "tasks": {{"train": {{"target": "cl_hpc.tasks.train.run", "params": params}}}}}},
                       None)
        heavy = ("torch", "lightning", "pytorch_lightning", "numpy", "my_models", "cl_hpc.learn.tabular")
        print(sorted(m for m in heavy if m in sys.modules))
        """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _workload(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A conf/model/*.yaml's model and datamodule (interpolations left as text: only keys are checked)."""
    import yaml

    conf = yaml.safe_load(path.read_text())
    return conf["model"], conf["datamodule"]
