"""`python -m cl_hpc.features check` as a user runs it: a real subprocess over real prediction-log shards whose
feature values come from the online store, against a materialized store; exit 0, 1 and 2 as documented."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cl_hpc.data.predictions import PredictionBatch, Role, Stream, predictions_table, shard_path, write_shard
from cl_hpc.features.definitions import load_catalog
from cl_hpc.features.materialize import materialize
from cl_hpc.features.online import OnlineStore
from cl_hpc.features.retrieval import historical, online
from tests.feature_zone import START, spend_catalog

NAMES = ["events_1h", "amount_sum_1h"]
EVENT = "spend.event_ts"
USERS = np.arange(5)
NOW = START + pd.Timedelta("4h30min")  # after the zone's last event; every user's value is within the 1h TTL
EARLIER = START + pd.Timedelta("2h30min")  # a request of an earlier hour partition


@dataclass(frozen=True)
class Setup:
    catalog: Path
    store: Path
    log: Path

    def args(self, *extra: str) -> list[str]:
        return ["check", "--log-dir", str(self.log), "--store", str(self.store), "--catalog", str(self.catalog),
                *extra]


@pytest.fixture()
def setup(tmp_path: Path) -> Setup:
    catalog_dir, _ = spend_catalog(tmp_path, hours=4)
    store = tmp_path / "store"
    materialize(load_catalog(catalog_dir).view("spend"), store, OnlineStore(store / "online.sqlite"))
    return Setup(catalog_dir, store, tmp_path / "log")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cl_hpc.features", *args], capture_output=True, text=True, timeout=120)


def _served(setup: Setup, at: pd.Timestamp) -> dict[str, np.ndarray]:
    """The logged inputs of one request for every user at ``at``, as a server reads them: the online store now,
    or (a request of the past) the point-in-time values of then."""
    catalog = load_catalog(setup.catalog)
    if at >= NOW:
        found = online(catalog, OnlineStore(setup.store / "online.sqlite"), pd.DataFrame({"user_id": USERS}),
                       NAMES, at=at, events=True)
    else:
        queries = pd.DataFrame({"user_id": USERS, "ts": at})
        found = historical(catalog, setup.store, queries, NAMES, "ts", events=True)
    return {"user_id": USERS.astype(np.int64), "events_1h": found["events_1h"].to_numpy(np.int64),
            "amount_sum_1h": found["amount_sum_1h"].to_numpy(np.float64),
            EVENT: found[EVENT].to_numpy("datetime64[us]")}


def _log(setup: Setup, request: str, at: pd.Timestamp, inputs: dict[str, np.ndarray], seq: int,
         model: str = "spender") -> None:
    rows = len(next(iter(inputs.values())))
    batch = PredictionBatch(request, at.tz_localize("UTC").timestamp(), model, "1.0", Role.LIVE, 1.0, inputs,
                            {"p": np.full(rows, 0.5)})
    write_shard(shard_path(setup.log, Stream.PREDICTIONS, batch.at, "test", seq), predictions_table([batch]))


def _clean_log(setup: Setup) -> dict[str, np.ndarray]:
    _log(setup, "earlier", EARLIER, _served(setup, EARLIER), 1)
    now = _served(setup, NOW)
    _log(setup, "now", NOW, now, 2)
    return now


def _counts(report: dict, feature: str) -> dict[str, int]:
    (found,) = [f for f in report["features"] if f["feature"] == feature]
    return found["counts"]


def test_a_clean_log_is_consistent(setup: Setup) -> None:
    _clean_log(setup)
    done = _run(*setup.args())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "consistent: every logged value matches" in done.stdout
    assert "10 logged rows, 2026-01-01T02:30:00+00:00 .. 2026-01-01T04:30:00+00:00" in done.stdout
    report = json.loads(_run(*setup.args("--json")).stdout)
    assert report["ok"] and report["rows"] == 10
    assert _counts(report, "amount_sum_1h") == {"match": 10, "skew": 0, "stale": 0, "missing_online": 0,
                                                 "missing_offline": 0}


def test_one_skewed_value_fails_and_is_named(setup: Setup) -> None:
    now = _clean_log(setup)
    skewed = {**now, "amount_sum_1h": now["amount_sum_1h"] + np.array([0, 0, 0.5, 0, 0])}  # user 2, same event
    _log(setup, "skewed", NOW + pd.Timedelta("1min"), skewed, 3)
    done = _run(*setup.args())
    assert done.returncode == 1, done.stdout + done.stderr
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("│ amount_sum_1h")]
    cells = [c.strip() for c in line.strip("│ ").split("│")]
    assert cells == ["amount_sum_1h", "spend", "15", "14", "1", "0", "0", "0", "0.5"]
    assert "amount_sum_1h skew: entity [2] at 2026-01-01T04:31:00+00:00" in done.stdout
    assert "request skewed" in done.stdout and "1 logged values are skewed or missing" in done.stdout
    as_json = _run(*setup.args("--json"))
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    assert not report["ok"] and report["rows"] == 15
    assert _counts(report, "amount_sum_1h") == {"match": 14, "skew": 1, "stale": 0, "missing_online": 0,
                                                 "missing_offline": 0}
    assert _counts(report, "events_1h")["match"] == 15
    # --since keeps the hour-4 requests only (the read skips hour 2's partition, the trim is exact)
    late = json.loads(_run(*setup.args("--json", "--since", "2026-01-01T04:30:30")).stdout)
    assert (late["rows"], late["first"]) == (5, "2026-01-01T04:31:00+00:00")


def test_bad_input_exits_2_with_the_reason(setup: Setup, tmp_path: Path) -> None:
    _clean_log(setup)
    after = _run(*setup.args("--since", "2026-01-01T04:45:00"))  # in the last partition's hour, after its rows
    assert after.returncode == 2
    assert f"the prediction log at {setup.log} has no rows in [2026-01-01T04:45:00, now)" in after.stderr
    missing = _run("check", "--log-dir", str(tmp_path / "nowhere"), "--store", str(setup.store),
                   "--catalog", str(setup.catalog))
    assert missing.returncode == 2 and f"no prediction log at {tmp_path / 'nowhere'} (--log-dir" in missing.stderr
    garbage = _run(*setup.args("--since", "garbage"))
    assert garbage.returncode == 2 and "--since 'garbage' is not a time: give ISO 8601" in garbage.stderr
    other = _run(*setup.args("--model", "other"))
    assert other.returncode == 2 and "has no rows of model other in [start, now)" in other.stderr
    assert all("Traceback" not in r.stderr for r in (after, missing, garbage, other))


def test_rows_of_a_plain_version_beside_do_not_break_the_check(setup: Setup) -> None:
    _clean_log(setup)
    _log(setup, "plain", NOW, {"x": np.array([1.0, 2.0])}, 4, model="plain")  # a version fed by its request
    done = _run(*setup.args("--model", "spender"))
    assert done.returncode == 0, done.stdout + done.stderr
    every = _run(*setup.args())  # without --model too: the plain rows carry no catalog feature
    assert every.returncode == 0 and "consistent" in every.stdout, every.stdout + every.stderr


def test_since_past_every_partition_exits_2(setup: Setup) -> None:
    _clean_log(setup)
    after = _run(*setup.args("--since", "2026-01-02T00:00:00"))
    assert after.returncode == 2, after.stderr
    assert f"the prediction log at {setup.log} has no rows in [2026-01-02T00:00:00, now)" in after.stderr
    negative = _run(*setup.args("--examples", "-1"))
    assert negative.returncode == 2 and "--examples -1" in negative.stderr
