"""The profiler on real CPU training: a real Lightning Trainer, real DataLoaders, real files.

The dataset sleeps a known time per batch and the training step does a known amount of work, so the
share of step time spent waiting for data is known; the dataset also clocks itself, which gives an
independent measurement of that share to compare the profiler's with. The tolerances are wide enough
for a noisy 2-core VM: the tight (+-2 pp) accuracy check is scripts/bench_profiler.py's job.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler

from cl_hpc.config.ml import fit_conf
from cl_hpc.learn.contract import Target
from cl_hpc.learn.tabular import TabularClassifier
from cl_hpc.learn.training import FitResult, build_trainer, fit
from cl_hpc.learn.workload import Workload, data_from, model_for
from cl_hpc.profile import flops as fl
from cl_hpc.profile.task import ProfileSettings, TaskProfiler

# Lightning's notes on this machine, not on the code under test (cl_hpc.learn.training quiets the same).
pytestmark = [pytest.mark.filterwarnings("ignore:.*`srun` command is available.*"),
              pytest.mark.filterwarnings("ignore:.*treespec, LeafSpec.*")]

FEATURES, CLASSES, HIDDEN, LAYERS, BATCH = 16, 3, 32, 2, 32
RECORD_KEYS = {  # record.build_record: identity, timing, then the measured sections
    "version", "run_id", "key", "attempt", "segment", "host", "pid",
    "outcome", "started", "ended", "elapsed_s", "setup_s", "requested",
    "steps", "memory", "gpus", "compute", "notes", "stall", "series", "sacct",
}


@pytest.fixture(autouse=True)
def _outside_slurm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No job cgroup (so memory comes from VmHWM), and a private cache for the ceiling and FLOPs."""
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("CL_HPC_CACHE_DIR", str(tmp_path / "cache"))
    fl.clear_cache()


def mlp_step_flops(batch: int, widths: list[int]) -> int:
    """Forward, input-gradient and weight-gradient matmuls (2 FLOPs per multiply-add), less the first
    layer's input gradient, which autograd never computes: the data does not require grad."""
    pairs = list(zip(widths, widths[1:]))
    return 6 * batch * sum(i * o for i, o in pairs) - 2 * batch * pairs[0][0] * pairs[0][1]


class SlowBatches(Dataset):
    """Whole batches by index list (a BatchSampler feeds it), then a sleep: a loader that needs
    ``delay_s`` more per batch. Clocks every fetch, indexing included."""

    def __init__(self, x: np.ndarray, y: np.ndarray, delay_s: float) -> None:
        self.x, self.y, self.delay_s = torch.from_numpy(x), torch.from_numpy(y), delay_s
        self.calls: list[tuple[float, float]] = []  # (start, end), perf_counter

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        start = time.perf_counter()
        batch = self.x[rows], self.y[rows]
        if self.delay_s:
            time.sleep(self.delay_s)
        self.calls.append((start, time.perf_counter()))
        return batch

    def loader(self) -> DataLoader:
        return DataLoader(self, sampler=BatchSampler(SequentialSampler(self), BATCH, drop_last=False),
                          batch_size=None)

    def stall_over(self, *windows: tuple[int, int]) -> float:
        """Loading time over wall time, from fetch ``first`` to fetch ``last`` of each window. Each
        step fetches one batch, so the time between two fetches' starts is one step's wall time."""
        loading = sum(end - start for first, last in windows for start, end in self.calls[first:last])
        wall = sum(self.calls[last][0] - self.calls[first][0] for first, last in windows)
        return loading / wall


class PaddedClassifier(TabularClassifier):
    """The project's classifier with ``pad_s`` of extra work per step: a heavier model's step time
    without burning the CI machine's CPU (the profiler times hooks; it cannot tell sleep from math)."""

    def __init__(self, pad_s: float) -> None:
        super().__init__(FEATURES, CLASSES, HIDDEN, LAYERS, dropout=0.1)
        self.pad_s = pad_s

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        time.sleep(self.pad_s)
        return super().training_step(batch, batch_idx)


def data(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1).astype(np.int64)


def profiler(task_dir: Path, warmup: int = 5) -> TaskProfiler:
    identity = {"run_id": "r1", "key": "train", "attempt": 1, "segment": 0}
    settings = ProfileSettings(interval_s=0.25, warmup_steps=warmup, ceiling=False)
    return TaskProfiler(task_dir, identity, {"cpus": 2, "mem_mb": 1000}, settings).start()


# ---- a profiled Lightning fit, used the way cl_hpc.learn.training.fit uses the profiler --------------

