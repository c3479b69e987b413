"""Train/serve consistency: logged feature values, served by the real online path (or recomputed by the real
point-in-time path at chosen times), replayed by ``check_log``; every verdict is injected a known number of
times, so the counts, the examples and the largest difference are exact."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from cl_hpc.errors import DataError
from cl_hpc.features.consistency import ConsistencyReport, Verdict, check_log
from cl_hpc.features.definitions import Catalog, load_catalog
from cl_hpc.features.materialize import materialize
from cl_hpc.features.online import OnlineStore
from cl_hpc.features.retrieval import event_column, historical, online
from tests.feature_zone import START, add_partition, spend_catalog

NAMES = ["events_1h", "amount_sum_1h"]
EVENT = "spend.event_ts"
USERS = [0, 1, 2, 3, 4]  # every user of the zone (feature_zone: 5 users)
UNKNOWN = 77
NOW = START + pd.Timedelta("4h30min")  # after the last event (03:58): every user's latest value is fresh
EARLIER = START + pd.Timedelta("2h30min")
LAG = START + pd.Timedelta("3h30min")  # a server reading a store that has not materialized hour 3 yet
EXPIRED = START + pd.Timedelta("4h55min")  # user 0's last event (03:53:30) is past the 1h TTL; the rest are not


@dataclass(frozen=True)
class Store:
    catalog: Catalog
    root: Path
    online: OnlineStore
    lagging: pd.DataFrame  # the online values at LAG before hour 3 was materialized, by user


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    """The spend view with defaults (a server logs a default where the entity has no value), materialized over
    hours 0-2, read online at LAG, then hour 3 landed and materialized: the store as it is now."""
    catalog_dir, zone = spend_catalog(tmp_path, hours=3)
    spec = catalog_dir / "spend.yaml"
    spec.write_text(spec.read_text().replace("description: events}", "description: events, default: 0}")
                    .replace("description: spending}", "description: spending, default: 0.0}"))
    catalog, root = load_catalog(catalog_dir), tmp_path / "features"
    onl = OnlineStore(root / "online.sqlite")
    materialize(catalog.view("spend"), root, onl)
    lagging = online(catalog, onl, pd.DataFrame({"user_id": USERS}), NAMES, at=LAG, events=True)
    add_partition(zone, 3)
    materialize(catalog.view("spend"), root, onl)
    return Store(catalog, root, onl, lagging)


def _served_now(store: Store, users: list[int], at: pd.Timestamp = NOW) -> pd.DataFrame:
    return online(store.catalog, store.online, pd.DataFrame({"user_id": users}), NAMES, at=at, events=True)


def _offline(store: Store, users: list[int], at: pd.Timestamp) -> pd.DataFrame:
    queries = pd.DataFrame({"user_id": users, "ts": [at] * len(users)})
    return historical(store.catalog, store.root, queries, NAMES, "ts", events=True)


def _row(request: str, at: pd.Timestamp, user: int, events: Any, amount: Any, event: Any) -> dict[str, Any]:
    """One logged row as the prediction log holds it (cl_hpc/data/predictions.py)."""
    return {"request_id": request, "ts": at.tz_localize("UTC"), "input.user_id": user,
            "input.events_1h": int(events), "input.amount_sum_1h": float(amount), f"input.{EVENT}": event}


def _rows(request: str, at: pd.Timestamp, users: list[int], served: pd.DataFrame) -> list[dict[str, Any]]:
    return [_row(f"{request}-{u}", at, u, s["events_1h"], s["amount_sum_1h"], s[EVENT])
            for u, (_, s) in zip(users, served.iterrows())]


def _log(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame[f"input.{EVENT}"] = pd.to_datetime(frame[f"input.{EVENT}"]).dt.as_unit("us")
    return frame


def _counts(report: ConsistencyReport) -> dict[str, dict[str, int]]:
    return {f.feature: f.counts for f in report.features}


def _verdicts(**counts: int) -> dict[str, int]:
    return {v.value: counts.get(v.value, 0) for v in Verdict}


def test_events_true_gives_the_same_event_times_online_and_offline(store: Store) -> None:
    for at in (NOW, EXPIRED):
        users = [*USERS, UNKNOWN]
        served, offline = _served_now(store, users, at), _offline(store, users, at)
        assert served[EVENT].dtype == offline[EVENT].dtype == np.dtype("datetime64[us]")
        pd.testing.assert_series_equal(served[EVENT], offline[EVENT], check_names=False)
        assert served[EVENT].isna().tolist() == ([False] * 5 + [True] if at == NOW else [True] + [False] * 4 + [True])
    # the event time is the one of the value: the last event of each user in the zone
    assert _served_now(store, [0])[EVENT].iloc[0] == pd.Timestamp("2026-01-01T03:53:30")
    assert event_column(store.catalog.view("spend")) == EVENT
    assert EVENT not in online(store.catalog, store.online, pd.DataFrame({"user_id": [0]}), NAMES, at=NOW).columns


def test_every_verdict_counted_with_its_examples(store: Store) -> None:
    now, earlier = _served_now(store, USERS), _offline(store, USERS, EARLIER)
    stale_offline = _offline(store, [2], LAG).iloc[0]
    lag = store.lagging.iloc[2]
    # preconditions of the injected cases (seeded data): the stale value is older and differs in both features
    assert lag[EVENT] < stale_offline[EVENT] and lag["events_1h"] != stale_offline["events_1h"]
    assert lag["amount_sum_1h"] != stale_offline["amount_sum_1h"]
    ahead, behind = now.iloc[4], earlier.iloc[4]  # user 4's value of NOW, logged at EARLIER: an event offline lacks
    assert ahead["events_1h"] != behind["events_1h"] and ahead["amount_sum_1h"] != behind["amount_sum_1h"]
    skewed = now.iloc[1]
    rows = [
        *_rows("now", NOW, USERS, now),  # 5 matches
        *_rows("earlier", EARLIER, USERS, earlier),  # 5 matches at their own time
        _row("skew", NOW, 1, skewed["events_1h"], skewed["amount_sum_1h"] + 0.25, skewed[EVENT]),
        _row("ahead", EARLIER, 4, ahead["events_1h"], ahead["amount_sum_1h"], ahead[EVENT]),
        _row("stale", LAG, 2, lag["events_1h"], lag["amount_sum_1h"], lag[EVENT]),
        _row("no-online", NOW, 3, 0, 0.0, pd.NaT),  # the server had nothing and used the defaults
        _row("no-offline", NOW, UNKNOWN, 5, 1.5, pd.Timestamp("2026-01-01T04:10:00")),
        _row("expired-offline", EXPIRED, 0, now.iloc[0]["events_1h"], now.iloc[0]["amount_sum_1h"], now.iloc[0][EVENT]),
        _row("neither", NOW, UNKNOWN, 0, 0.0, pd.NaT),  # both missing: both sides give the defaults
    ]
    report = check_log(store.catalog, store.root, _log(rows), examples=3)
    assert _counts(report) == {
        "events_1h": _verdicts(match=12, skew=1, stale=1, missing_online=1, missing_offline=2),
        "amount_sum_1h": _verdicts(match=11, skew=2, stale=1, missing_online=1, missing_offline=2)}
    assert not report.ok and report.rows == 17 == sum(report.features[0].counts.values())
    assert (report.first, report.last) == ("2026-01-01T02:30:00+00:00", "2026-01-01T04:55:00+00:00")
    events, amount = report.features
    assert (events.view, events.rows, events.failed, amount.failed) == ("spend", 17, 4, 5)
    assert events.max_abs_diff == abs(ahead["events_1h"] - behind["events_1h"])
    assert amount.max_abs_diff == pytest.approx(max(0.25, abs(ahead["amount_sum_1h"] - behind["amount_sum_1h"])))
    assert [e["request_id"] for e in amount.examples] == ["skew", "ahead", "no-online"]  # failing ones, log order
    assert [e["verdict"] for e in events.examples] == ["skew", "missing_online", "missing_offline"]
    assert amount.examples[0] == {
        "verdict": "skew", "request_id": "skew", "entity": [1], "at": "2026-01-01T04:30:00+00:00",
        "served": pytest.approx(skewed["amount_sum_1h"] + 0.25), "offline": pytest.approx(skewed["amount_sum_1h"]),
        "served_event": skewed[EVENT].tz_localize("UTC").isoformat(),
        "offline_event": skewed[EVENT].tz_localize("UTC").isoformat()}
    missed = events.examples[1]  # the default served while the offline store has user 3's value of NOW
    assert (missed["served"], missed["served_event"], missed["offline"]) == (0, None, now.iloc[3]["events_1h"])
    assert missed["offline_event"] == now.iloc[3][EVENT].tz_localize("UTC").isoformat()
    assert events.examples[2]["offline_event"] is None and events.examples[2]["entity"] == [UNKNOWN]


def test_stale_values_alone_pass_and_a_tolerance_decides_a_near_value(store: Store) -> None:
    now, lag = _served_now(store, USERS), store.lagging
    rows = [*_rows("now", NOW, USERS, now), *_rows("lag", LAG, USERS, lag)]
    report = check_log(store.catalog, store.root, _log(rows))
    assert report.ok and report.rows == 10  # lag is materialization lag, not a code difference
    offline = _offline(store, USERS, LAG)
    assert (lag[EVENT] < offline[EVENT]).all()  # every user had events in hour 3 before LAG
    for f in report.features:
        differ = int((lag[f.feature].to_numpy(float) != offline[f.feature].to_numpy(float)).sum())
        assert differ >= 1 and f.counts == _verdicts(match=10 - differ, stale=differ)
    one = now.iloc[1]
    near = _row("near", NOW, 1, one["events_1h"], one["amount_sum_1h"] * (1 + 1e-12), one[EVENT])
    assert check_log(store.catalog, store.root, _log([near])).ok  # within the default relative 1e-9
    exact = check_log(store.catalog, store.root, _log([near]), tolerance=0.0)
    assert _counts(exact)["amount_sum_1h"] == _verdicts(skew=1)


def test_bad_tolerance_and_a_log_without_catalog_features(store: Store) -> None:
    log = _log(_rows("now", NOW, USERS, _served_now(store, USERS)))
    for bad in (-0.1, float("nan")):
        with pytest.raises(DataError, match="give a relative tolerance >= 0"):
            check_log(store.catalog, store.root, log, tolerance=bad)
    plain = pd.DataFrame({"request_id": ["a"], "ts": [NOW.tz_localize("UTC")], "input.x": [1.0]})
    no_events = log.drop(columns=[f"input.{EVENT}"])  # features and keys, but not the view's event time
    for frame in (plain, no_events):
        with pytest.raises(DataError, match="no logged row carries the catalog features with their entity keys "
                                            "and event times.*pipeline=features_train"):
            check_log(store.catalog, store.root, frame)
