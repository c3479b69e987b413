"""Bring your own model on Slurm: the user's own package (examples/my_models, outside cl_hpc) through
the continual pipeline as Slurm jobs, its module imported on the compute node from PYTHONPATH, the
version registered with the user's class, init arguments and signature."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, Launcher
from tests.e2e.test_byom_loop import SEARCH, user_env

DATA = ["data.rows_per_partition=300", "fit.max_epochs=2", "pipeline.tasks.train.resources.cpus=1",
        "rightsize.mode=off"]


def test_outside_model_continual_pipeline_on_slurm(launcher: Launcher, tmp_path: Path) -> None:
    args = [sys.executable, "-m", "cl_hpc.launch", SEARCH, f"run_root={launcher.run_root}",
            f"store.root={launcher.store_root}", "launch.follow=true", "cluster=slurm", "pipeline=continual",
            "model=churn", f"data.landing_dir={tmp_path / 'landing'}", "data.n_partitions=16", *DATA]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600, env=user_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = max(launcher.run_root.glob("2*"))
    jobs = json.loads((run / "slurm.json").read_text())["launches"]["0"]
    assert set(jobs) == {"ingest", "validate", "train", "compare", "promote"}
    promote = json.loads((run / "tasks" / "promote" / "outputs.json").read_text())
    assert promote["version"] == "1.0" and promote["promoted"], promote["reasons"]
    listing = subprocess.run([sys.executable, "-m", "cl_hpc.registry", "--store-root", str(launcher.store_root),
                              "show", "champion", "--json"], cwd=REPO, capture_output=True, text=True, timeout=120,
                             env=user_env())
    assert listing.returncode == 0, listing.stdout + listing.stderr
    record = json.loads(listing.stdout)
    assert record["model_class"] == "my_models.churn.GatedResNet"
    assert record["datamodule_class"] == "my_models.churn.ChurnData"
    assert record["init_args"]["n_inputs"] == 3 and record["init_args"]["width"] == 32
    assert [s["name"] for s in record["signature"]["outputs"]] == ["churn", "probability"]
