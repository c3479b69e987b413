"""The canary: judge the current step, then ramp, roll back, promote or halt.

One evaluation is a pure function of the experiment's events, its prediction log and its labelled
rows (:func:`canary_step`); applying it is one store event, and a promotion goes through the
registry (:func:`apply`). Per step, the rows since the weights last changed are cut into windows of
``window_s`` and each window gives one sample per arm and metric (Kayenta judges per-interval
aggregates): the error rate (the share of its requests the model's own code failed on, logged with
role ``failed``; lower is better, critical), latency p99 (lower is better) and accuracy on matured
labels (higher is better, critical). The judge (cl_hpc/rollout/judge.py: Mann-Whitney U,
Hodges-Lehmann, pass 95 / marginal 75) decides:

- the sample ratio is off (chi-square, p < srm_alpha): HALT, the champion takes all traffic;
- fewer than ``min_samples`` requests or labelled answers on an arm, or too few windows: WAIT,
  never a pass (argo-rollouts#1905);
- FAIL: ROLLBACK, the challenger is tagged rejected in the registry with the reason;
- MARGINAL: WAIT (the step runs on);
- PASS: STEP to the next weight of the ramp (which always ends at 100 %, flagger#189), or at
  100 %, PROMOTE the challenger through the registry, if the champion alias still points at the
  experiment's champion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd

from cl_hpc.rollout.assign import ramp_steps
from cl_hpc.rollout.judge import Direction, Judgement, MetricSpec, Thresholds, Verdict, judge
from cl_hpc.rollout.records import Experiment, ExperimentEvent, ExperimentKind, current_split, previous_split
from cl_hpc.rollout.report import LabelDirs, answers, as_dirs, labelled_in, logged_rows, srm_check
from cl_hpc.rollout.stats import SrmResult
from cl_hpc.rollout.steps import CHALLENGER, CHAMPION, Decision, Step, all_champion, halted

MIN_WINDOWS = 4  # windows per arm before a metric is judged (at 3, no Hodges-Lehmann interval at alpha 0.05)
SPECS = (MetricSpec("error_rate", Direction.LOWER_IS_BETTER, tolerance=0.01, relative=False, critical=True),
         MetricSpec("latency_p99_ms", Direction.LOWER_IS_BETTER, tolerance=0.5),  # 50 % slower p99 allowed
         MetricSpec("accuracy", Direction.HIGHER_IS_BETTER, tolerance=0.02, relative=False, critical=True))
ROUTED = ("live", "failed")  # the log roles of requests an arm was given: answered, or failed by the model


def canary_step(experiment: Experiment, events: Sequence[ExperimentEvent], log_dir: Path,
                label_dir: LabelDirs = None, label_col: str = "y", output: str = "label",
                window_s: float = 10.0) -> Step:
    """The decision for the canary's current step (nothing written)."""
    if experiment.kind is not ExperimentKind.CANARY:
        raise ValueError(f"experiment {experiment.id} is a {experiment.kind.value}, not a canary")
    config, split = experiment.config, current_split(events)
    weights = dict(split.weights)
    since = pd.Timestamp(split.at, unit="s", tz="UTC")
    # At 100 % the champion answers nothing: its samples are those of the step before, the baseline the
    # challenger must still hold to at full traffic.
    baseline = previous_split(events, split) if weights[CHAMPION] == 0 else split
    base_since = pd.Timestamp(baseline.at, unit="s", tz="UTC")
    logged = logged_rows(experiment, log_dir)
    live = logged[logged["role"].isin(ROUTED)] if len(logged) else logged  # a failure is a unit routed too
    stamps = pd.to_datetime(live["ts"], utc=True) if len(live) else pd.Series(dtype="datetime64[ns, UTC]")
    live = live[(stamps >= since) | ((live["arm"] == CHAMPION) & (stamps >= base_since))] if len(live) else live
    notes: list[str] = []
    srm = srm_check(experiment, split, live, float(config.get("srm_alpha", 0.001)), notes)
    if srm is not None and srm.mismatch:
        return halted(srm, weights)
    labelled = labelled_in(experiment, as_dirs(label_dir), label_col, output)
    if len(labelled):  # the zone's naive times are UTC
        times = pd.to_datetime(labelled["ts"], utc=True)
        labelled = labelled[(times >= since) | ((labelled["arm"] == CHAMPION) & (times >= base_since))]
    samples, counts = _samples(live, labelled, base_since, window_s, int(config.get("min_samples", 500)))
    thresholds = Thresholds(float(config.get("pass_score", 95.0)), float(config.get("marginal_score", 75.0)))
    verdict = judge(SPECS, samples[CHAMPION], samples[CHALLENGER], alpha=float(config.get("alpha", 0.05)),
                    thresholds=thresholds, min_samples=MIN_WINDOWS)
    return decide_step(experiment, weights, verdict, srm, counts)


