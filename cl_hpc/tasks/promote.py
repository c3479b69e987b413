"""Task ``promote``: register the challenger in the model registry, and make it the champion only
if the gate passed.

Every challenger becomes a version (stateless: (X+1).0; a fine-tune of champion X.Y: X.(Y+1)), with
its model class, init arguments and signature, its lineage, checkpoint checksum, resolved config,
data window, code and package versions, and its metrics; a rejected one is tagged ``rejected`` and
the champion stays. The alias move and its reason (the gate's own) go to the registry's append-only
alias log. A version trained on catalog features (cl_hpc/tasks/training_set.py) records the binding in its
config's ``features``.

The alias moves only if it still points at the champion the gate compared the challenger with
(``compare``'s ``champion``; none at a cold start): a promotion made meanwhile, by hand or by
another run, is never silently replaced by a version that was not compared with it. Such a
challenger stays registered, tagged ``stale-gate``, with the reason in this task's outputs.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from cl_hpc.context import TaskContext
from cl_hpc.registry.store import AliasMoved, ModelRegistry
from cl_hpc.tasks._common import upstream
from cl_hpc.tasks._registry import registry_ref

_TRAIN = ("checkpoint_path", "checkpoint_sha256", "strategy", "parent", "window_end", "train_rows", "strategy_reason",
          "model_class", "init_args", "datamodule_class", "signature")
_COMPARE = ("passed", "reasons", "champion", "metric", "challenger_metrics", "champion_metrics")
_INGEST = ("train_partitions", "train_digest", "train_labels", "eval_partitions")


def run(ctx: TaskContext, registry: Optional[Mapping[str, Any]] = None,
        config: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """``config``: what the version records as its resolved config (model, datamodule, fit and data)."""
    ref = registry_ref(registry)
    trained, compared = upstream(ctx, "train", _TRAIN), upstream(ctx, "compare", _COMPARE)
    ingest = upstream(ctx, "ingest", _INGEST)
    metrics = {**_without_rows(compared["challenger_metrics"]),
               **{f"champion_{k}": v for k, v in _without_rows(compared["champion_metrics"]).items()},
               "gate_metric": compared["metric"], "gate_passed": compared["passed"],
               "train_rows": trained["train_rows"], "window_end": trained["window_end"],
               "train_labels": ingest["train_labels"], "strategy_reason": trained["strategy_reason"],
               # measured on these: the watch does not count them as new data after the promotion
               "eval_partitions": ingest["eval_partitions"]}
    recorded = dict(config or {})
    if ingest.get("feature_binding"):  # trained on catalog features: the server fetches them by entity key
        recorded["features"] = dict(ingest["feature_binding"])
    with ModelRegistry.open(ref.root) as reg:
        record = reg.register(ref.name, trained["checkpoint_path"], strategy=trained["strategy"],
                              parent=trained["parent"], checkpoint_sha256=trained["checkpoint_sha256"],
                              config=recorded, window_partitions=list(ingest["train_partitions"]),
                              window_digest=ingest["train_digest"], metrics=metrics, run_id=ctx.run_id,
                              task_key="train", model_class=trained["model_class"], init_args=trained["init_args"],
                              datamodule_class=trained["datamodule_class"], signature=trained["signature"])
        promoted, reasons = bool(compared["passed"]), list(compared["reasons"])
        if promoted:
            reason = "gate passed: " + "; ".join(compared["reasons"])
            try:
                reg.promote(ref.name, record.version, ref.alias, reason=reason, run_id=ctx.run_id,
                            expect=compared["champion"])
            except AliasMoved as exc:
                reg.tag(ref.name, record.version, ["stale-gate"])
                print(f"promote: {exc}", flush=True)  # the task log says it too, not only outputs.json
                promoted, reasons = False, [*reasons, str(exc)]
        else:
            reg.tag(ref.name, record.version, ["rejected"])
    return {"version": str(record.version), "promoted": promoted, "strategy": trained["strategy"],
            "parent": trained["parent"], "reasons": reasons, "compared_with": compared["champion"]}


def _without_rows(metrics: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    return {k: v for k, v in (metrics or {}).items() if k != "rows"}