@pytest.fixture(scope="module")
def profiled_fit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two epochs of 40 steps; each step about 10 ms of training work and 12 ms of loading."""
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("SLURM_JOB_ID", raising=False)
        torch.set_num_threads(1)  # one thread: a busy machine delays the step, not an OpenMP barrier
        try:
            tmp = tmp_path_factory.mktemp("fit")
            torch.manual_seed(0)
            x, y = data(40 * BATCH)
            batches = SlowBatches(x, y, delay_s=0.012)
            loader = batches.loader()
            prof = profiler(tmp / "task")
            module = PaddedClassifier(pad_s=0.010)
            conf = fit_conf({"max_epochs": 2})
            trainer = build_trainer(conf, [prof.lightning_callback()], len(loader), tmp)
            prof.note(num_workers=0, batch_size=BATCH, data_rows=len(y))
            trainer.fit(module, loader)
            prof.fit_done(trainer, module)
            written = prof.finish("COMPLETED")
        finally:
            torch.set_num_threads(threads)
    return {"record": written, "trainer": trainer, "batches": batches, "task_dir": tmp / "task", "steps": 40}


def test_stall_fraction_matches_the_loaders_own_clock(profiled_fit: dict[str, Any]) -> None:
    batches: SlowBatches = profiled_fit["batches"]
    n = profiled_fit["steps"]
    # The steady steps, as the profiler counts them: past the warm-up in epoch 1, past its first in epoch 2.
    truth = batches.stall_over((5, n - 1), (n + 1, 2 * n - 1))
    # Not a vacuous check: about half of the step loads data (less while other jobs slow the steps).
    assert min(end - start for start, end in batches.calls) >= 0.012 and truth > 0.05
    assert profiled_fit["record"]["stall"]["fraction"] == pytest.approx(truth, abs=0.05)
    assert profiled_fit["record"]["stall"]["diagnosis"].startswith("data-bound")  # 0 workers, > 10%


def test_steps_counted_and_warmup_and_epoch_starts_excluded(profiled_fit: dict[str, Any]) -> None:
    steps = profiled_fit["record"]["steps"]
    trainer = profiled_fit["trainer"]
    assert trainer.current_epoch == 2 and trainer.global_step == 2 * profiled_fit["steps"]
    assert steps["steps"] == trainer.global_step
    assert steps["steady_steps"] == trainer.global_step - 5 - 1  # 5 warm-up, and epoch 2's first step
    assert len(steps["epoch_first_s"]) == 2
    assert steps["warmup_s"] > 0 and steps["data_wait_s"] > 0 and steps["compute_s"] > 0
    assert steps["step_p50_s"] <= steps["step_p95_s"]
    assert steps["samples_per_s"] == pytest.approx(BATCH / (steps["data_wait_s"] + steps["compute_s"])
                                                   * steps["steady_steps"])


def test_profile_json_is_written_with_the_documented_keys(profiled_fit: dict[str, Any]) -> None:
    task_dir: Path = profiled_fit["task_dir"]
    on_disk = json.loads((task_dir / "profile.json").read_text())
    assert on_disk == json.loads((task_dir / "profiles" / "1-0.json").read_text())
    assert set(on_disk) == RECORD_KEYS
    assert on_disk["outcome"] == "COMPLETED" and on_disk["requested"] == {"cpus": 2, "mem_mb": 1000}
    assert on_disk["setup_s"] is not None and 0 < on_disk["setup_s"] < on_disk["elapsed_s"]
    assert on_disk["notes"]["num_workers"] == 0 and on_disk["notes"]["sampler_errors"] == []
    assert on_disk["gpus"] == []  # no NVIDIA driver here
    assert on_disk["series"]["t"] and len(on_disk["series"]["rss_mb"]) == len(on_disk["series"]["t"])
    # workers_max counts every descendant of this (pytest) process, which earlier tests may have left
    # behind: num_workers above is what the loader used.
    assert on_disk["host"]["samples"] >= 2


def test_flops_counted_equal_the_mlp_formula(profiled_fit: dict[str, Any]) -> None:
    compute = profiled_fit["record"]["compute"]
    assert compute["flops_method"] == "counted" and compute["flops_batch_size"] == BATCH
    assert compute["flops_per_step"] == mlp_step_flops(BATCH, [FEATURES] + [HIDDEN] * LAYERS + [CLASSES])
    assert compute["device"] == "cpu" and compute["dtype"] == "fp32"
    assert compute["peak_flops_per_s"] is None and compute["mfu_datasheet"] is None  # no datasheet for CPUs
    assert compute["achieved_flops_per_s"] == pytest.approx(
        compute["flops_per_step"] / profiled_fit["record"]["steps"]["step_p50_s"])


def test_memory_peak_from_vmhwm(profiled_fit: dict[str, Any]) -> None:
    memory = profiled_fit["record"]["memory"]
    host = profiled_fit["record"]["host"]
    assert memory["source"] == "vmhwm" and memory["exact"] is True
    assert memory["peak_mb"] == host["hwm_mb_max"] > 0
    assert host["hwm_mb_max"] >= host["rss_mb_max"] > 0


# ---- the plain-loop adapter ----------------------------------------------------------------------------

def test_steps_adapter_splits_a_plain_loop(tmp_path: Path) -> None:
    """next() is the data-wait, the loop body the compute: 20 ms of one, 60 ms of the other (long
    enough that a sleep's overshoot on a loaded machine stays a small part of either)."""
    def slow_source(n: int) -> Any:
        for i in range(n):
            time.sleep(0.020)
            yield i

    prof = profiler(tmp_path, warmup=2)
    seen = []
    for item in prof.steps(slow_source(20)):
        time.sleep(0.060)
        seen.append(item)
    written = prof.finish("COMPLETED")
    steps = written["steps"]
    assert seen == list(range(20))
    assert (steps["steps"], steps["steady_steps"], len(steps["epoch_first_s"])) == (20, 18, 1)
    assert steps["stall_fraction"] == pytest.approx(0.25, abs=0.05)
    assert steps["data_wait_s"] / steps["steady_steps"] >= 0.020  # a sleep never returns early
    assert steps["compute_s"] / steps["steady_steps"] >= 0.060
    assert written["compute"] is None  # no model: nothing to count
    assert json.loads((tmp_path / "profile.json").read_text())["steps"] == steps


def test_steps_adapter_with_nothing_to_iterate(tmp_path: Path) -> None:
    prof = profiler(tmp_path)
    assert list(prof.steps([])) == []
    written = prof.finish("COMPLETED")
    assert written["steps"] is None and written["setup_s"] is None
    assert written["stall"]["diagnosis"].startswith("no step timing")


# ---- the profiler must not change what is trained ---------------------------------------------------

def workload_fit(x: np.ndarray, y: np.ndarray, root: Path, profiler: Any = None) -> FitResult:
    """The bundled tabular workload (TabularClassifier + TabularData), built and fitted as the train
    task does: seeded before the model draws its initial weights."""
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(FEATURES)]).assign(y=y)
    conf = fit_conf({"max_epochs": 2, "seed": 7})
    data_target = Target("cl_hpc.learn.tabular.TabularData", {"label_col": "y", "batch_size": BATCH, "seed": 7})
    data = data_from(data_target)
    data.fit_state(frame)
    pl.seed_everything(conf.seed, verbose=False)
    model, built = model_for(Target("cl_hpc.learn.tabular.TabularClassifier", {"hidden": HIDDEN, "layers": LAYERS}),
                             data)
    return fit(Workload(model, data, built, data_target), frame, conf, root, profiler=profiler)


