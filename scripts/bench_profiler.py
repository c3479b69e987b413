#!/usr/bin/env python3
"""What the task profiler costs, and how well it measures data-loader stalls: CPU Lightning training,
measured side by side in one run. Prints tables with PASS/FAIL against the targets; asserts nothing.

    PYTHONPATH=. python scripts/bench_profiler.py                 # both sections
    PYTHONPATH=. python scripts/bench_profiler.py --only stall --stall-hidden 64

**Overhead** (target: < 1% fewer steps/s). The project's own path, cl_hpc.learn.training.fit (the
bundled tabular workload, TabularClassifier + TabularData, synthetic data, num_workers=0), with a
started TaskProfiler (sampler thread, step callback, FLOP count after the fit) and without,
interleaved (on, off, on, off, ...) so that a drift of the machine hits both alike. Throughput is
steps over wall (and CPU) time from the end of the first step to the end of training; the FLOP
count and the record written after the fit are one-off costs, shown apart. Same seed, so the final
training loss must match exactly (ratio 1). A shared VM's noise can swamp 1% end to end, so the
'direct' row also times the profiler's own costs alone: what the step callback adds to Lightning's
six per-step hook calls, and one sampler tick (once a second).

**Stall accuracy** (target: within +-2 percentage points of the truth). A dataset that serves whole
batches (a BatchSampler hands it the indices) and sleeps d per batch. The compute time per step c is
calibrated first without delay, then d = c * target / (1 - target) for each target share. The truth
is measured independently, by the dataset's own clock: time spent inside the dataset over wall time,
from one fetch's start to a later one's (each step fetches exactly one batch), over the same steady
steps the profiler reports. 'loop ms' is the part of the profiler's data-wait that is neither in the
dataset nor in the step: Lightning's own per-step bookkeeping between on_train_batch_end and the next
on_train_batch_start, which the profiler counts as data-wait. It is what the error is made of.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer import call as lightning_call
from torch.utils.data import BatchSampler, DataLoader, Dataset, SequentialSampler

from cl_hpc.config.ml import FitConf, fit_conf
from cl_hpc.learn.contract import Target
from cl_hpc.learn.tabular import TabularClassifier
from cl_hpc.learn.training import build_trainer, fit
from cl_hpc.learn.workload import Workload, data_from, model_for
from cl_hpc.profile import flops as fl
from cl_hpc.profile.callback import StepTimer
from cl_hpc.profile.meter import StepMeter
from cl_hpc.profile.sampler import Sampler
from cl_hpc.profile.task import ProfileSettings, TaskProfiler

OVERHEAD_TARGET = 0.01  # fraction of throughput
STALL_TARGET_PP = 2.0  # percentage points

# ---- overhead --------------------------------------------------------------------------------------


class TrainClock:
    """fit()'s progress callback, called after every step and once at the end of training: it clocks
    the steps from the end of the first to the end of the last, wall and CPU (all threads), so that
    Lightning's set-up and the FLOP count after the fit stay out of the throughput."""

    def __init__(self) -> None:
        self.first: tuple[int, float, float] | None = None
        self.last: tuple[int, float, float] | None = None

    def __call__(self, done: int, total: int, note: str, *, force: bool = False) -> None:
        now = (done, time.perf_counter(), time.process_time())
        if self.first is None:
            self.first = now
        if force:
            self.last = now

    def rates(self) -> tuple[float, float]:
        """(steps per wall second, steps per CPU second)."""
        assert self.first is not None and self.last is not None, "fit() never reported the end of training"
        steps = self.last[0] - self.first[0]
        return steps / (self.last[1] - self.first[1]), steps / (self.last[2] - self.first[2])


@dataclass
class FitRun:
    profiled: bool
    steps: int
    steps_per_s: float  # wall
    steps_per_cpu_s: float  # all threads of the process, the sampler's included
    after_s: float  # fit() after trainer.fit: the FLOP count (profiled only), scoring, clean-up
    finish_s: float  # TaskProfiler.finish: the record, written
    loss: float


def synthetic(rows: int, features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    w = rng.normal(size=features).astype(np.float32)
    return x, (x @ w + 0.3 * rng.normal(size=rows) > 0).astype(np.int64)


def tabular(x: np.ndarray, y: np.ndarray, hidden: int, batch: int, seed: int) -> tuple[Workload, pd.DataFrame]:
    """The bundled workload built as the train task builds it (seeded before its initial weights), and its rows."""
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(x.shape[1])]).assign(y=y)
    data_target = Target("cl_hpc.learn.tabular.TabularData", {"label_col": "y", "batch_size": batch, "seed": seed})
    data = data_from(data_target)
    data.fit_state(frame)
    pl.seed_everything(seed, verbose=False)
    model, built = model_for(Target("cl_hpc.learn.tabular.TabularClassifier", {"hidden": hidden, "layers": 2}), data)
    return Workload(model, data, built, data_target), frame


