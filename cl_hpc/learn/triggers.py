"""Retraining triggers: should the serving model be retrained now, and why?

Each trigger is a pure function of its config and a :class:`TriggerState` (what is known now: the
clock, the last training, the data and labels that arrived since, a drift result). It returns a
:class:`TriggerResult` (name, value, threshold, fired, detail) that is logged and stored, so a
person can see why a retrain happened, or why not. A trigger that lacks what it needs in the state
reports ``value=None`` and does not fire.

- time: hours since the last training >= ``interval`` (a model never trained fires);
- volume: rows landed since the last training >= ``min_new_fraction`` of that training set;
- performance: the metric on newly labelled data fell >= ``max_drop`` (relative) below its level at
  promotion, in the metric's own direction (a loss that rises has fallen); optionally a river change
  detector replays the 0/1 error stream since promotion and fires when it flags a rise of the error rate;
- drift: the dataset-level result of :mod:`cl_hpc.learn.drift`; *severe* (share >= ``severe_factor``
  x the drift threshold, or any PSI alert) tells the hybrid strategy to retrain from scratch.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd

from cl_hpc.errors import ConfigError, DataError
from cl_hpc.learn.contract import Direction
from cl_hpc.learn.drift import DatasetDrift
from cl_hpc.learn.gate import METRICS

_log = logging.getLogger(__name__)

# name -> (river module, class, defaults). PageHinkley watches rises only: a falling error rate is
# no reason to retrain. DDM only flags rises by design; ADWIN flags any change, so its cuts are
# checked for direction (see _rises).
DETECTORS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "adwin": ("river.drift", "ADWIN", {}),
    "ddm": ("river.drift.binary", "DDM", {}),
    "page_hinkley": ("river.drift", "PageHinkley", {"mode": "up"}),
}


def _problems(checks: list[tuple[bool, str]], what: str) -> None:
    bad = [message for ok, message in checks if not ok]
    if bad:
        raise ConfigError(f"invalid {what} trigger config: " + "; ".join(bad))


@dataclass
class TimeTriggerConf:
    enabled: bool = True
    interval: str = "7D"  # retrain once the model is this old; a pandas Timedelta string ('12h', '7D')

    def __post_init__(self) -> None:
        _problems([(_timedelta(self.interval) is not None, f"interval={self.interval!r} must be a positive "
                    "duration such as '12h' or '7D'")], "time")


@dataclass
class VolumeTriggerConf:
    enabled: bool = True
    min_new_fraction: float = 0.5  # rows landed since the last training / that training set's rows

    def __post_init__(self) -> None:
        _problems([(self.min_new_fraction > 0, f"min_new_fraction={self.min_new_fraction} must be > 0")], "volume")


SOURCES = ("rescore", "served")  # where the performance trigger's metric comes from


@dataclass
class PerformanceTriggerConf:
    enabled: bool = True
    # the metric the state's values are in; None = the model's primary metric (the first of its `metrics`).
    # Its direction comes from the model (TriggerState.direction), else from gate.METRICS for a classifier's
    metric: Optional[str] = None
    # relative fall below the level at promotion that fires (0.03 = 3 %); with the ADWIN detector, the
    # settings scripts/bench_continual.py found to keep >= 98% of every-window accuracy across seeds
    max_drop: float = 0.03
    min_labelled: int = 200  # fewer newly labelled rows give too noisy a metric: reported, never fired
    detector: Optional[str] = "adwin"  # adwin | ddm | page_hinkley, fed the 0/1 error stream; None = off
    # keyword arguments for the river detector (https://riverml.xyz/latest/api/drift/ADWIN/ and
    # drift/binary/DDM/); DDM raises false alarms on long stationary streams at low error rates
    detector_params: Dict[str, Any] = field(default_factory=dict)
    # rescore: the champion, loaded, scores the new labelled rows (any metric it reports); served: the
    # answers the server gave (the label zone's _output.<served_output>) against the labels joined later,
    # on the rows the champion's version served, no model loaded (an accuracy metric only)
    source: str = "rescore"
    served_output: str = "label"  # the logged output compared with the label (the MLP's decoded class)

    def __post_init__(self) -> None:
        _problems([(self.source in SOURCES, f"source={self.source!r}; valid: {list(SOURCES)}"),
                   (bool(str(self.served_output).strip()), "served_output is empty: name the logged output "
                    "that is compared with the label, e.g. label"),
                   (self.metric is None or (isinstance(self.metric, str) and bool(self.metric.strip())),
                    f"metric={self.metric!r} must name a metric the model reports, or be null (its primary "
                    f"metric)"),
                   (0 < self.max_drop < 1, f"max_drop={self.max_drop} must be in (0, 1)"),
                   (self.min_labelled >= 1, f"min_labelled={self.min_labelled} must be >= 1"),
                   (self.detector in (None, *DETECTORS), f"detector={self.detector!r}; valid: "
                    f"{[None, *DETECTORS]}")], "performance")
        if self.detector is not None:
            make_detector(self.detector, self.detector_params)  # bad parameters fail at config time


@dataclass
class DriftTriggerConf:
    enabled: bool = True
    severe_factor: float = 2.0  # severe from a drifted share of this x the drift result's share_threshold
    severe_on_psi_alert: bool = True  # any feature at PSI "alert" is severe as well

    def __post_init__(self) -> None:
        _problems([(self.severe_factor >= 1, f"severe_factor={self.severe_factor} must be >= 1")], "drift")


@dataclass
class TriggerConf:
    """Every trigger's settings; a retrain happens when any enabled trigger fires."""

    time: TimeTriggerConf = field(default_factory=TimeTriggerConf)
    volume: VolumeTriggerConf = field(default_factory=VolumeTriggerConf)
    performance: PerformanceTriggerConf = field(default_factory=PerformanceTriggerConf)
    drift: DriftTriggerConf = field(default_factory=DriftTriggerConf)


