"""A testing-in-production experiment's HTML page: traffic per arm over time, the metric intervals as
the evidence accrued, a canary's ramp with its guard checks, and every decision with its reason and
time; one self-contained file.

Built read-only from what the rollout already records and computes; no statistic is derived here:

- the experiment and its appended events (cl_hpc/rollout/experiments.py): each split, ramp step,
  halt, decision and stop, with its reason, its time and the numbers the controller kept with it
  (the deciding test's interval, a canary judge's score and counts, a bandit's posterior);
- the terminal report (cl_hpc/rollout/report.py, ``python -m cl_hpc.experiment report``): ``build``
  once over everything, and its per-arm summary and tests again on the rows logged up to each of a
  few cut times, which gives the intervals as the evidence accrued (rows are placed at the time of
  the answer, as the label zone stamps them, not when their label matured);
- the controller's look now (controller.evaluate, nothing written) while the experiment runs.

An experiment still running gets a page of what is known, which says so; one without traffic says
that; an unknown id is a RolloutError naming the experiments in the store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from cl_hpc.errors import ClHpcError
from cl_hpc.rollout import report as terminal
from cl_hpc.rollout.assign import ramp_steps
from cl_hpc.rollout.controller import Sources, evaluate
from cl_hpc.rollout.experiments import ExperimentStore, RolloutError
from cl_hpc.rollout.records import Action, Experiment, ExperimentEvent, ExperimentKind, ExperimentState
from cl_hpc.rollout.stats import TestResult
from cl_hpc.rollout.steps import CHALLENGER, CHAMPION, Step
from cl_hpc.store.db import DB_NAME

PREDICTIONS = "predictions"  # the prediction log under the store root (serve.log_dir's default)
TRAFFIC_BINS = 40  # time bins of the traffic chart
CUTS = 24  # cut times at which the intervals are computed (plus each written event's time)
ROUTED = ("live", "failed")  # the log roles of requests an arm was given (cl_hpc/rollout/canary.py ROUTED)
SHADOW = "shadow"  # the log role of a shadow's copies
DEFAULT_STEPS = [1, 5, 25, 50, 100]  # a canary's ramp when its config names none (canary.decide_step's)
POSTERIOR = "beta posterior"  # the interval a bandit's arm gets, from the posterior a look kept
_EPOCH = pd.Timestamp(0, tz="UTC")


@dataclass(frozen=True)
class Estimate:
    """One estimate with its interval at a time: an arm's, or challenger minus champion."""

    at: float  # epoch seconds: the evidence up to here
    value: float
    low: float
    high: float
    n: int  # observations behind it (both arms' for a difference)
    p_value: Optional[float] = None
    test: str = ""  # the test or interval that gave it
    metric: str = ""
    written: bool = True  # a look the controller wrote (False: its look now, or a recomputed point)


@dataclass(frozen=True)
class Traffic:
    """Requests per arm in time bins, and the weights in force."""

    edges: list[float]  # bin edges, epoch seconds (one more than bins)
    routed: dict[str, list[int]]  # arm -> requests routed to it per bin (answered or failed by the model)
    copies: dict[str, list[int]]  # arm -> shadow copies it answered per bin
    splits: list[tuple[float, dict[str, float]]]  # (from when, weights) of every event that set weights


@dataclass(frozen=True)
class Evidence:
    """The intervals as the evidence accrued (the terminal report's computations at each cut time)."""

    alpha: float
    metric: str  # the decision metric (experiment.metric)
    accuracy: dict[str, list[Estimate]]  # per arm: hits / labelled answers, Wilson interval
    accuracy_diff: list[Estimate]  # challenger - champion, two-proportion z (report.build's accuracy)
    latency_diff: list[Estimate]  # challenger - champion, Welch's t (report.build's latency)
    posterior: dict[str, list[Estimate]]  # bandit: each arm's Beta posterior at each look, credible interval
    looks: list[Estimate]  # the controller's own test at the events it wrote (and its look now)

    @property
    def empty(self) -> bool:
        return not (any(self.accuracy.values()) or self.accuracy_diff or self.latency_diff
                    or any(self.posterior.values()) or self.looks)


@dataclass(frozen=True)
class RampStep:
    """One step of a canary's ramp and the guard check that ended it."""

    index: int  # 1-based
    share: float  # the challenger's share of units, 0..1
    start: float
    end: Optional[float]  # None: still in force
    ended_by: Optional[str]  # step | promote | rollback | halt | stop; None while it runs
    score: Optional[float]  # the judge's score at the check that ended it
    samples: dict[str, Any]  # per arm: requests, failed, labelled, windows judged
    reason: str  # the ending event's reason
    after: Optional[float] = None  # the challenger's share the ending event set


