"""pipeline=features on the local backend: the materialization fan-out splits the pending partitions over
its shards, one commit records them, and a rerun computes only what landed since."""

from __future__ import annotations

import json
from pathlib import Path

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
