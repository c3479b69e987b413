"""The right-sizer's rules on tables of histories; no clock, no scheduler."""

from __future__ import annotations

import random
from dataclasses import fields, replace

import pytest

from cl_hpc.config.resources import Resources
from cl_hpc.errors import ConfigError, DataError
from cl_hpc.profile.diagnosis import STALL_THRESHOLD, Verdict, diagnose
from cl_hpc.rightsize.apply import outcome_of
from cl_hpc.rightsize.history import OUTCOMES, Observation, Outcome, history_key, rows_bucket
from cl_hpc.rightsize.recommend import Policy, Recommendation, recommend
from cl_hpc.states import AttemptState

REQ = Resources(cpus=4, gpus=0, mem_gb=8.0, time_min=50.0, partition="gpu", account="ml", qos="normal",
                constraint="a100", extra={"exclusive": True})


def run(age: int, **facts: object) -> Observation:
    """A completed attempt ``age`` runs before the newest (finished_at orders them; no wall clock)."""
    facts.setdefault("outcome", "COMPLETED")
    facts.setdefault("requested", REQ)
    return Observation(finished_at=1_000_000.0 - 3600 * age, **facts)  # type: ignore[arg-type]


def changed(rec: Recommendation) -> dict[str, object]:
    return {c.field: c.new for c in rec.changes}


# --- cold start -----------------------------------------------------------------------------------


@pytest.mark.parametrize("history", [[], [run(0, outcome="FAILED")], [run(0, outcome="PREEMPTED", elapsed_s=60.0)]])
def test_cold_start_keeps_the_declared_values(history: list[Observation]) -> None:
    rec = recommend(history, REQ)
    assert (rec.resources, rec.changes, rec.params, rec.basis) == (REQ, (), {}, 0)
    assert rec.notes and rec.notes[0].startswith("no history")


# --- memory ---------------------------------------------------------------------------------------

MEM_CASES = [
    # (history newest first, expected mem_gb, words in the reason)
    ([run(0, peak_mem_gb=2.0, peak_mem_exact=True)], 2.40625, ["peak 2 GB", "exact", "x 1.2 margin"]),
    # one sampled peak: margin 1.2 + 0.3, then the 30% cap on the last 8 GB
    ([run(0, peak_mem_gb=2.0)], 5.609375, ["x 1.5 margin", "shrink capped at 30% of the last 8 GB"]),
    # two sampled runs: 1.2 + 0.15 margin; the cap now follows the last allocation, 5.6 GB
    ([run(0, peak_mem_gb=2.0, requested=replace(REQ, mem_gb=5.6)), run(1, peak_mem_gb=2.0)], 3.921875,
     ["x 1.35 margin", "last 5.6 GB"]),
    # three sampled runs: plain margin, 2.4 GB, reached because the cap (0.7 x 3.92) no longer binds
    ([run(0, peak_mem_gb=2.0, requested=replace(REQ, mem_gb=3.92)), run(1, peak_mem_gb=1.9),
      run(2, peak_mem_gb=2.0)], 2.75, ["x 1.2 margin", "capped"]),
    ([run(0, peak_mem_gb=2.0, requested=replace(REQ, mem_gb=2.75)), run(1, peak_mem_gb=1.9),
      run(2, peak_mem_gb=2.0)], 2.40625, ["over 3 runs"]),
    # decay: a 4 GB peak 6 runs back (age 5, one half-life) counts as 2 + (4 - 2) / 2 = 3 GB
    ([run(0, peak_mem_gb=2.0, peak_mem_exact=True)] + [run(a, peak_mem_gb=2.0, peak_mem_exact=True)
                                                       for a in range(1, 5)]
     + [run(5, peak_mem_gb=4.0, peak_mem_exact=True)], 3.609375, ["peak 3 GB", "over 6 runs"]),
    # beyond the 10-run window an old peak is forgotten
    ([run(a, peak_mem_gb=2.0, peak_mem_exact=True) for a in range(10)] + [run(10, peak_mem_gb=6.0)], 2.40625, []),
    # OOM newest: at least 1.5 x the 2 GB that ran out, above peak x margin (2.4)
    ([run(0, outcome="OOM", peak_mem_gb=2.0, requested=replace(REQ, mem_gb=2.0)),
      run(1, peak_mem_gb=1.5, peak_mem_exact=True, requested=replace(REQ, mem_gb=2.0))], 3.0,
     ["OOM in the last run with 2 GB: at least x 1.5"]),
    # OOM without any measured peak
    ([run(0, outcome="OOM")], 12.0, ["no measured peak", "OOM in the last run with 8 GB: at least x 1.5"]),
    # completed after an OOM: peak x margin is 2.64, but no shrink below the last 3 GB while the OOM is in the window
    ([run(0, peak_mem_gb=2.2, peak_mem_exact=True, requested=replace(REQ, mem_gb=3.0)),
      run(1, outcome="OOM", peak_mem_gb=2.0, requested=replace(REQ, mem_gb=2.0))], 3.0,
     ["no shrink below the last 3 GB: OOM 2 runs ago"]),
    # a failed run's peak is a lower bound: it may grow the request, never shrink it
    ([run(0, outcome="FAILED", peak_mem_gb=1.0)], 8.0, []),
    ([run(0, outcome="PREEMPTED", peak_mem_gb=9.0)], 13.5, ["peak 9 GB", "x 1.5"]),
]


