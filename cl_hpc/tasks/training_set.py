"""Task ``ingest`` from the feature catalog (``target: cl_hpc.tasks.training_set.run``): the train and eval
windows of a labelled landing zone, each row given the catalog features it had at its own time.

The zone's rows carry the entity key(s), the event time and the label; the windows are chosen as the
plain ingest chooses them (data.train_window / data.eval_window, data.as_of). Each row gets the named
features point in time (cl_hpc/features/retrieval.py, the code a server reads them with too), missing
values get each feature's declared default, and a row still missing one is dropped and counted. The
outputs are the plain ingest's, so train, evaluate, compare and promote run unchanged on them; the
rows hold the features, the label and the time, and nothing else (an entity id is no feature). The
``feature_binding`` output (cl_hpc.features.definitions.FeatureBinding) is what promote records with the
version: a server then takes entity keys and fetches these features itself.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import pandas as pd

from cl_hpc.config.ml import DataConf, data_conf
from cl_hpc.context import TaskContext
from cl_hpc.data.files import publish, staging_dir
from cl_hpc.data.landing import ensure_landing_zone
from cl_hpc.data.windows import Partition, list_partitions, select_windows, window_digest
from cl_hpc.errors import ConfigError, DataError
from cl_hpc.features.definitions import Catalog, FeatureBinding, load_catalog
from cl_hpc.features.retrieval import by_view, fill_defaults, historical

WINDOWS = ("train", "eval")


def run(ctx: TaskContext, data: Mapping[str, Any], features: Sequence[str], store: str,
        catalog: Optional[str] = None) -> dict[str, Any]:
    """``data``: the labelled zone (DataConf); ``features``: catalog feature names; ``store``: the feature store."""
    conf, cat = data_conf(data), load_catalog(catalog)
    if not conf.label_col:
        raise ConfigError("a training set needs a label: data.label_col names the zone's label column")
    names = list(features)
    keys = sorted({k for view, _ in by_view(cat, names).values() for k in view.entities})
    zone = ensure_landing_zone(conf)
    parts = list_partitions(Path(zone["landing_dir"]), conf.timestamp_col)
    windows = dict(zip(WINDOWS, select_windows(parts, conf)))
    root = Path(store).expanduser().resolve()
    with staging_dir(ctx.task_dir / ".training-set-staging") as staging:
        counts = {name: _window(cat, root, window, conf, keys, names, staging / name)
                  for name, window in windows.items()}
        paths = publish(staging, ctx.task_dir, list(WINDOWS))
    dtypes = counts["train"].pop("key_dtypes")
    counts["eval"].pop("key_dtypes")
    binding = FeatureBinding(tuple(names), {v.name: v.ident for v, _ in by_view(cat, names).values()},
                             tuple((k, dtypes[k]) for k in keys), str(root),
                             str(Path(catalog).expanduser().resolve()) if catalog else None)
    return _outputs(zone, conf, cat, names, windows, counts, paths, binding)


def _window(cat: Catalog, root: Path, parts: list[Partition], conf: DataConf, keys: list[str], names: list[str],
            target: Path) -> dict[str, Any]:
    columns = [*keys, conf.timestamp_col, conf.label_col]
    try:
        rows = pd.concat([pd.read_parquet(p.path, columns=columns) for p in parts], ignore_index=True)
    except (KeyError, ValueError) as exc:
        raise DataError(f"the labelled zone {parts[0].path.parent} lacks some of {columns} (the views' entity "
                        f"keys, data.timestamp_col, data.label_col): {exc}") from exc
    joined = fill_defaults(cat, historical(cat, root, rows, names, conf.timestamp_col), names)
    complete = joined.dropna(subset=names)
    if complete.empty:
        raise DataError(f"no row of {parts[0].path.name} .. {parts[-1].path.name} has every feature {names}; "
                        f"materialize the views first (python -m cl_hpc.features materialize), or check their TTLs")
    target.mkdir()
    complete[[*names, conf.label_col, conf.timestamp_col]].to_parquet(target / "part-0.parquet", index=False)
    labels = complete[conf.label_col].value_counts()
    return {"rows": len(complete), "dropped": len(joined) - len(complete),
            "key_dtypes": {k: str(rows[k].dtype) for k in keys},
            "labels": {str(k): int(v) for k, v in sorted(labels.items())}}


def _outputs(zone: Mapping[str, Any], conf: DataConf, cat: Catalog, names: list[str],
             windows: dict[str, list[Partition]], counts: dict[str, dict[str, Any]],
             paths: Mapping[str, Path], binding: FeatureBinding) -> dict[str, Any]:
    idents = sorted({view.ident for view, _ in by_view(cat, names).values()})
    digests = {name: window_digest(parts) for name, parts in windows.items()}
    out: dict[str, Any] = {
        "landing_dir": zone["landing_dir"], "generated": zone["generated"], "features": names,
        "label_col": conf.label_col, "timestamp_col": conf.timestamp_col, "feature_views": idents,
        # what promote records with the version, so a server fetches these features the same way
        "feature_binding": binding.to_dict(),
        # the data and the feature code together: a new view version is new training data
        "digest": hashlib.sha256("".join([*digests.values(), *idents, *names]).encode()).hexdigest(),
    }
    for name, parts in windows.items():
        out.update({f"{name}_path": str(paths[name]), f"{name}_rows": counts[name]["rows"],
                    f"{name}_dropped": counts[name]["dropped"], f"{name}_partitions": [p.path.name for p in parts],
                    f"{name}_start": parts[0].start.isoformat(), f"{name}_digest": digests[name],
                    f"{name}_labels": counts[name]["labels"]})
    return out
