"""A small landing zone and a one-view catalog over it, for the feature store's CLI, pipeline and Slurm tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

START = pd.Timestamp("2026-01-01")


def add_partition(zone: Path, hour: int, rows: int = 50, users: int = 5) -> Path:
    """Partition ``hour`` (its own seed, so the same hour is the same rows) of a user stream."""
    rng = np.random.default_rng(hour)
    begin = START + pd.Timedelta(hours=hour)
    path = zone / f"part-{begin.strftime('%Y%m%dT%H%M%S')}.parquet"
    pd.DataFrame({"ts": begin + pd.to_timedelta(np.sort(rng.integers(0, 3600, rows)), "s"),
                  "user_id": rng.integers(0, users, rows), "amount": rng.random(rows),
                  "y": rng.integers(0, 2, rows)}).to_parquet(path, index=False)
    return path


def spend_catalog(tmp: Path, hours: int = 3) -> tuple[Path, Path]:
    """(catalog folder, zone): a view ``spend`` (events_1h, amount_sum_1h; ttl 1h) over ``hours`` partitions."""
    zone, catalog = tmp / "zone", tmp / "catalog"
    zone.mkdir()
    catalog.mkdir()
    for hour in range(hours):
        add_partition(zone, hour)
    (catalog / "spend.yaml").write_text(f"""\
name: spend
version: 1
entities: [user_id]
source: {{landing_dir: {zone}}}
transform: cl_hpc.features.transforms.windowed_aggregates
params: {{entity: user_id, timestamp: ts, windows: [1h], aggregations: {{amount: [sum]}}}}
lookback: 1h
ttl: 1h
features:
  events_1h: {{dtype: int64, description: events}}
  amount_sum_1h: {{dtype: float64, description: spending}}
""")
    return catalog, zone
