"""What differs between two model versions: the model (class, init arguments, signature), config
(dotted keys), metrics (with deltas), data window, code and dependencies. Pure functions over
records; JSON-ready output."""

from __future__ import annotations

from typing import Any, Mapping

from cl_hpc.registry.records import ModelVersion


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"hidden": 64}} -> {"model.hidden": 64}; lists stay whole values (a feature list
    that changed is one change, not one per shifted index)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each dotted key whose value differs: {"key", "old", "new", "change": added|removed|changed}."""
    a, b = flatten(old), flatten(new)
    out = []
    for key in sorted(a.keys() | b.keys()):
        if key not in a:
            out.append({"key": key, "old": None, "new": b[key], "change": "added"})
        elif key not in b:
            out.append({"key": key, "old": a[key], "new": None, "change": "removed"})
        elif a[key] != b[key]:
            out.append({"key": key, "old": a[key], "new": b[key], "change": "changed"})
    return out


def metric_deltas(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every metric of either version; ``delta`` = new - old where both are numbers."""
    a, b = flatten(old), flatten(new)
    out = []
    for key in sorted(a.keys() | b.keys()):
        x, y = a.get(key), b.get(key)
        numeric = _is_number(x) and _is_number(y)
        out.append({"key": key, "old": x, "new": y, "delta": y - x if numeric else None})  # type: ignore[operator]
    return out


def diff_versions(a: ModelVersion, b: ModelVersion) -> dict[str, Any]:
    return {
        "name": a.name if a.name == b.name else f"{a.name} / {b.name}",
        "a": str(a.version),
        "b": str(b.version),
        "lineage": changes(_lineage(a), _lineage(b)),
        "model": changes(_model(a), _model(b)),
        "config": changes(a.config, b.config),
        "metrics": metric_deltas(a.metrics, b.metrics),
        "window": _window(a, b),
        "code": changes({"git_commit": a.git_commit, "git_dirty": a.git_dirty},
                        {"git_commit": b.git_commit, "git_dirty": b.git_dirty}),
        "deps": changes({"python": a.python, **a.packages}, {"python": b.python, **b.packages}),
    }


def _lineage(record: ModelVersion) -> dict[str, Any]:
    return {"parent": str(record.parent) if record.parent else None, "strategy": record.strategy,
            "checkpoint_sha256": record.checkpoint_sha256, "run_id": record.run_id, "task_key": record.task_key}


def _model(record: ModelVersion) -> dict[str, Any]:
    """What the version is: its classes, init arguments and signature (a changed input or output is
    what makes two versions incomparable at the gate)."""
    return {"model_class": record.model_class, "init_args": record.init_args,
            "datamodule_class": record.datamodule_class, "signature": record.signature}


def _window(a: ModelVersion, b: ModelVersion) -> dict[str, Any]:
    old, new = set(a.window_partitions), set(b.window_partitions)
    return {"same_data": a.window_digest == b.window_digest and a.window_digest is not None,
            "digest": {"old": a.window_digest, "new": b.window_digest},
            "partitions_added": sorted(new - old), "partitions_removed": sorted(old - new),
            "partitions_kept": len(old & new)}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
