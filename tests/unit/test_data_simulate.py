"""`python -m cl_hpc.data simulate`: appending to a landing zone, drift, corruption, loop mode, CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from cl_hpc.config.ml import DataConf, data_conf
from cl_hpc.data.__main__ import main
from cl_hpc.data.files import sha256_file
from cl_hpc.data.landing import MANIFEST, ensure_landing_zone, generation_spec, read_manifest
from cl_hpc.data.simulate import PRESETS
from cl_hpc.data.windows import check_windows, list_partitions
from cl_hpc.errors import DataError

REPO = Path(__file__).resolve().parents[2]


def simulate(zone: Path, *args: str) -> int:
    return main(["simulate", "--landing-dir", str(zone), *args])


def hashes(zone: Path) -> dict[str, str]:
    return {p.path.name: sha256_file(p.path) for p in list_partitions(zone)}


def frames(zone: Path) -> list[pd.DataFrame]:
    return [pd.read_parquet(p.path) for p in list_partitions(zone)]


# --- appending ------------------------------------------------------------------------------------


def test_appending_continues_the_stream_and_equals_generating_at_once(tmp_path: Path, capsys: Any) -> None:
    assert simulate(tmp_path / "a", "--rows", "50", "--partitions", "3") == 0
    first = capsys.readouterr().out
    assert simulate(tmp_path / "a", "--partitions", "3") == 0  # the zone's own settings apply
    second = capsys.readouterr().out
    assert len(hashes(tmp_path / "a")) == 6 and len(read_manifest(tmp_path / "a")["partitions"]) == 6
    assert simulate(tmp_path / "b", "--rows", "50", "--partitions", "6") == 0
    assert hashes(tmp_path / "a") == hashes(tmp_path / "b")
    pipeline = data_conf({"landing_dir": str(tmp_path / "c"), "rows_per_partition": 50, "n_partitions": 6,
                          "train_window": 2, "eval_window": 1})
    ensure_landing_zone(pipeline)  # the pipeline's own generation writes the very same files
    assert hashes(tmp_path / "c") == hashes(tmp_path / "a")
    names = list(hashes(tmp_path / "a"))
    assert all(name in first for name in names[:3]) and all(name in second for name in names[3:])
    assert "part-20260101T030000.parquet  50 rows  2026-01-01 03:00:00 .. 2026-01-01 03:58:48  concept 0" in second
    assert "the zone holds 3 -> 6" in second


def test_presets_match_the_bundled_data_configs() -> None:
    """simulate and `launch data=<generator>` must write the same zone from the same defaults."""
    for name in ("sea", "hyperplane"):
        values = yaml.safe_load((REPO / "conf" / "data" / f"{name}.yaml").read_text())
        values.pop("defaults", None)
        assert generation_spec(DataConf(**PRESETS[name])) == generation_spec(DataConf(**values)), name


def test_an_option_that_contradicts_the_zone_is_refused(tmp_path: Path, capsys: Any) -> None:
    simulate(tmp_path / "z", "--rows", "20", "--partitions", "2")
    before = hashes(tmp_path / "z")
    assert simulate(tmp_path / "z", "--noise", "0.3") == 2
    err = capsys.readouterr().err
    assert "--noise gives noise=0.3, the zone has 0.1" in err and MANIFEST in err
    assert hashes(tmp_path / "z") == before


def test_files_without_a_manifest_are_never_overwritten(tmp_path: Path, capsys: Any) -> None:
    zone = tmp_path / "mine"
    zone.mkdir()
    pd.DataFrame({"ts": pd.date_range("2026-01-01", periods=3, freq="h"), "y": [0, 1, 0]}).to_parquet(
        zone / "part-20260101T000000.parquet", index=False)
    before = hashes(zone)
    assert simulate(zone, "--rows", "20") == 2
    assert "no _manifest.json" in capsys.readouterr().err and hashes(zone) == before


# --- drift ----------------------------------------------------------------------------------------


def test_sea_concept_change_moves_the_decision_boundary(tmp_path: Path) -> None:
    """SEA variant 0 labels x0 + x1 > 8, variant 3 > 9.5: the change lands at partition 2."""
    simulate(tmp_path / "z", "--concepts", "0", "3", "--drift-at", "2", "--noise", "0", "--rows", "400",
             "--partitions", "4")
    parts = frames(tmp_path / "z")
    for index, threshold in ((0, 8.0), (1, 8.0), (3, 9.5)):
        frame = parts[index]
        assert ((frame.x0 + frame.x1 > threshold).astype(int) == frame.y).mean() > 0.99, index
    assert parts[3].y.mean() < parts[1].y.mean() - 0.1  # a higher threshold: fewer positives


def _xy(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    features = [c for c in frame.columns if c.startswith("x")]
    return np.c_[frame[features].to_numpy(), np.ones(len(frame))], frame.y.to_numpy()


def _weights(frame: pd.DataFrame) -> np.ndarray:
    x, y = _xy(frame)
    return np.linalg.lstsq(x, 2.0 * y - 1.0, rcond=None)[0][:-1]


@pytest.mark.parametrize("mag_change", ["0", "0.002"])
def test_hyperplane_gradual_drift_rotates_the_best_weights(tmp_path: Path, mag_change: str) -> None:
    simulate(tmp_path / "z", "--generator", "hyperplane", "--mag-change", mag_change, "--sigma", "0",
             "--param", "n_features=4", "--param", "n_drift_features=2", "--noise", "0", "--rows", "500",
             "--partitions", "6")
    parts = frames(tmp_path / "z")
    first = _weights(parts[0])
    cosines = [float(first @ w / np.linalg.norm(first) / np.linalg.norm(w)) for w in map(_weights, parts)]
    x, y = _xy(parts[-1])
    stale = ((x @ np.append(first, np.linalg.lstsq(*_xy(parts[0]), rcond=None)[0][-1]) > 0) == y).mean()
    if mag_change == "0":
        assert min(cosines) > 0.99
    else:
        assert cosines[-1] < 0.95 and cosines[-1] < cosines[1]  # the boundary keeps turning
        assert stale < 0.9  # a model of the first partition no longer fits the last


# --- corruption -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["nan-column", "flipped-labels", "string-in-numeric"])
def test_each_corruption_is_written_as_specified(tmp_path: Path, kind: str, capsys: Any) -> None:
    zone = tmp_path / "z"
    simulate(zone, "--rows", "100", "--partitions", "2")
    assert simulate(zone, "--corrupt", kind) == 0
    assert f"CORRUPT {kind}" in capsys.readouterr().out
    simulate(zone)  # the stream goes on after the damaged partition
    simulate(tmp_path / "clean", "--rows", "100", "--partitions", "4")
    clean, damaged = frames(tmp_path / "clean"), frames(zone)
    assert damaged[3].equals(clean[3]) and damaged[1].equals(clean[1])
    bad, good = damaged[2], clean[2]
    assert list(bad.columns) == list(good.columns) and len(bad) == len(good)
    assert pq.read_metadata(list_partitions(zone)[2].path).num_rows == 100  # a valid Parquet file
    assert read_manifest(zone)["partitions"][2]["corrupt"].startswith(kind)
    if kind == "nan-column":
        assert bad.x0.isna().all() and bad.x0.dtype == good.x0.dtype
    elif kind == "flipped-labels":
        assert bad.y.nunique() == 1 and bad.y.dtype == good.y.dtype and good.y.nunique() == 2
    else:
        assert bad.x0.iloc[0] == "n/a" and pd.api.types.is_string_dtype(bad.x0)


def test_a_string_in_a_numeric_column_fails_the_schema_check(tmp_path: Path) -> None:
    zone = tmp_path / "z"
    simulate(zone, "--rows", "50", "--partitions", "3")
    simulate(zone, "--corrupt", "string-in-numeric")
    parts = list_partitions(zone)
    conf = DataConf(landing_dir=str(zone), generator="none")
    with pytest.raises(DataError) as err:
        check_windows({"train": parts[:3], "eval": parts[3:]}, conf)
    assert parts[3].path.name in str(err.value) and "'x0'" in str(err.value)


# --- loop mode ------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_loop_mode_appends_until_stopped(tmp_path: Path, signum: int) -> None:
    zone = tmp_path / "z"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "cl_hpc.data", "simulate", "--landing-dir", str(zone),
                             "--rows", "20", "--every", "0.05"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    deadline = time.monotonic() + 120
    while read_manifest(zone) is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped after appending" in out and "Traceback" not in err
    appended = read_manifest(zone)["partitions"]
    assert len(appended) >= 1 and [e["file"] for e in appended] == list(hashes(zone))
    assert all(e["file"] in out for e in appended)
    fresh = tmp_path / "fresh"
    simulate(fresh, "--rows", "20", "--partitions", str(len(appended)))
    assert hashes(fresh) == hashes(zone)  # the loop wrote the same stream


# --- the command line -----------------------------------------------------------------------------


def test_help_shows_examples(capsys: Any) -> None:
    with pytest.raises(SystemExit) as done:
        main(["simulate", "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    assert "Examples:" in out and "--corrupt" in out and "--mag-change" in out and "--every SECONDS" in out


@pytest.mark.parametrize("args, message", [
    (["--generator", "nope"], "invalid choice: 'nope'"),
    (["--partitions", "0"], "--partitions: 0 must be > 0"),
    (["--every", "soon"], "--every: 'soon' is not a number"),
    (["--corrupt", "bitrot"], "invalid choice: 'bitrot'"),
    (["--every", "1", "--corrupt", "nan-column"], "does not go with --every"),
    (["--param", "n_features"], "'n_features' is not KEY=VALUE"),
])
def test_bad_arguments_are_usage_errors(tmp_path: Path, capsys: Any, args: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as done:
        simulate(tmp_path / "z", *args)
    assert done.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "z").exists()


@pytest.mark.parametrize("args, message", [
    (["--mag-change", "0.01"], "use --generator hyperplane for gradual drift"),
    (["--concepts", "0", "2"], "data.drift_at=[6, 12] needs len(concepts)-1 = 1 entries"),
    (["--noise", "2"], "data.noise=2.0 must be in [0, 1]"),
    (["--freq", "monthly"], "data.freq='monthly' is not a fixed duration"),
    (["--param", "bogus=1"], "rejected data.generator_params"),
])
def test_bad_settings_are_clear_errors(tmp_path: Path, capsys: Any, args: list[str], message: str) -> None:
    assert simulate(tmp_path / "z", *args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "z").exists()
