"""Bring your own model: a user's own model and data module, in a package outside cl_hpc
(examples/my_models), through the whole continual loop on the local backend: bootstrap 1.0, new
data of a drifted concept, a stateful 1.1 fine-tuned from 1.0 through the user's data module and
optimizer, the gate in the user's metric, promotion, and the registry loading 1.1 back into a fresh
process from its recorded class, init arguments and states."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, Launcher, _env

pytestmark = pytest.mark.e2e

EXAMPLE = REPO / "examples" / "my_models"
SEARCH = "hydra.searchpath=[file://tests/conf,file://examples/my_models/conf]"
DATA = ["data.rows_per_partition=500", "data.concepts=[0,3]", "data.drift_at=[14]", "fit.max_epochs=3"]


def user_env() -> dict[str, str]:
    """The user's package is importable the way a user's own code is: on PYTHONPATH, not in cl_hpc."""
    env = _env()
    env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLE), env["PYTHONPATH"]])
    return env


def launch(launcher: Launcher, landing: Path, partitions: int, *extra: str) -> dict:
    args = [sys.executable, "-m", "cl_hpc.launch", SEARCH, f"run_root={launcher.run_root}",
            f"store.root={launcher.store_root}", "launch.follow=true", "pipeline=continual", "model=churn",
            f"data.landing_dir={landing}", f"data.n_partitions={partitions}", *DATA,
            "pipeline.tasks.train.params.strategy.hybrid_every_k=1", *extra]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600, env=user_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = max(launcher.run_root.glob("2*"))
    return {name: json.loads((run / "tasks" / name / "outputs.json").read_text())
            for name in ("train", "compare", "promote")}


def test_outside_model_bootstrap_stateful_gate_promote_and_load_back(launcher: Launcher, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    first = launch(launcher, landing, 16)
    assert first["train"]["model_class"] == "my_models.churn.GatedResNet"
    assert first["promote"]["version"] == "1.0" and first["promote"]["promoted"], first["promote"]
    assert first["compare"]["metric"] == "accuracy" and first["compare"]["direction"] == "higher"

    second = launch(launcher, landing, 22)  # six partitions of the new concept arrived
    train, compare, promote = second["train"], second["compare"], second["promote"]
    assert train["strategy"] == "stateful" and train["parent"] == "1.0", train["strategy_reason"]
    assert train["new_rows"] == 6 * 500 and train["replay_rows"] == 600
    assert compare["scored_against"] == "1.0"
    assert compare["challenger_metrics"]["accuracy"] > compare["champion_metrics"]["accuracy"], compare
    assert promote["version"] == "1.1" and promote["promoted"], promote["reasons"]

    # A fresh process rebuilds 1.1 from the registry alone and predicts with the user's decode().
    code = (
        "import json, sys, pandas as pd\n"
        "from cl_hpc.registry import ModelRegistry\n"
        "from cl_hpc.learn.scoring import predict\n"
        f"reg = ModelRegistry.open({str(launcher.store_root)!r})\n"
        "record = reg.get('continual', 'champion')\n"
        "w = reg.load_model('continual', 'champion')\n"
        "rows = pd.DataFrame({c: [0.5, 9.0] for c in w.datamodule.columns})\n"
        "out = predict(w, rows)\n"
        "print(json.dumps({'version': str(record.version), 'class': record.model_class,\n"
        "                  'init': record.init_args, 'inputs': [s['name'] for s in record.signature['inputs']],\n"
        "                  'type': type(w.model).__module__ + '.' + type(w.model).__name__,\n"
        "                  'labels': list(map(int, out['label'])), 'p': [float(p) for p in out['probability']]}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=user_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    loaded = json.loads(proc.stdout)
    assert loaded["version"] == "1.1" and loaded["class"] == loaded["type"] == "my_models.churn.GatedResNet"
    assert loaded["init"]["width"] == 32 and loaded["init"]["n_inputs"] == 3 and loaded["init"]["n_classes"] == 2
    assert loaded["inputs"] == ["x0", "x1", "x2"]
    assert set(loaded["labels"]) <= {0, 1} and all(0.0 <= p <= 1.0 for p in loaded["p"])
