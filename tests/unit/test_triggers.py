"""Each retraining trigger on states built to fire and not to fire; river's detectors on seeded
error streams; the config builder's errors."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

import numpy as np
import pytest

from cl_hpc.errors import ConfigError, DataError
from cl_hpc.learn.contract import Direction
from cl_hpc.learn.drift import DatasetDrift, FeatureDrift
from cl_hpc.learn.triggers import (
    DETECTORS,
    DriftTriggerConf,
    PerformanceTriggerConf,
    TimeTriggerConf,
    TriggerConf,
    TriggerResult,
    TriggerState,
    VolumeTriggerConf,
    detector_trigger,
    drift_trigger,
    evaluate_triggers,
    fired,
    performance_trigger,
    severe,
    time_trigger,
    trigger_conf,
    volume_trigger,
)

NOW = datetime(2026, 3, 1, 12, 0)


def state(**over: Any) -> TriggerState:
    return TriggerState(now=NOW, **over)


# --- time ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("interval, age, value, fires", [
    ("7D", None, None, True),  # never trained
    ("7D", timedelta(days=8), 192.0, True),
    ("7D", timedelta(days=7), 168.0, True),  # at the threshold
    ("7D", timedelta(days=6, hours=23), 167.0, False),
    ("12h", timedelta(hours=13), 13.0, True),
    ("12h", timedelta(0), 0.0, False),
])
def test_time_trigger(interval: str, age: Optional[timedelta], value: Optional[float], fires: bool) -> None:
    last = None if age is None else NOW - age
    result = time_trigger(TimeTriggerConf(interval=interval), state(last_trained_at=last))
    assert (result.name, result.value, result.fired) == ("time", value, fires)
    assert result.threshold == {"7D": 168.0, "12h": 12.0}[interval]


@pytest.mark.parametrize("last, message", [
    (datetime(2026, 3, 1, tzinfo=timezone.utc), "must both carry a time zone, or neither"),
    (NOW + timedelta(hours=1), "is after now"),
])
def test_time_trigger_rejects_inconsistent_clocks(last: datetime, message: str) -> None:
    with pytest.raises(DataError, match=message):
        time_trigger(TimeTriggerConf(), state(last_trained_at=last))


# --- volume -------------------------------------------------------------------------------------


@pytest.mark.parametrize("train_rows, new_rows, fraction, value, fires", [
    (1000, 500, 0.5, 0.5, True),
    (1000, 499, 0.5, 0.499, False),
    (1000, 2500, 2.0, 2.5, True),
    (1000, 0, 0.1, 0.0, False),
    (None, 10_000, 0.5, None, False),  # the training set's size is unknown: not judged
    (0, 10, 0.5, None, False),
])
def test_volume_trigger(train_rows: Optional[int], new_rows: int, fraction: float, value: Optional[float],
                        fires: bool) -> None:
    result = volume_trigger(VolumeTriggerConf(min_new_fraction=fraction),
                            state(train_rows=train_rows, new_rows=new_rows))
    assert (result.name, result.value, result.threshold, result.fired) == ("volume", value, fraction, fires)


# --- performance --------------------------------------------------------------------------------


@pytest.mark.parametrize("metric, base, now, rows, drop, fires", [
    ("accuracy", 0.90, 0.85, 500, 0.05 / 0.90, True),  # 5.6 % below
    ("accuracy", 0.90, 0.87, 500, 0.03 / 0.90, False),  # 3.3 % below
    ("accuracy", 0.90, 0.95, 500, -0.05 / 0.90, False),  # better
    ("accuracy", 0.90, 0.50, 50, 0.40 / 0.90, False),  # a big fall on too few labels: reported, not fired
    ("log_loss", 0.30, 0.33, 500, 0.10, True),  # a loss rising 10 % is a 10 % drop
    ("log_loss", 0.30, 0.25, 500, -0.05 / 0.30, False),
    ("log_loss", 0.0, 0.2, 500, 0.2, True),  # a zero baseline: the drop is absolute
    ("accuracy", None, 0.5, 500, None, False),
    ("accuracy", 0.9, None, 500, None, False),
])
def test_performance_trigger(metric: str, base: Optional[float], now: Optional[float], rows: int,
                             drop: Optional[float], fires: bool) -> None:
    result = performance_trigger(PerformanceTriggerConf(metric=metric, max_drop=0.05),
                                 state(metric_at_promotion=base, metric_now=now, labelled_rows=rows))
    assert result.value == (None if drop is None else pytest.approx(drop))
    assert (result.name, result.threshold, result.fired) == ("performance", 0.05, fires)
    if rows < 200 and drop is not None:
        assert "not judged" in result.detail


@pytest.mark.parametrize("direction, base, now, drop, fires", [
    (Direction.LOWER, 2.0, 2.2, 0.10, True),  # a per-token loss rising 10 %
    (Direction.LOWER, 2.0, 1.5, -0.25, False),  # falling: better
    (Direction.HIGHER, 0.40, 0.30, 0.25, True),  # token accuracy falling 25 %
])
def test_the_models_own_direction_decides_which_way_is_worse(direction: Direction, base: float, now: float,
                                                             drop: float, fires: bool) -> None:
    """A metric the classifier table does not know (a language model's): the state carries the
    name and direction the watch resolved from the model; the config's metric is null."""
    result = performance_trigger(PerformanceTriggerConf(max_drop=0.05),
                                 state(metric_at_promotion=base, metric_now=now, labelled_rows=500,
                                       metric="loss", direction=direction))
    assert (result.value, result.fired) == (pytest.approx(drop), fires)
    assert result.detail.startswith(f"loss ({direction.value} is better) ")


def test_a_metric_of_unknown_direction_is_not_judged() -> None:
    result = performance_trigger(PerformanceTriggerConf(metric="bleu", max_drop=0.05),
                                 state(metric_at_promotion=0.3, metric_now=0.1, labelled_rows=500))
    assert (result.value, result.fired) == (None, False) and "which way bleu improves is unknown" in result.detail


def test_the_default_metric_is_null_the_models_primary() -> None:
    assert PerformanceTriggerConf().metric is None
    result = performance_trigger(PerformanceTriggerConf(), state(metric_now=0.5))
    assert result.value is None and result.detail.startswith("the model's primary metric at promotion (None)")


def errors(seed: int, rates: list[float], n: int = 1000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.random(n) < rate for rate in rates]).astype(int)


