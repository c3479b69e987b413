"""The default pipeline's train task as DDP over two Slurm tasks agrees with one process."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import Launcher


def test_ddp_over_two_slurm_tasks_matches_one_process(launcher: Launcher, tmp_path: Path) -> None:
    results = {}
    for per_node in (1, 2):
        result = launcher("cluster=slurm", f"data.landing_dir={tmp_path / 'landing'}",
                          f"pipeline.tasks.train.resources.tasks_per_node={per_node}",
                          "pipeline.tasks.train.resources.cpus=1", timeout=500)
        assert result.proc.returncode == 0, result.output
        run = result.runs()[-1]
        results[per_node] = {name: json.loads((run / "tasks" / name / "outputs.json").read_text())
                             for name in ("train", "evaluate")}
    single, ddp = results[1], results[2]
    assert single["train"]["processes"] == 1 and ddp["train"]["processes"] == 2
    assert ddp["train"]["steps"] == single["train"]["steps"], "each process takes half of every batch"
    assert abs(ddp["train"]["train_metrics"]["accuracy"] - single["train"]["train_metrics"]["accuracy"]) < 0.02
    assert abs(ddp["evaluate"]["accuracy"] - single["evaluate"]["accuracy"]) < 0.02
    assert ddp["evaluate"]["accuracy"] > ddp["evaluate"]["baseline_accuracy"] + 0.15