def one_fit(x: np.ndarray, y: np.ndarray, conf: FitConf, hidden: int, batch: int, root: Path,
            profiled: bool) -> FitRun:
    fl.clear_cache()  # every profiled run counts its FLOPs, as a new task process would
    workload, frame = tabular(x, y, hidden, batch, conf.seed)
    prof = None
    if profiled:
        identity = {"run_id": "bench", "key": "train", "attempt": 1, "segment": 0}
        prof = TaskProfiler(root / "task", identity, {"cpus": os.cpu_count()}, ProfileSettings()).start()
    clock = TrainClock()
    started = time.perf_counter()
    result = fit(workload, frame, conf, root / "fit", progress=clock, profiler=prof)
    after = time.perf_counter() - started - result.seconds
    finish_s = 0.0
    if prof is not None:
        t0 = time.perf_counter()
        prof.finish("COMPLETED")
        finish_s = time.perf_counter() - t0
    return FitRun(profiled, result.steps, *clock.rates(), after, finish_s, result.epoch_loss[-1])


def direct_costs(features: int, batch: int, repeats: int = 5000) -> tuple[float, float]:
    """(seconds the step callback adds to one training step, seconds one sampler tick takes).

    The callback's cost is more than its two hooks: Lightning calls every callback on every per-step
    hook (six in automatic optimization), each inside a profiler context. So a real Trainer's hook
    dispatch runs those six with and without a StepTimer, alternately, the best of three each."""
    data = (torch.zeros(batch, features), torch.zeros(batch, dtype=torch.long))
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    loss = torch.zeros(())
    hooks = [("on_train_batch_start", (data, 0)), ("on_before_zero_grad", (optimizer,)),
             ("on_before_backward", (loss,)), ("on_after_backward", ()),
             ("on_before_optimizer_step", (optimizer,)), ("on_train_batch_end", ({"loss": loss}, data, 0))]

    def per_step(callbacks: list[pl.Callback]) -> float:
        trainer = pl.Trainer(accelerator="cpu", callbacks=callbacks, logger=False, enable_progress_bar=False,
                             enable_checkpointing=False, enable_model_summary=False)
        started = time.perf_counter()
        for _ in range(repeats):
            for name, hook_args in hooks:
                lightning_call._call_callback_hooks(trainer, name, *hook_args)
        return (time.perf_counter() - started) / repeats

    timer = StepTimer(StepMeter(5))
    timer.on_train_epoch_start(None, None)  # type: ignore[arg-type]
    with_timer, without = [], []
    for _ in range(3):
        with_timer.append(per_step([timer]))
        without.append(per_step([]))
    sampler = Sampler(interval_s=1.0)
    started = time.perf_counter()
    for _ in range(50):
        sampler.sample()
    return max(min(with_timer) - min(without), 0.0), (time.perf_counter() - started) / 50


