"""Your own partition files: any name, ordered by time; malformed files named with their column,
every one at once, and nothing ingested."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cl_hpc.config.ml import DataConf, data_conf
from cl_hpc.context import TaskContext
from cl_hpc.data.__main__ import main
from cl_hpc.data.landing import ensure_landing_zone
from cl_hpc.data.windows import check_windows, dask_threads, list_partitions, read_window, select_windows
from cl_hpc.errors import DataError
from cl_hpc.tasks import ingest

USER = {"generator": "none", "timestamp_col": "event_time", "label_col": "churned", "features": ["a", "b"],
        "train_window": 2, "eval_window": 1}


def user_frame(hour: int, rows: int = 10, tz: str | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(hour)
    times = pd.date_range("2026-03-01", periods=rows, freq="min", tz=tz) + pd.Timedelta(hours=hour)
    return pd.DataFrame({"event_time": times, "a": rng.normal(size=rows), "b": rng.integers(0, 9, rows),
                         "extra": ["x"] * rows, "churned": rng.integers(0, 2, rows)})


def user_zone(root: Path, names: dict[str, int]) -> Path:
    """Files named freely, each starting at the given hour."""
    root.mkdir(parents=True)
    for name, hour in names.items():
        user_frame(hour).to_parquet(root / name, index=False)
    return root


def conf_for(root: Path, **over: Any) -> DataConf:
    return data_conf({"landing_dir": str(root), **USER, **over})


# --- any name, in time order ----------------------------------------------------------------------


def test_user_files_with_any_name_are_ordered_by_their_first_timestamp(tmp_path: Path) -> None:
    root = user_zone(tmp_path / "mine", {"zeta.parquet": 0, "part-00000-9f1c.snappy.parquet": 2, "b.parquet": 1})
    (root / "_SUCCESS").touch()
    (root / ".part-1.parquet.crc").touch()
    user_frame(3).to_parquet(root / "no-stats.parquet", index=False, write_statistics=False)
    parts = list_partitions(root, "event_time")
    assert [p.path.name for p in parts] == ["zeta.parquet", "b.parquet", "part-00000-9f1c.snappy.parquet",
                                            "no-stats.parquet"]
    assert parts[1].start == pd.Timestamp("2026-03-01T01:00")
    conf = conf_for(root)
    train, held_out = select_windows(parts, conf)
    assert [p.path.name for p in held_out] == ["no-stats.parquet"]
    cols = check_windows({"train": train, "eval": held_out}, conf)
    assert cols.names == ["event_time", "a", "b", "churned"]
    with dask_threads(1):
        frame = read_window(train, cols).compute()
    assert len(frame) == 20 and frame.event_time.is_monotonic_increasing


def test_time_zone_aware_files_are_ordered_in_utc(tmp_path: Path) -> None:
    root = tmp_path / "tz"
    root.mkdir()
    user_frame(0, tz="Asia/Tokyo").to_parquet(root / "tokyo.parquet", index=False)  # 2026-02-28 15:00 UTC
    user_frame(0, tz="UTC").to_parquet(root / "utc.parquet", index=False)
    parts = list_partitions(root, "event_time")
    assert [p.path.name for p in parts] == ["tokyo.parquet", "utc.parquet"]
    assert parts[0].start == pd.Timestamp("2026-02-28T15:00")


def test_generated_names_need_no_timestamp_column(tmp_path: Path) -> None:
    root = user_zone(tmp_path / "z", {"other.parquet": 0})
    with pytest.raises(DataError, match=r"other.parquet: not a partition name; expected part-<YYYYmmddTHHMMSS>"):
        list_partitions(root)


def test_every_file_that_cannot_be_placed_in_time_is_named_at_once(tmp_path: Path) -> None:
    root = user_zone(tmp_path / "z", {"good.parquet": 0, "no-time.parquet": 1, "text-time.parquet": 2})
    user_frame(1).drop(columns=["event_time"]).to_parquet(root / "no-time.parquet", index=False)
    user_frame(2).assign(event_time=lambda f: f.event_time.astype(str)).to_parquet(root / "text-time.parquet")
    (root / "junk.parquet").write_bytes(b"PAR1 not really")
    user_frame(3, rows=0).to_parquet(root / "empty.parquet", index=False)
    with pytest.raises(DataError) as err:
        list_partitions(root, "event_time")
    text = str(err.value)
    assert "no-time.parquet: timestamp column 'event_time' is missing" in text
    assert "text-time.parquet: timestamp column 'event_time' has type large_string" in text
    assert "junk.parquet: unreadable Parquet file" in text and "empty.parquet: no rows" in text
    assert "good.parquet" not in text


# --- malformed partitions: every one named, nothing read ------------------------------------------


def test_every_malformed_file_of_both_windows_is_reported_at_once(tmp_path: Path) -> None:
    names = {f"p{i}.parquet": i for i in range(6)}
    root = user_zone(tmp_path / "z", names)
    user_frame(0).drop(columns=["churned"]).to_parquet(root / "p0.parquet", index=False)
    user_frame(1).assign(a=lambda f: f.a.astype(str)).to_parquet(root / "p1.parquet", index=False)
    user_frame(2).assign(churned=lambda f: f.churned * 1.0).to_parquet(root / "p2.parquet", index=False)
    user_frame(3).assign(b=lambda f: f.b * 1.0).to_parquet(root / "p3.parquet", index=False)  # int64 elsewhere
    (root / "p4.parquet").write_bytes((root / "p4.parquet").read_bytes()[:-100])  # truncated
    conf = conf_for(root, train_window=4, eval_window=2)
    train, held_out = select_windows(_by_name(root), conf)
    with pytest.raises(DataError) as err:
        check_windows({"train": train, "eval": held_out}, conf)
    lines = str(err.value).splitlines()
    assert lines[0] == f"5 of 6 partition files in {root} are malformed; nothing was read:"
    assert lines[1:6] == [
        "  - p0.parquet: label column 'churned' is missing; the file has ['event_time', 'a', 'b', 'extra']",
        "  - p1.parquet: feature column 'a' has type large_string; it must be numeric (integer, float or bool)",
        "  - p2.parquet: label column 'churned' has type double; it must be integer, bool or string",
        "  - p3.parquet: feature column 'b' has type double, but int64 in the window's other files; "
        "every partition must use the same types",
        lines[5],
    ]
    assert lines[5].startswith("  - p4.parquet: unreadable Parquet file")
    assert "p5.parquet" not in str(err.value)


def _by_name(root: Path) -> list[Any]:
    """The partitions in name order (p4 is unreadable, so it cannot be ordered by its contents)."""
    from cl_hpc.data.partitions import Partition

    return [Partition(p, pd.Timestamp("2026-03-01") + pd.Timedelta(hours=int(p.stem[1:])))
            for p in sorted(root.glob("p*.parquet"))]


def _generated(tmp_path: Path) -> tuple[dict[str, Any], list[Path]]:
    params = {"landing_dir": str(tmp_path / "landing"), "n_partitions": 6, "rows_per_partition": 50,
              "drift_at": [2, 4], "train_window": 3, "eval_window": 2}
    root = Path(ensure_landing_zone(data_conf(params))["landing_dir"])
    return params, [p.path for p in list_partitions(root)]


def _rewrite(path: Path, change: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    change(pd.read_parquet(path)).to_parquet(path, index=False)


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "missing timestamp": (lambda p: _rewrite(p, lambda f: f.drop(columns=["ts"])), "'ts'"),
    "missing label": (lambda p: _rewrite(p, lambda f: f.drop(columns=["y"])), "'y'"),
    "missing feature": (lambda p: _rewrite(p, lambda f: f.drop(columns=["x2"])), "'x2'"),
    "text feature": (lambda p: _rewrite(p, lambda f: f.assign(x0=f.x0.astype(str))), "'x0'"),
    "text timestamp": (lambda p: _rewrite(p, lambda f: f.assign(ts=f.ts.astype(str))), "'ts'"),
    "float label": (lambda p: _rewrite(p, lambda f: f.assign(y=f.y * 0.5)), "'y'"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:200]), "unreadable Parquet file"),
    "not parquet": (lambda p: p.write_text("ts,x0\n1,2\n"), "unreadable Parquet file"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
@pytest.mark.parametrize("index", [1, 4])  # the train window, the eval window
def test_ingest_names_the_file_and_column_and_writes_nothing(tmp_path: Path, case: str, index: int) -> None:
    params, paths = _generated(tmp_path)
    damage, column = DAMAGE[case]
    damage(paths[index])
    task_dir = tmp_path / "run" / "ingest"
    task_dir.mkdir(parents=True)
    ctx = TaskContext(run_id="r1", task="ingest", key="ingest", task_dir=task_dir, run_dir=tmp_path / "run",
                      attempt=1, upstream={})
    with pytest.raises(DataError) as err:
        ingest.run(ctx, data=params)
    assert paths[index].name in str(err.value) and column in str(err.value)
    assert [p.name for p in task_dir.iterdir()] in ([], ["progress.json"])


def test_an_empty_window_is_an_error(tmp_path: Path) -> None:
    params, paths = _generated(tmp_path)
    for path in paths[4:]:
        _rewrite(path, lambda f: f.iloc[:0])
    conf = data_conf(params)
    train, held_out = select_windows(list_partitions(paths[0].parent), conf)
    with pytest.raises(DataError, match=r"window part-20260101T040000.parquet .. part-20260101T050000.parquet "
                                        r"in .* has no rows"):
        check_windows({"train": train, "eval": held_out}, conf)


def test_no_partitions_before_as_of_is_an_error(tmp_path: Path) -> None:
    params, paths = _generated(tmp_path)
    conf = dataclasses.replace(data_conf(params), as_of="2025-12-31T00:00:00")
    with pytest.raises(DataError, match=r"has 0 partition files before as_of=2025-12-31T00:00:00; the zone's 6 "
                                        r"run from 2026-01-01 00:00:00 to 2026-01-01 05:00:00"):
        select_windows(list_partitions(paths[0].parent), conf)


# --- python -m cl_hpc.data check ------------------------------------------------------------------


def test_check_command_lists_and_checks_user_files(tmp_path: Path, capsys: Any) -> None:
    root = user_zone(tmp_path / "mine", {"x.parquet": 1, "y.parquet": 0})
    args = ["check", "--landing-dir", str(root), "--timestamp-col", "event_time", "--label-col", "churned"]
    assert main([*args, "--features", "a", "b"]) == 0
    out = capsys.readouterr().out
    assert "2 partition files, 20 rows, starting 2026-03-01 00:00:00 .. 2026-03-01 01:00:00" in out
    assert "event_time (timestamp[us]), a (double), b (int64), churned (int64)" in out
    assert main(args) == 2  # every other column is a feature, and 'extra' is text
    assert "feature column 'extra' has type large_string" in capsys.readouterr().err


def test_a_file_written_by_pyarrow_without_pandas_metadata_is_read(tmp_path: Path) -> None:
    root = tmp_path / "z"
    root.mkdir()
    for hour in (2, 0, 1):
        table = pa.Table.from_pandas(user_frame(hour), preserve_index=False).replace_schema_metadata(None)
        pq.write_table(table, root / f"batch-{hour}.parquet")
    parts = list_partitions(root, "event_time")
    assert [p.path.name for p in parts] == ["batch-0.parquet", "batch-1.parquet", "batch-2.parquet"]
    cols = check_windows({"train": parts[:2], "eval": parts[2:]}, conf_for(root))
    with dask_threads(1):
        assert read_window(parts, cols).compute().churned.dtype == np.int64
