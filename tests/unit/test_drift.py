"""Drift statistics against scipy on known distributions, hand-computed PSI, dask == pandas, and the
landing zone read through dask; every random draw has a fixed seed."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cl_hpc.config.ml import data_conf
from cl_hpc.data.landing import partition_name
from cl_hpc.data.windows import list_partitions
from cl_hpc.errors import ConfigError, DataError
from cl_hpc.learn.drift import (
    DatasetDrift,
    DriftConf,
    bin_counts,
    detect_drift,
    landing_drift,
    pool_rare,
    psi,
    psi_level,
    psi_numeric,
    quantile_edges,
    window_drift,
)


def normal(seed: int, n: int = 2000, shift: float = 0.0, names: tuple[str, ...] = ("a", "b", "c")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({name: rng.normal(shift, 1.0, n) for name in names})


def by_name(result: DatasetDrift) -> dict[str, Any]:
    return {f.feature: f for f in result.features}


# --- numeric: KS with Bonferroni, scaled Wasserstein ---------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_same_normal_does_not_drift_at_the_bonferroni_level(seed: int) -> None:
    ref, cur = normal(seed), normal(seed + 100)
    result = detect_drift(ref, cur)
    assert not result.drifted and result.drifted_features == [] and result.share == 0.0
    for f in result.features:
        expected = stats.ks_2samp(ref[f.feature], cur[f.feature])
        assert (f.method, f.statistic, f.p_value) == ("ks", pytest.approx(expected.statistic),
                                                      pytest.approx(expected.pvalue))
        assert f.threshold == pytest.approx(0.05 / 3) and f.psi_level == "ok"


def test_a_shifted_mean_drifts_with_scipys_p_value() -> None:
    ref = normal(0)
    cur = normal(1).assign(b=np.random.default_rng(2).normal(0.5, 1.0, 2000))
    result = detect_drift(ref, cur)
    b = by_name(result)["b"]
    assert b.drifted and b.p_value == pytest.approx(stats.ks_2samp(ref["b"], cur["b"]).pvalue)
    assert result.drifted_features == ["b"] and result.share == pytest.approx(1 / 3)
    assert not result.drifted  # one feature in three is below the default share of 0.5
    assert detect_drift(ref, cur, conf=DriftConf(share_threshold=0.3)).drifted


def test_bonferroni_is_over_the_tested_features_only() -> None:
    """A large-reference feature gets a distance, not a test, so it does not widen the family."""
    ref = normal(0, n=3000).join(pd.DataFrame({"cat": ["x", "y"] * 1500}))
    conf = DriftConf(alpha=0.06, large_reference_rows=5000)
    assert {f.threshold for f in detect_drift(ref, ref, categorical=["cat"], conf=conf).features} == {0.06 / 4}
    small = DriftConf(alpha=0.06, large_reference_rows=2000)  # now a, b, c get Wasserstein
    levels = {f.feature: f.threshold for f in detect_drift(ref, ref, categorical=["cat"], conf=small).features}
    assert levels == {"a": 0.1, "b": 0.1, "c": 0.1, "cat": pytest.approx(0.06)}


@pytest.mark.parametrize("scale", ["std", "iqr"])
@pytest.mark.parametrize("shift, drifted", [(0.0, False), (0.5, True)])
def test_large_reference_uses_scaled_wasserstein(scale: str, shift: float, drifted: bool) -> None:
    ref, cur = normal(0, names=("x",)), normal(1, shift=shift, names=("x",))
    f = detect_drift(ref, cur, conf=DriftConf(large_reference_rows=1000, wasserstein_scale=scale)).features[0]
    q25, q75 = np.quantile(ref["x"], [0.25, 0.75])
    spread = np.std(ref["x"], ddof=1) if scale == "std" else q75 - q25
    assert (f.method, f.p_value, f.threshold, f.drifted) == ("wasserstein", None, 0.1, drifted)
    assert f.statistic == pytest.approx(stats.wasserstein_distance(ref["x"], cur["x"]) / spread)


def test_a_constant_reference_is_not_scaled_and_any_change_drifts() -> None:
    conf = DriftConf(large_reference_rows=10)
    ref = pd.DataFrame({"x": [1.0] * 50})
    same = detect_drift(ref, ref, conf=conf).features[0]
    moved = detect_drift(ref, pd.DataFrame({"x": [1.0] * 49 + [2.0]}), conf=conf).features[0]
    assert (same.drifted, same.statistic) == (False, 0.0) and "not scaled" in same.note
    assert moved.drifted and moved.statistic == pytest.approx(1 / 50)


# --- PSI ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ref, cur, bins, expected", [
    # median edge 2.5: shares (0.5, 0.5) -> (0.75, 0.25): 0.25 ln 1.5 + 0.25 ln 2 = 0.25 ln 3
    ([1, 2, 3, 4], [1, 1, 1, 4], 2, 0.25 * math.log(3)),
    # the upper bin is empty in the current window: its share is floored at epsilon = 1e-4
    ([1, 2, 3, 4], [1, 1, 1, 1], 2, 0.5 * math.log(2) + (1e-4 - 0.5) * math.log(1e-4 / 0.5)),
    # quartile edges 2.75, 4.5, 6.25: reference shares 1/4 each, current (0, 1/4, 1/4, 1/2)
    ([1, 2, 3, 4, 5, 6, 7, 8], [3, 4, 5, 6, 7, 8, 8, 8], 4,
     (1e-4 - 0.25) * math.log(1e-4 / 0.25) + 0.25 * math.log(2)),
    ([1, 2, 3, 4], [4, 3, 2, 1], 2, 0.0),
])
def test_psi_matches_a_hand_computation(ref: list[float], cur: list[float], bins: int, expected: float) -> None:
    assert psi_numeric(np.array(ref, float), np.array(cur, float), bins, 1e-4) == pytest.approx(expected)


def test_quantile_bins_are_right_closed_and_merge_ties() -> None:
    assert list(quantile_edges(np.array([1.0, 2, 3, 4, 5, 6, 7, 8]), 4)) == [2.75, 4.5, 6.25]
    assert list(quantile_edges(np.array([1.0, 1, 1, 2]), 4)) == [1.0, 1.25]  # 25 % and 50 % both 1
    assert list(bin_counts(np.array([1.0, 1, 1.25, 2]), np.array([1.0, 1.25]))) == [2, 1, 1]
    assert psi([10, 10], [10, 10]) == 0.0


@pytest.mark.parametrize("value, level", [(0.0, "ok"), (0.099, "ok"), (0.1, "warn"), (0.249, "warn"),
                                          (0.25, "alert"), (3.0, "alert")])
def test_psi_levels(value: float, level: str) -> None:
    assert psi_level(value, DriftConf()) == level


def test_psi_levels_are_configurable_and_reported() -> None:
    ref, cur = normal(0, names=("x",)), normal(1, shift=0.4, names=("x",))
    x = detect_drift(ref, cur).features[0]
    assert x.psi == pytest.approx(psi_numeric(ref["x"].to_numpy(), cur["x"].to_numpy()))
    assert x.psi_level == "warn"  # about 0.4 ** 2 = 0.16 for a shift of 0.4 std
    assert detect_drift(ref, cur, conf=DriftConf(psi_warn=0.01, psi_alert=0.05)).features[0].psi_level == "alert"


# --- categorical: chi-square ---------------------------------------------------------------------


def counts_frame(counts: dict[str, int]) -> pd.DataFrame:
    return pd.DataFrame({"c": [k for k, n in counts.items() for _ in range(n)]})


@pytest.mark.parametrize("ref, cur, table", [
    ({"a": 50, "b": 30, "c": 20}, {"a": 30, "b": 30, "c": 40}, [[50, 30, 20], [30, 30, 40]]),
    ({"a": 60, "b": 40}, {"a": 55, "b": 45}, [[60, 40], [55, 45]]),  # 2x2: scipy's Yates correction
    ({"a": 60, "b": 40}, {"a": 40, "b": 30, "new": 30}, [[60, 40, 0], [40, 30, 30]]),  # unseen category
])
def test_chi2_equals_scipy_on_known_counts(ref: dict[str, int], cur: dict[str, int], table: list[list[int]]) -> None:
    f = detect_drift(counts_frame(ref), counts_frame(cur), categorical=["c"]).features[0]
    chi2, p, _, _ = stats.chi2_contingency(np.array(table))
    assert (f.method, f.statistic, f.p_value) == ("chi2", pytest.approx(chi2), pytest.approx(p))
    assert f.drifted == (p < 0.05) and (f.n_reference, f.n_current) == (sum(ref.values()), sum(cur.values()))
    r = np.array(table[0]) / sum(table[0])
    c = np.array(table[1]) / sum(table[1])
    r, c = np.maximum(r, 1e-4), np.maximum(c, 1e-4)
    assert f.psi == pytest.approx(float(np.sum((c - r) * np.log(c / r))))


@pytest.mark.parametrize("table, pooled", [
    ([[50, 50], [50, 50]], [[50, 50], [50, 50]]),  # nothing rare
    ([[50, 50, 2, 3], [50, 50, 2, 3]], [[50, 50, 5], [50, 50, 5]]),  # two rare pooled: 10 >= need 10
    ([[50, 50, 1], [50, 50, 2]], [[51, 50], [52, 50]]),  # pooled still rare: folded into the smallest
    ([[1, 1], [1, 1]], [[2], [2]]),  # all rare: one column, nothing left to test
])
def test_rare_categories_are_pooled(table: list[list[int]], pooled: list[list[int]]) -> None:
    assert pool_rare(np.array(table), 5.0).tolist() == pooled


def test_a_single_category_is_not_tested() -> None:
    f = detect_drift(counts_frame({"a": 10}), counts_frame({"a": 20}), categorical=["c"]).features[0]
    assert (f.statistic, f.p_value, f.drifted) == (0.0, 1.0, False) and "single category" in f.note


# --- dask, sampling, JSON -------------------------------------------------------------------------


def mixed(seed: int, shift: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x": rng.normal(shift, 1, 3000), "n": rng.integers(0, 5, 3000),
                          "flag": rng.random(3000) < 0.3, "cat": rng.choice(["u", "v", "w"], 3000)})
    frame.loc[::7, "x"] = np.nan  # nulls are skipped
    return frame


def test_dask_gives_the_pandas_answers() -> None:
    ref, cur = mixed(0, 0.0), mixed(1, 0.2)
    expected = detect_drift(ref, cur, categorical=["cat"]).to_dict()
    for parts in (1, 3, 7):
        got = detect_drift(dd.from_pandas(ref, npartitions=parts), dd.from_pandas(cur, npartitions=5),
                           categorical=["cat"])
        assert got.to_dict() == expected
    assert detect_drift(dd.from_pandas(ref, npartitions=4), cur, categorical=["cat"]).to_dict() == expected
    assert expected["features"][0]["n_reference"] == 3000 - len(range(0, 3000, 7))


def test_windows_larger_than_sample_rows_are_sampled_deterministically() -> None:
    ref, cur = dd.from_pandas(normal(0, n=20_000), npartitions=6), dd.from_pandas(normal(1, n=20_000), npartitions=4)
    conf = DriftConf(sample_rows=2000)
    first, again = detect_drift(ref, cur, conf=conf), detect_drift(ref, cur, conf=conf)
    assert first == again and not first.drifted
    assert all(f.sampled and (f.n_reference, f.n_current) == (20_000, 20_000) for f in first.features)
    shifted = dd.from_pandas(normal(1, n=20_000, shift=0.5), npartitions=4)
    assert detect_drift(ref, shifted, conf=conf).share == 1.0


def test_result_is_json_and_reads_back() -> None:
    result = detect_drift(mixed(0, 0.0), mixed(1, 1.0), categorical=["cat"])
    text = json.dumps(result.to_dict())
    data = json.loads(text)
    assert DatasetDrift.from_dict(data) == result
    assert set(data) >= {"drifted", "share", "share_threshold", "n_features", "drifted_features", "psi_alerts",
                         "features", "rows_reference", "rows_current", "alpha"}
    assert set(data["features"][0]) == {"feature", "kind", "method", "statistic", "p_value", "threshold", "drifted",
                                        "psi", "psi_level", "n_reference", "n_current", "sampled", "note"}


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ref, cur, kwargs, message", [
    (pd.DataFrame({"x": []}, dtype=float), normal(0, names=("x",)), {}, "the reference window has no rows"),
    (normal(0, names=("x",)), pd.DataFrame({"x": []}, dtype=float), {}, "the current window has no rows"),
    (normal(0), normal(1, names=("a", "b")), {}, "feature 'c' is missing from the current window"),
    (normal(0), normal(1), {"features": ["a", "zz"]}, "feature 'zz' is missing from the reference window"),
    (normal(0, names=("x",)), pd.DataFrame({"x": ["1.0", "oops"]}), {}, "numeric feature 'x' has dtype"),
    (normal(0, names=("x",)), pd.DataFrame({"x": [np.nan, np.nan]}), {},
     "feature 'x' has no non-null values in the current"),
    (normal(0, names=("x",)), pd.DataFrame({"x": [1.0, np.inf]}), {}, "'x' holds infinite values in the current"),
    (normal(0), normal(1), {"categorical": ["nope"]}, "categorical features ['nope'] are not among"),
    (normal(0), normal(1), {"features": []}, "must be non-empty"),
])
def test_bad_input_names_the_problem(ref: pd.DataFrame, cur: pd.DataFrame, kwargs: dict[str, Any],
                                     message: str) -> None:
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        detect_drift(ref, cur, **kwargs)


def test_bad_input_through_dask_names_the_feature() -> None:
    bad = dd.from_pandas(pd.DataFrame({"x": [1.0, np.inf, 2.0, 3.0]}), npartitions=2)
    with pytest.raises(DataError, match="'x' holds infinite values in the reference"):
        detect_drift(bad, normal(0, names=("x",)))
    with pytest.raises(DataError, match="numeric feature 'x' has dtype"):
        detect_drift(normal(0, names=("x",)), dd.from_pandas(pd.DataFrame({"x": ["a", "b"]}), npartitions=1))


@pytest.mark.parametrize("field, value", [("alpha", 0.0), ("wasserstein_scale", "mad"), ("psi_bins", 1),
                                          ("psi_warn", 0.3), ("share_threshold", 1.5), ("sample_rows", 1)])
def test_bad_config_is_a_config_error(field: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=f"{field}="):
        DriftConf(**{field: value})


# --- the landing zone -----------------------------------------------------------------------------


def test_sea_concept_drift_leaves_its_features_alone(tmp_path: Path) -> None:
    """SEA's concepts change the label rule only; the features stay uniform on [0, 10]."""
    from cl_hpc.data.landing import ensure_landing_zone

    data = data_conf({"landing_dir": str(tmp_path / "landing"), "n_partitions": 10, "rows_per_partition": 200,
                      "drift_at": [3, 6], "train_window": 4, "eval_window": 2})
    ensure_landing_zone(data)
    result = landing_drift(data, cpus=2)
    assert (result.rows_reference, result.rows_current) == (800, 400)
    assert [f.feature for f in result.features] == ["x0", "x1", "x2"] and not result.drifted_features


def write_zone(root: Path, shifts: list[float]) -> None:
    root.mkdir()
    for i, shift in enumerate(shifts):
        start = pd.Timestamp("2026-01-01") + pd.Timedelta(hours=i)
        rng = np.random.default_rng(i)
        pd.DataFrame({"ts": pd.date_range(start, periods=500, freq="s"), "steady": rng.normal(0, 1, 500),
                      "moving": rng.normal(shift, 1, 500), "y": rng.integers(0, 2, 500)}
                     ).to_parquet(root / partition_name(start), index=False)


def test_window_drift_reads_landing_partitions_with_dask(tmp_path: Path) -> None:
    write_zone(tmp_path / "zone", [0.0, 0.0, 0.0, 1.0, 1.0])
    data = data_conf({"landing_dir": str(tmp_path / "zone"), "generator": "none"})
    parts = list_partitions(tmp_path / "zone")
    result = window_drift(data, parts[:3], parts[3:], cpus=2)
    assert result.drifted_features == ["moving"] and result.psi_alerts == ["moving"]
    assert (result.rows_reference, result.rows_current) == (1500, 1000)
    with pytest.raises(DataError, match="partitions in both windows"):
        window_drift(data, parts[:3], [])
