"""What an experiment shows so far, from the prediction log and the labelled zone (nothing rescored).

Per arm: requests, units, latency p50/p99 and, where labels were joined, accuracy of the answers it
gave. Across arms: the sample-ratio check (chi-square of the units each arm got since the weights
last changed, against those weights; an alarm at p < experiment.srm_alpha), the two-proportion
z-test of accuracy and Welch's t of latency with intervals (challenger minus champion), the sample
size the accuracy test needs (printed up front), and for a shadow the share of requests on which
the challenger's answer agreed with the live one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import pandas as pd
import pyarrow as pa

from cl_hpc.data.partitions import list_partitions
from cl_hpc.data.predictions import Stream, read_stream
from cl_hpc.errors import DataError
from cl_hpc.rollout.assign import UnitKind
from cl_hpc.rollout.records import Experiment, ExperimentEvent, ExperimentKind, current_split
from cl_hpc.rollout.stats import (
    PowerPlan,
    SrmResult,
    TestResult,
    sample_ratio_mismatch,
    sample_size_binary,
    two_proportion_ztest,
    welch_ttest,
)

CHAMPION, CHALLENGER = "champion", "challenger"
LABELLED_COLUMNS = ["arm", "hit", "ts", "reward", "unit"]
RANKED = "output.item"  # the log column only /rank answers fill (cl_hpc/serve/ranking.py)
SRM_GRACE_S = 10.0  # seconds after a change of weights before units are counted against them
LabelDirs = Union[Path, Sequence[Path], None]  # one label zone, several (live and shadow), or none


@dataclass(frozen=True)
class ArmSummary:
    arm: str
    version: str
    requests: int  # live requests it answered (a shadow's challenger: copies it answered)
    units: int  # distinct units among them (the experiment's unit kind)
    latency_p50_ms: Optional[float]
    latency_p99_ms: Optional[float]
    labelled: int  # its answers with a joined label
    correct: int


@dataclass(frozen=True)
class ExperimentReport:
    experiment: dict[str, Any]
    state: str
    weights: dict[str, float]
    arms: list[ArmSummary]
    srm: Optional[SrmResult]  # None: too few units to check
    accuracy: Optional[TestResult]  # challenger minus champion; None: no labels on one arm
    latency: Optional[TestResult]
    plan: Optional[PowerPlan]  # the samples per arm the accuracy test needs to see experiment.mde
    agreement: Optional[float] = None  # shadow: share of copies answered like the live answer
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def build(experiment: Experiment, events: Sequence[ExperimentEvent], log_dir: Path, label_dir: LabelDirs = None,
          label_col: str = "y", output: str = "label") -> ExperimentReport:
    """The report of ``experiment`` from its ``events`` (oldest first), its log and, if given, its labels."""
    config, latest = experiment.config, events[-1]
    split = current_split(events)
    logged = logged_rows(experiment, log_dir)
    live = logged[logged["role"] == "live"]
    labelled = labelled_in(experiment, as_dirs(label_dir), label_col, output)
    arms = [_arm(experiment, a.name, a.version, logged, labelled) for a in experiment.arms]
    notes: list[str] = []
    srm = srm_check(experiment, split, live, float(config.get("srm_alpha", 0.001)), notes)
    by_arm = {a.arm: a for a in arms}
    accuracy = _accuracy(by_arm, float(config.get("alpha", 0.05)), notes)
    latency = _latency(experiment, logged, float(config.get("alpha", 0.05)), notes)
    plan = _plan(by_arm, config, notes)
    agreement = _agreement(logged, output) if experiment.kind is ExperimentKind.SHADOW else None
    return ExperimentReport(experiment=experiment.to_json(), state=latest.state.value, weights=latest.weights,
                            arms=arms, srm=srm, accuracy=accuracy, latency=latency, plan=plan, agreement=agreement,
                            notes=notes)


def logged_rows(experiment: Experiment, log_dir: Path) -> pd.DataFrame:
    rows = read_stream(log_dir, Stream.PREDICTIONS, since=experiment.created).frame
    if "experiment" not in rows.columns:
        return rows.iloc[0:0].assign(experiment=pd.Series(dtype="float64"), arm=pd.Series(dtype=str))
    return rows[rows["experiment"] == experiment.id].reset_index(drop=True)


def labelled_rows(experiment: Experiment, label_dir: Path, label_col: str, output: str) -> pd.DataFrame:
    """The labelled rows of this experiment: arm, and whether the answer equalled the label."""
    frames = []
    for part in list_partitions(label_dir):
        try:
            frame = pd.read_parquet(part.path)
        except (OSError, pa.ArrowException) as exc:  # a raw pyarrow error would end watch --loop
            raise DataError(f"label zone partition {part.path} is unreadable ({exc}); move it aside and rerun") \
                from exc
        answer = f"_output.{output}"
        if not {"_experiment", "_arm", label_col, answer} <= set(frame.columns):
            continue
        # a row without this output (a /rank answer's item, whose label is a click) has nothing to compare
        frame = frame[(frame["_experiment"] == experiment.id) & frame[label_col].notna() & frame[answer].notna()]
        if "_defaulted" in frame:
            frame = frame[~frame["_defaulted"].astype(bool)]
        hit = frame[label_col].astype(str) == frame[answer].astype(str)
        if pd.api.types.is_numeric_dtype(frame[label_col]) and pd.api.types.is_numeric_dtype(frame[answer]):
            hit = frame[label_col].astype("float64") == frame[answer].astype("float64")
        ts = frame["ts"] if "ts" in frame else pd.Series(pd.NaT, index=frame.index)
        # the outcome's own reward where it sent one (a bandit's reward stream), else NaN
        reward = frame["_reward"].astype("float64") if "_reward" in frame else pd.Series(np.nan, index=frame.index)
        # a zone joined with labels.value=reward holds the reward as its label: no answer is graded by it
        graded = (pd.Series(np.nan, index=frame.index) if _reward_zone(frame[label_col], reward)
                  else hit.astype("float64"))
        frames.append(pd.DataFrame({"arm": frame["_arm"].astype(str), "hit": graded, "ts": ts, "reward": reward,
                                    "unit": _unit_of(experiment.unit, frame, ts, part.path.name)}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=LABELLED_COLUMNS)


def as_dirs(label_dir: LabelDirs) -> tuple[Path, ...]:
    if label_dir is None:
        return ()
    return (label_dir,) if isinstance(label_dir, Path) else tuple(label_dir)


def _unit_of(kind: UnitKind, frame: pd.DataFrame, ts: pd.Series, part: str) -> pd.Series:
    """Each labelled row's randomization unit (its user, its request, or its UTC day): the rows of one
    unit are correlated, so a test compares units, not rows. A zone without request ids (not the
    join's): each row its own unit."""
    request = (frame["_request_id"].astype(str) if "_request_id" in frame
               else pd.Series([f"{part}:{i}" for i in range(len(frame))], index=frame.index))
    if kind is UnitKind.USER and "_unit" in frame:
        return frame["_unit"].astype("string").fillna(request).astype(str)
    if kind is UnitKind.DAY:
        return pd.to_datetime(ts, utc=True).dt.strftime("%Y-%m-%d")
    return request


def _reward_zone(labels: pd.Series, reward: pd.Series) -> bool:
    both = labels.notna() & reward.notna()
    return bool(both.any()) and bool((pd.to_numeric(labels[both], errors="coerce") == reward[both]).all())


def labelled_in(experiment: Experiment, label_dirs: Sequence[Path], label_col: str, output: str,
                graded: bool = True) -> pd.DataFrame:
    """:func:`labelled_rows` over several zones (a shadow's copies are joined into a zone of their own);
    ``graded``: only the rows whose answer a label grades (``hit`` 0/1), for accuracy; else every row,
    ``hit`` NaN where the zone holds rewards, for a bandit's reward stream."""
    frames = [f for f in (labelled_rows(experiment, d, label_col, output) for d in label_dirs) if len(f)]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=LABELLED_COLUMNS)
    if graded:
        rows = rows[rows["hit"].notna()].astype({"hit": int})
    return rows


