"""pipeline=features on the local backend: the materialization fan-out splits the pending partitions over
its shards, one commit records them, and a rerun computes only what landed since."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from cl_hpc.features.definitions import load_catalog
from cl_hpc.features.materialize import load_offline
from tests.conftest import Launcher
from tests.feature_zone import add_partition, spend_catalog


def _outputs(launcher: Launcher) -> dict[str, dict]:
    """Outputs by unit: ``commit``, and ``materialize/0``, ``materialize/1`` for the shards."""
    tasks = max(launcher.run_root.glob("2*")) / "tasks"
    return {str(p.parent.relative_to(tasks)): json.loads(p.read_text()) for p in tasks.glob("**/outputs.json")}


def test_sharded_materialization_then_only_the_new_partition(launcher: Launcher, tmp_path: Path) -> None:
    catalog, zone = spend_catalog(tmp_path, hours=5)
    store = tmp_path / "features"
    args = ("pipeline=features", f"pipeline.tasks.materialize.params.catalog={catalog}",
            "pipeline.tasks.materialize.params.view=spend", f"pipeline.tasks.materialize.params.store={store}")
    first = launcher(*args)
    assert first.proc.returncode == 0, first.proc.stdout + first.proc.stderr
    out = _outputs(launcher)
    shards = [out[k] for k in sorted(out) if k.startswith("materialize/")]
    assert [len(s["batches"]) for s in shards] == [3, 2]  # every other pending partition per shard
    assert len(out["commit"]["computed"]) == 5 and out["commit"]["rows"] == 250
    add_partition(zone, 5)
    second = launcher(*args)
    assert second.proc.returncode == 0, second.proc.stdout + second.proc.stderr
    assert _outputs(launcher)["commit"]["computed"] == ["part-20260101T050000.parquet"]
    assert len(load_offline(store, load_catalog(catalog).view("spend"))) == 300


def test_train_on_catalog_features(launcher: Launcher, tmp_path: Path) -> None:
    catalog, zone = spend_catalog(tmp_path, hours=6)
    store = tmp_path / "features"
    done = launcher("pipeline=features_train", f"pipeline.tasks.materialize.params.catalog={catalog}",
                    "pipeline.tasks.materialize.params.view=spend", f"pipeline.tasks.materialize.params.store={store}",
                    "pipeline.tasks.ingest.params.features=[events_1h,amount_sum_1h]", "data.generator=none",
                    f"data.landing_dir={zone}", "data.train_window=4", "data.eval_window=2", "fit.max_epochs=1")
    assert done.proc.returncode == 0, done.output
    out = _outputs(launcher)
    ingest = out["ingest"]
    assert ingest["features"] == ["events_1h", "amount_sum_1h"] and ingest["train_rows"] == 200
    assert ingest["eval_rows"] == 100 and ingest["train_dropped"] == 0
    train = pd.read_parquet(ingest["train_path"])
    assert list(train.columns) == ["events_1h", "amount_sum_1h", "y", "ts"]  # no entity id among the features
    assert out["evaluate"]["rows"] == 100 and 0.0 <= out["evaluate"]["accuracy"] <= 1.0
