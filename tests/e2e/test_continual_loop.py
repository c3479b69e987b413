"""The continual-learning loop end to end on the in-process backend: bootstrap 1.0; new data of a
drifted concept arrives (python -m cl_hpc.data simulate) and the watch's trigger launches a stateful
1.1 that the gate promotes; then a stateless 2.0 once K stateful updates are reached; and a poisoned
batch stopped by validation before anything trains or is registered."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, Launcher, _env

pytestmark = pytest.mark.e2e

# Small and quick: 500-row partitions, 3 epochs; SEA concept 0, then concept 3 from partition 14.
# The champion is trained on partitions 4-11 (16 generated); then 6 more arrive, all of the new concept.
DATA = ["data.rows_per_partition=500", "data.concepts=[0,3]", "data.drift_at=[14]", "fit.max_epochs=3"]


def _run(launcher: Launcher, landing: Path, partitions: int, *extra: str) -> dict:
    result = launcher("cluster=inprocess", "pipeline=continual", f"data.landing_dir={landing}",
                      f"data.n_partitions={partitions}", *DATA, "pipeline.tasks.train.params.strategy.hybrid_every_k=1",
                      *extra, timeout=600)
    assert result.proc.returncode == 0, result.output
    return {name: result.outputs(name) for name in ("train", "compare", "promote")}


def _registry(launcher: Launcher, *args: str) -> dict | list:
    proc = subprocess.run([sys.executable, "-m", "cl_hpc.registry", "--store-root", str(launcher.store_root), *args,
                           "--json"], cwd=REPO, capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def _arrive(landing: Path, partitions: int) -> None:
    """New data lands: the simulator appends partitions of the same stream."""
    proc = subprocess.run([sys.executable, "-m", "cl_hpc.data", "simulate", "--landing-dir", str(landing),
                           "--partitions", str(partitions)], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _watch(launcher: Launcher, landing: Path) -> dict:
    """One watch check; it must fire and launch the pipeline. Returns the launched run's outputs."""
    before = set(launcher.run_root.glob("2*"))
    proc = subprocess.run([sys.executable, "-m", "cl_hpc.watch", "hydra.searchpath=[file://tests/conf]",
                           f"run_root={launcher.run_root}", f"store.root={launcher.store_root}", "cluster=inprocess",
                           "pipeline=continual", f"data.landing_dir={landing}", "data.generator=none", *DATA,
                           "pipeline.tasks.train.params.strategy.hybrid_every_k=1",
                           "trigger.volume.min_new_fraction=0.2"],
                          cwd=REPO, capture_output=True, text=True, timeout=900, env=_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run,) = set(launcher.run_root.glob("2*")) - before
    reason = json.loads((run / "run.json").read_text())["launches"][-1]["reason"]
    assert reason and "volume" in reason, reason
    return {name: json.loads((run / "tasks" / name / "outputs.json").read_text())
            for name in ("train", "compare", "promote")}


def test_bootstrap_drift_stateful_update_then_stateless_after_k(launcher: Launcher, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    first = _run(launcher, landing, 16)
    assert first["promote"] == {**first["promote"], "version": "1.0", "promoted": True, "strategy": "stateless"}

    # The drift lands: six partitions of the new concept; the watch's volume trigger fires. The
    # fine-tune trains on the rows of its window (10-17) that 1.0 never saw (12-17, four of them of
    # the new concept) plus a replay sample of 10-11; the gate judges on 18-21.
    _arrive(landing, 6)
    second = _watch(launcher, landing)
    assert second["train"]["strategy"] == "stateful" and second["train"]["parent"] == "1.0"
    assert second["train"]["new_rows"] == 6 * 500 and second["train"]["replay_rows"] == 600
    assert second["compare"]["champion"] == "1.0"
    compare = second["compare"]
    assert compare["challenger_metrics"]["accuracy"] > compare["champion_metrics"]["accuracy"], compare
    assert compare["metric"] == "accuracy" and compare["direction"] == "higher" and compare["scored_against"] == "1.0"
    assert second["promote"]["version"] == "1.1" and second["promote"]["promoted"], second["promote"]["reasons"]

    # hybrid_every_k=1: after one stateful update the next model is trained from scratch.
    _arrive(landing, 2)
    third = _watch(launcher, landing)
    assert third["train"]["strategy"] == "stateless" and "stateful updates" in third["train"]["strategy_reason"]
    assert third["promote"]["version"] == "2.0"

    listing = _registry(launcher, "--name", "continual", "list")["continual"]
    versions = {v["version"]: v for v in listing["versions"]}
    assert versions["1.1"]["parent"] == "1.0" and versions["1.1"]["strategy"] == "stateful"
    assert versions["2.0"]["strategy"] == "stateless"
    history = _registry(launcher, "--name", "continual", "history")
    assert [e["to_version"] for e in history][:2] == ["1.0", "1.1"]
    assert all(e["reason"].startswith("gate passed") for e in history)


def test_a_poisoned_batch_is_stopped_before_training(launcher: Launcher, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    _run(launcher, landing, 16)
    # Poison the newest half of the train window (the 4 partitions before the 4 held out): every
    # label flipped to one class, so the label distribution moves far from the champion's.
    for part in sorted(landing.glob("part-*.parquet"))[-8:-4]:
        table = pq.read_table(part)
        labels = pa.array([1] * table.num_rows, type=table.schema.field("y").type)
        pq.write_table(table.set_column(table.schema.get_field_index("y"), "y", labels), part)
    result = launcher("cluster=inprocess", "pipeline=continual", f"data.landing_dir={landing}", "data.n_partitions=16",
                      *DATA, "pipeline.tasks.validate.params.max_label_tv=0.1", timeout=600)
    assert result.proc.returncode == 1, result.output
    assert "label" in result.output and "validate" in result.output
    listing = _registry(launcher, "--name", "continual", "list")["continual"]
    assert [v["version"] for v in listing["versions"]] == ["1.0"], "nothing was trained, registered or promoted"


def test_a_challenger_of_another_feature_set_is_not_promoted(launcher: Launcher, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    first = _run(launcher, landing, 16, "data.features=[x0,x1]")
    assert first["promote"]["version"] == "1.0" and first["promote"]["promoted"]
    # Two new partitions and every feature now: the champion cannot be fine-tuned on them or compared.
    second = _run(launcher, landing, 18)
    assert second["train"]["strategy"] == "stateless" and "trained on features" in second["train"]["strategy_reason"]
    reason = second["compare"]["reasons"][0]
    assert not second["compare"]["passed"] and "signature differs" in reason, reason
    assert "input 'x2': absent vs x2: float64" in reason and "allow_signature_change=true" in reason, reason
    assert second["promote"]["version"] == "2.0" and not second["promote"]["promoted"]
    listing = _registry(launcher, "--name", "continual", "list")["continual"]
    assert listing["aliases"]["champion"] == "1.0"
