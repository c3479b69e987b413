"""``recommend(history, request) -> Recommendation``: pure rules from measured attempts to a request.

The caller keys the history (``history.history_key``). The rules read the newest 10 observations
and give each change a reason citing its numbers; fields no rule touches are copied from the
request. The numbers below are ``Policy``'s defaults.

- **Memory**: decayed max of the peaks (an older peak's excess over the newest completed run's
  peak halves every 5 runs) x 1.2, rounded up to 16 MiB, at least 0.25 GB. Only completed runs
  may shrink it; other outcomes' peaks are lower bounds. How far one run may shrink it depends on
  how the peak was measured. An *exact* peak (a kernel high-water mark: cgroup memory.peak,
  VmHWM, ru_maxrss) cannot miss a spike: it shrinks to peak x 1.2 at once, so a 4x over-request
  reaches >= 80% memory efficiency after one profiled run. A *sampled* peak (sacct MaxRSS, polled
  every JobAcctGatherFrequency, 30 s by default; 1 Hz RSS) can miss one: it gets the short-history
  widening and cuts the last run's allocation by at most 30% per run. After an OOM: at least 1.5x
  the request that ran out until a run completes, and no shrink below the last allocation while
  the OOM is in the window; nor while the loader rule adds workers (each has its own memory).
- **Time**: per completed run, setup + (elapsed - setup) x data growth (rows now / rows then);
  their decayed max x 1.25, at least setup + steps x p95 step time x growth. Rounded up to whole
  minutes, >= 1: Slurm keeps limits in minutes and rounds "MM:SS" up (time_str2mins), so seconds
  would buy nothing. Without step statistics the margin gets the short-history widening. A TIMEOUT
  is a lower bound (its limit); until a run completes after it, the limit is >= 2x the one it hit.
- **CPUs and loader workers** (newest completed run with a stall measure): the profile's own
  diagnosis decides (cl_hpc/profile/diagnosis.py, one threshold and one verdict for the report and
  for this rule). Where it says workers help (saturated workers, or a fetch in process measured to
  cost more than a worker's IPC): workers / (1 - stall), +1 at least, 16 at most, and cpus >=
  workers + 1. Any other data-bound verdict (storage-bound, workers would slow the steps, unclear)
  changes nothing, shrinks nothing, and gets a note. Compute-bound with cpus < 50% busy: cpus shrink
  to the cores used x 1.25 (>= 1), workers to cpus - 1 (>= 1). Else both stay as the last run had
  them where that is more than declared: a raise that cured a stall is not undone when the next run
  no longer stalls.
- **GPUs**: GPUs under 5% mean utilization are dropped, never below 1 (all idle: 1, and the
  reason suggests gpus=0: 0 changes the device code path, so a person decides), while a run with
  idle GPUs is in the window. Under tasks_per_node > 1 (a DDP rank per GPU) an idle GPU is only
  reported. Nothing adds GPUs or nodes: a data-bound task is never scaled out.
- **Short history**: with 1 or 2 completed runs, margins on measures without a spread of their own
  (a sampled peak; elapsed without step statistics) widen by 0.3 or 0.15.
- **Cold start**: no measured observation gives the request unchanged and a "no history" note.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Iterable, Mapping, Optional, Sequence

from cl_hpc.config.resources import Resources
from cl_hpc.errors import ConfigError
from cl_hpc.profile.diagnosis import STALL_THRESHOLD, Verdict, diagnose
from cl_hpc.rightsize.history import Observation, Outcome, decayed_max, newest_first

_MEASURES = ("elapsed_s", "stall_fraction", "gpu_util")  # what completed runs contribute
_RESOURCE_FIELDS = frozenset(f.name for f in fields(Resources))


@dataclass(frozen=True)
class Policy:
    """The knobs of the rules (conf/rightsize/); every default is explained in the module docstring."""

    mem_margin: float = 1.2  # x the peak; 1/1.2 = 83% efficiency, the 16 MiB rounding keeps it >= 80%
    time_margin: float = 1.25  # x the predicted elapsed; 80% before the round-up to whole minutes
    # added to a margin with 1, 2 completed runs: for a sampled memory peak, and for time extrapolated
    # to more data without step statistics (a measured time at the same size needs only the margin)
    short_history_widening: tuple[float, ...] = (0.3, 0.15)
    max_shrink: float = 0.3  # the most a sampled peak may cut the last allocation in one run
    decay_half_life_runs: float = 5.0  # an older peak's excess over the newest one halves per this many runs
    window_runs: int = 10  # only the newest this many attempts count at all
    oom_growth: float = 1.5  # after an OOM: at least this x the request that ran out (as escalate.py)
    timeout_growth: float = 2.0  # after a TIMEOUT: at least this x the limit that ran out
    min_mem_gb: float = 0.25  # never ask for less
    mem_step_gb: float = 1 / 64  # round up to 16 MiB: fine enough to keep the 80% efficiency
    min_time_min: float = 1.0  # Slurm's smallest limit
    time_step_min: float = 1.0  # Slurm keeps limits in whole minutes; finer would round up there anyway
    # (what is a stall, and whether workers help, is the profile's diagnosis: cl_hpc/profile/diagnosis.py)
    cpu_idle_threshold: float = 0.5  # cpus less busy than this (and compute-bound) shrink
    cpu_margin: float = 1.25  # x the cores used when cpus shrink
    max_workers: int = 16  # data-loader workers never grow past this
    gpu_idle_threshold: float = 0.05  # a GPU under this mean utilization is idle

    def __post_init__(self) -> None:
        factors = (self.mem_margin, self.time_margin, self.cpu_margin, self.oom_growth, self.timeout_growth)
        thresholds = (self.cpu_idle_threshold, self.gpu_idle_threshold)
        _require(min(factors) >= 1, "margins and growth factors must be >= 1")
        _require(all(0 <= t <= 1 for t in thresholds) and 0 <= self.max_shrink < 1,
                 "thresholds must be in [0, 1] and max_shrink in [0, 1)")
        _require(min(self.decay_half_life_runs, self.min_mem_gb, self.mem_step_gb, self.min_time_min,
                     self.time_step_min) > 0, "half-life, minimums and rounding steps must be > 0")
        _require(self.window_runs >= 1 and self.max_workers >= 1 and min(self.short_history_widening, default=0) >= 0,
                 "window_runs and max_workers must be >= 1, short_history_widening entries >= 0")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(f"rightsize policy: {message} (see conf/rightsize/ and cl_hpc/rightsize/recommend.py)")


@dataclass(frozen=True)
class Change:
    """One replaced value: a Resources field, or a task param such as num_workers."""

    field: str
    old: Any
    new: Any
    reason: str  # cites the numbers it came from


@dataclass(frozen=True)
class Recommendation:
    resources: Resources  # a new Resources: changed fields replaced, the rest copied from the request
    params: dict[str, Any]  # changed task params, e.g. {"num_workers": 4}; empty when none changed
    changes: tuple[Change, ...]  # one per replaced value, resources first
    basis: int  # observations with at least one measure the rules used
    notes: tuple[str, ...] = ()  # advice that changes nothing: no history, stage the data, try gpus=0


@dataclass(frozen=True)
class _Proposal:  # what one rule proposes
    changes: tuple[Change, ...] = ()
    notes: tuple[str, ...] = ()
    more_workers: bool = False  # the loader rule adds workers: each brings its own memory


def recommend(history: Iterable[Observation], request: Resources, *, policy: Policy = Policy(),
              data_rows: Optional[int] = None, params: Optional[Mapping[str, Any]] = None) -> Recommendation:
    """The resources (and loader params) for the next run of a task, from its past attempts.

    ``data_rows`` is the size of the data the next run will see (time scales with it);
    ``params`` are the task's declared params the rules may change (num_workers), so a change is
    reported against the declared value.
    """
    recent = newest_first(history, policy.window_runs)
    basis = sum(1 for o in recent if _informative(o))
    if basis == 0:
        note = "no history: the declared resources" + (f" ({len(recent)} attempts, none measured)" if recent else "")
        return Recommendation(_copy(request), {}, (), 0, (note,))
    loader = loader_rule(recent, request, policy, params or {})
    proposals = [memory_rule(recent, request, policy, loader.more_workers),
                 time_rule(recent, request, policy, data_rows), loader, gpu_rule(recent, request, policy)]
    changes = tuple(c for p in proposals for c in p.changes)
    resources = replace(_copy(request), **{c.field: c.new for c in changes if c.field in _RESOURCE_FIELDS})
    out_params = {c.field: c.new for c in changes if c.field not in _RESOURCE_FIELDS}
    return Recommendation(resources, out_params, changes, basis, tuple(n for p in proposals for n in p.notes))


# --- memory ---------------------------------------------------------------------------------------


def memory_rule(recent: Sequence[Observation], request: Resources, policy: Policy,
                more_workers: bool = False) -> _Proposal:
    """Peak x margin, raised to the floors of ``_mem_floors``, rounded up, at least the minimum."""
    points = [(age, o.peak_mem_gb) for age, o in enumerate(recent) if o.peak_mem_gb is not None]
    if not points and not any(o.outcome == "OOM" for o in recent):
        return _Proposal()
    done = [o for o in recent if _completed(o) and o.peak_mem_gb is not None]
    exact = bool(done) and all(o.peak_mem_exact for o in done)
    margin = policy.mem_margin + (0.0 if exact else _widening(len(done), policy))
    peak = decayed_max(points, done[0].peak_mem_gb if done else None, policy.decay_half_life_runs) if points else 0.0
    why = [f"peak {peak:.3g} GB ({'exact' if exact else 'sampled'}, decayed max {_runs(len(points))}) "
           f"x {margin:g} margin" if points else "no measured peak"]
    target = _mem_floors(recent, request, policy, peak * margin, exact, more_workers, why)
    return _change("mem_gb", request.mem_gb, max(policy.min_mem_gb, _ceil_to(target, policy.mem_step_gb)), why)


def _mem_floors(recent: Sequence[Observation], request: Resources, policy: Policy, target: float,
                exact: bool, more_workers: bool, why: list[str]) -> float:
    """Raise ``target`` to the floors that apply (OOM growth, no shrink after an OOM, on lower bounds
    only or before more workers, the shrink cap of a sampled peak), saying which ones bound."""
    last = _last_mem(recent, request.mem_gb)
    oom_age = next((age for age, o in enumerate(recent) if o.outcome == "OOM"), None)
    newest_done = next((age for age, o in enumerate(recent) if _completed(o)), None)
    floors: list[tuple[float, str]] = []
    if oom_age is not None and (newest_done is None or newest_done > oom_age):
        ran_out = _last_mem(recent[oom_age:oom_age + 1], request.mem_gb)
        floors.append((ran_out * policy.oom_growth,
                       f"OOM {_ago(oom_age)} with {ran_out:g} GB: at least x {policy.oom_growth:g}"))
    if oom_age is not None:
        floors.append((last, f"no shrink below the last {last:g} GB: OOM {_ago(oom_age)}"))
    if more_workers:
        floors.append((last, f"no shrink below the last {last:g} GB: more loader workers, each with its own memory"))
    if newest_done is None:
        floors.append((request.mem_gb, "no completed run: peaks are lower bounds, no shrink"))
    elif not exact:
        floors.append((min(request.mem_gb, last * (1 - policy.max_shrink)),
                       f"shrink capped at {policy.max_shrink:.0%} of the last {last:g} GB "
                       "(a sampled peak can miss a spike)"))
    return _apply_floors(target, floors, why)


# --- time -----------------------------------------------------------------------------------------


def time_rule(recent: Sequence[Observation], request: Resources, policy: Policy,
              data_rows: Optional[int]) -> _Proposal:
    """Predicted elapsed x margin, at least the p95 bound, with the TIMEOUT floor."""
    done = [(age, o) for age, o in enumerate(recent) if _completed(o) and o.elapsed_s is not None]
    timeouts = [(age, o) for age, o in enumerate(recent) if o.outcome == Outcome.TIMEOUT]
    if not done and not timeouts:
        return _Proposal()
    preds = [(a, _predicted_s(o, data_rows)) for a, o in done]
    bounds = [(a, b) for a, o in done if (b := _p95_bound_s(o, data_rows)) is not None]
    lower = [(a, _limit_s(o, request) * _growth(o, data_rows)) for a, o in timeouts]
    half = policy.decay_half_life_runs
    pred = decayed_max(preds + lower, preds[0][1] if preds else None, half)
    # One completed run at the same data size measured the time itself: the plain margin covers the
    # run-to-run jitter (and a TIMEOUT comes back with twice the time through the retry guard).
    # Extrapolating to more data without step statistics is the uncertain case: widen there.
    extrapolated = any(_growth(o, data_rows) != 1.0 for _, o in done)
    margin = policy.time_margin + (_widening(len(done), policy) if extrapolated and not bounds else 0.0)
    why = [f"elapsed {_min(pred)} (decayed max {_runs(len(done))}{_growth_note(recent, data_rows)}) x {margin:g} "
           "margin" if done else f"no completed run; it ran past {_min(pred)}"]
    target = pred * margin
    if bounds:
        bound = decayed_max(bounds, bounds[0][1], half)
        target = _apply_floors(target, [(bound, f"p95 step time x steps + setup = {_min(bound)}")], why)
    target = _timeout_floor(recent, request, policy, target, why)
    new = max(policy.min_time_min, _ceil_to(target / 60, policy.time_step_min))
    return _change("time_min", request.time_min, new, why + ["rounded up to whole minutes"])


def _timeout_floor(recent: Sequence[Observation], request: Resources, policy: Policy, target_s: float,
                   why: list[str]) -> float:
    age = next((a for a, o in enumerate(recent) if o.outcome in (Outcome.TIMEOUT, Outcome.COMPLETED)), None)
    if age is None or recent[age].outcome != Outcome.TIMEOUT:
        return target_s  # no timeout, or a run completed after it: the completed run measured the need
    limit = _limit_s(recent[age], request)
    return _apply_floors(target_s, [(limit * policy.timeout_growth, f"TIMEOUT {_ago(age)} at {_min(limit)}: "
                                                                    f"at least x {policy.timeout_growth:g}")], why)


def _predicted_s(o: Observation, rows: Optional[int]) -> float:
    """Setup stays; the stepping part scales with the data."""
    setup = min(o.setup_s or 0.0, o.elapsed_s or 0.0)
    return setup + ((o.elapsed_s or 0.0) - setup) * _growth(o, rows)


def _p95_bound_s(o: Observation, rows: Optional[int]) -> Optional[float]:
    if o.steps is None or o.step_p95_s is None:
        return None
    return (o.setup_s or 0.0) + o.steps * o.step_p95_s * _growth(o, rows)


def _limit_s(o: Observation, request: Resources) -> float:
    return 60 * (o.requested.time_min if o.requested else request.time_min)


def _growth(o: Observation, rows: Optional[int]) -> float:
    return rows / o.data_rows if rows is not None and o.data_rows else 1.0


def _growth_note(recent: Sequence[Observation], rows: Optional[int]) -> str:
    o = next((o for o in recent if o.data_rows), None)
    if o is None or rows is None or rows == o.data_rows:
        return ""
    return f"; steps scaled x {_growth(o, rows):.3g} for {rows} rows, {o.data_rows} then"


# --- cpus and data-loader workers -----------------------------------------------------------------


def loader_rule(recent: Sequence[Observation], request: Resources, policy: Policy,
                params: Mapping[str, Any]) -> _Proposal:
    """Grow workers and cpus where the diagnosis says workers help; shrink cpus that sit idle in a
    compute-bound run; else keep what the last run had where it had more than declared (a raise
    that cured a stall stays)."""
    o = next((o for o in recent if _completed(o) and o.stall_fraction is not None), None)
    if o is None:
        return _Proposal()
    last_cpus = o.requested.cpus if o.requested else request.cpus
    declared_workers = params.get("num_workers", o.num_workers)
    cpus, workers = max(request.cpus, last_cpus), _max_known(declared_workers, o.num_workers)
    notes: tuple[str, ...] = ()
    verdict = loader_verdict(o)
    if verdict not in (Verdict.COMPUTE_BOUND, Verdict.NO_STEPS):
        cpus, workers, why, notes = _data_bound(o, verdict, policy, cpus, workers)
    elif o.cpu_util is not None and o.cpu_util < policy.cpu_idle_threshold:
        cpus, workers, why = _idle_cpus(o, policy, last_cpus, workers)
    else:
        why = f"stall {o.stall_fraction:.0%}, cpus {_pct(o.cpu_util)} busy: kept as the last run had them"
    changes = _merge(_change("cpus", request.cpus, cpus, [why]),
                     _change("num_workers", declared_workers, workers, [why]))
    return replace(changes, notes=notes, more_workers=(workers or 0) > (o.num_workers or 0))


def loader_verdict(o: Observation) -> Verdict:
    """The verdict the run's profile recorded; for a record that predates it, the same diagnosis
    on its measures (without a loader probe, so it never advises workers to a loop without them)."""
    if o.loader_verdict is not None:
        return Verdict(o.loader_verdict)
    workers = o.num_workers if o.num_workers is not None else (1 if o.worker_cpu_util is not None else 0)
    return diagnose(o.stall_fraction, workers, o.worker_cpu_util, o.iowait_fraction).verdict


def _data_bound(o: Observation, verdict: Verdict, policy: Policy, cpus: int,
                workers: Optional[int]) -> tuple[int, Optional[int], str, tuple[str, ...]]:
    """Where workers help: more of them and a cpu each. Every other data-bound verdict: a note."""
    stall, ran = o.stall_fraction or 0.0, o.num_workers
    seen = (f"{verdict.value}: stall {stall:.0%} of the step, workers {_pct(o.worker_cpu_util)} busy, "
            f"iowait {_pct(o.iowait_fraction)}")
    if verdict.adds_workers and ran is None:
        return cpus, workers, f"data-bound ({seen}): kept", (f"{seen} but num_workers was not recorded: "
                                                             "raise it by hand",)
    if verdict.adds_workers and ran is not None:
        # The loader delivers (1 - stall) of the batches the step could take: scale the workers by its inverse.
        want = min(policy.max_workers, max(ran + 1, math.ceil(ran / (1 - min(stall, 0.9)) - 1e-9)))
        why = f"{seen}: {ran} workers / (1 - {stall:.2f}) -> {want}, one cpu per worker plus the main process"
        note = () if want > ran else (f"{verdict.value} at max_workers={policy.max_workers}: {seen}",)
        return max(cpus, want + 1), _max_known(workers, want), why, note
    return cpus, workers, f"data-bound ({seen}): kept, never shrunk", (f"{seen}: {_advice(verdict, ran)}",)


def _advice(verdict: Verdict, ran: Optional[int]) -> str:
    """What a data-bound run that more workers would not help should do instead."""
    if verdict is Verdict.STORAGE_BOUND:
        return "stage or cache the data on node-local storage; more workers would not help"
    if verdict is Verdict.WORKERS_WOULD_SLOW:
        return f"loader workers would cost more than they save (measured); kept at {ran}"
    return f"cause unclear with {ran} workers: profile the data loader"


def _idle_cpus(o: Observation, policy: Policy, last_cpus: int,
               workers: Optional[int]) -> tuple[int, Optional[int], str]:
    """Shrink to the cores used x margin; workers to one per remaining cpu (at least one)."""
    used = (o.cpu_util or 0.0) * last_cpus
    cpus = max(1, math.ceil(used * policy.cpu_margin - 1e-9))
    why = (f"stall {o.stall_fraction:.0%} < {STALL_THRESHOLD:.0%}, {used:.3g} of {last_cpus} cpus busy "
           f"x {policy.cpu_margin:g} margin -> {cpus}; one cpu per worker plus the main process")
    return cpus, (min(workers, max(1, cpus - 1)) if workers else workers), why


def _max_known(a: Optional[int], b: Optional[int]) -> Optional[int]:
    return max((v for v in (a, b) if v is not None), default=None)


# --- GPUs -----------------------------------------------------------------------------------------


def gpu_rule(recent: Sequence[Observation], request: Resources, policy: Policy) -> _Proposal:
    """Keep the busy GPUs of the newest run while a run with idle GPUs is within the window."""
    measured = [(a, o) for a, o in enumerate(recent) if _completed(o) and o.gpu_util]
    idle_runs = [(a, o) for a, o in measured if min(o.gpu_util or (1.0,)) < policy.gpu_idle_threshold]
    if request.gpus == 0 or not idle_runs:
        return _Proposal()
    age, seen = idle_runs[0]
    utils = ", ".join(f"{u:.0%}" for u in seen.gpu_util or ())
    busy = sum(u >= policy.gpu_idle_threshold for u in measured[0][1].gpu_util or ())
    new = min(request.gpus, max(1, math.ceil(busy / max(1, request.nodes))))
    keep = (f"keep the {busy} busy" if busy
            else "all idle: keep 1, consider gpus=0 (not done: it changes the device code path)")
    per_node = f", {new} per node" if busy and request.nodes > 1 else ""
    why = f"GPU util {utils} {_ago(age)} (idle < {policy.gpu_idle_threshold:.0%}): {keep}{per_node}"
    if request.tasks_per_node > 1:
        return _Proposal(notes=(f"{why}; not changed: with {request.tasks_per_node} tasks per node "
                                "a rank is not using its GPU, and dropping it changes the DDP world size",))
    proposal = _change("gpus", request.gpus, new, [why])
    return proposal if proposal.changes or busy else _Proposal(notes=(why,))


# --- helpers --------------------------------------------------------------------------------------


def _informative(o: Observation) -> bool:
    """Whether any rule reads this observation: only completed runs measure time, loader and GPUs."""
    if o.peak_mem_gb is not None or o.outcome in (Outcome.OOM, Outcome.TIMEOUT):
        return True
    return _completed(o) and any(getattr(o, m) is not None for m in _MEASURES)


def _completed(o: Observation) -> bool:
    return o.outcome == Outcome.COMPLETED


def _widening(n_completed: int, policy: Policy) -> float:
    """The short-history widening; no completed run at all is as uncertain as one."""
    return dict(enumerate(policy.short_history_widening, start=1)).get(max(n_completed, 1), 0.0)


def _apply_floors(target: float, floors: Sequence[tuple[float, str]], why: list[str]) -> float:
    for floor, reason in floors:
        if floor > target:
            target = floor
            why.append(reason)
    return target


def _last_mem(recent: Sequence[Observation], default: float) -> float:
    """What the newest attempt with a known request was given: the base of the shrink cap."""
    return next((o.requested.mem_gb for o in recent if o.requested is not None), default)


def _change(name: str, old: Any, new: Any, why: Sequence[str]) -> _Proposal:
    if new is None or new == old:
        return _Proposal()
    return _Proposal(changes=(Change(name, old, new, "; ".join(why)),))


def _merge(*proposals: _Proposal) -> _Proposal:
    return _Proposal(tuple(c for p in proposals for c in p.changes), tuple(n for p in proposals for n in p.notes))


def _copy(request: Resources) -> Resources:
    return replace(request, extra=dict(request.extra))  # no shared dict between request and result


def _ceil_to(value: float, step: float) -> float:
    return math.ceil(value / step - 1e-9) * step  # the epsilon keeps 1.2 * 5 / 0.5 from rounding a step up


def _runs(n: int) -> str:
    return f"over {n} run{'' if n == 1 else 's'}"


def _ago(age: int) -> str:
    return "in the last run" if age == 0 else f"{age + 1} runs ago"


def _min(seconds: float) -> str:
    return f"{seconds / 60:.3g} min"


def _pct(value: Optional[float]) -> str:
    return "?" if value is None else f"{value:.0%}"
