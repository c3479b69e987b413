"""The continual pipeline as Slurm jobs: five tasks chained by dependencies, the registry written by
the promote job, then a stateful update fine-tuned from the champion that the first run promoted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, Launcher, _env

DATA = ["data.rows_per_partition=300", "data.concepts=[0,3]", "data.drift_at=[14]", "fit.max_epochs=2",
        "pipeline.tasks.train.resources.cpus=1", "rightsize.mode=off"]


def test_continual_pipeline_on_slurm_bootstraps_then_fine_tunes(launcher: Launcher, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    first = launcher("cluster=slurm", "pipeline=continual", f"data.landing_dir={landing}", "data.n_partitions=16",
                     *DATA, timeout=600)
    assert first.proc.returncode == 0, first.output
    first_run = first.run_dir()  # the newest run dir: read it before the second launch
    jobs = json.loads((first_run / "slurm.json").read_text())["launches"]["0"]
    assert set(jobs) == {"ingest", "validate", "train", "compare", "promote"}
    assert first.outputs("promote")["version"] == "1.0" and first.outputs("promote")["promoted"]

    second = launcher("cluster=slurm", "pipeline=continual", f"data.landing_dir={landing}", "data.n_partitions=22",
                      *DATA, timeout=600)
    assert second.proc.returncode == 0, second.output
    train = second.outputs("train")
    assert train["strategy"] == "stateful" and train["parent"] == "1.0" and train["new_rows"] == 6 * 300
    promote = second.outputs("promote")
    assert promote["version"] == "1.1" and promote["parent"] == "1.0"
    listing = subprocess.run([sys.executable, "-m", "cl_hpc.registry", "--store-root", str(launcher.store_root),
                              "list", "--json"], cwd=REPO, capture_output=True, text=True, timeout=120, env=_env())
    versions = json.loads(listing.stdout)["continual"]["versions"]
    assert [v["version"] for v in versions] == ["1.0", "1.1"] and versions[0]["run_id"] == first_run.name