@pytest.mark.parametrize("history,mem,words", MEM_CASES)
def test_memory(history: list[Observation], mem: float, words: list[str]) -> None:
    rec = recommend(history, REQ)
    assert rec.resources.mem_gb == pytest.approx(mem)
    reason = next((c.reason for c in rec.changes if c.field == "mem_gb"), "")
    assert all(w in reason for w in words), reason


def test_memory_never_below_the_minimum() -> None:
    rec = recommend([run(0, peak_mem_gb=0.01, peak_mem_exact=True)], REQ)
    assert rec.resources.mem_gb == Policy().min_mem_gb


# --- time -----------------------------------------------------------------------------------------

STEPS = {"setup_s": 30.0, "steps": 1000, "step_p95_s": 0.62}  # p95 bound 650 s

TIME_CASES = [
    # (history newest first, data rows now, expected time_min, words in the reason)
    ([run(0, elapsed_s=600.0, **STEPS)], None, 13, ["elapsed 10 min", "x 1.25 margin"]),  # 750 s
    # one measured run at the same data size: the plain margin (750 s), however short the history
    ([run(0, elapsed_s=600.0)], None, 13, ["x 1.25 margin"]),
    # extrapolated to twice the data without step statistics, from a short history: widened
    ([run(0, elapsed_s=600.0, data_rows=10_000)], 20_000, 31, ["x 1.55 margin"]),  # 1200 s x 1.55 = 1860 s
    ([run(0, elapsed_s=600.0, data_rows=10_000), run(1, elapsed_s=570.0, data_rows=10_000)], 20_000, 28,
     ["x 1.4 margin"]),  # 1680 s
    ([run(a, elapsed_s=600.0) for a in range(3)], None, 13, ["x 1.25 margin"]),
    # jittery steps: p95 x steps (900 s) is above elapsed x margin (750 s)
    ([run(0, elapsed_s=600.0, steps=1000, step_p95_s=0.9)], None, 15, ["p95 step time x steps"]),
    # data doubled: setup 60 s stays, the 540 s of steps doubles: 1140 s x 1.25 = 1425 s
    ([run(0, elapsed_s=600.0, setup_s=60.0, steps=1000, step_p95_s=0.55, data_rows=10_000)], 20_000, 24,
     ["x 2 for 20000 rows, 10000 then"]),
    # data halved
    ([run(0, elapsed_s=1200.0, setup_s=0.0, steps=1000, step_p95_s=1.1, data_rows=10_000)], 5_000, 13, []),
    # decay: a 20-minute run 6 runs back counts as 10 + (20 - 10) / 2 = 15 minutes
    ([run(a, elapsed_s=600.0, **STEPS) for a in range(5)] + [run(5, elapsed_s=1200.0)], None, 19, ["15 min"]),
    # TIMEOUT newest: double its 10-minute limit, above 10 min x 1.55
    ([run(0, outcome="TIMEOUT", elapsed_s=600.0, requested=replace(REQ, time_min=10.0)),
      run(1, elapsed_s=480.0, requested=replace(REQ, time_min=10.0))], None, 20, ["TIMEOUT in the last run", "x 2"]),
    ([run(0, outcome="TIMEOUT", requested=replace(REQ, time_min=10.0))], None, 20, ["no completed run"]),
    # a run completed after the timeout measured the need: the timeout is only a lower bound (600 s < 720 s)
    ([run(0, elapsed_s=720.0, steps=1000, step_p95_s=0.7, requested=replace(REQ, time_min=20.0)),
      run(1, outcome="TIMEOUT", requested=replace(REQ, time_min=10.0))], None, 15, []),
    # a 20-second task: one minute, Slurm's smallest limit
    ([run(0, elapsed_s=20.0, setup_s=5.0, steps=100, step_p95_s=0.16)], None, 1, []),
]