def _samples(live: pd.DataFrame, labelled: pd.DataFrame, since: pd.Timestamp, window_s: float,
             min_samples: int) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Per arm, one value per window and metric; a metric with fewer than ``min_samples`` rows on an arm
    is left out (no data: the judge waits). ``live``: the answered and the failed requests."""
    out: dict[str, dict[str, np.ndarray]] = {CHAMPION: {}, CHALLENGER: {}}
    counts: dict[str, Any] = {}
    for arm in (CHAMPION, CHALLENGER):
        rows = answers(live[live["arm"] == arm]) if len(live) else live
        requests = rows.drop_duplicates("request_id") if len(rows) else rows
        failed = (requests["role"] == "failed").astype(float) if len(requests) else pd.Series(dtype=float)
        answered = rows[rows["role"] == "live"] if len(rows) else rows
        hits = labelled[labelled["arm"] == arm] if len(labelled) else labelled
        counts[arm] = {"requests": int(len(requests)), "failed": int(failed.sum()), "labelled": int(len(hits))}
        if len(requests) >= min_samples:
            out[arm]["error_rate"] = _per_window(requests["ts"], failed, since, window_s, lambda v: float(np.mean(v)))
        if len(answered) >= min_samples:
            out[arm]["latency_p99_ms"] = _per_window(answered["ts"], answered["latency_ms"], since, window_s,
                                                     lambda v: float(np.percentile(v, 99)))
        if len(hits) >= min_samples:
            out[arm]["accuracy"] = _per_window(hits["ts"], hits["hit"], since, window_s, lambda v: float(np.mean(v)))
        counts[arm]["windows"] = {k: int(len(v)) for k, v in out[arm].items()}
    return out, counts


def _per_window(ts: pd.Series, values: pd.Series, since: pd.Timestamp, window_s: float, agg: Any) -> np.ndarray:
    stamps = pd.to_datetime(ts, utc=True)
    window = ((stamps - since).dt.total_seconds() // window_s).to_numpy()
    frame = pd.DataFrame({"w": window, "v": values.to_numpy(dtype=float)})
    return frame.groupby("w")["v"].agg(agg).to_numpy(dtype=float)


def decide_step(experiment: Experiment, weights: dict[str, float], verdict: Judgement, srm: Optional[SrmResult],
                counts: dict[str, Any]) -> Step:
    share = weights[CHALLENGER] * 100
    if verdict.verdict is Verdict.FAIL:
        return Step(Decision.ROLLBACK, f"canary at {share:g}% failed the judge ({verdict.reason})",
                    all_champion(weights), verdict, srm, counts)
    if verdict.verdict is not Verdict.PASS:
        seen = ", ".join(f"{arm} {c['requests']} requests / {c['labelled']} labelled" for arm, c in counts.items())
        return Step(Decision.WAIT, f"canary at {share:g}%: {verdict.reason} (so far {seen}; a metric is judged from "
                                   f"{experiment.config.get('min_samples', 500)} rows and {MIN_WINDOWS} windows per "
                                   f"arm)", weights, verdict, srm, counts)
    if share >= 100 - 1e-9:
        return Step(Decision.PROMOTE, f"canary passed at 100% ({verdict.reason})", weights, verdict, srm, counts)
    ramp = ramp_steps([float(s) for s in experiment.config.get("steps", [1, 5, 25, 50, 100])])
    following = next(s for s in ramp if s > share + 1e-9)
    return Step(Decision.STEP, f"canary passed at {share:g}% ({verdict.reason}); now {following:g}%",
                {CHALLENGER: following / 100, CHAMPION: 1 - following / 100}, verdict, srm, counts)