@dataclass(frozen=True)
class ExperimentReport:
    experiment: Experiment
    events: list[ExperimentEvent]  # oldest first
    as_of: float
    store: str  # the store's database file
    log_dir: str
    label_dirs: list[str]
    summary: terminal.ExperimentReport  # the terminal report over everything logged
    traffic: Optional[Traffic]  # None: no request of the experiment logged yet
    evidence: Evidence
    ramp: Optional[list[RampStep]]  # canary only
    planned: list[float]  # canary: the ramp's steps, percent
    now: Optional[Step]  # running: the controller's decision at as_of (nothing written)
    problems: list[str] = field(default_factory=list)

    @property
    def state(self) -> ExperimentState:
        return self.events[-1].state

    @property
    def ended(self) -> Optional[float]:
        return None if self.state.active else self.events[-1].at

    @property
    def requests(self) -> int:
        return sum(a.requests for a in self.summary.arms)


# ---- building it ------------------------------------------------------------------------------------


def experiment_report(store_root: Path, experiment_id: int, log_dir: Optional[Path] = None,
                      label_dirs: Sequence[Path] = (), label_col: str = "y", output: str = "label",
                      window_s: float = 10.0, now: Optional[float] = None) -> ExperimentReport:
    """The page's data for experiment ``experiment_id`` of the store under ``store_root``; read-only.

    ``log_dir``: the prediction log (default <store_root>/predictions, serve.log_dir's default);
    ``label_dirs``: the label join's zones (a shadow's copies: their own zone too); ``label_col`` and
    ``output``: the zones' label column and the logged output graded by it; ``window_s``: a canary's
    seconds of traffic per judged sample (as ``experiment decide --window``). A RolloutError for a
    missing store or an unknown id (naming the experiments there are)."""
    experiment, events, db = _load(Path(store_root), experiment_id)
    log = Path(log_dir) if log_dir is not None else Path(store_root) / PREDICTIONS
    problems: list[str] = []
    zones = _zones(label_dirs, problems)
    summary = terminal.build(experiment, events, log, zones, label_col, output)
    logged = terminal.logged_rows(experiment, log)
    labelled = terminal.labelled_in(experiment, zones, label_col, output)
    as_of = time.time() if now is None else now
    current = _now(experiment, events, Sources(log, zones, label_col, output, window_s), problems)
    kind = experiment.kind
    return ExperimentReport(
        experiment=experiment, events=events, as_of=as_of, store=db, log_dir=str(log),
        label_dirs=[str(z) for z in zones], summary=summary,
        traffic=_traffic(experiment, events, logged, as_of) if len(logged) else None,
        evidence=_evidence(experiment, events, logged, labelled, current, as_of),
        ramp=_ramp(events) if kind is ExperimentKind.CANARY else None,
        planned=ramp_steps(experiment.config.get("steps", DEFAULT_STEPS)) if kind is ExperimentKind.CANARY else [],
        now=current, problems=problems)


def _load(root: Path, experiment_id: int) -> tuple[Experiment, list[ExperimentEvent], str]:
    db = root / DB_NAME
    if not db.is_file():  # opening would create an empty store: say where none is instead
        raise RolloutError(f"no store at {db}: pass --store-root, the folder of {DB_NAME} that "
                           f"python -m cl_hpc.experiment start wrote the experiment to")
    with ExperimentStore.open(root) as experiments:
        listed = experiments.listing()
        if experiment_id not in {e.id for e, _ in listed}:
            raise RolloutError(_unknown(experiment_id, listed, db))
        return experiments.get(experiment_id), experiments.events(experiment_id), str(db)


def _unknown(experiment_id: int, listed: list[tuple[Experiment, ExperimentEvent]], db: Path) -> str:
    if not listed:
        return (f"no experiment {experiment_id}: the store {db} holds no experiment yet (python -m cl_hpc.experiment "
                f"start experiment=ab experiment.challenger=X.Y --reason ... starts one)")
    known = ", ".join(f"{e.id} ({e.kind.value} on {e.name}, {latest.state.value})" for e, latest in listed)
    return (f"no experiment {experiment_id} in {db}; experiments there: {known} "
            f"(python -m cl_hpc.experiment status lists them)")


def _zones(label_dirs: Sequence[Path], problems: list[str]) -> tuple[Path, ...]:
    """The label zones that exist; a missing one is said on the page (the terminal report would fail)."""
    missing = [str(d) for d in label_dirs if not Path(d).is_dir()]
    if missing:
        problems.append(f"label zone(s) {', '.join(missing)} do not exist: no accuracy from them "
                        f"(python -m cl_hpc.labels join writes labels.out_dir)")
    return tuple(Path(d) for d in label_dirs if Path(d).is_dir())


