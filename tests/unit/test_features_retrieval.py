"""Features fetched by name through the catalog: the training set's point-in-time values equal what the
online store serves at the same moment, TTL and defaults apply the same way, and bad requests are clear."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cl_hpc.errors import ConfigError, DataError
from cl_hpc.features.definitions import load_catalog
from cl_hpc.features.materialize import materialize
from cl_hpc.features.online import OnlineStore
from cl_hpc.features.retrieval import fill_defaults, historical, online
from cl_hpc.features.transforms import windowed_aggregates
from tests.feature_zone import START, spend_catalog

NAMES = ["events_1h", "spend:amount_sum_1h"]


@pytest.fixture()
def store(tmp_path: Path) -> tuple:
    catalog_dir, zone = spend_catalog(tmp_path, hours=4)
    catalog, root = load_catalog(catalog_dir), tmp_path / "features"
    onl = OnlineStore(root / "online.sqlite")
    materialize(catalog.view("spend"), root, onl)
    return catalog, root, onl, zone


def test_training_rows_get_the_values_of_their_own_time(store: tuple) -> None:
    catalog, root, _, zone = store
    events = pd.concat([pd.read_parquet(p) for p in sorted(zone.glob("*.parquet"))], ignore_index=True)
    truth = windowed_aggregates(events, entity="user_id", timestamp="ts", windows=["1h"],
                                aggregations={"amount": ["sum"]})
    queries = events[["user_id", "ts"]].sample(frac=1.0, random_state=1)  # any order: the result keeps it
    got = historical(catalog, root, queries, NAMES, "ts")
    assert list(got.index) == list(queries.index)
    np.testing.assert_array_equal(got["events_1h"].to_numpy(), truth.loc[queries.index, "events_1h"].to_numpy())
    np.testing.assert_allclose(got["amount_sum_1h"].to_numpy(float), truth.loc[queries.index, "amount_sum_1h"])


def test_online_equals_point_in_time_at_the_same_moment(store: tuple) -> None:
    catalog, root, onl, _ = store
    for at in (START + pd.Timedelta("4h"), START + pd.Timedelta("4h30min"), START + pd.Timedelta("6h")):
        keys = pd.DataFrame({"user_id": [0, 1, 2, 3, 4, 77]})
        served = online(catalog, onl, keys, NAMES, at=at)
        trained = historical(catalog, root, keys.assign(ts=at), NAMES, "ts")
        pd.testing.assert_frame_equal(served.astype(float), trained[["events_1h", "amount_sum_1h"]].astype(float))
    assert served.isna().all().all()  # two hours after the last event, a TTL of 1h: every value expired


def test_defaults_and_bad_requests(store: tuple) -> None:
    catalog, root, onl, _ = store
    frame = pd.DataFrame({"events_24h": [3.0, None], "amount_mean_24h": [None, 2.0]})
    filled = fill_defaults(load_catalog(), frame, ["events_24h", "amount_mean_24h"])  # the bundled view
    assert filled["events_24h"].tolist() == [3.0, 0.0]  # declared default: 0
    assert filled["amount_mean_24h"].isna().tolist() == [True, False]  # no default: stays missing
    with pytest.raises(ConfigError, match="unknown feature 'amount_max_1h'"):
        historical(catalog, root, pd.DataFrame({"user_id": [1], "ts": [START]}), ["amount_max_1h"], "ts")
    with pytest.raises(DataError, match=r"no entity column\(s\) \['user_id'\], the key of view 'spend'"):
        online(catalog, onl, pd.DataFrame({"customer": [1]}), NAMES)
    with pytest.raises(DataError, match="no features requested"):
        online(catalog, onl, pd.DataFrame({"user_id": [1]}), [])