def test_profiled_fit_trains_the_same_weights(tmp_path: Path) -> None:
    """Same seed, same data: the same weights and the same RNG state after the fit, profiled or not
    (the FLOP count runs a training step with dropout after the fit; it must put torch's RNG back)."""
    x, y = data(256, seed=1)

    plain = workload_fit(x, y, tmp_path / "plain")
    plain_rng = torch.random.get_rng_state()
    prof = profiler(tmp_path / "task")
    profiled = workload_fit(x, y, tmp_path / "profiled", profiler=prof)
    profiled_rng = torch.random.get_rng_state()
    written = prof.finish("COMPLETED")

    assert written["compute"]["flops_method"] == "counted"  # the count did run
    assert written["steps"]["steps"] == profiled.steps == plain.steps == 2 * 256 // BATCH
    plain_weights, profiled_weights = plain.model.state_dict(), profiled.model.state_dict()
    assert plain_weights.keys() == profiled_weights.keys()
    for name, tensor in plain_weights.items():
        assert torch.equal(tensor, profiled_weights[name]), name
    assert torch.equal(plain_rng, profiled_rng)
    assert (plain.epoch_loss, plain.epoch_accuracy) == (profiled.epoch_loss, profiled.epoch_accuracy)
    assert len(plain.epoch_loss) == len(plain.epoch_accuracy) == 2
