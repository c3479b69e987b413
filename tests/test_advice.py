"""Issue 10, defect 14: the default pipeline is not told to add DataLoader workers.

The default train task fits in-memory tensors. Its profile used to say "set num_workers > 0"
whenever the data wait passed 10% of a ~2.6 ms step, although receiving a batch from a worker
costs more than fetching it in process. Here the default pipeline's tasks run for real (ingest
writes Parquet, train fits the bundled tabular workload with Lightning on CPU under the profiler),
and the loader probe runs on the default data module's loader itself. scripts/bench_advice.py
times both choices side by side.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cl_hpc.context import TaskContext
from cl_hpc.data.tables import load_frame
from cl_hpc.learn.tabular import TabularData
from cl_hpc.profile import loader as loader_probe
from cl_hpc.profile.diagnosis import STALL_THRESHOLD, Verdict, diagnose
from cl_hpc.profile.task import ProfileSettings, TaskProfiler
from cl_hpc.tasks import ingest, train

pytestmark = [pytest.mark.filterwarnings("ignore:.*`srun` command is available.*"),
              pytest.mark.filterwarnings("ignore:.*treespec, LeafSpec.*")]

DATA = {"rows_per_partition": 400}  # the default data config, smaller partitions
# conf/model/mlp.yaml's workload, fewer epochs
MODEL = {"_target_": "cl_hpc.learn.tabular.TabularClassifier"}
DATAMODULE = {"_target_": "cl_hpc.learn.tabular.TabularData", "label_col": "y"}
FIT = {"max_epochs": 3}


def _ctx(run_dir: Path, task: str, upstream: dict[str, Any], profiler: Any = None) -> TaskContext:
    task_dir = run_dir / task
    task_dir.mkdir(parents=True, exist_ok=True)
    return TaskContext(run_id="r1", task=task, key=task, task_dir=task_dir, run_dir=run_dir, attempt=1,
                       upstream=upstream, resources={"cpus": 2}, profiler=profiler)


@pytest.fixture(scope="module")
def default_train(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("advice")
    data = {**DATA, "landing_dir": str(root / "landing")}
    run_dir = root / "run"
    ingested = json.loads(json.dumps(ingest.run(_ctx(run_dir, "ingest", {}), data=data)))
    prof = TaskProfiler(run_dir / "train", {"run_id": "r1", "key": "train", "attempt": 1, "segment": 0},
                        {"cpus": 2}, ProfileSettings(interval_s=0.25, ceiling=False)).start()
    train.run(_ctx(run_dir, "train", {"ingest": ingested}, prof), model=MODEL, datamodule=DATAMODULE, fit=FIT)
    return {"record": prof.finish("COMPLETED"), "ingest": ingested}


def test_the_default_train_profile_does_not_advise_workers(default_train: dict[str, Any]) -> None:
    stall = default_train["record"]["stall"]
    assert default_train["record"]["notes"]["num_workers"] == 0
    assert not Verdict(stall["verdict"]).adds_workers, stall
    assert "num_workers > 0" not in stall["diagnosis"] and "add workers" not in stall["diagnosis"]
    if stall["fraction"] >= STALL_THRESHOLD:  # this fit stalled: the probe measured why workers would not help
        assert stall["verdict"] == Verdict.WORKERS_WOULD_SLOW.value and stall["probe"], stall


def test_the_default_loader_probed_workers_would_slow_every_step(default_train: dict[str, Any]) -> None:
    """The rule on the real default loader, whatever this fit's stall happened to be: even a fit that
    waited half of every step on it is not told to add workers, because a worker's batch costs the
    training process more than fetching the batch itself."""
    ingested = default_train["ingest"]
    rows = load_frame(ingested["train_path"], ingested["timestamp_col"])
    data = TabularData(label_col="y")  # the default data module, as the train task builds it
    data.fit_state(rows)
    data.use(rows)
    measured = loader_probe.probe(data.train_dataloader())
    assert measured is not None and measured["batches"] >= 3
    assert measured["fetch_s"] < measured["worker_batch_s"], measured
    steps = default_train["record"]["steps"]["steps"]
    found = diagnose(0.5, 0, probe=measured, steps=steps, wait_per_step_s=measured["fetch_s"])
    assert found.verdict is Verdict.WORKERS_WOULD_SLOW and "num_workers > 0" not in found.text, found


def test_a_loader_whose_fetch_does_real_work_is_told_to_add_workers(tmp_path: Path) -> None:
    """The other side of the rule, on a real DataLoader: a fetch that waits on I/O (a sleep, as a
    read from slow storage would) costs more than a worker's IPC, so workers are advised."""
    import time

    import torch
    from torch.utils.data import DataLoader, Dataset

    class SlowReads(Dataset):
        def __len__(self) -> int:
            return 64

        def __getitem__(self, i: int) -> torch.Tensor:
            time.sleep(0.001)  # 1 ms a row, 8 ms a batch: a slow read
            return torch.full((4,), float(i))

    measured = loader_probe.probe(DataLoader(SlowReads(), batch_size=8), batches=5)
    assert measured is not None and measured["fetch_s"] > measured["worker_batch_s"], measured
    found = diagnose(0.5, 0, probe=measured, steps=10_000, wait_per_step_s=measured["fetch_s"])
    assert found.verdict is Verdict.IN_PROCESS and "num_workers > 0" in found.text, found


def test_the_probe_of_a_slow_loader_stays_within_its_budget() -> None:
    """A fetch of 0.1 s a batch: 3 batches, not 20, so the probe costs seconds, not minutes."""
    import time

    import torch
    from torch.utils.data import DataLoader, Dataset

    class VerySlow(Dataset):
        def __len__(self) -> int:
            return 40

        def __getitem__(self, i: int) -> torch.Tensor:
            time.sleep(0.05)
            return torch.zeros(2)

    measured = loader_probe.probe(DataLoader(VerySlow(), batch_size=2), budget_s=0.2)
    assert measured is not None and measured["batches"] == 3, measured
