"""An experiment's traffic written as the server and the label join write it (a real prediction-log
shard and a real label-zone partition), for the controller's tests: no server, no join, the same files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from cl_hpc.data.predictions import PredictionBatch, Role, Stream, predictions_table, shard_path, write_shard
from cl_hpc.rollout.records import Experiment
from tests.serving import NAME


def traffic(tmp: Path, experiment: Experiment, start: float, counts: dict[str, int], accuracy: dict[str, float],
            latency_ms: dict[str, float], seed: int, roles: Optional[dict[str, Role]] = None,
            rewards: Optional[dict[str, float]] = None, labels: str = "labels") -> None:
    """Requests of distinct users spread over 60 s from ``start``, their latencies, and their joined labels
    in ``tmp/labels`` (an arm's answers hit with its ``accuracy``; with ``rewards``, each outcome also
    carries a 0/1 reward drawn at that arm's rate). ``roles``: an arm's log role (a shadow's copies)."""
    rng = np.random.default_rng(seed)
    rows = []
    for arm, n in counts.items():
        version = experiment.arm(arm).version
        role = (roles or {}).get(arm, Role.LIVE)
        times = start + np.sort(rng.uniform(0, 60, size=n))
        batches = [PredictionBatch(f"{arm}-{seed}-{i}", float(t), NAME, version, role,
                                   float(rng.normal(latency_ms[arm], 0.05)), {"a": np.array([0.0])},
                                   {"label": np.array([1])}, f"u-{arm}-{seed}-{i}", experiment.id, arm)
                   for i, t in enumerate(times)]
        write_shard(shard_path(tmp / "log", Stream.PREDICTIONS, start, f"w{seed}{arm[:3]}", len(rows)),
                    predictions_table(batches))
        hits = (rng.random(n) < accuracy[arm]).astype(int)
        frame = pd.DataFrame({"ts": pd.to_datetime(times, unit="s"), "a": 0.0, "y": 1, "_experiment": experiment.id,
                              "_arm": arm, "_output.label": hits, "_request_id": [b.request_id for b in batches],
                              "_unit": [b.unit for b in batches]})
        if rewards is not None:
            frame["_reward"] = (rng.random(n) < rewards[arm]).astype(float)
        rows.append(frame)
    (tmp / labels).mkdir(exist_ok=True)
    name = f"part-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(start))}.parquet"
    pd.concat(rows).sort_values("ts").to_parquet(tmp / labels / name)