@pytest.mark.parametrize("history,rows,time_min,words", TIME_CASES)
def test_time(history: list[Observation], rows: int | None, time_min: float, words: list[str]) -> None:
    rec = recommend(history, REQ, data_rows=rows)
    assert rec.resources.time_min == time_min
    reason = next((c.reason for c in rec.changes if c.field == "time_min"), "")
    assert all(w in reason for w in words), reason


# --- the benchmark's promise: one profiled run of an over-requested task ---------------------------


@pytest.mark.parametrize("elapsed_min", [7.0, 10.0, 12.5, 20.0, 47.3, 90.0])
@pytest.mark.parametrize("peak_gb", [0.5, 1.05, 2.0, 7.3, 30.0])
def test_one_profiled_run_fixes_4x_memory_and_5x_time(elapsed_min: float, peak_gb: float) -> None:
    declared = replace(REQ, mem_gb=4 * peak_gb, time_min=5 * elapsed_min)
    steady = elapsed_min * 60 - 30.0
    seen = run(0, requested=declared, peak_mem_gb=peak_gb, peak_mem_exact=True, elapsed_s=elapsed_min * 60,
               setup_s=30.0, steps=2000, step_p95_s=1.15 * steady / 2000)  # p95 15% above the mean step
    new = recommend([seen], declared).resources
    assert peak_gb / new.mem_gb >= 0.8
    assert elapsed_min / new.time_min >= 0.75


def test_a_sampled_peak_shrinks_4x_memory_by_30_percent_per_run() -> None:
    rec = recommend([run(0, requested=replace(REQ, mem_gb=8.0), peak_mem_gb=2.0)], replace(REQ, mem_gb=8.0))
    assert rec.resources.mem_gb == 5.609375  # 0.7 x 8 GB, rounded up to 16 MiB


# --- cpus and data-loader workers -----------------------------------------------------------------