_SECTIONS: dict[str, type] = {"time": TimeTriggerConf, "volume": VolumeTriggerConf,
                              "performance": PerformanceTriggerConf, "drift": DriftTriggerConf}


def trigger_conf(params: Optional[Mapping[str, Any]] = None) -> TriggerConf:
    """A TriggerConf from a plain (or OmegaConf) mapping such as ``{volume: {min_new_fraction: 0.2}}``."""
    raw = {str(k): v for k, v in (params or {}).items()}
    _no_unknown(raw, list(_SECTIONS), "trigger")
    return TriggerConf(**{name: _section(cls, raw.get(name), name) for name, cls in _SECTIONS.items()})


def _section(cls: type, params: Optional[Mapping[str, Any]], name: str) -> Any:
    raw = {str(k): dict(v.items()) if hasattr(v, "items") else v for k, v in (params or {}).items()}
    _no_unknown(raw, [f.name for f in dataclasses.fields(cls)], f"trigger.{name}")
    return cls(**raw)


def _no_unknown(raw: Mapping[str, Any], valid: list[str], where: str) -> None:
    unknown = sorted(set(raw) - set(valid))
    if unknown:
        raise ConfigError(f"unknown {where} key(s) {unknown}; valid keys: {valid}")


@dataclass(frozen=True)
class TriggerState:
    """What is known when the triggers are evaluated; every field but ``now`` may be unknown."""

    now: datetime  # the clock, passed in so that evaluation is pure (and tests can fake it)
    last_trained_at: Optional[datetime] = None  # None: no model yet
    train_rows: Optional[int] = None  # rows the last training learnt from
    new_rows: int = 0  # rows landed since the last training
    metric_at_promotion: Optional[float] = None  # the serving model's metric when it was promoted
    metric_now: Optional[float] = None  # the same metric on data labelled since then
    labelled_rows: int = 0  # rows behind metric_now
    errors: Sequence[int] | np.ndarray = ()  # the serving model's 0/1 errors since promotion (1 = wrong), oldest first
    drift: Union[DatasetDrift, Mapping[str, Any], None] = None  # drift.detect_drift's result or its to_dict()
    metric: Optional[str] = None  # the metric the values are in (the config's when None)
    direction: Optional[Direction] = None  # which way it improves (the model's); None = gate.METRICS'


