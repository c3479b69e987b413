"""Tasks ``materialize`` and ``commit``: a feature view's materialization as pipeline tasks.

``materialize`` is a fan-out: with ``foreach: [0, 1, ..., n-1]`` and ``shards: n`` each shard computes
every n-th pending partition (on Slurm, one element of a job array) and writes its batches, uncommitted.
``commit`` (after every shard) records them: the online values, then the view's state. Every shard plans
from the same committed state and the same files, so they split one plan without talking to each other;
a partition that lands while they run waits for the next materialization.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from cl_hpc.config.ml import data_conf
from cl_hpc.context import TaskContext
from cl_hpc.data.landing import ensure_landing_zone
from cl_hpc.errors import ConfigError
from cl_hpc.features.definitions import FeatureView, load_catalog
from cl_hpc.features.materialize import commit as commit_batches
from cl_hpc.features.materialize import compute_batches, online_path, pending
from cl_hpc.features.online import OnlineStore
from cl_hpc.tasks._common import cpus


def materialize(ctx: TaskContext, view: str, store: str, shards: int = 1, catalog: Optional[str] = None,
                data: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """``view``: a view of the catalog (default: the bundled conf/features); ``store``: the feature store's
    folder; ``shards``: the fan-out's width (``foreach: [0, .., shards-1]``); ``data``: a data group whose
    zone is generated first when it does not exist (the bundled view's source, data=users)."""
    shard = _shard(ctx, shards)
    chosen, root = _view(view, catalog), Path(store).expanduser().resolve()
    if data is not None:
        ensure_landing_zone(data_conf(data))  # under the zone's lock: the shards wait for one generation
    online = OnlineStore(online_path(root))
    try:
        todo = pending(chosen, root, online)
    finally:
        online.close()
    ctx.progress(0, 1, f"{len(todo.works[shard::shards])} of {len(todo.works)} partitions")
    entries = compute_batches(todo, root, shard, shards, cpus(ctx))
    ctx.progress(1, 1, "computed", force=True)
    return {"view": chosen.name, "ident": chosen.ident, "shard": shard, "batches": entries,
            "partitions": len(todo.parts), "pending": len(todo.works)}


def commit(ctx: TaskContext, view: str, store: str, catalog: Optional[str] = None) -> dict[str, Any]:
    """Commit the batches of every ``materialize`` shard upstream."""
    chosen, root = _view(view, catalog), Path(store).expanduser().resolve()
    shards = ctx.upstream.get("materialize")
    if not isinstance(shards, Sequence) or isinstance(shards, (str, bytes)):
        shards = [shards] if isinstance(shards, dict) else None
    if shards is None:
        raise ConfigError(f"task {ctx.task!r} needs `depends_on: [materialize]` (the shards whose batches it "
                          f"commits); see conf/pipeline/features.yaml")
    entries = sorted((e for out in shards for e in out["batches"]), key=lambda e: int(e["batch"]))
    online = OnlineStore(online_path(root))
    try:
        offered = commit_batches(root, chosen, entries, online)
    finally:
        online.close()
    return {"view": chosen.name, "ident": chosen.ident, "store": str(root),
            "computed": [e["source"] for e in entries], "rows": sum(e["rows"] for e in entries), "entities": offered}


def _view(name: str, catalog: Optional[str]) -> FeatureView:
    return load_catalog(catalog).view(name)


def _shard(ctx: TaskContext, shards: int) -> int:
    shard = ctx.item if ctx.item is not None else 0
    if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
        raise ConfigError(f"params.shards={shards!r} must be an integer >= 1 (the width of foreach)")
    if not isinstance(shard, int) or not 0 <= shard < shards:
        raise ConfigError(f"task {ctx.task!r}: foreach item {shard!r} is not a shard number 0..{shards - 1}; "
                          f"give foreach: {list(range(shards))} with shards: {shards}")
    return shard
