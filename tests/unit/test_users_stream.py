"""The simulated users stream (cl_hpc/data/users.py) on real Parquet files: columns, determinism and
appending, persistent heterogeneous users with bursts, a label that shows through each user's history,
drift, and its settings' errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import mannwhitneyu, spearmanr

from cl_hpc.config.ml import data_conf
from cl_hpc.data.files import sha256_file
from cl_hpc.data.landing import append_partitions, ensure_landing_zone
from cl_hpc.data.users import DEFAULTS, traits, users_frame
from cl_hpc.data.windows import list_partitions
from cl_hpc.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
COLUMNS = ["ts", "user_id", "amount", "duration", "clicked", "y"]


def small(root: Path, **over: Any) -> dict[str, Any]:
    """The bundled users stream shrunk: 200 users, 1000 events an hour, 6 partitions, one concept."""
    base = {"landing_dir": str(root), "generator": "users", "label_col": "y", "noise": 0.0,
            "generator_params": {"n_users": 200}, "concepts": [0], "drift_at": [], "n_partitions": 6,
            "rows_per_partition": 1000, "train_window": 3, "eval_window": 1}
    return {**base, **over}


def hashes(root: Path) -> dict[str, str]:
    return {p.path.name: sha256_file(p.path) for p in list_partitions(root)}


def auc(score: pd.Series, y: pd.Series) -> float:
    """Chance that a positive row scores above a negative one (ties count half)."""
    positive, negative = score[y == 1], score[y == 0]
    return float(mannwhitneyu(positive, negative).statistic / (len(positive) * len(negative)))


def past_click_rate(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Each row's user's click rate over their EARLIER rows only, and how many rows that is."""
    ordered = frame.sort_values("ts", kind="stable")
    clicks = ordered.groupby("user_id")["clicked"]
    before = clicks.cumsum() - ordered["clicked"]  # this row excluded
    seen = clicks.cumcount()
    return (before / seen.where(seen > 0)).reindex(frame.index), seen.reindex(frame.index)


# --- shape and determinism ------------------------------------------------------------------------


def test_columns_dtypes_and_timestamps_inside_each_sorted_partition(tmp_path: Path) -> None:
    conf = data_conf(small(tmp_path))
    frame = users_frame(conf, 1, 3)
    assert list(frame.columns) == COLUMNS and len(frame) == 3000  # exactly rows_per_partition a partition
    assert str(frame["ts"].dtype) == "datetime64[ns]"
    assert all(frame[c].dtype == np.int64 for c in ("user_id", "clicked", "y"))
    assert all(frame[c].dtype == np.float64 for c in ("amount", "duration"))
    assert frame["amount"].min() >= 0 and frame["duration"].min() > 0
    assert set(frame["clicked"]) == {0, 1} and set(frame["y"]) == {0, 1}
    assert frame["user_id"].between(0, 199).all()
    for k, part in enumerate((frame.iloc[i:i + 1000] for i in range(0, 3000, 1000)), start=1):
        begin = pd.Timestamp(conf.start) + k * pd.Timedelta(conf.freq)
        assert part["ts"].is_monotonic_increasing
        assert part["ts"].min() >= begin and part["ts"].max() < begin + pd.Timedelta(conf.freq)
        assert part["ts"].max() - part["ts"].min() > pd.Timedelta("50min")  # spread over the hour


def test_the_stream_is_deterministic_and_appending_keeps_earlier_files(tmp_path: Path) -> None:
    conf = data_conf(small(tmp_path / "c"))
    pd.testing.assert_frame_equal(users_frame(conf), users_frame(conf))
    whole, slice_ = users_frame(conf, 0, 6), users_frame(conf, 2, 3)
    pd.testing.assert_frame_equal(whole.iloc[2000:5000].reset_index(drop=True), slice_)
    ensure_landing_zone(data_conf(small(tmp_path / "a", n_partitions=4)))
    before = hashes(tmp_path / "a")
    append_partitions(data_conf(small(tmp_path / "a")), 2)
    after = hashes(tmp_path / "a")
    assert len(after) == 6 and {k: after[k] for k in before} == before
    ensure_landing_zone(data_conf(small(tmp_path / "b")))  # all at once: the same files
    assert hashes(tmp_path / "b") == after
    assert not users_frame(data_conf(small(tmp_path, seed=7)), 0, 1).equals(whole.iloc[:1000])


def test_a_users_traits_do_not_change_when_more_users_join(tmp_path: Path) -> None:
    conf = data_conf(small(tmp_path))
    few, many = traits(conf, 100), traits(conf, 300)
    assert np.array_equal(few.engagement, many.engagement[:100]) and np.array_equal(few.activity, many.activity[:100])


def test_the_landing_zone_is_written_and_read_back(tmp_path: Path) -> None:
    conf = data_conf(small(tmp_path / "zone"))
    summary = ensure_landing_zone(conf)
    assert summary["generated"] and summary["partitions"] == 6
    files = list_partitions(tmp_path / "zone")
    stored = pd.read_parquet(files[4].path)
    pd.testing.assert_frame_equal(stored, users_frame(conf, 4, 1), check_dtype=False)
    assert list(stored.columns) == COLUMNS
    assert not ensure_landing_zone(conf)["generated"]  # complete: nothing is generated again