def _now(experiment: Experiment, events: list[ExperimentEvent], sources: Sources,
         problems: list[str]) -> Optional[Step]:
    """What the controller would decide now (nothing written), while the experiment runs."""
    if not events[-1].state.active:
        return None
    try:
        return evaluate(experiment, events, sources)
    except ClHpcError as exc:  # a look that cannot be made still leaves a page of what is known
        problems.append(f"the controller's look now failed: {exc}")
        return None


def seconds(ts: pd.Series) -> np.ndarray:
    """Epoch seconds of a log's or a label zone's timestamps (the zone's naive times are UTC)."""
    return (pd.to_datetime(ts, utc=True) - _EPOCH).dt.total_seconds().to_numpy(dtype=float)


# ---- traffic --------------------------------------------------------------------------------------


def _traffic(experiment: Experiment, events: list[ExperimentEvent], logged: pd.DataFrame,
             as_of: float) -> Traffic:
    """Requests per arm in TRAFFIC_BINS bins from the start to the end (or ``as_of``), the traffic within."""
    at = seconds(logged["ts"])
    end = events[-1].at if not events[-1].state.active else as_of
    low = min(experiment.created, at.min())
    edges = np.linspace(low, max(end, at.max(), low + 1.0), TRAFFIC_BINS + 1)  # bins of some width, always
    requests = logged.assign(_at=at).drop_duplicates(["request_id", "arm", "role"])

    def per_bin(roles: Sequence[str]) -> dict[str, list[int]]:
        mine = requests[requests["role"].isin(roles)]
        return {a.name: np.histogram(mine.loc[mine["arm"] == a.name, "_at"], bins=edges)[0].tolist()
                for a in experiment.arms}

    copies = per_bin([SHADOW]) if experiment.kind is ExperimentKind.SHADOW else {}
    return Traffic(edges=edges.tolist(), routed=per_bin(ROUTED), copies=copies,
                   splits=[(e.at, dict(e.weights)) for e in events if e.action is not Action.SNAPSHOT])


# ---- the intervals as the evidence accrued -----------------------------------------------------------


def _evidence(experiment: Experiment, events: list[ExperimentEvent], logged: pd.DataFrame,
              labelled: pd.DataFrame, current: Optional[Step], as_of: float) -> Evidence:
    alpha = float(experiment.config.get("alpha", 0.05))
    log_at, label_at = seconds(logged["ts"]), seconds(labelled["ts"])
    accuracy: dict[str, list[Estimate]] = {a.name: [] for a in experiment.arms}
    accuracy_diff: list[Estimate] = []
    latency_diff: list[Estimate] = []
    for cut in _cuts(np.concatenate([log_at, label_at]), events):
        # the terminal report's own computations on the rows logged up to the cut
        arms = {a.name: terminal._arm(experiment, a.name, a.version, logged[log_at <= cut], labelled[label_at <= cut])
                for a in experiment.arms}
        for name, arm in arms.items():
            if arm.labelled:
                accuracy[name].append(_wilson(cut, arm.correct, arm.labelled, alpha))
        accuracy_diff.extend(_diff(cut, terminal._accuracy(arms, alpha, [])))
        latency_diff.extend(_diff(cut, terminal._latency(experiment, logged[log_at <= cut], alpha, [])))
    return Evidence(alpha=alpha, metric=str(experiment.config.get("metric", "accuracy")), accuracy=accuracy,
                    accuracy_diff=accuracy_diff, latency_diff=latency_diff,
                    posterior=_posteriors(experiment, events, current, alpha, as_of),
                    looks=_looks(events, current, as_of))


def _cuts(at: np.ndarray, events: list[ExperimentEvent]) -> np.ndarray:
    """CUTS times across the evidence, and every written event's time within it."""
    if not at.size:
        return at
    written = [e.at for e in events if e.action is not Action.START and at.min() <= e.at <= at.max()]
    return np.unique(np.concatenate([np.linspace(at.min(), at.max(), CUTS), written]))


def _wilson(at: float, correct: int, labelled: int, alpha: float) -> Estimate:
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(correct, labelled, alpha=alpha, method="wilson")
    return Estimate(at, correct / labelled, float(low), float(high), labelled, test="wilson", metric="accuracy",
                    written=False)


def _diff(at: float, result: Optional[TestResult]) -> list[Estimate]:
    if result is None:
        return []
    return [Estimate(at, result.estimate, result.ci_low, result.ci_high, result.n_a + result.n_b, result.p_value,
                     result.test.value, result.metric, written=False)]


def _looks(events: list[ExperimentEvent], current: Optional[Step], as_of: float) -> list[Estimate]:
    """The controller's own test where it kept one: at each written event, and in its look now."""
    kept = [(e.at, e.detail["test"], True) for e in events if isinstance(e.detail.get("test"), dict)]
    if current is not None and isinstance(current.detail.get("test"), dict):
        kept.append((as_of, current.detail["test"], False))
    return [Estimate(at, float(t["estimate"]), float(t["ci_low"]), float(t["ci_high"]), int(t["n_a"]) + int(t["n_b"]),
                     float(t["p_value"]), str(t["test"]), str(t["metric"]), written) for at, t, written in kept]