LOADER_CASES = [
    # (last run's facts, declared params, expected {field: new}, words in the reasons or notes)
    (dict(num_workers=2, stall_fraction=0.5, worker_cpu_util=0.95, iowait_fraction=0.01), {},
     {"num_workers": 4, "cpus": 5}, ["preprocessing-bound", "2 workers / (1 - 0.50) -> 4"]),
    # no workers: the profile's verdict decides (its probe measured whether workers win)
    (dict(num_workers=0, stall_fraction=0.3, loader_verdict="in-process"), {}, {"num_workers": 1}, ["in-process"]),
    (dict(num_workers=0, stall_fraction=0.3, loader_verdict="workers-would-slow", cpu_util=0.2), {}, {},
     ["workers would cost more than they save"]),  # and idle cpus are not cut: data-bound
    # a record without a verdict (older, or a plain loop): never probed, so no workers
    (dict(num_workers=0, stall_fraction=0.3), {}, {}, ["in-process-unmeasured", "cause unclear"]),
    (dict(num_workers=16, stall_fraction=0.5, worker_cpu_util=0.99), {}, {"cpus": 17}, ["max_workers=16"]),
    (dict(num_workers=4, stall_fraction=0.4, worker_cpu_util=0.2, iowait_fraction=0.3), {}, {},
     ["storage-bound", "stage or cache the data"]),
    # idle workers without iowait: the profile's diagnosis calls it storage-bound (the right-sizer once said unclear)
    (dict(num_workers=4, stall_fraction=0.4, worker_cpu_util=0.2, iowait_fraction=0.01), {}, {}, ["storage-bound"]),
    (dict(num_workers=4, stall_fraction=0.4, worker_cpu_util=0.65, iowait_fraction=0.01), {}, {}, ["cause unclear"]),
    # idle cpus: 0.2 x 8 = 1.6 cores used, x 1.25 = 2 cpus, one worker
    (dict(requested=replace(REQ, cpus=8), num_workers=7, stall_fraction=0.02, cpu_util=0.2), {"num_workers": 7},
     {"cpus": 2, "num_workers": 1}, ["1.6 of 8 cpus busy"]),
    (dict(requested=replace(REQ, cpus=2), num_workers=1, stall_fraction=0.02, cpu_util=0.1), {}, {"cpus": 1}, []),
    # the raise that cured a stall stays: the last run had 5 cpus and 4 workers and no longer stalls
    (dict(requested=replace(REQ, cpus=5), num_workers=4, stall_fraction=0.03, cpu_util=0.8), {"num_workers": 2},
     {"cpus": 5, "num_workers": 4}, ["kept as the last run had them"]),
    (dict(num_workers=3, stall_fraction=0.05, cpu_util=0.9), {"num_workers": 3}, {}, []),
]


@pytest.mark.parametrize("facts,params,expected,words", LOADER_CASES)
def test_loader(facts: dict, params: dict, expected: dict, words: list[str]) -> None:
    request = replace(REQ, cpus=4 if "requested" not in facts else 3)
    rec = recommend([run(0, **facts)], request, params=params)
    assert {k: v for k, v in changed(rec).items() if k in ("cpus", "num_workers")} == expected
    assert rec.params == {k: v for k, v in expected.items() if k == "num_workers"}
    text = " ".join([c.reason for c in rec.changes] + list(rec.notes))
    assert all(w in text for w in words), text


# --- GPUs -----------------------------------------------------------------------------------------

GPU = replace(REQ, gpus=2)

GPU_CASES = [
    # (request, history newest first, expected gpus, words in the reasons or notes)
    (GPU, [run(0, requested=GPU, gpu_util=(0.9, 0.01))], 1, ["GPU util 90%, 1%", "keep the 1 busy"]),
    (replace(REQ, gpus=4), [run(0, gpu_util=(0.0, 0.01, 0.02, 0.0))], 1, ["all idle: keep 1, consider gpus=0"]),
    (replace(REQ, gpus=1), [run(0, gpu_util=(0.01,))], 1, ["consider gpus=0"]),  # a note, no change
    (GPU, [run(0, gpu_util=(0.9, 0.8))], 2, []),
    # the drop sticks: the newest run had the one GPU, busy; an idle second GPU was seen 2 runs ago
    (GPU, [run(0, gpu_util=(0.95,)), run(1, requested=GPU, gpu_util=(0.9, 0.0))], 1, ["2 runs ago"]),
    # two nodes with two GPUs each, one busy GPU per node
    (replace(GPU, nodes=2), [run(0, gpu_util=(0.9, 0.0, 0.8, 0.01))], 1, []),
    # DDP, a rank per GPU: reported, not dropped
    (replace(GPU, tasks_per_node=2), [run(0, gpu_util=(0.9, 0.0))], 2, ["DDP world size"]),
]