def bench_overhead(args: argparse.Namespace, root: Path) -> bool:
    batch = 256
    steps_per_epoch = max(1, args.steps // args.epochs)
    x, y = synthetic(steps_per_epoch * batch, args.features)
    conf = fit_conf({"max_epochs": args.epochs, "seed": 0})
    print(f"\n== Overhead: cl_hpc.learn.training.fit, TabularClassifier hidden={args.hidden} layers=2, batch {batch}, "
          f"{steps_per_epoch * args.epochs} steps ({args.epochs} epochs), num_workers=0, "
          f"torch threads {torch.get_num_threads()}; {args.pairs} interleaved pairs")
    # imports, first-call costs
    one_fit(x[: batch * 20], y[: batch * 20], conf, args.hidden, batch, root / "warm", profiled=True)
    runs: list[FitRun] = []
    for i in range(args.pairs):
        for profiled in (True, False):
            run = one_fit(x, y, conf, args.hidden, batch, root / f"r{i}-{int(profiled)}", profiled)
            runs.append(run)
            print(f"  pair {i + 1}  profiler {'on ' if profiled else 'off'}  {run.steps_per_s:8.1f} steps/s  "
                  f"{run.steps_per_cpu_s:8.1f} steps/CPU-s")
    on = [r for r in runs if r.profiled]
    off = [r for r in runs if not r.profiled]
    hook_s, tick_s = direct_costs(args.features, batch)
    med = lambda rs, key: statistics.median(getattr(r, key) for r in rs)  # noqa: E731
    wall_ratio = med(on, "steps_per_s") / med(off, "steps_per_s")
    cpu_ratio = med(on, "steps_per_cpu_s") / med(off, "steps_per_cpu_s")
    pairs = sorted(a.steps_per_s / b.steps_per_s for a, b in zip(on, off))
    step_s = 1.0 / med(off, "steps_per_s")
    direct = hook_s / step_s + tick_s / ProfileSettings().interval_s
    verdict = lambda loss: "PASS" if loss < OVERHEAD_TARGET else "FAIL"  # noqa: E731
    rows = [
        ("steps/s (wall), median", f"{med(on, 'steps_per_s'):.1f}", f"{med(off, 'steps_per_s'):.1f}",
         f"{wall_ratio:.4f}", f"{1 - wall_ratio:+.2%}", verdict(1 - wall_ratio)),
        ("  pair ratios, min/median/max", "", "", f"{pairs[0]:.3f}/{statistics.median(pairs):.3f}/{pairs[-1]:.3f}",
         "", ""),
        ("steps/CPU-s, median", f"{med(on, 'steps_per_cpu_s'):.1f}", f"{med(off, 'steps_per_cpu_s'):.1f}",
         f"{cpu_ratio:.4f}", f"{1 - cpu_ratio:+.2%}", verdict(1 - cpu_ratio)),
        ("direct: hooks/step + sampler/s", f"{hook_s * 1e6:.1f} us + {tick_s * 1e3:.2f} ms",
         f"step {step_s * 1e3:.2f} ms", "", f"{direct:+.2%}", verdict(direct)),
        ("final train loss", f"{on[0].loss:.6f}", f"{off[0].loss:.6f}", f"{on[0].loss / off[0].loss:.6f}", "", ""),
        ("after trainer.fit, s (median)", f"{med(on, 'after_s'):.3f}", f"{med(off, 'after_s'):.3f}", "", "",
         "FLOP count"),
        ("TaskProfiler.finish, s (median)", f"{med(on, 'finish_s'):.3f}", "", "", "", "record"),
    ]
    table(["", "profiler on", "off", "on/off", "loss", f"< {OVERHEAD_TARGET:.0%}"], rows)
    ok = 1 - wall_ratio < OVERHEAD_TARGET
    spread = pairs[-1] - pairs[0]
    if spread > 4 * OVERHEAD_TARGET:
        print(f"note: on/off pair ratios spread over {spread:.0%}: this machine's noise is far above the 1% "
              f"to resolve end to end (CPU time suffers too: shared caches, steal); the direct row, the "
              f"profiler's own costs timed alone, is the steady measure")
    print(f"throughput loss {1 - wall_ratio:+.2%} (target < {OVERHEAD_TARGET:.0%}): {'PASS' if ok else 'FAIL'}")
    return ok


# ---- stall accuracy -------------------------------------------------------------------------------


class SlowBatches(Dataset):
    """Whole batches by index list, then ``delay_s`` of sleep: a loader that takes that long per batch.
    Clocks each fetch (indexing included): the independent measurement of the truth."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch: int, delay_s: float) -> None:
        self.x, self.y, self.batch, self.delay_s = x, y, batch, delay_s
        self.calls: list[tuple[float, float]] = []

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        start = time.perf_counter()
        out = self.x[rows], self.y[rows]
        if self.delay_s > 0:
            time.sleep(self.delay_s)
        self.calls.append((start, time.perf_counter()))
        return out

    def loader(self) -> DataLoader:
        return DataLoader(self, sampler=BatchSampler(SequentialSampler(self), self.batch, drop_last=True),
                          batch_size=None)

    def truth(self, first: int, last: int) -> tuple[float, float]:
        """(share of wall time in the dataset, mean fetch seconds) from fetch ``first`` to ``last``."""
        inside = [end - start for start, end in self.calls[first:last]]
        return sum(inside) / (self.calls[last][0] - self.calls[first][0]), statistics.fmean(inside)


class ComputeClock(pl.Callback):
    """Calibration only: the span of each training step, on_train_batch_start to on_train_batch_end."""

    def __init__(self) -> None:
        self.spans: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, *args: Any) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        self.spans.append(time.perf_counter() - self._start)


@dataclass
class StallRun:
    target: float
    delay_s: float
    truth: float
    measured: float
    wait_s: float  # the profiler's data-wait per steady step
    fetch_s: float  # the dataset's own time per fetch
    step_s: float  # the profiler's median step

    @property
    def error_pp(self) -> float:
        return 100 * (self.measured - self.truth)


def stall_fit(args: argparse.Namespace, root: Path, delay_s: float, profiled: bool,
              extra: list[pl.Callback]) -> tuple[SlowBatches, TaskProfiler | None]:
    torch.manual_seed(0)
    x, y = (torch.from_numpy(a) for a in synthetic(args.stall_steps * args.batch, args.features))
    data = SlowBatches(x, y, args.batch, delay_s)
    module = TabularClassifier(args.features, 2, args.stall_hidden, 2)
    prof, waits = None, None
    callbacks = list(extra)
    if profiled:
        identity = {"run_id": "bench", "key": "stall", "attempt": 1, "segment": 0}
        prof = TaskProfiler(root, identity, {}, ProfileSettings(ceiling=False)).start()
        timer = prof.lightning_callback()
        callbacks.append(timer)  # last, as training.fit adds it
        waits = timer.waits  # and its data-wait profiler, as training.fit gives it to the Trainer
    conf = fit_conf({"max_epochs": 1})
    trainer = build_trainer(conf, callbacks, args.stall_steps, root, profiler=waits)
    trainer.fit(module, data.loader())
    return data, prof


def bench_stall(args: argparse.Namespace, root: Path) -> bool:
    clock = ComputeClock()
    stall_fit(args, root / "calibrate", 0.0, profiled=False, extra=[clock])
    compute_s = statistics.median(clock.spans[5:])
    print(f"\n== Stall accuracy: TabularClassifier hidden={args.stall_hidden} layers=2, batch {args.batch}, "
          f"{args.stall_steps} steps a level, torch threads {torch.get_num_threads()}; calibrated compute "
          f"{compute_s * 1e3:.2f} ms/step; delay d = c * target / (1 - target), slept per batch in the dataset")
    runs = []
    for target in args.levels:
        delay = compute_s * target / (1 - target)
        data, prof = stall_fit(args, root / f"level-{target}", delay, profiled=True, extra=[])
        record = prof.finish("COMPLETED")
        steps = record["steps"]
        warmup = prof.settings.warmup_steps
        truth, fetch = data.truth(warmup, len(data.calls) - 1)  # the steady steps: past the warm-up
        runs.append(StallRun(target, delay, truth, steps["stall_fraction"],
                             steps["data_wait_s"] / steps["steady_steps"], fetch, steps["step_p50_s"]))
    rows = []
    for r in runs:
        ok = abs(r.error_pp) <= STALL_TARGET_PP
        rows.append((f"{r.target:.0%}", f"{r.delay_s * 1e3:.2f}", f"{r.step_s * 1e3:.2f}", f"{r.truth:.2%}",
                     f"{r.measured:.2%}", f"{r.error_pp:+.2f}", f"{(r.wait_s - r.fetch_s) * 1e3:.3f}",
                     "PASS" if ok else "FAIL"))
    table(["target", "delay ms", "step ms", "truth", "measured", "error pp", "loop ms", f"+-{STALL_TARGET_PP:g} pp"],
          rows)
    passed = all(abs(r.error_pp) <= STALL_TARGET_PP for r in runs)
    worst = max(runs, key=lambda r: abs(r.error_pp))
    print(f"worst error {worst.error_pp:+.2f} pp at target {worst.target:.0%}: {'PASS' if passed else 'FAIL'}")
    return passed


# ---- output ---------------------------------------------------------------------------------------


def table(header: list[str], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).rjust(w) if i else str(c).ljust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("overhead", "stall"), help="run one section (default: both)")
    parser.add_argument("--pairs", type=int, default=5, help="overhead: interleaved on/off pairs (default 5)")
    parser.add_argument("--steps", type=int, default=3000, help="overhead: training steps per fit (default 3000)")
    parser.add_argument("--epochs", type=int, default=3, help="overhead: epochs the steps are split into (default 3)")
    parser.add_argument("--hidden", type=int, default=64,
                        help="overhead: TabularClassifier width (default 64, the project's)")
    parser.add_argument("--features", type=int, default=32, help="input features (default 32)")
    parser.add_argument("--levels", type=lambda s: [float(v) for v in s.split(",")], default=[0.0, 0.1, 0.3, 0.6],
                        help="stall: target shares of step time, comma-separated (default 0,0.1,0.3,0.6)")
    parser.add_argument("--stall-steps", type=int, default=200, help="stall: steps per level (default 200)")
    parser.add_argument("--stall-hidden", type=int, default=1024,
                        help="stall: TabularClassifier width; sets the step time (default 1024: ~25 ms on 2 cores)")
    parser.add_argument("--batch", type=int, default=256, help="stall: rows per batch (default 256)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared 2-core VM, OpenMP threads waiting for a "
                             "descheduled sibling turn noise into 5x swings; 0 = torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*(srun|treespec|does not have many workers).*")
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.pop("SLURM_JOB_ID", None)  # memory from VmHWM, as outside a job cgroup
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_profiler-") as tmp:
        os.environ["CL_HPC_CACHE_DIR"] = str(Path(tmp) / "cache")  # the matmul ceiling: measured once, here
        if args.only in (None, "overhead"):
            results["overhead"] = bench_overhead(args, Path(tmp) / "overhead")
        if args.only in (None, "stall"):
            results["stall"] = bench_stall(args, Path(tmp) / "stall")
    print("\n" + "  ".join(f"{name}: {'PASS' if ok else 'FAIL'}" for name, ok in results.items()))


if __name__ == "__main__":
    main()