def _arm(experiment: Experiment, name: str, version: str, logged: pd.DataFrame,
         labelled: pd.DataFrame) -> ArmSummary:
    mine = logged[logged["arm"] == name] if len(logged) else logged
    requests = mine.drop_duplicates("request_id") if len(mine) else mine
    latency = requests["latency_ms"].to_numpy(dtype=float) if len(requests) else np.zeros(0)
    hits = labelled[labelled["arm"] == name]["hit"] if len(labelled) else pd.Series(dtype=int)
    return ArmSummary(arm=name, version=version, requests=len(requests),
                      units=int(unit_keys(experiment.unit, requests).nunique()) if len(requests) else 0,
                      latency_p50_ms=float(np.percentile(latency, 50)) if latency.size else None,
                      latency_p99_ms=float(np.percentile(latency, 99)) if latency.size else None,
                      labelled=int(len(hits)), correct=int(hits.sum()))


def unit_keys(kind: UnitKind, requests: pd.DataFrame) -> pd.Series:
    """The randomization unit of each logged request: its user, itself, or its UTC day."""
    if kind is UnitKind.USER:
        return requests["unit"]
    if kind is UnitKind.DAY:
        return pd.to_datetime(requests["ts"], utc=True).dt.strftime("%Y-%m-%d")
    return requests["request_id"]