@dataclass(frozen=True)
class TriggerResult:
    name: str  # time | volume | performance | performance.<detector> | drift
    value: Optional[float]  # hours, a fraction, a relative drop, detections, a share; None = not judged
    threshold: Optional[float]  # fires when value >= threshold; None when it depends on a missing input
    fired: bool
    detail: str  # the numbers behind the verdict, for a person
    severe: bool = False  # drift only: retrain from scratch rather than update (hybrid strategy)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _timedelta(value: str) -> Optional[pd.Timedelta]:
    try:
        step = pd.Timedelta(value)
    except (TypeError, ValueError):
        return None
    return step if step > pd.Timedelta(0) else None


def time_trigger(conf: TimeTriggerConf, state: TriggerState) -> TriggerResult:
    hour = pd.Timedelta(hours=1)
    limit = _timedelta(conf.interval) / hour
    if state.last_trained_at is None:
        return TriggerResult("time", None, limit, True, "no model has been trained yet")
    try:
        age = pd.Timestamp(state.now) - pd.Timestamp(state.last_trained_at)
    except TypeError as exc:
        raise DataError(f"now={state.now} and last_trained_at={state.last_trained_at} must both carry a "
                        f"time zone, or neither ({exc})") from exc
    if age < pd.Timedelta(0):
        raise DataError(f"last_trained_at={state.last_trained_at} is after now={state.now}; check the clocks")
    hours = age / hour
    detail = f"last trained {age} ago ({state.last_trained_at}); retrain every {conf.interval}"
    return TriggerResult("time", hours, limit, hours >= limit, detail)


def volume_trigger(conf: VolumeTriggerConf, state: TriggerState) -> TriggerResult:
    need = conf.min_new_fraction
    if not state.train_rows:
        return TriggerResult("volume", None, need, False, "the last training set's row count is unknown")
    share = state.new_rows / state.train_rows
    detail = f"{state.new_rows} new rows since the last training on {state.train_rows} rows"
    return TriggerResult("volume", share, need, share >= need, detail)


def performance_trigger(conf: PerformanceTriggerConf, state: TriggerState) -> TriggerResult:
    base, now = state.metric_at_promotion, state.metric_now
    metric = state.metric or conf.metric or "the model's primary metric"
    if base is None or now is None:
        return TriggerResult("performance", None, conf.max_drop, False,
                             f"{metric} at promotion ({base}) or on new labels ({now}) is unknown")
    higher = state.direction.higher_is_better if state.direction is not None else METRICS.get(metric)
    if higher is None:
        return TriggerResult("performance", None, conf.max_drop, False,
                             f"which way {metric} improves is unknown (the model's `metrics` attribute says it)")
    fall = base - now if higher else now - base  # how much worse, in metric units
    drop = fall / abs(base) if base else fall  # relative; absolute from a zero baseline
    way = "higher" if higher else "lower"
    detail = (f"{metric} ({way} is better) {base:.4g} at promotion, {now:.4g} on {state.labelled_rows} newly "
              f"labelled rows")
    if state.labelled_rows < conf.min_labelled:
        return TriggerResult("performance", drop, conf.max_drop, False,
                             f"{detail}: fewer than min_labelled={conf.min_labelled}, not judged")
    return TriggerResult("performance", drop, conf.max_drop, drop >= conf.max_drop, detail)


def make_detector(name: str, params: Mapping[str, Any]) -> Any:
    """A fresh river detector; bad parameters are a ConfigError that names river's docs."""
    module, cls_name, defaults = DETECTORS[name]
    cls: Callable[..., Any] = getattr(importlib.import_module(module), cls_name)
    try:
        return cls(**{**defaults, **params})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"river {module}.{cls_name}({params}) rejected detector_params: {exc}; see "
                          f"https://riverml.xyz/latest/api/drift/{cls_name}/") from exc


