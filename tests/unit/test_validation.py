"""Data validation before training: each kind of corrupted or poisoned batch is caught, with the
column named; a clean window from the same source passes."""

from __future__ import annotations

import json
from typing import Callable

import numpy as np
import pandas as pd
import pytest

from cl_hpc.errors import ConfigError, DataError
from cl_hpc.learn.validation import Expectations, label_shares, require_valid, validate_window


def window(rows: int = 1000, seed: int = 0, positive: float = 0.3) -> pd.DataFrame:
    """Three numeric features, a string column and an imbalanced binary label (30% class 1)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "x1": rng.normal(size=rows), "x2": rng.normal(size=rows), "x3": rng.integers(0, 10, rows),
        "region": rng.choice(["north", "south"], rows),
        "y": (rng.random(rows) < positive).astype(np.int64),
    })


@pytest.fixture(scope="module")
def expect() -> Expectations:
    return Expectations.from_frame(window(seed=0), "y")


def test_expectations_from_a_reference_window(expect: Expectations) -> None:
    assert dict(expect.columns) == {"x1": "numeric", "x2": "numeric", "x3": "numeric", "region": "string",
                                    "y": "numeric"}
    assert expect.classes == (0, 1)
    assert expect.reference is not None and sum(expect.reference.values()) == 1000


def test_a_clean_window_passes(expect: Expectations) -> None:
    report = require_valid(window(seed=1), expect)
    assert report.passed and report.issues == () and report.rows == 1000
    assert report.label_distribution["1"] == pytest.approx(0.3, abs=0.05)


def _string_in_numeric(df: pd.DataFrame) -> pd.DataFrame:
    df["x2"] = df["x2"].astype(object)
    df.loc[7, "x2"] = "abc"
    return df


def _set(column: str, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def mutate(df: pd.DataFrame) -> pd.DataFrame:
        df[column] = value
        return df
    return mutate


def _nan_share(column: str, share: float) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def mutate(df: pd.DataFrame) -> pd.DataFrame:
        df[column] = df[column].astype(float)
        df.loc[: int(len(df) * share) - 1, column] = np.nan
        return df
    return mutate


def _unknown_label(df: pd.DataFrame) -> pd.DataFrame:
    df.loc[:4, "y"] = 7
    return df


# name, corruption, the check that catches it, the column it names, a phrase of the message
CORRUPTIONS = [
    ("a column of NaNs", _set("x1", np.nan), "nan_rate", "x1", "100.0% NaN"),
    ("some NaNs", _nan_share("x3", 0.1), "nan_rate", "x3", "10.0% NaN (100 of 1000 rows)"),
    ("NaN labels", _nan_share("y", 0.02), "nan_rate", "y", "2.0% NaN"),
    ("a string in a numeric column", _string_in_numeric, "dtype", "x2", "1 value(s) are not numbers, e.g. 'abc'"),
    ("numbers as strings", lambda df: df.assign(x1=df["x1"].astype(str)), "dtype", "x1", "expected numeric"),
    ("a missing column", lambda df: df.drop(columns=["x3"]), "missing_column", "x3", "'x3' is missing"),
    ("an extra column", lambda df: df.assign(leak=df["y"]), "extra_column", "leak", "not expected"),
    ("poisoned: every label one class", _set("y", 1), "label_shift", "y", "total variation"),
    ("flipped labels", lambda df: df.assign(y=1 - df["y"]), "label_shift", "y", "total variation"),
    ("a label outside the classes", _unknown_label, "unknown_label", "y", "7 (5 rows)"),
]


@pytest.mark.parametrize("name,corrupt,check,column,phrase", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_each_corruption_is_caught_with_its_column(expect: Expectations, name: str,
                                                   corrupt: Callable[[pd.DataFrame], pd.DataFrame],
                                                   check: str, column: str, phrase: str) -> None:
    report = validate_window(corrupt(window(seed=1)), expect)
    assert not report.passed
    hits = [i for i in report.issues if i.check == check and i.column == column]
    assert hits, report.issues
    assert phrase in hits[0].message and repr(column) in hits[0].message
    with pytest.raises(DataError) as info:
        require_valid(corrupt(window(seed=1)), expect, where="window 2026-01-03")
    assert hits[0].message in str(info.value) and "window 2026-01-03 failed data validation" in str(info.value)


def test_an_empty_window_is_caught(expect: Expectations) -> None:
    report = validate_window(window(seed=1).iloc[:0], expect)
    assert not report.passed and [i.check for i in report.issues] == ["empty"]


def test_every_issue_is_listed_at_once(expect: Expectations) -> None:
    df = _string_in_numeric(window(seed=1)).drop(columns=["x3"]).assign(x1=np.nan, y=0)
    with pytest.raises(DataError) as info:
        require_valid(df, expect)
    message = str(info.value)
    assert "(4 issue(s), 1000 rows)" in message
    for needle in ("'x1' is 100.0% NaN", "'x2' has dtype object", "'x3' is missing", "label column 'y'"):
        assert needle in message


def test_per_class_shift_bound(expect: Expectations) -> None:
    shifted = window(seed=1, positive=0.4)
    assert validate_window(shifted, expect).passed  # TV ~0.1 is within the default 0.2
    strict = Expectations.from_frame(window(seed=0), "y", max_class_shift=0.05)
    issues = validate_window(shifted, strict).issues
    assert {(i.check, i.column) for i in issues} == {("label_shift", "y")} and len(issues) == 2  # both classes
    assert all(i.limit == 0.05 and i.value is not None and i.value > 0.05 for i in issues)


def test_limits_can_be_widened(expect: Expectations) -> None:
    df = _nan_share("x3", 0.1)(window(seed=1)).assign(note="ok")
    loose = Expectations.from_frame(window(seed=0), "y", nan_rates={"x3": 0.2}, allow_extra=True)
    assert validate_window(df, loose).passed
    assert {i.check for i in validate_window(df, expect).issues} == {"nan_rate", "extra_column"}


def test_exact_dtype_names_and_string_labels() -> None:
    df = pd.DataFrame({"x": np.arange(4, dtype=np.float32), "y": ["cat", "dog", "dog", "cat"]})
    expect = Expectations(columns={"x": "float32", "y": "string"}, label="y", classes=("cat", "dog"),
                          reference={"cat": 1, "dog": 1})
    assert validate_window(df, expect).passed
    issues = validate_window(df.assign(x=df["x"].astype("float64"), y="cat"), expect).issues
    assert [(i.check, i.column) for i in issues] == [("dtype", "x"), ("label_shift", "y")]


def test_report_is_json(expect: Expectations) -> None:
    report = validate_window(_set("y", 1)(window(seed=1)), expect)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["passed"] is False and data["label_distribution"] == {"0": 0.0, "1": 1.0}
    assert data["issues"][0]["check"] == "label_shift" and data["issues"][0]["value"] == pytest.approx(0.7, abs=0.05)


def test_label_shares_ignore_unknown_labels() -> None:
    assert label_shares(pd.Series([0, 1, 1, 9, None]), (0, 1)) == {"0": 1 / 3, "1": 2 / 3}


@pytest.mark.parametrize("kwargs,needle", [
    ({"label": "z"}, "label 'z' is not among the columns"),
    ({"max_nan_rate": 1.5}, "must be in [0, 1]"),
])
def test_bad_expectations_are_config_errors(kwargs: dict[str, object], needle: str) -> None:
    base: dict[str, object] = {"columns": {"x": "numeric", "y": "numeric"}, "label": "y", "classes": (0, 1)}
    with pytest.raises(ConfigError) as info:
        Expectations(**{**base, **kwargs})  # type: ignore[arg-type]
    assert needle in str(info.value)
