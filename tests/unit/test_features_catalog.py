"""The feature catalog: view files checked field by field, unique names, the version digest, and the
bundled windowed aggregates against a brute-force reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cl_hpc.errors import ConfigError
from cl_hpc.features.definitions import BUNDLED, check_bump, load_catalog, load_view
from cl_hpc.features.transforms import windowed_aggregates

VIEW = """\
name: {name}
version: {version}
description: test view
owner: me
tags: [t]
entities: [user_id]
source: {{landing_dir: zone, timestamp_col: ts}}
transform: cl_hpc.features.transforms.windowed_aggregates
params: {{entity: user_id, timestamp: ts, windows: [1h], aggregations: {{amount: [mean]}}}}
lookback: 1h
ttl: 2h
features:
  {first}: {{dtype: int64, description: events, default: 0}}
  amount_mean_1h: {{dtype: float64, description: mean}}
"""


def _write(folder: Path, name: str = "v", version: int = 1, first: str = "events_1h", **replace: str) -> Path:
    text = VIEW.format(name=name, version=version, first=first)
    for old, new in replace.items():
        text = text.replace(old, new)
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path


def test_bundled_catalog_is_documented() -> None:
    catalog = load_catalog()
    assert catalog.root == str(BUNDLED)
    view = catalog.view("user_activity")
    assert view.entities == ("user_id",) and view.owner and view.description and view.tags
    assert len(view.features) == 10 and all(f.description for f in view.features)
    assert catalog.owner_of("amount_mean_24h") is view
    assert catalog.owner_of("user_activity:events_1h") is view


def test_digest_follows_values_not_documentation(tmp_path: Path) -> None:
    base = load_view(_write(tmp_path))
    assert base.ident == f"v1-{base.digest[:12]}"
    docs = {"description: test view": "description: other words", "owner: me": "owner: you"}
    reworded = load_view(_write(tmp_path, **docs))
    assert reworded.digest == base.digest
    other_ttl = load_view(_write(tmp_path, **{"ttl: 2h": "ttl: 3h"}))
    other_window = load_view(_write(tmp_path, **{"windows: [1h]": "windows: [2h]"}))
    assert len({base.digest, other_ttl.digest, other_window.digest}) == 3


def test_changed_without_bump_is_refused(tmp_path: Path) -> None:
    before = load_view(_write(tmp_path))
    after = load_view(_write(tmp_path, **{"windows: [1h]": "windows: [2h]"}))
    check_bump(before, before.digest)  # unchanged: fine
    check_bump(after, None)  # never materialized: fine
    with pytest.raises(ConfigError, match="its version is still 1; set version: 2"):
        check_bump(after, before.digest)


def test_duplicate_feature_across_views(tmp_path: Path) -> None:
    _write(tmp_path, "a")
    _write(tmp_path, "b")
    with pytest.raises(ConfigError, match="feature 'events_1h' is defined by two views"):
        load_catalog(tmp_path)


@pytest.mark.parametrize(("replace", "message"), [
    ({"version: 1": "version: 0"}, "version=0 must be an integer >= 1"),
    ({"dtype: int64": "dtype: int32"}, r"dtype='int32'; valid: \['float64', 'int64', 'bool'\]"),
    ({"entities: [user_id]": "entities: []"}, "entities must list the entity key"),
    ({"windowed_aggregates": "no_such_function"}, "is not a function of an importable module"),
    ({"cl_hpc.features.transforms": "no_such_pkg.mod"}, "cannot be imported"),
    ({"ttl: 2h": "ttl: soon"}, "ttl='soon' is not a duration"),
    ({"owner: me": "owner: me\ncolour: red"}, r"unknown key\(s\) \['colour'\]"),
    ({"source: {landing_dir: zone, timestamp_col: ts}": "source: {}"}, "source needs landing_dir"),
    ({"events_1h:": "user_id:"}, "both entity keys and features"),
])
def test_bad_view_is_a_clear_error(tmp_path: Path, replace: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_view(_write(tmp_path, **replace))


def test_unknown_view_and_feature(tmp_path: Path) -> None:
    _write(tmp_path)
    catalog = load_catalog(tmp_path)
    with pytest.raises(ConfigError, match=r"no feature view 'w'.*views: \['v'\]"):
        catalog.view("w")
    with pytest.raises(ConfigError, match=r"unknown feature 'nope'.*v:amount_mean_1h"):
        catalog.owner_of("nope")
    with pytest.raises(ConfigError, match="does not exist"):
        load_catalog(tmp_path / "missing")


def _events(seed: int, rows: int, users: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    seconds = np.sort(rng.integers(0, 6 * 3600, rows))
    seconds[rng.random(rows) < 0.1] = seconds[0]  # ties at one instant
    return pd.DataFrame({"ts": pd.Timestamp("2026-01-01") + pd.to_timedelta(rng.permutation(seconds), "s"),
                         "user_id": rng.integers(0, users, rows), "amount": rng.random(rows) * 10})


def test_windowed_aggregates_match_brute_force() -> None:
    frame = _events(3, 400, 7)
    frame.loc[5, "ts"] = frame.loc[4, "ts"] - pd.Timedelta("1h")  # a row exactly one window before another
    frame.loc[5, "user_id"] = frame.loc[4, "user_id"]
    out = windowed_aggregates(frame, entity="user_id", timestamp="ts", windows=["1h", "3h"],
                              aggregations={"amount": ["sum", "mean"]})
    assert list(out.index) == list(frame.index)
    for i, row in frame.iterrows():
        for label, span in (("1h", pd.Timedelta("1h")), ("3h", pd.Timedelta("3h"))):
            mine = frame[(frame.user_id == row.user_id) & (frame.ts <= row.ts) & (frame.ts > row.ts - span)]
            assert out.at[i, f"events_{label}"] == len(mine)
            assert out.at[i, f"amount_sum_{label}"] == pytest.approx(mine.amount.sum(), abs=1e-9)
            assert out.at[i, f"amount_mean_{label}"] == pytest.approx(mine.amount.mean(), abs=1e-9)


def test_windowed_aggregates_bad_params() -> None:
    frame = _events(1, 10, 2)
    with pytest.raises(ConfigError, match=r"no column\(s\) \['spend'\]"):
        windowed_aggregates(frame, entity="user_id", timestamp="ts", windows=["1h"], aggregations={"spend": ["sum"]})
    with pytest.raises(ConfigError, match=r"unknown aggregation\(s\) \['max'\]"):
        windowed_aggregates(frame, entity="user_id", timestamp="ts", windows=["1h"], aggregations={"amount": ["max"]})
    with pytest.raises(ConfigError, match="window 'soon' is not a duration"):
        windowed_aggregates(frame, entity="user_id", timestamp="ts", windows=["soon"], aggregations={})