@pytest.mark.parametrize("request_,history,gpus,words", GPU_CASES)
def test_gpus(request_: Resources, history: list[Observation], gpus: int, words: list[str]) -> None:
    rec = recommend(history, request_)
    assert rec.resources.gpus == gpus
    text = " ".join([c.reason for c in rec.changes] + list(rec.notes))
    assert all(w in text for w in words), text


def test_a_data_bound_task_is_never_scaled_out() -> None:
    request = replace(REQ, gpus=2, nodes=2)
    rec = recommend([run(0, requested=request, num_workers=2, stall_fraction=0.6, worker_cpu_util=0.9,
                         gpu_util=(0.3, 0.2, 0.3, 0.2))], request)
    assert (rec.resources.gpus, rec.resources.nodes) == (2, 2)


# --- invariants over every history above ----------------------------------------------------------

ALL_HISTORIES = ([h for h, *_ in MEM_CASES] + [h for h, *_ in TIME_CASES] + [h for _, h, *_ in GPU_CASES]
                 + [[run(0, **facts)] for facts, *_ in LOADER_CASES])
RESOURCE_FIELDS = {f.name for f in fields(Resources)}
UNTOUCHED = ("partition", "account", "qos", "constraint", "gpu_type", "extra", "nodes", "tasks_per_node")


@pytest.mark.parametrize("history", ALL_HISTORIES)
def test_invariants(history: list[Observation]) -> None:
    policy = Policy()
    request = replace(REQ, gpus=2)
    rec = recommend(history, request, data_rows=15_000)
    new = rec.resources
    assert new.mem_gb >= policy.min_mem_gb and new.time_min >= policy.min_time_min and new.cpus >= 1
    assert 1 <= new.gpus <= request.gpus and new.nodes == request.nodes
    assert all(getattr(new, f) == getattr(request, f) for f in UNTOUCHED)
    assert new.extra is not request.extra
    for c in rec.changes:
        assert c.reason and c.old != c.new
        landed = getattr(new, c.field) if c.field in RESOURCE_FIELDS else rec.params[c.field]
        assert landed == c.new
    assert rec.basis <= len(history)
    shuffled = list(history)
    random.Random(7).shuffle(shuffled)
    assert recommend(shuffled, request, data_rows=15_000) == rec  # finished_at orders, not list order


# --- history keys and validation ------------------------------------------------------------------


def test_history_key_is_stable_and_discriminating() -> None:
    cfg = {"hidden": 128, "layers": [2, 3], "opt": {"lr": 1e-3, "name": "adam"}}
    same = {"opt": {"name": "adam", "lr": 0.001}, "layers": (2, 3), "hidden": 128}
    key = history_key("retrain", "train", cfg, 10_000)
    assert key == history_key("retrain", "train", same, 12_000)  # same config, same doubling bucket
    assert key.startswith("retrain/train/") and key.endswith("/rows2^13")
    assert key != history_key("retrain", "train", {**cfg, "hidden": 256}, 10_000)
    assert key != history_key("retrain", "train", cfg, 20_000)
    assert key != history_key("retrain", "eval", cfg, 10_000)


@pytest.mark.parametrize("rows,bucket", [(None, "rows?"), (0, "rows0"), (1, "rows2^0"), (1023, "rows2^9"),
                                         (1024, "rows2^10"), (10**9, "rows2^29")])
def test_rows_bucket(rows: int | None, bucket: str) -> None:
    assert rows_bucket(rows) == bucket


@pytest.mark.parametrize("bad", [dict(outcome="OUT_OF_MEMORY"), dict(stall_fraction=1.5), dict(peak_mem_gb=-1.0),
                                 dict(gpu_util=(0.5, 2.0)), dict(loader_verdict="data-bound")])
def test_bad_observations_raise(bad: dict) -> None:
    with pytest.raises(DataError):
        Observation(**bad)


@pytest.mark.parametrize("bad", [dict(mem_margin=0.9), dict(max_shrink=1.0), dict(window_runs=0),
                                 dict(cpu_idle_threshold=2.0), dict(min_mem_gb=0.0)])
