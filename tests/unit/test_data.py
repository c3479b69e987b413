"""The landing zone, window selection and ingest validation, on real Parquet files in tmp_path."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from cl_hpc.config.ml import DataConf, FitConf, data_conf, fit_conf
from cl_hpc.context import TaskContext
from cl_hpc.data.files import sha256_file
from cl_hpc.data.landing import MANIFEST, ensure_landing_zone, read_manifest
from cl_hpc.data.windows import list_partitions, select_windows
from cl_hpc.errors import ConfigError, DataError
from cl_hpc.tasks import ingest

REPO = Path(__file__).resolve().parents[2]


def small(tmp_path: Path, **over: Any) -> dict[str, Any]:
    """The default SEA drift stream, shrunk to 16 partitions of 100 rows."""
    base = {"landing_dir": str(tmp_path / "landing"), "n_partitions": 16, "rows_per_partition": 100,
            "drift_at": [4, 8], "train_window": 6, "eval_window": 2}
    return {**base, **over}


def ctx_for(tmp_path: Path, task: str, upstream: dict[str, Any] | None = None) -> TaskContext:
    task_dir = tmp_path / "run" / task
    task_dir.mkdir(parents=True, exist_ok=True)
    return TaskContext(run_id="r1", task=task, key=task, task_dir=task_dir, run_dir=tmp_path / "run",
                       attempt=1, upstream=upstream or {})


def file_hashes(root: Path) -> dict[str, str]:
    return {p.path.name: sha256_file(p.path) for p in list_partitions(root)}


# --- the landing zone ---------------------------------------------------------------------------


def test_landing_zone_is_generated_once_and_time_ordered(tmp_path: Path) -> None:
    conf = data_conf(small(tmp_path))
    first = ensure_landing_zone(conf)
    before = file_hashes(Path(first["landing_dir"]))
    again = ensure_landing_zone(conf)
    assert (first["generated"], again["generated"]) == (True, False)
    assert file_hashes(Path(again["landing_dir"])) == before
    parts = list_partitions(Path(first["landing_dir"]))
    assert len(parts) == 16
    assert [p.start for p in parts] == sorted(p.start for p in parts)
    frames = [pd.read_parquet(p.path) for p in parts]
    for part, frame in zip(parts, frames):
        assert len(frame) == 100
        assert frame["ts"].min() == part.start and frame["ts"].max() < part.start + pd.Timedelta("1h")
    assert pd.concat(frames)["ts"].is_monotonic_increasing
    assert list(frames[0].columns) == ["ts", "x0", "x1", "x2", "y"]


def test_generated_labels_follow_each_concept(tmp_path: Path) -> None:
    """SEA variants 0, 2, 3 label x0 + x1 > 8, 7, 9.5; with 10% noise ~90% of rows agree."""
    root = Path(ensure_landing_zone(data_conf(small(tmp_path)))["landing_dir"])
    parts = list_partitions(root)
    for index, threshold in ((1, 8.0), (6, 7.0), (12, 9.5)):
        frame = pd.read_parquet(parts[index].path)
        agree = ((frame.x0 + frame.x1 > threshold).astype(int) == frame.y).mean()
        assert agree > 0.8, (index, threshold, agree)


def test_zone_grows_but_never_silently_changes(tmp_path: Path) -> None:
    ensure_landing_zone(data_conf(small(tmp_path, n_partitions=12)))
    before = file_hashes(tmp_path / "landing")
    assert ensure_landing_zone(data_conf(small(tmp_path)))["generated"] is True
    after = file_hashes(tmp_path / "landing")
    assert len(after) == 16 and {k: after[k] for k in before} == before
    fresh = ensure_landing_zone(data_conf(small(tmp_path, landing_dir=str(tmp_path / "fresh"))))
    assert file_hashes(Path(fresh["landing_dir"])) == after  # appending equals generating at once
    with pytest.raises(ConfigError, match="noise"):
        ensure_landing_zone(data_conf(small(tmp_path, noise=0.2)))
    # n_partitions is the least a zone holds: one that has grown past it is read as it is
    assert ensure_landing_zone(data_conf(small(tmp_path, n_partitions=14))) == {
        "landing_dir": str(tmp_path / "landing"), "generated": False, "partitions": 16}
    assert file_hashes(tmp_path / "landing") == after


def test_a_zone_grown_by_simulate_is_read_with_the_defaults(tmp_path: Path) -> None:
    """Issue 10, defect 12: the README's loop. A run makes the zone (n_partitions), `simulate` appends
    to it, and the next run with the same settings reads the newest windows instead of refusing a
    zone that "holds 22 partitions but data.n_partitions=16"."""
    conf = data_conf(small(tmp_path))
    ensure_landing_zone(conf)
    grown = subprocess.run([sys.executable, "-m", "cl_hpc.data", "simulate", "--landing-dir", conf.landing_dir,
                            "--partitions", "6"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert grown.returncode == 0, grown.stderr
    before = file_hashes(tmp_path / "landing")
    assert len(before) == 22
    out = ingest.run(ctx_for(tmp_path, "ingest"), data=dataclasses.asdict(conf))
    assert out["generated"] is False and file_hashes(tmp_path / "landing") == before
    names = sorted(before)
    assert out["eval_partitions"] == names[-2:] and out["train_partitions"] == names[-8:-2]


def test_zone_without_manifest_is_regenerated(tmp_path: Path) -> None:
    """A crash before the manifest leaves files that must not be trusted."""
    conf = data_conf(small(tmp_path))
    ensure_landing_zone(conf)
    before = file_hashes(tmp_path / "landing")
    (tmp_path / "landing" / MANIFEST).unlink()
    victim = list_partitions(tmp_path / "landing")[3].path
    victim.write_bytes(victim.read_bytes()[:50])
    assert ensure_landing_zone(conf)["generated"] is True
    assert file_hashes(tmp_path / "landing") == before


_RACER = """
import json, sys, time
from pathlib import Path
from cl_hpc.config.ml import data_conf
from cl_hpc.data.landing import ensure_landing_zone
conf = data_conf(json.loads(sys.argv[1]))
Path(sys.argv[2]).touch()  # imports done
while not Path(sys.argv[3]).exists():
    time.sleep(0.002)
