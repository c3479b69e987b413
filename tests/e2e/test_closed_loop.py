"""The loop closed, as the README's demo runs it, command by command (issue 13):

1. a continual run makes the champion 1.0 on a SEA stream whose concept changes after it;
2. ``python -m cl_hpc.serve`` serves 1.0;
3. new partitions arrive (the new concept), and ``python -m cl_hpc.serve loadgen`` replays them as
   requests, posting each row's label as an outcome after a delay;
4. ``python -m cl_hpc.labels join`` joins predictions and outcomes into a labelled zone;
5. ``python -m cl_hpc.watch`` on that zone, judging the traffic 1.0 served
   (``trigger.performance.source=served``), fires and launches the continual pipeline on the
   labelled zone, which fine-tunes 1.0 into 1.1 and promotes it;
6. the running server answers with 1.1, without a restart.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from cl_hpc.registry.store import ModelRegistry
from tests.conftest import _env
from tests.serving import Server, wait_for

pytestmark = pytest.mark.e2e

# The concept changes at partition 13, after the champion's windows (partitions 0-11).
DATA = ["data.n_partitions=12", "data.drift_at=[6,13]", "data.rows_per_partition=800", "fit.max_epochs=4"]
ROW = {"x0": 1.0, "x1": 2.0, "x2": 3.0}


def _run(tmp: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, *args], cwd=tmp, env=_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_served_traffic_labels_retrain_and_the_server_swaps_to_the_new_champion(tmp_path: Path) -> None:
    store, zone, labelled = tmp_path / "store", tmp_path / "landing", tmp_path / "labelled"
    common = [f"store.root={store}", f"run_root={tmp_path / 'runs'}"]
    data = [f"data.landing_dir={zone}", *DATA]
    _run(tmp_path, "-m", "cl_hpc.launch", "pipeline=continual", *common, *data)

    server = Server.start(store)
    failures: list[str] = []
    stop = threading.Event()
    background = threading.Thread(target=_keep_asking, args=(server.url, stop, failures), daemon=True)
    background.start()
    try:
        assert server.wait_ready()["serving"] == "1.0"
        _run(tmp_path, "-m", "cl_hpc.data", "simulate", "--landing-dir", str(zone), "--partitions", "4")
        load = _run(tmp_path, "-m", "cl_hpc.serve", "loadgen", "--url", server.url, "--partitions", "3",
                    "--requests", "1500", "--outcome-delay", "0.5s", "--json", *common, *data)
        sent = json.loads(load.stdout.strip().splitlines()[-1])
        assert sent["answered"] == 1500 and sent["outcomes_posted"] == 1500 and sent["versions"] == {"1.0": 1500}

        # Both spans follow the machine, not a guess at its speed: an outcome posted 0.5 s after its
        # answer may reach a loaded server seconds later (past a 2 s window it is dropped, and the join
        # never labels all 1500), and partitions of a fixed 1 s left the last one a few dozen rows on a
        # fast machine (too few for the gate's significance test). About six partitions of the replay.
        freq = max(1, math.ceil(sent["seconds"] / 6))
        join = [f"labels.log_dir={store / 'predictions'}", f"labels.out_dir={labelled}", "labels.window=10s",
                f"labels.freq={freq}s"]
        reports = []

        def joined_all() -> bool:  # a partition is written once its predictions' window has passed
            out = _run(tmp_path, "-m", "cl_hpc.labels", "join", "--json", *join)
            reports.append(json.loads(out.stdout))
            return sum(r["labelled"] for r in reports) >= 1500

        # The background requests get no outcome: dropped (labels.missing=drop), never labelled.
        wait_for(joined_all, 90, "the join to label every replayed prediction", interval_s=0.5)
        assert sum(r["labelled"] for r in reports) == 1500 and sum(r["defaulted"] for r in reports) == 0

        # The edge partitions may be partial; two partitions each hold at least one whole sixth.
        on_labels = [f"data.landing_dir={labelled}", "data.generator=none", "data.train_window=2",
                     "data.eval_window=2", "fit.max_epochs=4"]
        watch = _run(tmp_path, "-m", "cl_hpc.watch", "--", "pipeline=continual", *common, *on_labels,
                     "trigger.performance.source=served", timeout=600)
        verdict = next(line for line in watch.stdout.splitlines() if line.strip().startswith("performance "))
        assert "fired yes" in verdict and "1500 newly labelled rows" in verdict, watch.stdout
        assert "launcher exit 0; COMPLETED" in watch.stdout, watch.stdout

        with ModelRegistry.open(store) as registry:
            champion = registry.get("continual", "champion")
        assert str(champion.version) == "1.1" and champion.strategy.endswith("stateful")
        assert champion.window_partitions and all((labelled / Path(p).name).exists()  # trained on the labelled zone
                                                  for p in champion.window_partitions), champion.window_partitions
        wait_for(lambda: _answering(server.url) == "1.1", 30, "the server to answer with 1.1")
    finally:
        stop.set()
        background.join(timeout=30)
        server.close()
    assert not failures, failures[:5]


def _answering(url: str) -> str | None:
    response = httpx.post(f"{url}/predict", json={"inputs": [ROW]}, timeout=10)
    return response.json()["version"] if response.status_code == 200 else None


def _keep_asking(url: str, stop: threading.Event, failures: list[str]) -> None:
    """Requests all along: not one may fail while 1.1 is trained, promoted and swapped in."""
    with httpx.Client(base_url=url, timeout=30) as client:
        while not stop.wait(0.05):
            response = client.post("/predict", json={"inputs": [ROW]})
            if response.status_code != 200:
                failures.append(f"{response.status_code}: {response.text}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
