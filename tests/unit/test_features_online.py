"""The online store: latest values per entity, never moved back in time, and the TTL honoured on read."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pandas as pd
import pytest

from cl_hpc.errors import ConfigError, DataError
from cl_hpc.features.definitions import Feature, FeatureView, Source
from cl_hpc.features.online import OnlineStore

T0 = pd.Timestamp("2026-01-01T00:00:00")
VIEW = FeatureView(name="activity", version=1, entities=("user_id",), source=Source("zone"),
                   transform="cl_hpc.features.transforms.windowed_aggregates",
                   features=(Feature("events_1h", "int64", "events"), Feature("amount_mean_1h", "float64", "mean")),
                   params={"windows": ["1h"]}, ttl="2h")


def _rows(*rows: tuple[int, str, str, int, float | None]) -> pd.DataFrame:
    return pd.DataFrame([{"user_id": u, "_event_ts": T0 + pd.Timedelta(e), "_created_ts": T0 + pd.Timedelta(c),
                          "events_1h": n, "amount_mean_1h": m} for u, e, c, n, m in rows])


@pytest.fixture()
def store(tmp_path: Path) -> OnlineStore:
    online = OnlineStore(tmp_path / "features.sqlite")
    online.register(VIEW)
    yield online
    online.close()


def test_latest_value_wins_and_never_moves_back(store: OnlineStore) -> None:
    store.write(VIEW, _rows((1, "10min", "10min", 1, 2.0), (1, "20min", "20min", 2, 3.0), (2, "5min", "5min", 1, None)))
    store.write(VIEW, _rows((1, "15min", "50min", 9, 9.0)))  # older event, computed later: stays behind
    store.write(VIEW, _rows((1, "20min", "30min", 3, 4.0)))  # same event, recomputed later: replaces
    one, two, three = store.read(VIEW, [1, 2, 3], at=T0 + pd.Timedelta("30min"))
    assert (one["events_1h"], one["amount_mean_1h"]) == (3, 4.0)
    assert two["amount_mean_1h"] is None and three is None


def test_expired_is_missing_not_stale(store: OnlineStore) -> None:
    store.write(VIEW, _rows((1, "0s", "0s", 1, 1.0)))
    assert store.read(VIEW, [1], at=T0 + pd.Timedelta("2h"))[0] is not None  # exactly the TTL: still valid
    assert store.read(VIEW, [1], at=T0 + pd.Timedelta("2h") + pd.Timedelta("1us")) == [None]
    assert store.read(VIEW, [1], at=(T0 + pd.Timedelta("1h")).tz_localize("UTC"))[0]["events_1h"] == 1


def test_changed_definition_without_bump_writes_nothing(store: OnlineStore, tmp_path: Path) -> None:
    changed = dataclasses.replace(VIEW, ttl="3h")
    with pytest.raises(ConfigError, match="set version: 2"):
        store.register(changed)
    assert store.recorded_digest(VIEW) == VIEW.digest
    bumped = dataclasses.replace(changed, version=2)
    store.register(bumped)
    with pytest.raises(DataError, match="has no online values"):
        store.read(dataclasses.replace(VIEW, version=3), [1])


def test_two_entity_keys(tmp_path: Path) -> None:
    view = dataclasses.replace(VIEW, entities=("user_id", "shop"))
    online = OnlineStore(tmp_path / "f.sqlite")
    online.register(view)
    rows = _rows((1, "1min", "1min", 1, 1.0), (1, "2min", "2min", 2, 2.0))
    rows["shop"] = ["a", "b"]
    online.write(view, rows)
    a, b, c = online.read(view, [(1, "a"), (1, "b"), (2, "a")], at=T0 + pd.Timedelta("1h"))
    assert (a["events_1h"], b["events_1h"], c) == (1, 2, None)
    with pytest.raises(DataError, match=r"keyed by \['user_id', 'shop'\]"):
        online.read(view, [1])