def test_the_bundled_config_is_valid_and_documents_the_defaults() -> None:
    values = yaml.safe_load((REPO / "conf" / "data" / "users.yaml").read_text())
    values.pop("defaults", None)
    conf = data_conf(values)
    assert conf.generator == "users" and conf.label_col == "y" and conf.generator_params == DEFAULTS
    assert conf.landing_dir == "data/landing/users"


# --- behaviour ------------------------------------------------------------------------------------


def test_users_are_heterogeneous_and_persistent(tmp_path: Path) -> None:
    frame = users_frame(data_conf(small(tmp_path)))
    part = (frame["ts"] - frame["ts"].min()) // pd.Timedelta("1h")
    counts = frame.groupby([part < 3, "user_id"]).size().unstack(0, fill_value=0)
    total = counts.sum(axis=1).sort_values(ascending=False)
    assert total.iloc[:20].sum() > 0.3 * total.sum()  # the top 10% of users make far more than 10%
    # the same users are the busy ones in both halves of the stream
    assert spearmanr(counts[True], counts[False]).statistic > 0.45
    # traits persist: a user's mean spending in one half predicts it in the other
    halves = frame.groupby([part < 3, "user_id"])["amount"].mean().apply(np.log).unstack(0).dropna()
    assert spearmanr(halves[True], halves[False]).statistic > 0.45


@pytest.mark.parametrize("factor, bursty", [(8.0, True), (1.0, False)])
def test_bursts_make_a_users_hours_differ(tmp_path: Path, factor: float, bursty: bool) -> None:
    params = {"n_users": 50, "burst_share": 0.1, "burst_factor": factor}
    frame = users_frame(data_conf(small(tmp_path, generator_params=params, n_partitions=24, train_window=8)))
    part = (frame["ts"] - frame["ts"].min()) // pd.Timedelta("1h")
    hourly = frame.groupby(["user_id", part]).size().unstack(fill_value=0)
    # index of dispersion of each user's hourly counts: ~1 for a steady (Poisson-like) user
    dispersion = (hourly.var(axis=1) / hourly.mean(axis=1)).median()
    assert (dispersion > 2.0) if bursty else (dispersion < 1.5), dispersion


def test_the_label_shows_through_the_users_history_more_than_through_the_row(tmp_path: Path) -> None:
    frame = users_frame(data_conf(small(tmp_path)))
    history, seen = past_click_rate(frame)
    warm = seen >= 5
    from_history = auc(history[warm], frame["y"][warm])
    from_row = auc(frame["clicked"][warm], frame["y"][warm])
    assert from_history > 0.65 and from_history > from_row + 0.05, (from_history, from_row)


def test_drift_flips_how_the_history_predicts_the_label(tmp_path: Path) -> None:
    # concept 1 flips the sign of engagement's weight from partition 3 on
    frame = users_frame(data_conf(small(tmp_path, concepts=[0, 1], drift_at=[3])))
    history, seen = past_click_rate(frame)
    after = (frame["ts"] >= frame["ts"].min().floor("h") + pd.Timedelta("3h")) & (seen >= 5)
    before = ~after & (seen >= 5)
    assert auc(history[before], frame["y"][before]) > 0.6
    assert auc(history[after], frame["y"][after]) < 0.4


def test_noise_is_the_share_of_labels_flipped(tmp_path: Path) -> None:
    clean = users_frame(data_conf(small(tmp_path, noise=0.0)), 0, 2)
    flipped = users_frame(data_conf(small(tmp_path, noise=1.0)), 0, 2)
    some = users_frame(data_conf(small(tmp_path, noise=0.2)), 0, 2)
    pd.testing.assert_frame_equal(clean.drop(columns="y"), flipped.drop(columns="y"))
    assert (clean["y"] != flipped["y"]).all()
    assert 0.15 < (clean["y"] != some["y"]).mean() < 0.25


# --- settings -------------------------------------------------------------------------------------


@pytest.mark.parametrize("override, match", [
    ({"generator_params": {"users": 10}}, r"not settings of the users stream; valid: \['burst_factor', "
                                          r"'burst_share', 'n_users'\]"),
    ({"generator_params": {"n_users": 0}}, "n_users=0 must be an integer >= 1"),
    ({"generator_params": {"n_users": 2.5}}, "n_users=2.5"),
    ({"generator_params": {"burst_share": 1.5}}, r"burst_share=1.5 must be in \[0, 1\]"),
    ({"generator_params": {"burst_factor": 0.5}}, "burst_factor=0.5 must be >= 1"),
    ({"generator_params": {"burst_factor": "x"}}, "must be a number"),
    ({"concepts": [0, 8], "drift_at": [2]}, "concept is 0..7"),
    ({"label_col": "amount"}, "clash with the users stream's columns"),
])
def test_bad_users_settings_are_config_errors(tmp_path: Path, override: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ensure_landing_zone(data_conf(small(tmp_path / "zone", **override)))
    assert not list(tmp_path.rglob("*.parquet"))


def test_the_users_stream_needs_its_label_column(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must name it"):
        data_conf(small(tmp_path, label_col=None))
