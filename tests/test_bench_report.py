"""scripts/bench_report.py (issue 16's benchmark) still runs, on a small run: it makes a real run, times the
report's data and rendering apart with their distributions, and sizes the page. The numbers are not judged
here (no wall-clock thresholds in tests); that every unit was read and the scratch folder removed is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_small_run_writes_every_measure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_report.py"), "--units", "12", "--reps", "2",
                           "--json", str(out), "--dir", str(tmp_path)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "together, written  [goal]" in done.stdout and "MB; goal <= 2 s and <= 2 MB" in done.stdout
    data = json.loads(out.read_text())
    assert data["units"] == 12  # src, 7 shards, more x 3, sink: one attempt each
    for key in ("data", "render", "total"):
        assert set(data[key]) == {"runs", "median_s", "min_s", "max_s"} and data[key]["runs"] == 2
    assert 0 < data["page_mb"] < 2 and isinstance(data["meets_goal"], bool)
    assert list(tmp_path.iterdir()) == [out]  # the scratch run is gone