print(json.dumps(ensure_landing_zone(conf)))
"""


def test_concurrent_first_use_gives_one_consistent_zone(tmp_path: Path) -> None:
    params = small(tmp_path, rows_per_partition=400)
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, json.dumps(params), str(tmp_path / f"ready{i}"),
                               str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(2)]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    assert sorted(r["generated"] for r in results) == [False, True]
    manifest = read_manifest(tmp_path / "landing")
    assert manifest is not None and len(manifest["partitions"]) == 16
    assert {p["file"]: p["sha256"] for p in manifest["partitions"]} == file_hashes(tmp_path / "landing")
    solo = ensure_landing_zone(data_conf({**params, "landing_dir": str(tmp_path / "solo")}))
    assert file_hashes(Path(solo["landing_dir"])) == file_hashes(tmp_path / "landing")


# --- windows ------------------------------------------------------------------------------------


def test_windows_take_the_newest_eval_and_the_train_window_before_it(tmp_path: Path) -> None:
    conf = data_conf(small(tmp_path))
    parts = list_partitions(Path(ensure_landing_zone(conf)["landing_dir"]))
    train, held_out = select_windows(parts, conf)
    assert train == parts[8:14] and held_out == parts[14:16]
    earlier = dataclasses.replace(conf, as_of=str(parts[10].start))
    train, held_out = select_windows(parts, earlier)
    assert train == parts[2:8] and held_out == parts[8:10]
    with pytest.raises(DataError, match="train_window"):
        select_windows(parts, dataclasses.replace(conf, as_of=str(parts[5].start)))


def test_a_stray_parquet_name_is_reported(tmp_path: Path) -> None:
    conf = data_conf(small(tmp_path))
    root = Path(ensure_landing_zone(conf)["landing_dir"])
    (root / "extra.parquet").write_bytes(b"")
    with pytest.raises(DataError, match="extra.parquet"):
        list_partitions(root)


# --- ingest validation --------------------------------------------------------------------------


def _drop_x1(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["x1"])


def _x1_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(x1=frame["x1"].astype(str))


def _x1_with_nan(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(x1=frame["x1"].where(frame.index != 7))


def _ts_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(ts=frame["ts"].astype(str))


@pytest.mark.parametrize("damage, column", [(_drop_x1, "x1"), (_x1_as_text, "x1"), (_x1_with_nan, "x1"),
                                            (_ts_as_text, "ts")])
def test_a_malformed_partition_names_file_and_column_and_ingests_nothing(
        tmp_path: Path, damage: Callable[[pd.DataFrame], pd.DataFrame], column: str) -> None:
    params = small(tmp_path)
    root = Path(ensure_landing_zone(data_conf(params))["landing_dir"])
    victim = list_partitions(root)[10].path  # inside the train window
    damage(pd.read_parquet(victim)).to_parquet(victim, index=False)
    ctx = ctx_for(tmp_path, "ingest")
    with pytest.raises(DataError) as err:
        ingest.run(ctx, data=params)
    assert victim.name in str(err.value) and repr(column) in str(err.value)
    assert list(ctx.task_dir.iterdir()) in ([], [ctx.task_dir / "progress.json"])


def test_an_unreadable_partition_is_named(tmp_path: Path) -> None:
    params = small(tmp_path)
    root = Path(ensure_landing_zone(data_conf(params))["landing_dir"])
    victim = list_partitions(root)[15].path  # inside the eval window
    victim.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=victim.name):
        ingest.run(ctx_for(tmp_path, "ingest"), data=params)


def test_ingest_copies_both_windows_with_digest_and_labels(tmp_path: Path) -> None:
    params = small(tmp_path)
    out = ingest.run(ctx_for(tmp_path, "ingest"), data=params)
    assert json.loads(json.dumps(out)) == out  # outputs must be JSON
    assert (out["train_rows"], out["eval_rows"]) == (600, 200)
    assert out["train_partitions"][-1] < out["eval_partitions"][0]
    assert sum(out["train_labels"].values()) == 600 and set(out["train_labels"]) <= {"0", "1"}
    train = pq.read_table(out["train_path"]).to_pandas()
    assert len(train) == 600 and train["ts"].min() == pd.Timestamp(out["train_start"])
    assert out["features"] == ["x0", "x1", "x2"]
    again = ingest.run(ctx_for(tmp_path, "ingest"), data=params)  # a retry in the same task dir
    assert again["digest"] == out["digest"] and len(pq.read_table(again["train_path"])) == 600


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize("group, cls, check", [("data", DataConf, data_conf)])
def test_every_group_yaml_has_exactly_the_schema_fields(group: str, cls: type, check: Callable[..., Any]) -> None:
    files = sorted((REPO / "conf" / group).glob("*.yaml"))
    assert files
    for path in files:
        values = yaml.safe_load(path.read_text())
        values.pop("defaults", None)
        assert set(values) == {f.name for f in dataclasses.fields(cls)}, path
        check(values)


def test_every_model_yaml_is_a_workload_whose_classes_take_its_arguments() -> None:
    """conf/model/*.yaml (``# @package _global_``): ``model:`` and ``datamodule:`` _target_ configs
    whose every argument the class takes, and a valid ``fit:`` (FitConf)."""
    import inspect

    from cl_hpc.learn.contract import Target
    from cl_hpc.learn.workload import import_class

    files = sorted((REPO / "conf" / "model").glob("*.yaml"))
    assert files
    for path in files:
        text = path.read_text()
        values = yaml.safe_load(text)
        # a size preset may set other groups too (gpt_h100: the data and the resources it loads a GPU with)
        assert text.startswith("# @package _global_") and {"model", "datamodule", "fit"} <= set(values), path
        assert set(values["fit"]) <= {f.name for f in dataclasses.fields(FitConf)}, path
        fit_conf(values["fit"])
        for group in ("model", "datamodule"):
            target = Target.from_config(values[group], group)
            inspect.signature(import_class(target.path, f"{path}: {group}")).bind_partial(**target.args)


@pytest.mark.parametrize("override, match", [
    ({"bogus": 1}, "bogus"),
    ({"drift_at": [4]}, "drift_at"),
    ({"train_window": 15}, "n_partitions"),
    ({"generator": "nope"}, "generator"),
])
def test_bad_data_settings_are_config_errors(tmp_path: Path, override: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        data_conf(small(tmp_path, **override))


def test_a_too_narrow_drift_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="drift_width"):
        ensure_landing_zone(data_conf(small(tmp_path, drift_width=1)))
