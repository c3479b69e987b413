#!/usr/bin/env python3
"""Does following the profiler's loader advice make training faster? Measured side by side in one run.

    PYTHONPATH=. python scripts/bench_advice.py            # 3 reps of each arm
    PYTHONPATH=. python scripts/bench_advice.py --reps 5

**The default pipeline.** The default data config's ingest task writes the train window (SEA, 8
partitions of 2000 rows), then the default train task fits the bundled tabular workload on it as configured
(num_workers=0, cpus=2) and with the advice the profile used to give it ("set num_workers > 0":
1 and 2 workers), the arms alternated within each rep so that a drift of the shared machine hits
all alike. Printed: the median fit time of each arm, its ratio to the configured one, and what the
profile of the configured fit now advises. The rule (cl_hpc/profile/diagnosis.py) must not advise an
arm that is slower.

**A loader that does real work.** The same model and data, through a dataset whose fetch waits
``--read-ms`` per batch (a read from slow storage): here the profile advises workers, and the
arm that follows the advice as the right-sizer words it (0 workers / (1 - stall) -> 1 worker, cpus
>= workers + 1, which the default 2 cpus already are) must be faster.

'paired' is the median over reps of each arm's time over the configured arm's in the same rep: on a
shared machine whose speed drifts, the steadier of the two figures.

Asserts nothing: prints the figures, each rep's verdict beside what following the advice did in that
rep, and per pipeline whether the advice and the measurement agree.

Measured on the 2-core test VM (5 reps, load average ~2.3 from other work): the default fit takes
1.01 s; with 1 worker x 2.05 (paired), with 2 workers x 2.23; its stall is 11-12%, which the old 10%
threshold called data-bound with "set num_workers > 0", and which is compute-bound now. The 8 ms
loader: stall 28-75%, verdict in-process in every rep (fetch 8.8 ms, 1.8 ms from a worker, 18 ms
start), and 1 worker x 0.70 (paired; 1.56 s -> 1.2 s in a quiet pair of runs).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import pandas as pd
import torch
from torch.utils.data import DataLoader

from cl_hpc.config.ml import fit_conf
from cl_hpc.context import TaskContext
from cl_hpc.data.tables import load_frame
from cl_hpc.learn.base import BatchedTensorDataset, _already_batched
from cl_hpc.learn.tabular import TabularClassifier, TabularData
from cl_hpc.learn.training import build_trainer
from cl_hpc.profile.diagnosis import Verdict
from cl_hpc.profile.task import ProfileSettings, TaskProfiler
from cl_hpc.tasks import ingest, train

CPUS = 2  # the default train task's resources.cpus
# conf/model/mlp.yaml's workload with its defaults (fit.max_epochs 8)
MODEL = {"_target_": "cl_hpc.learn.tabular.TabularClassifier"}
DATAMODULE = {"_target_": "cl_hpc.learn.tabular.TabularData", "label_col": "y"}


def _ctx(run_dir: Path, task: str, upstream: dict[str, Any], profiler: Any = None) -> TaskContext:
    task_dir = run_dir / task
    task_dir.mkdir(parents=True, exist_ok=True)
    return TaskContext(run_id="bench", task=task, key=task, task_dir=task_dir, run_dir=run_dir, attempt=1,
                       upstream=upstream, resources={"cpus": CPUS}, profiler=profiler)


def _profiler(task_dir: Path) -> TaskProfiler:
    identity = {"run_id": "bench", "key": "train", "attempt": 1, "segment": 0}
    return TaskProfiler(task_dir, identity, {"cpus": CPUS}, ProfileSettings(ceiling=False)).start()


def default_window(root: Path) -> dict[str, Any]:
    """The default pipeline's ingest outputs (the raw train window), written by its real ingest task."""
    data = {"landing_dir": str(root / "landing")}
    return json.loads(json.dumps(ingest.run(_ctx(root / "run", "ingest", {}), data=data)))


def default_fit(root: Path, ingested: dict[str, Any], workers: int) -> tuple[float, Mapping[str, Any]]:
    """The default train task (its run(), as a job calls it), profiled: (fit seconds, profile record)."""
    task_dir = root / f"train-w{workers}-{time.monotonic_ns()}"
    prof = _profiler(task_dir)
    out = train.run(_ctx(task_dir.parent, task_dir.name, {"ingest": ingested}, prof), model=MODEL,
                    datamodule={**DATAMODULE, "num_workers": workers})
    return out["seconds"], prof.finish("COMPLETED")


class SlowReads(BatchedTensorDataset):
    """The default in-memory dataset, with a wait per batch: a loader whose fetch reads storage."""

    read_s = 0.008

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        time.sleep(self.read_s)
        return super().__getitems__(indices)


