"""pipeline=features on the real local cluster: the pending partitions of a view are materialized by a
Slurm job array (one element per shard), committed by a job that waits for the whole array, and a rerun
computes only the partition that landed since."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cl_hpc.features.definitions import load_catalog
from cl_hpc.features.online import OnlineStore
from tests.conftest import Launcher
from tests.feature_zone import START, add_partition, spend_catalog


def test_materialization_as_a_job_array(launcher: Launcher, tmp_path: Path) -> None:
    catalog, zone = spend_catalog(tmp_path, hours=4)
    store = tmp_path / "features"
    args = ("cluster=slurm", "pipeline=features", "rightsize.mode=off",
            f"pipeline.tasks.materialize.params.catalog={catalog}", "pipeline.tasks.materialize.params.view=spend",
            f"pipeline.tasks.materialize.params.store={store}", "pipeline.tasks.materialize.foreach=[0,1,2]",
            "pipeline.tasks.materialize.params.shards=3")
    first = launcher(*args, timeout=600)
    assert first.proc.returncode == 0, first.output
    run = first.run_dir()
    jobs = json.loads((run / "slurm.json").read_text())["launches"]["0"]
    assert jobs["materialize"]["array"] == [0, 1, 2]  # one Slurm array, one element per shard
    shards = [json.loads((run / "tasks" / "materialize" / str(i) / "outputs.json").read_text()) for i in range(3)]
    assert sorted(len(s["batches"]) for s in shards) == [1, 1, 2] and {s["pending"] for s in shards} == {4}
    commit = json.loads((run / "tasks" / "commit" / "outputs.json").read_text())
    assert len(commit["computed"]) == 4 and commit["entities"] == 5

    add_partition(zone, 4)
    second = launcher(*args, timeout=600)
    assert second.proc.returncode == 0, second.output
    commit = json.loads((second.run_dir() / "tasks" / "commit" / "outputs.json").read_text())
    assert commit["computed"] == ["part-20260101T040000.parquet"]
    view = load_catalog(catalog).view("spend")
    online = OnlineStore(store / "online.sqlite")
    assert all(r is not None for r in online.read(view, list(range(5)), at=START + pd.Timedelta("5h")))
