"""The README's continual-loop demo, command by command (issue 10, defect 12).

A first continual run makes the landing zone (data.n_partitions=24) and the champion; `simulate`
appends 6 partitions; the watch sees them, fires and launches the continual pipeline, whose ingest
used to fail with "holds 30 partitions but data.n_partitions=24". It must read the newest windows.
The data are the defaults but for smaller partitions (rows_per_partition), to keep the test short.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cl_hpc.data.landing import read_manifest
from cl_hpc.rundir.layout import RunDir
from tests.conftest import REPO, Launcher, _env

pytestmark = pytest.mark.e2e


def test_watch_after_simulate_reads_the_grown_zone(launcher: Launcher, tmp_path: Path) -> None:
    zone = tmp_path / "landing" / "sea"
    data = [f"data.landing_dir={zone}", "data.rows_per_partition=200"]
    first = launcher("cluster=inprocess", "pipeline=continual", *data, timeout=600)
    assert first.proc.returncode == 0, first.output
    manifest = read_manifest(zone)
    assert manifest is not None and len(manifest["partitions"]) == 24  # the default data.n_partitions

    simulate = subprocess.run([sys.executable, "-m", "cl_hpc.data", "simulate", "--landing-dir", str(zone),
                               "--partitions", "6"], cwd=REPO, capture_output=True, text=True, timeout=300,
                              env=_env())
    assert simulate.returncode == 0, simulate.stderr
    grown = read_manifest(zone)
    assert grown is not None
    names = [p["file"] for p in grown["partitions"]]
    assert len(names) == 30

    watch = subprocess.run([sys.executable, "-m", "cl_hpc.watch", f"run_root={launcher.run_root}",
                            f"store.root={launcher.store_root}", "cluster=inprocess", "pipeline=continual",
                            "launch.follow=true", *data], cwd=REPO, capture_output=True, text=True, timeout=600,
                           env=_env())
    output = watch.stdout + watch.stderr
    assert watch.returncode == 0, output
    assert "n_partitions" not in output, output
    runs = sorted(p for p in launcher.run_root.glob("2*") if (p / "plan.json").exists())
    assert len(runs) == 2, output  # the first run, and the one the watch launched
    second = RunDir(runs[-1])
    [launch] = json.loads((second.path / "run.json").read_text())["launches"]
    assert launch["reason"].startswith("volume"), launch  # 6 new partitions against an 8-partition window
    ingested = second.outputs("ingest")
    assert ingested is not None and ingested["generated"] is False
    assert ingested["eval_partitions"] == names[-4:] and ingested["train_partitions"] == names[-12:-4]