def srm_check(experiment: Experiment, split: ExperimentEvent, live: pd.DataFrame, threshold: float,
         notes: list[str]) -> Optional[SrmResult]:
    """Units per arm since the weights last changed, against those weights (a shadow splits nothing)."""
    if experiment.kind in (ExperimentKind.SHADOW, ExperimentKind.INTERLEAVE):
        return None  # a shadow splits nothing; interleaving logs every request on both arms (its check: first picks)
    # Servers route by the old weights until their next poll of the store (serve.poll_interval_s): a user
    # seen in that lag would be counted on the arm the old weights gave.
    since = pd.Timestamp(split.at + SRM_GRACE_S, unit="s", tz="UTC")
    current = live[pd.to_datetime(live["ts"], utc=True) >= since] if len(live) else live
    names = [a.name for a in experiment.arms]
    weights = [split.weights[n] for n in names]
    # A unit is counted once, on the arm it was assigned to: its first request since the change.
    first = current.sort_values("ts").drop_duplicates(_unit_column(experiment.unit)) if len(current) else current
    counts = [int((first["arm"] == n).sum()) if len(first) else 0 for n in names]
    if sum(counts) < 20 or any(w == 0 for w in weights):
        notes.append(f"sample-ratio check not run: {sum(counts)} units since the weights last changed (20 needed), "
                     f"or an arm weighted 0")
        return None
    return sample_ratio_mismatch(counts, weights, threshold=threshold)


def _unit_column(kind: UnitKind) -> str:
    return {UnitKind.USER: "unit", UnitKind.REQUEST: "request_id", UnitKind.DAY: "ts"}[kind]


def _accuracy(arms: dict[str, ArmSummary], alpha: float, notes: list[str]) -> Optional[TestResult]:
    a, b = arms.get(CHAMPION), arms.get(CHALLENGER)
    if a is None or b is None or not a.labelled or not b.labelled:
        notes.append("accuracy not compared: no joined labels on one arm yet (python -m cl_hpc.labels join)")
        return None
    return two_proportion_ztest(a.correct, a.labelled, b.correct, b.labelled, metric="accuracy", alpha=alpha)


def answers(logged: pd.DataFrame) -> pd.DataFrame:
    """The logged rows of predictions (``/predict``, v2), without ``/rank``'s (rows with an ``item``
    output): a ranking of n candidates takes longer, and would skew a latency comparison."""
    return logged[logged[RANKED].isna()] if RANKED in logged.columns else logged


def _latency(experiment: Experiment, logged: pd.DataFrame, alpha: float, notes: list[str]) -> Optional[TestResult]:
    logged = answers(logged)
    values = {n: logged[logged["arm"] == n].drop_duplicates("request_id")["latency_ms"].to_numpy(dtype=float)
              if len(logged) else np.zeros(0) for n in (CHAMPION, CHALLENGER)}
    if min(v.size for v in values.values()) < 2:
        notes.append("latency not compared: fewer than 2 answers on one arm")
        return None
    return welch_ttest(values[CHAMPION], values[CHALLENGER], metric="latency_ms", alpha=alpha)


def _plan(arms: dict[str, ArmSummary], config: dict[str, Any], notes: list[str]) -> Optional[PowerPlan]:
    champion = arms.get(CHAMPION)
    baseline = champion.correct / champion.labelled if champion and champion.labelled else 0.5
    mde = float(config.get("mde", 0.02))
    if not 0 < baseline + mde < 1 or not 0 < baseline < 1:
        notes.append(f"no sample size: baseline accuracy {baseline:.3f} + mde {mde} leaves (0, 1)")
        return None
    return sample_size_binary(baseline, mde, alpha=float(config.get("alpha", 0.05)),
                              power=float(config.get("power", 0.8)))


def _agreement(logged: pd.DataFrame, output: str) -> Optional[float]:
    column = f"output.{output}"
    if not len(logged) or column not in logged.columns:
        return None
    live = logged[logged["role"] == "live"].set_index(["request_id", "row"])[column]
    shadow = logged[logged["role"] == "shadow"].set_index(["request_id", "row"])[column]
    both = live.to_frame("live").join(shadow.to_frame("shadow"), how="inner")
    return float((both["live"].astype(str) == both["shadow"].astype(str)).mean()) if len(both) else None
