"""The profiler's pure parts on tables of cases, and its psutil sampler on a real child process.

- ``StepMeter``: warm-up and each epoch's first step out of the steady state, stall fraction,
  percentiles, invalid input;
- ``record``: stall diagnosis, memory-source precedence, MFU, the record's shape;
- ``host``: the job-cgroup and VmHWM parsers on text as the kernel and Slurm's cgroup plugins write
  it (the /proc/<pid>/status texts are pasted from this machine; the /proc/self/cgroup texts follow
  the layouts that Slurm's cgroup/v1 and cgroup/v2 plugins create, as quoted in public bug reports);
- ``sampler``: Series compaction, GPU summaries from hand-fed columns (NVML is the one fake), and a
  real ``ProcessTree`` that must see a child's memory, its peak included after the child frees it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cl_hpc.profile import record
from cl_hpc.profile.diagnosis import STALL_THRESHOLD, Verdict, diagnose
from cl_hpc.profile.host import job_cgroup_dir, parse_vm_hwm, read_cgroup_peak_mb
from cl_hpc.profile.meter import StepMeter
from cl_hpc.profile.sampler import Sampler, Series, gpu_summary
from cl_hpc.profile.tree import MIN_CPU_WINDOW_S, ProcessTree

MB = 2**20


# ---- StepMeter -----------------------------------------------------------------------------------

def feed(meter: StepMeter, epochs: list[list[tuple[float, float]]]) -> None:
    for steps in epochs:
        for i, (wait, compute) in enumerate(steps):
            meter.update(wait, compute, first_of_epoch=i == 0, samples=10)


@pytest.mark.parametrize(
    "warmup, epochs, steady, wait, compute, warmup_s, epoch_first",
    [
        # warm-up 2: the slow first two steps (one also the epoch's first) stay out of the figures
        (2, [[(5.0, 1.0), (3.0, 1.0), (1.0, 3.0), (1.0, 3.0)]], 2, 2.0, 6.0, 10.0, [6.0]),
        # no warm-up: the epoch's first step is still left out, and reported apart
        (0, [[(5.0, 1.0), (1.0, 3.0), (1.0, 3.0)]], 2, 2.0, 6.0, 0.0, [6.0]),
        # two epochs: the second epoch's first step (worker start-up again) is excluded too
        (1, [[(4.0, 1.0), (1.0, 1.0), (1.0, 1.0)], [(7.0, 1.0), (1.0, 1.0)]], 3, 3.0, 3.0, 5.0, [5.0, 8.0]),
        # everything is warm-up: no steady state at all
        (10, [[(1.0, 1.0), (1.0, 1.0)]], 0, 0.0, 0.0, 4.0, [2.0]),
    ],
)
def test_meter_excludes_warmup_and_epoch_first_steps(warmup: int, epochs: list[list[tuple[float, float]]],
                                                     steady: int, wait: float, compute: float,
                                                     warmup_s: float, epoch_first: list[float]) -> None:
    meter = StepMeter(warmup)
    feed(meter, epochs)
    stats = meter.compute()
    assert stats.steps == sum(len(e) for e in epochs)
    assert stats.steady_steps == steady
    assert stats.data_wait_s == pytest.approx(wait)
    assert stats.compute_s == pytest.approx(compute)
    assert stats.warmup_s == pytest.approx(warmup_s)
    assert stats.epoch_first_s == pytest.approx(epoch_first)
    if steady == 0:
        assert stats.stall_fraction is None and stats.step_p50_s is None and stats.samples_per_s is None


@pytest.mark.parametrize(
    "pairs, stall",
    [
        ([(0.0, 1.0)] * 4, 0.0),
        ([(1.0, 3.0)] * 4, 0.25),
        ([(3.0, 1.0), (1.0, 3.0)], 0.5),  # a ratio of sums, not a mean of per-step ratios
        ([(9.0, 1.0), (0.0, 10.0)], 0.45),
        ([(0.0, 0.0)] * 3, None),  # zero time measured: no fraction rather than a division by zero
    ],
)
def test_meter_stall_fraction_is_wait_over_wall_time(pairs: list[tuple[float, float]], stall: float | None) -> None:
    meter = StepMeter(warmup=0)
    meter.update(100.0, 100.0, first_of_epoch=True)  # excluded: must not move the fraction
    for wait, compute in pairs:
        meter.update(wait, compute)
    assert meter.compute().stall_fraction == (pytest.approx(stall) if stall is not None else None)


@pytest.mark.parametrize(
    "walls, p50, p95",
    [
        ([2.0], 2.0, 2.0),
        ([1.0, 3.0], 2.0, 2.9),  # "inclusive": interpolated between observed steps
        ([float(i) for i in range(1, 101)], 50.5, 95.05),
        ([1.0] * 99 + [50.0], 1.0, 1.0),  # one straggler moves neither
        ([5.0, 1.0, 3.0, 2.0, 4.0], 3.0, 4.8),  # the order of the steps does not matter
    ],
)
def test_meter_percentiles_of_steady_step_time(walls: list[float], p50: float, p95: float) -> None:
    meter = StepMeter(warmup=0)
    meter.update(1000.0, 0.0, first_of_epoch=True)
    for wall in walls:
        meter.update(wall / 4, wall * 3 / 4)
    stats = meter.compute()
    assert (stats.step_p50_s, stats.step_p95_s) == (pytest.approx(p50), pytest.approx(p95))
    assert stats.step_p95_s <= max(walls)


def test_meter_samples_per_second_and_reset() -> None:
    meter = StepMeter(warmup=1)
    feed(meter, [[(1.0, 1.0), (0.5, 0.5), (0.5, 0.5), (0.5, 0.5)]])  # 10 samples a step
    assert meter.compute().samples_per_s == pytest.approx(30 / 3.0)
    meter.reset()
    stats = meter.compute()
    assert (stats.steps, stats.steady_steps, stats.warmup_s, stats.epoch_first_s) == (0, 0, 0.0, [])
    assert meter.warmup == 1  # reset forgets the steps, not the settings
    assert set(stats.to_dict()) == {"steps", "steady_steps", "data_wait_s", "compute_s", "step_p50_s",
                                    "step_p95_s", "stall_fraction", "warmup_s", "epoch_first_s", "samples_per_s"}


@pytest.mark.parametrize("wait, compute", [(-0.001, 1.0), (1.0, -1.0), (float("nan"), 1.0),
                                           (1.0, float("inf")), (float("-inf"), 0.0)])
def test_meter_rejects_impossible_times(wait: float, compute: float) -> None:
    meter = StepMeter(warmup=0)
    with pytest.raises(ValueError, match="finite and >= 0"):
        meter.update(wait, compute)
    assert meter.compute().steps == 0  # the bad step was not half-counted


def test_meter_rejects_negative_warmup() -> None:
    with pytest.raises(ValueError, match="warmup must be >= 0"):
        StepMeter(-1)


# ---- record --------------------------------------------------------------------------------------

# The probe of a loader whose fetch is an in-memory fancy index (as measured on the test VM), and
# of one whose fetch reads and decodes (5 ms a batch).
IN_MEMORY = {"fetch_s": 0.00007, "worker_batch_s": 0.0014, "worker_start_s": 0.01}
DECODES = {"fetch_s": 0.005, "worker_batch_s": 0.0014, "worker_start_s": 0.01}
V = Verdict


@pytest.mark.parametrize(
    "stall, workers, busy, iowait, probe, steps, wait, verdict, starts_with",
    [
        (None, 0, None, None, None, None, None, V.NO_STEPS, "no step timing"),
        (0.02, 0, None, None, None, 500, 0.0001, V.COMPUTE_BOUND, "compute-bound"),
        (0.15, 0, None, None, DECODES, 500, 0.004, V.COMPUTE_BOUND, "compute-bound"),  # the one threshold: 20%
        (0.1999, 4, 1.0, 0.5, None, 500, 0.001, V.COMPUTE_BOUND, "compute-bound"),  # under it nothing else matters
        # no workers: advised only where the probe measured a fetch dearer than a worker's IPC
        (0.40, 0, None, 0.0, DECODES, 500, 0.004, V.IN_PROCESS, "data-bound (40% of step time waiting) with no "
                                                               "DataLoader workers: a batch takes 5 ms to fetch"),
        (0.40, 0, None, 0.0, IN_MEMORY, 500, 0.001, V.WORKERS_WOULD_SLOW, "data-bound (40% of step time waiting) "
                                                                        "with no DataLoader workers, but a batch"),
        # the default pipeline as the issue saw it: 2.6 ms steps, a 10-20% wait, in-memory tensors
        (0.25, 0, None, 0.0, IN_MEMORY, 504, 0.00065, V.WORKERS_WOULD_SLOW, "data-bound"),
        # dearer fetch but a short fit: 3 steps save 10.8 ms, less than the 20 ms start-up
        (0.40, 0, None, 0.0, {**DECODES, "worker_start_s": 0.02}, 3, 0.004, V.WORKERS_WOULD_SLOW, "data-bound"),
        # the wait bounds the gain: workers cannot save more than the 0.5 ms wait, 5 ms over 10 steps
        (0.40, 0, None, 0.0, DECODES, 10, 0.0005, V.WORKERS_WOULD_SLOW, "data-bound"),
        (0.40, 0, None, 0.0, DECODES, 100, 0.0005, V.IN_PROCESS, "data-bound"),
        (0.40, 0, None, 0.0, None, 500, 0.004, V.IN_PROCESS_UNMEASURED, "data-bound"),  # a plain loop: not probed
        # with workers
        (0.40, 4, 0.95, 0.0, None, 500, 0.004, V.PREPROCESSING_BOUND, "preprocessing-bound: 4 workers 95% busy"),
        (0.40, 4, 0.95, 0.30, None, 500, 0.004, V.PREPROCESSING_BOUND, "preprocessing-bound"),  # busy despite iowait
        (0.40, 4, 0.25, 0.01, None, 500, 0.004, V.STORAGE_BOUND, "storage-bound"),  # waiting on reads, not CPU
        (0.40, 4, 0.65, 0.25, None, 500, 0.004, V.STORAGE_BOUND, "storage-bound"),  # the machine waits for I/O
        (0.40, 4, None, None, None, 500, 0.004, V.STORAGE_BOUND, "storage-bound"),  # workers that never used CPU
        (0.40, 4, 0.65, 0.02, None, 500, 0.004, V.UNCLEAR, "data-bound (40% of step time waiting), workers 65% busy"),
    ],
)
def test_diagnose(stall: float | None, workers: int, busy: float | None, iowait: float | None,
                  probe: dict[str, float] | None, steps: int, wait: float, verdict: Verdict,
                  starts_with: str) -> None:
    found = diagnose(stall, workers, busy, iowait, probe, steps, wait)
    assert found.verdict is verdict and found.text.startswith(starts_with), found
    advises = "num_workers > 0" in found.text or "add workers" in found.text
    assert advises == verdict.adds_workers == (verdict in (V.IN_PROCESS, V.PREPROCESSING_BOUND))


def test_one_stall_threshold() -> None:
    assert diagnose(STALL_THRESHOLD, 0, probe=DECODES).verdict is V.IN_PROCESS
    assert diagnose(STALL_THRESHOLD - 1e-9, 0, probe=DECODES).verdict is V.COMPUTE_BOUND


@pytest.mark.parametrize(
    "cgroup, hwm, rss, expected",
    [
        (900.0, 1200.0, 800.0, {"peak_mb": 900.0, "source": "cgroup", "exact": True}),
        (None, 1200.0, 800.0, {"peak_mb": 1200.0, "source": "vmhwm", "exact": True}),
        (0.0, 1200.0, 800.0, {"peak_mb": 1200.0, "source": "vmhwm", "exact": True}),  # an empty cgroup file
        (None, None, 800.0, {"peak_mb": 800.0, "source": "rss-sampled", "exact": False}),
        (None, None, None, {"peak_mb": None, "source": "rss-sampled", "exact": False}),
    ],
)
def test_best_memory_precedence(cgroup: float | None, hwm: float | None, rss: float | None,
                                expected: dict[str, Any]) -> None:
    assert record.best_memory(cgroup, hwm, rss) == expected


@pytest.mark.parametrize(
    "flops, step_s, peak, expected",
    [
        (1e9, 0.01, 1e12, 0.1),
        (6e12, 0.5, 989e12, 6e12 / 0.5 / 989e12),
        (None, 0.01, 1e12, None), (0.0, 0.01, 1e12, None),
        (1e9, None, 1e12, None), (1e9, 0.0, 1e12, None),
        (1e9, 0.01, None, None),  # a CPU, or a GPU missing from the datasheet table
    ],
)
def test_mfu(flops: float | None, step_s: float | None, peak: float | None, expected: float | None) -> None:
    assert record.mfu(flops, step_s, peak) == (pytest.approx(expected) if expected is not None else None)


def _record(steps: dict[str, Any] | None, compute: dict[str, Any] | None, notes: dict[str, Any],
            host: dict[str, Any] | None = None, probe: dict[str, Any] | None = None) -> dict[str, Any]:
    return record.build_record(
        identity={"run_id": "r1", "key": "train", "attempt": 1, "segment": 0},
        timing={"outcome": "COMPLETED", "elapsed_s": 12.0},
        steps=steps, host=host or {"workers_max": 0, "workers_cpu_pct_mean": None, "iowait_fraction": 0.0},
        memory={"peak_mb": 512.0, "source": "vmhwm", "exact": True},
        gpus=[], compute=compute, notes=notes, series={"t": [0.0, 1.0]}, probe=probe,
    )


def test_build_record_shape() -> None:
    steps = {"stall_fraction": 0.5, "step_p50_s": 0.01}
    compute = {"flops_per_step": 1e9, "peak_flops_per_s": 1e12, "ceiling_flops_per_s": None, "why": []}
    out = _record(steps, compute, {"num_workers": 0})
    assert set(out) == {"version", "run_id", "key", "attempt", "segment", "outcome", "elapsed_s", "steps", "host",
                        "memory", "gpus", "compute", "notes", "stall", "series", "sacct"}
    assert out["version"] == record.VERSION and out["sacct"] is None and out["steps"] is steps
    assert out["compute"]["achieved_flops_per_s"] == pytest.approx(1e11)
    assert out["compute"]["mfu_datasheet"] == pytest.approx(0.1)
    assert out["compute"]["mfu_ceiling"] is None
    assert "flops_per_step" in out["compute"] and compute.keys() <= out["compute"].keys()
    assert out["stall"]["fraction"] == 0.5
    assert out["stall"]["diagnosis"].startswith("data-bound (50% of step time waiting) with no DataLoader workers")


def test_build_record_without_steps_or_compute() -> None:
    out = _record(None, None, {})
    assert out["steps"] is None and out["compute"] is None
    assert out["stall"] == {"fraction": None, "verdict": "no-steps", "diagnosis": diagnose(None, 0).text,
                            "probe": None}


def test_build_record_diagnoses_with_the_probe_and_the_mean_wait() -> None:
    steps = {"stall_fraction": 0.3, "step_p50_s": 0.003, "steps": 504, "steady_steps": 490, "data_wait_s": 0.49}
    out = _record(steps, None, {"num_workers": 0}, probe=IN_MEMORY)
    assert out["stall"]["verdict"] == "workers-would-slow" and out["stall"]["probe"] == IN_MEMORY
    out = _record(steps, None, {"num_workers": 0}, probe=DECODES)  # gain min(3.6, 1.0) ms x 504 steps > 10 ms
    assert out["stall"]["verdict"] == "in-process" and "num_workers > 0" in out["stall"]["diagnosis"]


def test_build_record_takes_workers_from_the_sampler_when_the_task_noted_none() -> None:
    host = {"workers_max": 4, "workers_cpu_pct_mean": 390.0, "iowait_fraction": 0.0}
    out = _record({"stall_fraction": 0.3, "step_p50_s": None}, {"flops_per_step": 1e9}, {}, host)
    assert out["stall"]["diagnosis"].startswith("preprocessing-bound: 4 workers")
    assert out["compute"]["achieved_flops_per_s"] is None and out["compute"]["mfu_datasheet"] is None


def test_build_record_trusts_a_noted_zero_workers_over_other_child_processes() -> None:
    # The sampler counts every descendant (torch.compile's compile workers, a subprocess the task runs);
    # a task that says num_workers=0 loads data in its own process whatever else runs beside it.
    host = {"workers_max": 4, "workers_cpu_pct_mean": 390.0, "iowait_fraction": 0.0}
    out = _record({"stall_fraction": 0.3, "step_p50_s": 0.01}, None, {"num_workers": 0}, host)
    assert out["stall"]["diagnosis"].startswith("data-bound (30% of step time waiting) with no DataLoader workers")


# ---- host: the job's cgroup ----------------------------------------------------------------------

# cgroup v2 under Slurm's cgroup/v2 plugin: slurmstepd's scope holds job_<id>/step_<s>/user/task_<t>.
CGROUP_V2_SLURM = "0::/system.slice/slurmstepd.scope/job_1234/step_batch/user/task_0\n"
# The same with multiple-slurmd naming (the scope is prefixed with the node name).
CGROUP_V2_SLURM_NODE = "0::/system.slice/node07_slurmstepd.scope/job_1234/step_0/user/task_0\n"
# cgroup v1 under task/cgroup (ConstrainRAMSpace=yes): memory, cpuset, devices and freezer per job;
# the other controllers stay in slurmd's service.
CGROUP_V1_SLURM = """\
11:blkio:/system.slice/slurmd.service
10:devices:/slurm/uid_1000/job_1234/step_0/task_0
9:hugetlb:/
8:cpuset:/slurm/uid_1000/job_1234/step_0
7:perf_event:/
6:pids:/system.slice/slurmd.service
5:net_prio,net_cls:/
4:freezer:/slurm/uid_1000/job_1234/step_0
3:memory:/slurm/uid_1000/job_1234/step_0/task_0
2:cpuacct,cpu:/system.slice/slurmd.service
1:name=systemd:/system.slice/slurmd.service
"""
# cgroup v1 where only the devices controller is per job: memory is the node's, so no job peak.
CGROUP_V1_NO_MEMORY = """\
10:devices:/slurm/uid_1000/job_1234/step_batch/task_0
8:memory:/system.slice/slurmd.service
1:name=systemd:/system.slice/slurmd.service
"""
# A container without per-job cgroups (this machine's own /proc/self/cgroup, pasted).
CGROUP_CONTAINER = """\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/deca7ad2001c5daead7afef669cd3280
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
"""


@pytest.mark.parametrize(
    "text, job_id, expected",
    [
        (CGROUP_V2_SLURM, "1234", "system.slice/slurmstepd.scope/job_1234"),
        (CGROUP_V2_SLURM_NODE, "1234", "system.slice/node07_slurmstepd.scope/job_1234"),
        (CGROUP_V1_SLURM, "1234", "memory/slurm/uid_1000/job_1234"),
        ("3:memory:/slurm/uid_1000/job_1234\n", "1234", "memory/slurm/uid_1000/job_1234"),  # the job itself
        (CGROUP_V1_NO_MEMORY, "1234", None),
        (CGROUP_CONTAINER, "1234", None),
        ("0::/\n", "1234", None),
        (CGROUP_V2_SLURM, "99", None),  # another job's cgroup
        (CGROUP_V2_SLURM, "123", None),  # a prefix of the id is not the id
        (CGROUP_V2_SLURM, "12345", None),
        (CGROUP_V2_SLURM, None, None),  # not under Slurm
        (CGROUP_V2_SLURM, "", None),
        ("", "1234", None),
    ],
)
def test_job_cgroup_dir(text: str, job_id: str | None, expected: str | None) -> None:
    root = Path("/sys/fs/cgroup")
    assert job_cgroup_dir(text, job_id, root) == (root / expected if expected else None)


@pytest.mark.parametrize(
    "files, expected_mb",
    [
        ({"memory.peak": "2147483648\n"}, 2048.0),  # v2
        ({"memory.max_usage_in_bytes": "536870912\n"}, 512.0),  # v1
        ({"memory.peak": "1048576\n", "memory.max_usage_in_bytes": "5368709120\n"}, 1.0),  # v2 first
        ({"memory.peak": "max\n", "memory.max_usage_in_bytes": "3145728\n"}, 3.0),  # unreadable: next
        ({"memory.current": "1048576\n"}, None),  # kernel < 5.19: v2 without memory.peak
        ({}, None),
    ],
)
def test_read_cgroup_peak_mb(tmp_path: Path, files: dict[str, str], expected_mb: float | None) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert read_cgroup_peak_mb(tmp_path) == expected_mb


def test_read_cgroup_peak_mb_without_a_job_cgroup(tmp_path: Path) -> None:
    assert read_cgroup_peak_mb(None) is None
    assert read_cgroup_peak_mb(tmp_path / "gone") is None


# ---- host: VmHWM -----------------------------------------------------------------------------------

# /proc/<pid>/status of a python process on this machine (kernel 6.18), pasted.
STATUS_PYTHON = """\
Name:\tpython
Umask:\t0022
State:\tR (running)
Tgid:\t27848
Ngid:\t0
Pid:\t27848
PPid:\t27846
TracerPid:\t0
Uid:\t0\t0\t0\t0
Gid:\t0\t0\t0\t0
FDSize:\t256
Groups:\t 
NStgid:\t27848
NSpid:\t27848
NSpgid:\t27846
NSsid:\t24739
Kthread:\t0
VmPeak:\t   12544 kB
VmSize:\t   12512 kB
VmLck:\t       0 kB
VmPin:\t       0 kB
VmHWM:\t    8716 kB
VmRSS:\t    8716 kB
RssAnon:\t    2868 kB
RssFile:\t    5848 kB
RssShmem:\t       0 kB
VmData:\t    4624 kB
VmStk:\t     132 kB
VmExe:\t       4 kB
VmLib:\t    4280 kB
VmPTE:\t      56 kB
VmSwap:\t       0 kB
HugetlbPages:\t       0 kB
CoreDumping:\t0
THP_enabled:\t1
Threads:\t1
"""
# A kernel thread (ksoftirqd/0 here) has no Vm* lines at all.
STATUS_KTHREAD = """\
Name:\tksoftirqd/0
Umask:\t0022
State:\tS (sleeping)
Tgid:\t14
Ngid:\t0
Pid:\t14
PPid:\t2
TracerPid:\t0
Uid:\t0\t0\t0\t0
Gid:\t0\t0\t0\t0
FDSize:\t64
Groups:\t 
NStgid:\t14
NSpid:\t14
NSpgid:\t0
NSsid:\t0
Kthread:\t1
Threads:\t1
"""


@pytest.mark.parametrize(
    "status, expected",
    [
        (STATUS_PYTHON, 8716 * 1024.0),  # VmHWM, not VmPeak (virtual) nor VmRSS (now)
        (STATUS_KTHREAD, None),
        ("", None),
    ],
)
def test_parse_vm_hwm(status: str, expected: float | None) -> None:
    assert parse_vm_hwm(status) == expected


def test_parse_vm_hwm_reads_this_process() -> None:
    hwm = parse_vm_hwm(Path(f"/proc/{os.getpid()}/status").read_text())
    assert hwm is not None and hwm > 10 * MB  # a Python with pytest loaded


# ---- sampler: Series -------------------------------------------------------------------------------

def test_series_halves_evenly_and_keeps_the_last_point() -> None:
    series = Series(max_points=4)
    for i in range(5):
        series.add(float(i), {"v": float(10 * i)})
    assert series.columns == {"t": [0.0, 2.0, 4.0], "v": [0.0, 20.0, 40.0]}
    for i in range(5, 40):
        series.add(float(i), {"v": float(10 * i)})
    t = series.columns["t"]
    assert len(t) <= 4 and t[0] == 0.0 and t[-1] == 39.0  # the first and the latest point survive
    assert t == sorted(t) and series.columns["v"] == [10 * x for x in t]  # columns stay aligned


def test_series_back_fills_a_late_column_and_skips_gaps() -> None:
    series = Series()
    series.add(0.0, {"cpu": 50.0})
    series.add(1.0, {"cpu": 60.0, "gpu0.power_w": 300.0})  # a GPU came up
    series.add(2.0, {"cpu": 70.0, "gpu0.power_w": None})  # NVML could not tell this time
    assert series.columns["gpu0.power_w"] == [None, 300.0, None]
    assert series.column("gpu0.power_w") == [300.0]
    assert series.column("missing") == []
    assert series.to_dict() == series.columns and series.to_dict() is not series.columns


@pytest.mark.parametrize(
    "value, stored",
    [
        (123.456789, 123.5), (0.000123456, 0.0001235),  # 4 significant digits for measurements
        (86_400_123_456, 86_400_123_456.0),  # an integer counter stays exact
        (float("nan"), None), (float("inf"), None), (True, None), ("x", None), (None, None),
    ],
)
def test_series_compacts_values(value: Any, stored: float | None) -> None:
    series = Series()
    series.add(0.12345, {"x": value})
    assert series.columns["x"] == [stored] and series.columns["t"] == [0.123]


# ---- sampler: GPU summaries -------------------------------------------------------------------------

def gpu_series(rows: list[dict[str, Any]]) -> Series:
    series = Series()
    for t, row in enumerate(rows):
        series.add(float(t), {f"gpu0.{k}": v for k, v in row.items()})
    return series


def test_gpu_energy_from_the_driver_counter() -> None:
    # NVML's counter counts millijoules since the driver loaded: a day at 1 kW is 8.64e10 mJ.
    start = 86_400_123_456
    series = gpu_series([{"energy_mj": start, "power_w": 100.0}, {"energy_mj": start + 150_000, "power_w": 200.0},
                         {"energy_mj": start + 300_000, "power_w": 100.0}])
    summary = gpu_summary(series, 0)
    assert summary["energy_source"] == "nvml-counter"
    assert summary["energy_j"] == pytest.approx(300.0)  # the counter wins over the power integral


def test_gpu_energy_from_the_power_integral_without_a_counter() -> None:
    series = gpu_series([{"power_w": 100.0}, {"power_w": 200.0}, {"power_w": None}, {"power_w": 100.0}])
    summary = gpu_summary(series, 0)
    assert summary["energy_source"] == "power-integral"
    # trapezoids over the samples that have a value: 0-1 s 150 J, 1-3 s 300 J
    assert summary["energy_j"] == pytest.approx(450.0)
    assert gpu_summary(gpu_series([{"power_w": 100.0}]), 0)["energy_j"] is None  # one sample: no integral


def test_gpu_summary_means_and_maxima() -> None:
    series = gpu_series([
        {"util_pct": 90.0, "mem_used_mb": 1000.0, "temp_c": 60.0, "throttle_reasons": 0, "dram_bw_util_pct": 40.0,
         "sm_active_pct": 50.0, "tensor_active_pct": 10.0, "sm_clock_mhz": 1980.0, "power_w": 500.0},
        {"util_pct": 70.0, "mem_used_mb": 3000.0, "temp_c": 80.0, "throttle_reasons": 0x4 | 0x20,
         "dram_bw_util_pct": 60.0, "sm_active_pct": 70.0, "tensor_active_pct": 30.0, "sm_clock_mhz": 1500.0,
         "power_w": 700.0},
    ])
    summary = gpu_summary(series, 0)
    assert summary["util_pct_mean"] == 80.0 and summary["mem_used_mb_max"] == 3000.0
    assert summary["temp_c_max"] == 80.0 and summary["power_w_mean"] == 600.0
    assert summary["sm_active_pct_mean"] == 60.0 and summary["tensor_active_pct_mean"] == 20.0
    assert summary["dram_bw_pct_mean"] == 50.0  # from GpuSample.dram_bw_util_pct
    assert summary["sm_clock_mhz_mean"] == 1740.0
    assert summary["throttle_reasons_seen"] == [0x24]
    assert gpu_summary(series, 1)["util_pct_mean"] is None  # another device: nothing sampled


# ---- sampler: a real process tree -------------------------------------------------------------------

CHILD = """
import sys
block = b"x" * ({mb} * 2**20)  # written, so every page is resident
print("allocated", flush=True)
sys.stdin.readline()
del block  # one big allocation: freed straight back to the kernel
print("freed", flush=True)
sys.stdin.readline()
"""


def test_sampler_sees_a_childs_memory_and_its_peak_after_it_is_freed() -> None:
    child_mb = 200
    tree = ProcessTree()
    before = tree.sample()
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(mb=child_mb)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "allocated"
        sampler = Sampler(interval_s=0.05, tree=tree).start()  # samples once at start, child at its peak
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "freed"
        sampler.stop()  # and once at stop, after the child freed its block
    finally:
        child.kill()
        child.wait()
    rss = sampler.series.column("rss_mb")
    hwm = sampler.series.column("hwm_mb")
    summary = sampler.summary()
    assert sampler.errors == []
    assert summary["workers_max"] == 1 and summary["samples"] >= 2
    assert rss[0] - before.rss_mb > 0.9 * child_mb  # the child's pages count in the tree's RSS
    assert rss[-1] < rss[0] - 0.9 * child_mb  # ... and leave it when freed
    assert hwm[-1] - before.hwm_mb > 0.9 * child_mb  # while the high-water mark keeps the peak
    assert summary["hwm_mb_max"] >= summary["rss_mb_max"]


def test_sampler_keeps_gpu_columns_and_survives_a_failing_source() -> None:
    class Gpus:  # stands for cl_hpc.profile.nvml.GpuReader: NVML is the one thing faked here
        calls = 0

        def sample(self) -> list[dict[str, Any]]:
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("NVML_ERROR_GPU_IS_LOST")
            return [{"power_w": 250.0, "energy_mj": 1_000_000 + 1000 * self.calls}]

    sampler = Sampler(interval_s=60.0, gpus=Gpus())
    sampler.start()
    sampler.sample()  # the failing call: recorded, the sampling goes on
    sampler.stop()
    assert sampler.errors == ["RuntimeError: NVML_ERROR_GPU_IS_LOST"]
    assert sampler.series.column("gpu0.power_w") == [250.0, 250.0]
    summary = sampler.summary(n_gpus=1)
    assert summary["gpus"][0]["energy_j"] == pytest.approx(2.0)  # (1_003_000 - 1_001_000) mJ
    assert summary["workers_max"] == 0


def test_process_tree_reports_cpu_only_over_a_long_enough_window() -> None:
    tree = ProcessTree()
    assert tree.sample().cpu_pct is None  # a few ms since priming: a rate there is noise
    spent = time.process_time() + MIN_CPU_WINDOW_S + 0.05
    while time.process_time() < spent:  # busy for longer than the window, in CPU time
        pass
    busy = tree.sample()
    assert busy.cpu_pct is not None and busy.cpu_pct > 0 and busy.workers_cpu_pct == 0


def test_sampler_rejects_a_non_positive_interval() -> None:
    with pytest.raises(ValueError, match="interval_s must be > 0"):
        Sampler(interval_s=0)
