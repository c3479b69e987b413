"""scripts/bench_features.py (issue 15's table) still runs: ``--quick`` on tiny sizes, and its JSON has every
measure with its distribution. The numbers are not judged here (no wall-clock thresholds in tests); what is
checked is behaviour the script reports: each new day computed exactly one partition, the join found values."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTION = {"runs", "median_s", "min_s", "max_s", "goal_s"}


def test_quick_run_writes_every_measure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_features.py"), "--quick", "--json", str(out),
                           "--dir", str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "full materialization" in done.stdout and "incremental" in done.stdout
    data = json.loads(out.read_text())
    for key in ("full_materialization", "online_read_1", "online_read_100"):
        assert DISTRIBUTION | {"meets_goal"} <= set(data[key]), key
    lookup = data["server_lookup_1"]  # a server's per-request fetch: no goal, most users found
    assert DISTRIBUTION <= set(lookup) and lookup["runs"] == data["sizes"]["reads"]
    assert 0 <= lookup["refused"] < lookup["runs"] / 2
    join = data["pit_join"]
    assert join["goal_on"] == "point_in_time" and 0 < join["found"] <= join["queries"]
    assert DISTRIBUTION <= set(join["load_offline"]) and DISTRIBUTION <= set(join["together"])
    assert join["point_in_time"]["goal_s"] == 0.3
    sizes = data["sizes"]
    assert [h["history_days"] for h in data["incremental"]] == sizes["histories"]
    for history in data["incremental"]:
        assert history["computed_per_run"] == [1] * sizes["reps"]  # only the new day, never the history
        assert {"full_s", "ratio", "proportional_ratio"} <= set(history) and DISTRIBUTION <= set(history["new_day"])
    assert list(tmp_path.iterdir()) == [out]  # the scratch dir is gone
