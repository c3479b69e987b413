"""Incremental materialization on real Parquet partitions and a real SQLite online store: only new and
changed partitions are computed, the result equals one pass over the whole stream, a backfill's values
are known only from when it landed, and a bad transformation writes nothing."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cl_hpc.errors import ConfigError, DataError
from cl_hpc.features.definitions import Feature, FeatureView, Source
from cl_hpc.features.materialize import load_offline, materialize, offline_dir, read_state
from cl_hpc.features.online import OnlineStore
from cl_hpc.features.transforms import windowed_aggregates

START = pd.Timestamp("2026-01-01")
PARAMS = {"entity": "user_id", "timestamp": "ts", "windows": ["1h", "3h"], "aggregations": {"amount": ["sum", "mean"]}}
FEATURES = (Feature("events_1h", "int64", ""), Feature("amount_sum_1h", "float64", ""),
            Feature("amount_mean_1h", "float64", ""), Feature("events_3h", "int64", ""),
            Feature("amount_sum_3h", "float64", ""), Feature("amount_mean_3h", "float64", ""))


def _part(zone: Path, hour: int, seed: int, rows: int = 300, users: int = 20) -> Path:
    rng = np.random.default_rng(seed)
    begin = START + pd.Timedelta(hours=hour)
    frame = pd.DataFrame({"ts": begin + pd.to_timedelta(np.sort(rng.integers(0, 3600, rows)), "s"),
                          "user_id": rng.integers(0, users, rows), "amount": rng.random(rows)})
    path = zone / f"part-{begin.strftime('%Y%m%dT%H%M%S')}.parquet"
    frame.to_parquet(path, index=False)
    return path


def _view(zone: Path, transform: str = "cl_hpc.features.transforms.windowed_aggregates") -> FeatureView:
    return FeatureView(name="activity", version=1, entities=("user_id",), source=Source(str(zone)),
                       transform=transform, features=FEATURES, params=PARAMS, lookback="3h", ttl="6h")


@pytest.fixture()
def zone(tmp_path: Path) -> Path:
    folder = tmp_path / "zone"
    folder.mkdir()
    for hour in range(6):
        _part(folder, hour, seed=hour)
    return folder


def _whole(zone: Path) -> pd.DataFrame:
    frame = pd.concat([pd.read_parquet(p) for p in sorted(zone.glob("part-*.parquet"))], ignore_index=True)
    return windowed_aggregates(frame, **PARAMS)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(["user_id", "_event_ts", "events_3h"]).reset_index(drop=True)


def test_incremental_equals_one_pass(zone: Path, tmp_path: Path) -> None:
    view, root = _view(zone), tmp_path / "features"
    online = OnlineStore(root / "online.sqlite")
    first = materialize(view, root, online)
    assert len(first.computed) == 6
    again = materialize(view, root, online)
    assert again.computed == [] and again.rows == 0  # nothing new: nothing computed
    _part(zone, 6, seed=6)
    third = materialize(view, root, online)
    assert third.computed == ["part-20260101T060000.parquet"]  # only the new partition
    stored = load_offline(root, view)
    expected = _whole(zone).rename(columns={"ts": "_event_ts"})
    cols = ["user_id", "_event_ts", *view.feature_names]
    pd.testing.assert_frame_equal(_sorted(stored[cols]), _sorted(expected[cols]), check_dtype=False, atol=1e-9)
    assert (stored["_created_ts"] == stored["_event_ts"]).all()  # on-time data is known at its event
    latest = expected.sort_values("_event_ts").groupby("user_id").tail(1).set_index("user_id")
    got = online.read(view, [int(u) for u in latest.index], at=START + pd.Timedelta("7h"))
    assert [g["events_3h"] for g in got] == latest["events_3h"].tolist()


def test_backfill_is_known_when_it_landed(zone: Path, tmp_path: Path) -> None:
    view, root = _view(zone), tmp_path / "features"
    online = OnlineStore(root / "online.sqlite")
    materialize(view, root, online)
    path = _part(zone, 2, seed=99)  # hour 2 rewritten: a backfill
    landed = pd.Timestamp("2026-02-01")
    os.utime(path, ns=(landed.value, landed.value))
    report = materialize(view, root, online)
    # the backfill, and the partitions whose 3h lookback reaches it
    assert report.computed == ["part-20260101T020000.parquet", "part-20260101T030000.parquet",
                               "part-20260101T040000.parquet", "part-20260101T050000.parquet"]
    stored = load_offline(root, view)
    state = read_state(offline_dir(root, view))
    backfill = [int(k) for k, b in state["batches"].items() if b["source"] == "part-20260101T020000.parquet"]
    rows = stored[stored["_batch"] == max(backfill)]
    assert (rows["_created_ts"] == landed).all()  # never before it landed
    old = stored[stored["_batch"] == min(backfill)]
    assert (old["_created_ts"] == old["_event_ts"]).all()  # the first computation stays, as it was known then


def test_bad_transform_and_missing_zone_write_nothing(zone: Path, tmp_path: Path) -> None:
    root = tmp_path / "features"
    online = OnlineStore(root / "online.sqlite")
    wrong = dataclasses.replace(_view(zone), features=(*FEATURES, Feature("amount_max_1h", "float64", "")))
    with pytest.raises(DataError, match=r"returned no column\(s\) \['amount_max_1h'\]"):
        materialize(wrong, root, online)
    assert not (offline_dir(root, wrong) / "_state.json").exists()
    typed = dataclasses.replace(_view(zone), features=(Feature("events_1h", "float64", ""), *FEATURES[1:]))
    with pytest.raises(DataError, match=r"returned dtypes \{'events_1h': 'int64'\}"):
        materialize(typed, root, online)
    with pytest.raises(DataError, match="its source zone .* does not exist"):
        materialize(_view(tmp_path / "nowhere"), root, online)
    with pytest.raises(DataError, match="was never materialized"):
        load_offline(root, _view(zone))
    materialize(_view(zone), root, online)
    changed = dataclasses.replace(_view(zone), lookback="4h")
    with pytest.raises(ConfigError, match="set version: 2"):
        materialize(changed, root, online)
    assert not offline_dir(root, changed).exists()
