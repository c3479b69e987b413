"""The default pipeline end to end, as `python -m cl_hpc.launch` runs it: real data, real training."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.conftest import Launcher

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("backend", ["local", "inprocess"])
def test_default_pipeline_trains_and_evaluates_an_honest_model(launcher: Launcher, tmp_path: Path,
                                                               backend: str) -> None:
    landing = tmp_path / "landing"
    result = launcher(f"cluster={backend}", f"data.landing_dir={landing}", timeout=600)
    assert result.proc.returncode == 0, result.output
    assert sorted(landing.rglob("*.parquet")), "the landing zone is generated on first use"

    train, evaluate = result.outputs("train"), result.outputs("evaluate")
    checkpoint = Path(train["checkpoint_path"])
    assert checkpoint.is_file() and checkpoint.is_relative_to(result.run_dir())
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert digest == train["checkpoint_sha256"] == evaluate["checkpoint_sha256"]
    # Held-out accuracy well above the majority-class baseline: the model learned something real.
    assert evaluate["accuracy"] > evaluate["baseline_accuracy"] + 0.15, evaluate
    assert evaluate["rows"] > 0 and 0 < evaluate["roc_auc"] <= 1
    # ... and the followed run ends by saying so, not only in outputs.json
    (line,) = [line for line in result.output.splitlines() if line.startswith("evaluate: ")]
    shown = dict(item.split(" ", 1) for item in line.removeprefix("evaluate: ").split(" · "))
    assert float(shown["accuracy"]) == pytest.approx(evaluate["accuracy"], rel=1e-3), line
    assert float(shown["baseline_accuracy"]) == pytest.approx(evaluate["baseline_accuracy"], rel=1e-3), line

    config = (result.run_dir() / "config.yaml").read_text()
    assert "landing_dir: " + str(landing) in config, "the resolved config is saved with the run"
    plan = json.loads((result.run_dir() / "plan.json").read_text())
    assert [t["name"] for t in plan["tasks"]] == ["ingest", "train", "evaluate"]
    assert train["model_class"] == evaluate["model_class"] == "cl_hpc.learn.tabular.TabularClassifier"
    assert "_target_: cl_hpc.learn.tabular.TabularData" in config and "max_epochs: 8" in config