def test_bad_policies_raise(bad: dict) -> None:
    with pytest.raises(ConfigError):
        Policy(**bad)


def test_negative_rows_raise() -> None:
    with pytest.raises(DataError):
        history_key("p", "t", {}, -1)


@pytest.mark.parametrize("stall", [0.0, 0.05, 0.1, 0.15, 0.1999, 0.2, 0.25, 0.4, 0.8])
@pytest.mark.parametrize("workers, busy, iowait, probe", [
    (0, None, None, None), (0, None, None, {"fetch_s": 0.005, "worker_batch_s": 0.0014, "worker_start_s": 0.01}),
    (0, None, None, {"fetch_s": 0.00007, "worker_batch_s": 0.0014, "worker_start_s": 0.01}),
    (2, 0.95, 0.0, None), (2, 0.2, 0.3, None), (2, 0.65, 0.0, None)])
def test_the_right_sizer_follows_the_profiles_diagnosis(stall: float, workers: int, busy: float | None,
                                                        iowait: float | None, probe: dict | None) -> None:
    """Issue 10, defect 14: at a 15% stall the report said "add workers" while the right-sizer cut
    cpus. Now both read one verdict: cpus shrink only in a compute-bound run, workers grow only
    where the diagnosis advises them, and the report's text says the same."""
    found = diagnose(stall, workers, busy, iowait, probe, steps=500, wait_per_step_s=0.004)
    seen = run(0, requested=replace(REQ, cpus=8), num_workers=workers, stall_fraction=stall, worker_cpu_util=busy,
               iowait_fraction=iowait, cpu_util=0.1, loader_verdict=found.verdict.value)
    new = changed(recommend([seen], replace(REQ, cpus=8)))
    advised = "num_workers > 0" in found.text or "add workers" in found.text
    assert (new.get("num_workers", workers) > workers) == advised == found.verdict.adds_workers
    if new.get("cpus", 8) < 8:
        assert found.verdict is Verdict.COMPUTE_BOUND and stall < STALL_THRESHOLD and not advised


def test_saturated_workers_of_unknown_count_get_a_note() -> None:
    rec = recommend([run(0, stall_fraction=0.5, worker_cpu_util=0.9, loader_verdict="preprocessing-bound")], REQ)
    assert not rec.params and any("num_workers was not recorded" in n for n in rec.notes)


# The outcome of an attempt as each writer records it: the runner, the Slurm reconcile, the local
# scheduler; states as the run dir reads them (AttemptState) or as an old store row holds them (str).
@pytest.mark.parametrize(("state", "error", "expected"), [
    (AttemptState.COMPLETED, None, Outcome.COMPLETED),
    ("COMPLETED", None, Outcome.COMPLETED),
    (AttemptState.PREEMPTED, "preempted (SIGTERM)", Outcome.PREEMPTED),
    (AttemptState.FAILED, "ValueError: boom", Outcome.FAILED),
    ("FAILED", "TIMEOUT: stopped at its time limit of 1 min (resources.time_min)", Outcome.TIMEOUT),
    (AttemptState.FAILED, "TIMEOUT: killed at its time limit (resources.time_min)", Outcome.TIMEOUT),
    (AttemptState.FAILED, "OUT_OF_MEMORY: killed for using more than its --mem (resources.mem_gb); Slurm state "
                          "FAILED, exit 0:9", Outcome.OOM),
    (AttemptState.FAILED, "OUT_OF_MEMORY: Exceeded job memory limit: its processes used 900 MB", Outcome.OOM),
    (AttemptState.FAILED, "slurmstepd: error: Exceeded job memory limit", Outcome.OOM),
    (AttemptState.FAILED, "Slurm ended the job NODE_FAIL (exit code 0:0) before it recorded its end", Outcome.FAILED),
])
def test_outcome_of_each_recorded_end(state: str, error: str | None, expected: Outcome) -> None:
    got = outcome_of(state, error)
    assert got is expected and got in OUTCOMES