def _error_stream(errors: Sequence[int] | np.ndarray) -> np.ndarray:
    values = np.asarray(errors)
    if values.dtype.kind not in "biuf" and values.size:
        raise DataError(f"errors must be 0/1 numbers (1 = the model was wrong); got dtype {values.dtype}")
    bad = np.flatnonzero((values != 0) & (values != 1))
    if bad.size:
        raise DataError(f"errors must be 0/1 (1 = the model was wrong); position {bad[0]} holds "
                        f"{values[bad[0]].item()!r}")
    return values.astype(int)


def _rises(detector: Any, errors: np.ndarray) -> list[int]:
    """Positions where the detector flags a change that raised the error rate.

    ADWIN cuts its window at a change in either direction: the cut counts when the kept (newer)
    part errs more often than the dropped (older) part. Detectors without a window only flag rises.
    """
    hits = []
    for i, error in enumerate(errors):
        before = int(getattr(detector, "width", -1))  # river's ADWIN reports its width as a float
        detector.update(int(error))
        if not detector.drift_detected:
            continue
        after = int(getattr(detector, "width", 0))
        dropped = errors[i - before:i + 1 - after] if before >= 0 else errors[:0]
        if not dropped.size or errors[i + 1 - after:i + 1].mean() > dropped.mean():
            hits.append(i)
    return hits


def detector_trigger(conf: PerformanceTriggerConf, state: TriggerState) -> TriggerResult:
    """Replays the whole error stream since promotion through a fresh detector: no hidden state."""
    name = f"performance.{conf.detector}"
    errors = _error_stream(state.errors)
    if not errors.size:
        return TriggerResult(name, None, 1.0, False, "no labelled errors since promotion")
    hits = _rises(make_detector(str(conf.detector), conf.detector_params), errors)
    detail = f"no rise of the error rate (mean {errors.mean():.3f}) over {errors.size} errors"
    if hits:
        at = hits[0]
        detail = (f"error rate rose at error #{at} of {errors.size}: {errors[:at].mean():.3f} before, "
                  f"{errors[at:].mean():.3f} from there")
    return TriggerResult(name, float(len(hits)), 1.0, bool(hits), detail)


def drift_trigger(conf: DriftTriggerConf, state: TriggerState) -> TriggerResult:
    if state.drift is None:
        return TriggerResult("drift", None, None, False, "no drift result")
    drift = state.drift if isinstance(state.drift, DatasetDrift) else DatasetDrift.from_dict(state.drift)
    severe_share = conf.severe_factor * drift.share_threshold
    alerts = drift.psi_alerts if conf.severe_on_psi_alert else []
    severe = drift.share >= severe_share or bool(alerts)
    detail = (f"{len(drift.drifted_features)}/{len(drift.features)} features drifted "
              f"{drift.drifted_features}; PSI alerts {drift.psi_alerts}; severe from a share of "
              f"{severe_share:.3g}{' or any PSI alert' if conf.severe_on_psi_alert else ''}")
    return TriggerResult("drift", drift.share, drift.share_threshold, drift.drifted or severe, detail, severe)


def evaluate_triggers(conf: TriggerConf, state: TriggerState) -> list[TriggerResult]:
    """Every enabled trigger's result, each also logged as one JSON line."""
    checks: list[tuple[bool, Callable[[], TriggerResult]]] = [
        (conf.time.enabled, lambda: time_trigger(conf.time, state)),
        (conf.volume.enabled, lambda: volume_trigger(conf.volume, state)),
        (conf.performance.enabled, lambda: performance_trigger(conf.performance, state)),
        (conf.performance.enabled and conf.performance.detector is not None,
         lambda: detector_trigger(conf.performance, state)),
        (conf.drift.enabled, lambda: drift_trigger(conf.drift, state)),
    ]
    results = [evaluate() for enabled, evaluate in checks if enabled]
    for result in results:
        _log.info("trigger %s", json.dumps(result.to_dict()))
    return results


def fired(results: Sequence[TriggerResult]) -> list[TriggerResult]:
    """The results that fired (empty, hence falsy, when nothing calls for a retrain)."""
    return [r for r in results if r.fired]


def severe(results: Sequence[TriggerResult]) -> bool:
    """True when a fired result is severe: the hybrid strategy then retrains from scratch."""
    return any(r.fired and r.severe for r in results)