def slow_fit(root: Path, rows: pd.DataFrame, workers: int, epochs: int) -> tuple[float, Mapping[str, Any]]:
    """The default model and batch size over SlowReads (the default data module's tensors), profiled
    as the train task profiles."""
    conf = fit_conf({"max_epochs": epochs})
    torch.set_num_threads(CPUS)
    data = TabularData(label_col="y", num_workers=workers, seed=conf.seed)
    data.fit_state(rows)
    x, y = data.to_batch(rows)
    assert y is not None
    torch.manual_seed(conf.seed)
    loader = DataLoader(SlowReads(x, y), batch_size=data.batch_size, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0, collate_fn=_already_batched,
                        generator=torch.Generator().manual_seed(conf.seed))
    module = TabularClassifier(**data.model_args())
    prof = _profiler(root / f"slow-w{workers}-{time.monotonic_ns()}")
    timer = prof.lightning_callback()
    prof.note(num_workers=workers, batch_size=data.batch_size, data_rows=len(y))
    trainer = build_trainer(conf, [timer], len(loader), root, profiler=timer.waits)
    started = time.perf_counter()
    trainer.fit(module, loader)
    seconds = time.perf_counter() - started
    prof.fit_done(trainer, module)
    return seconds, prof.finish("COMPLETED")


def alternate(arms: dict[str, Callable[[], tuple[float, Mapping[str, Any]]]], reps: int
              ) -> tuple[dict[str, list[float]], dict[str, list[Mapping[str, Any]]]]:
    times: dict[str, list[float]] = {name: [] for name in arms}
    records: dict[str, list[Mapping[str, Any]]] = {name: [] for name in arms}
    for _ in range(reps):
        for name, arm in arms.items():
            seconds, rec = arm()
            times[name].append(seconds)
            records[name].append(rec)
    return times, records


def report(title: str, times: dict[str, list[float]], configured: list[Mapping[str, Any]], advised_arm: str) -> None:
    """Medians, ratios to the configured arm, the advice, and whether they agree."""
    base = statistics.median(times["configured"])
    print(f"\n{title}")
    print(f"  {'arm':<34} {'median fit s':>12} {'ratio':>7} {'paired':>7}   runs (s)")
    for name, values in times.items():
        med = statistics.median(values)
        # paired: the median of each rep's ratio to the configured arm run beside it (drift cancels)
        paired = statistics.median(v / c for v, c in zip(values, times["configured"]))
        print(f"  {name:<34} {med:12.3f} {med / base:7.2f} {paired:7.2f}   {' '.join(f'{v:.2f}' for v in values)}")
    # Each rep's advice (its configured fit's verdict) beside what following it did in that rep: a
    # loaded machine slows the compute, and with it the stall, so the verdict may differ per rep.
    ratios = [v / c for v, c in zip(times[advised_arm], times["configured"])]
    advised = []
    for i, (rec, ratio) in enumerate(zip(configured, ratios), start=1):
        stall = rec["stall"]
        verdict = Verdict(stall["verdict"])
        if verdict.adds_workers:
            advised.append(ratio)
        print(f"  rep {i}: stall {stall['fraction']:.0%}, {verdict.value:<22} {advised_arm} x {ratio:.2f}")
    for stall in {r["stall"]["verdict"]: r["stall"] for r in configured}.values():  # one of each verdict
        print(f"    {stall['diagnosis']}")
        if stall.get("probe"):
            p = stall["probe"]
            print(f"    probe: fetch {p['fetch_s'] * 1e3:.3f} ms, from a worker {p['worker_batch_s'] * 1e3:.3f} ms, "
                  f"worker start {p['worker_start_s'] * 1e3:.1f} ms")
    # The rule holds when every rep that advised workers got faster by following them (median), and a
    # pipeline never advised them is the one they slow down.
    if advised:
        agree = statistics.median(advised) < 1
        print(f"  workers advised in {len(advised)} of {len(ratios)} reps; following them there: median x "
              f"{statistics.median(advised):.2f} -> {'AGREE' if agree else 'DISAGREE'}")
    else:
        agree = statistics.median(ratios) > 1
        print(f"  workers advised in 0 of {len(ratios)} reps; {advised_arm}: median x {statistics.median(ratios):.2f} "
              f"-> {'AGREE' if agree else 'DISAGREE'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="runs of each arm, alternated (default 3)")
    parser.add_argument("--read-ms", type=float, default=8.0, help="the slow loader's wait per batch (default 8)")
    parser.add_argument("--slow-epochs", type=int, default=2, help="epochs of the slow-loader fits (default 2)")
    args = parser.parse_args()
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*(srun|treespec|does not have many workers).*")
    with tempfile.TemporaryDirectory(prefix="bench_advice-") as tmp:
        root = Path(tmp)
        ingested = default_window(root)
        print(f"default train task: {ingested['train_rows']} rows, model TabularClassifier (conf/model/mlp.yaml); "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus")
        times, records = alternate({
            "configured (num_workers=0)": lambda: default_fit(root, ingested, 0),
            "old advice: num_workers=1": lambda: default_fit(root, ingested, 1),
            "old advice: num_workers=2": lambda: default_fit(root, ingested, 2),
        }, args.reps)
        times["configured"] = times.pop("configured (num_workers=0)")
        times = {"configured": times.pop("configured"), **times}
        report("default pipeline (in-memory tensors)", times, records["configured (num_workers=0)"],
               "old advice: num_workers=1")
        SlowReads.read_s = args.read_ms / 1000
        rows = load_frame(ingested["train_path"], ingested["timestamp_col"])
        slow, slow_records = alternate({
            "configured": lambda: slow_fit(root, rows, 0, args.slow_epochs),
            "advised: num_workers=1": lambda: slow_fit(root, rows, 1, args.slow_epochs),
        }, args.reps)
        report(f"a loader that reads {args.read_ms:g} ms per batch", slow, slow_records["configured"],
               "advised: num_workers=1")
        print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