def _posteriors(experiment: Experiment, events: list[ExperimentEvent], current: Optional[Step], alpha: float,
                as_of: float) -> dict[str, list[Estimate]]:
    """Each arm's Beta posterior (the bandit's decision rule's, whatever the policy) at each look that kept one."""
    if experiment.kind is not ExperimentKind.BANDIT:
        return {}
    from scipy import stats

    from cl_hpc.rollout.bandit import ThompsonSampling, policy_from_dict

    kept = [(e.at, e.detail["posterior"], True) for e in events if "posterior" in e.detail]
    if current is not None and "posterior" in current.detail and current.detail.get("rewards") != _last(events):
        kept.append((as_of, current.detail["posterior"], False))
    out: dict[str, list[Estimate]] = {a.name: [] for a in experiment.arms}
    for at, posterior, written in kept:
        beta = ThompsonSampling(list(out))
        beta.state = dict(policy_from_dict(posterior).state)
        for arm, seen in beta.state.items():
            a, b = beta.posterior(arm)
            low, high = stats.beta.ppf([alpha / 2, 1 - alpha / 2], a, b)
            out[arm].append(Estimate(at, a / (a + b), float(low), float(high), seen.pulls, test=POSTERIOR,
                                     metric="reward", written=written))
    return out


def _last(events: list[ExperimentEvent]) -> Optional[int]:
    return next((e.detail.get("rewards") for e in reversed(events) if "rewards" in e.detail), None)


# ---- the canary's ramp ----------------------------------------------------------------------------


def _ramp(events: list[ExperimentEvent]) -> list[RampStep]:
    """Each split (the start, each pass) with the event that ended it: the guard's check."""
    steps = []
    splits = [i for i, e in enumerate(events) if e.action in (Action.START, Action.WEIGHTS)]
    for n, i in enumerate(splits, start=1):
        begun, ending = events[i], events[i + 1] if i + 1 < len(events) else None
        detail = ending.detail if ending is not None else {}
        steps.append(RampStep(
            index=n, share=float(begun.weights.get(CHALLENGER, 0.0)), start=begun.at,
            end=ending.at if ending else None,
            ended_by=outcome(ending) if ending else None,
            score=float(detail["score"]) if isinstance(detail.get("score"), (int, float)) else None,
            samples=dict(detail.get("samples") or {}), reason=ending.reason if ending else "",
            after=float(ending.weights.get(CHALLENGER, 0.0)) if ending else None))
    return steps


def outcome(event: ExperimentEvent) -> str:
    """What an event was: the controller's decision where it wrote one (step, promote, rollback, reject),
    ``halt`` for any halt (a promotion refused because the champion moved is a halt), else its action
    (start, stop, snapshot)."""
    if event.action is Action.HALT:
        return "halt"
    return str(event.detail.get("decision") or event.action.value)


# ---- the page -----------------------------------------------------------------------------------------


def render_experiment(report: ExperimentReport) -> str:
    """The experiment's page: traffic, intervals, ramp (canary), decisions; absent parts say so."""
    from cl_hpc.report import experiment_charts as draw  # matplotlib: only when a page is drawn
    from cl_hpc.report.pages import _ENV, _version, _when

    arms = [a.name for a in report.experiment.arms]
    colours = draw.arm_colours(arms)
    traffic = report.traffic
    drawn = {"traffic": draw.traffic_chart(traffic, report.experiment.kind, colours) if traffic else "",
             "intervals": draw.intervals_chart(report.evidence, colours, traffic.edges if traffic else None),
             "ramp": draw.ramp_chart(report.ramp, report.planned, report.as_of) if report.ramp else ""}
    return _ENV.get_template("experiment.html.j2").render(
        r=report, e=report.experiment, s=report.summary, charts=drawn, colours=colours, arms=arms,
        latest=_latest(report.evidence), decided={e.id: outcome(e) for e in report.events},
        outcome=draw.OUTCOME_COLOURS, champion=CHAMPION, challenger=CHALLENGER,
        version=_version(), written=_when(report.as_of))


def _latest(evidence: Evidence) -> dict[str, Optional[Estimate]]:
    """The newest point of every series: what the table beside the chart lists."""
    series = {**{f"accuracy {arm}": points for arm, points in evidence.accuracy.items()},
              "accuracy challenger - champion": evidence.accuracy_diff,
              "latency_ms challenger - champion": evidence.latency_diff,
              **{f"reward {arm}": points for arm, points in evidence.posterior.items()}}
    return {name: points[-1] if points else None for name, points in series.items()}