@pytest.mark.parametrize("detector", sorted(DETECTORS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_detectors_fire_when_the_error_rate_jumps(detector: str, seed: int) -> None:
    result = detector_trigger(PerformanceTriggerConf(detector=detector), state(errors=errors(seed, [0.1, 0.5])))
    assert result.name == f"performance.{detector}" and result.fired and result.value >= 1
    assert "error rate rose at error #" in result.detail


@pytest.mark.parametrize("detector", ["adwin", "page_hinkley"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_detectors_stay_quiet_on_a_stationary_stream(detector: str, seed: int) -> None:
    """DDM is left out: river's DDM raises false alarms on long stationary streams at a 10 % error rate
    (about half of 2000-error streams), which is why ADWIN is the one to use."""
    for rates in ([0.1, 0.1], [0.5, 0.1]):  # the same rate throughout, or a *falling* one
        result = detector_trigger(PerformanceTriggerConf(detector=detector), state(errors=errors(seed, rates)))
        assert (result.value, result.fired) == (0.0, False), (rates, result.detail)


def test_adwin_finds_the_jump_where_it_happened() -> None:
    result = detector_trigger(PerformanceTriggerConf(detector="adwin"), state(errors=errors(0, [0.1, 0.5])))
    position = int(result.detail.split("#")[1].split(" ")[0])
    assert 1000 <= position < 1200


@pytest.mark.parametrize("stream, message", [([0, 1, 2], "position 2 holds 2"), ([0.5], "position 0 holds 0.5"),
                                             (["x"], "0/1 numbers")])
def test_error_stream_must_be_zero_one(stream: list[float], message: str) -> None:
    with pytest.raises(DataError, match=message):
        detector_trigger(PerformanceTriggerConf(detector="adwin"), state(errors=stream))


def test_no_errors_is_not_judged() -> None:
    result = detector_trigger(PerformanceTriggerConf(detector="ddm"), state())
    assert (result.value, result.fired) == (None, False)


# --- drift --------------------------------------------------------------------------------------


def drift_result(drifted: list[bool], psi_levels: list[str], share_threshold: float = 0.25) -> DatasetDrift:
    features = tuple(FeatureDrift(feature=f"f{i}", kind="numeric", method="ks", statistic=0.1,
                                  p_value=0.001 if d else 0.5, threshold=0.01, drifted=d,
                                  psi=0.3 if p == "alert" else 0.0, psi_level=p,
                                  n_reference=100, n_current=100, sampled=False)
                     for i, (d, p) in enumerate(zip(drifted, psi_levels)))
    share = sum(drifted) / len(drifted)
    return DatasetDrift(features=features, share=share, share_threshold=share_threshold,
                        drifted=share >= share_threshold, alpha=0.05, rows_reference=100, rows_current=100)


@pytest.mark.parametrize("drifted, levels, conf, fires, is_severe", [
    ([False] * 4, ["ok"] * 4, DriftTriggerConf(), False, False),
    ([True, False, False, False], ["warn", "ok", "ok", "ok"], DriftTriggerConf(), True, False),  # share 0.25
    ([True, True, False, False], ["warn"] * 4, DriftTriggerConf(), True, True),  # 0.5 = 2 x 0.25
    ([True, True, False, False], ["warn"] * 4, DriftTriggerConf(severe_factor=3.0), True, False),
    ([False] * 4, ["alert", "ok", "ok", "ok"], DriftTriggerConf(), True, True),  # a PSI alert alone
    ([False] * 4, ["alert", "ok", "ok", "ok"], DriftTriggerConf(severe_on_psi_alert=False), False, False),
])
def test_drift_trigger(drifted: list[bool], levels: list[str], conf: DriftTriggerConf, fires: bool,
                       is_severe: bool) -> None:
    result = drift_result(drifted, levels)
    for given in (result, json.loads(json.dumps(result.to_dict()))):  # the object or its logged JSON
        got = drift_trigger(conf, state(drift=given))
        assert (got.name, got.value, got.threshold) == ("drift", result.share, 0.25)
        assert (got.fired, got.severe) == (fires, is_severe)


def test_no_drift_result_is_not_judged() -> None:
    assert drift_trigger(DriftTriggerConf(), state()) == TriggerResult("drift", None, None, False, "no drift result")


# --- all together -------------------------------------------------------------------------------


def test_evaluate_triggers_runs_the_enabled_ones_and_logs_each(caplog: pytest.LogCaptureFixture) -> None:
    now_state = state(last_trained_at=NOW - timedelta(days=1), train_rows=1000, new_rows=100,
                      metric_at_promotion=0.9, metric_now=0.89, labelled_rows=2000, errors=errors(0, [0.1, 0.5]),
                      drift=drift_result([False] * 4, ["ok"] * 4))
    conf = trigger_conf({"performance": {"detector": "adwin"}, "volume": {"enabled": False}})
    with caplog.at_level(logging.INFO, logger="cl_hpc.learn.triggers"):
        results = evaluate_triggers(conf, now_state)
    assert [r.name for r in results] == ["time", "performance", "performance.adwin", "drift"]
    assert [r.name for r in fired(results)] == ["performance.adwin"] and not severe(results)
    logged = [json.loads(r.getMessage().split(" ", 1)[1]) for r in caplog.records]
    assert logged == [r.to_dict() for r in results]


def test_nothing_fires_on_a_fresh_quiet_state() -> None:
    quiet = state(last_trained_at=NOW, train_rows=1000, new_rows=0, metric_at_promotion=0.9, metric_now=0.9,
                  labelled_rows=1000, drift=drift_result([False] * 4, ["ok"] * 4))
    results = evaluate_triggers(TriggerConf(), quiet)
    # the default performance trigger also runs ADWIN over the (here empty) error stream
    assert [r.name for r in results] == ["time", "volume", "performance", "performance.adwin", "drift"]
    assert fired(results) == []


def test_severe_drift_is_reported_for_the_hybrid_strategy() -> None:
    results = evaluate_triggers(TriggerConf(),
                                state(last_trained_at=NOW, drift=drift_result([True] * 4, ["alert"] * 4)))
    assert [r.name for r in fired(results)] == ["drift"] and severe(results)


@pytest.mark.parametrize("params, message", [
    ({"tme": {}}, r"unknown trigger key\(s\) \['tme'\]"),
    ({"volume": {"fraction": 0.1}}, r"unknown trigger.volume key\(s\) \['fraction'\]"),
    ({"time": {"interval": "soon"}}, "interval='soon' must be a positive duration"),
    ({"time": {"interval": "-1h"}}, "interval='-1h' must be a positive duration"),
    ({"volume": {"min_new_fraction": 0}}, "min_new_fraction=0 must be > 0"),
    ({"performance": {"metric": " "}}, "metric=' ' must name a metric the model reports, or be null"),
    ({"performance": {"max_drop": 1.5}}, "max_drop=1.5 must be in"),
    ({"performance": {"detector": "kswin"}}, "detector='kswin'; valid"),
    ({"performance": {"detector": "adwin", "detector_params": {"bogus": 1}}}, "river river.drift.ADWIN"),
    ({"drift": {"severe_factor": 0.5}}, "severe_factor=0.5 must be >= 1"),
])
def test_bad_trigger_config(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        trigger_conf(params)


def test_trigger_conf_builds_nested_sections() -> None:
    conf = trigger_conf({"time": {"interval": "1D"}, "performance": {"detector": "page_hinkley",
                                                                     "detector_params": {"threshold": 20.0}}})
    assert conf.time.interval == "1D" and conf.volume == VolumeTriggerConf()
    assert conf.performance.detector_params == {"threshold": 20.0}
