"""The model contract: what the continual-learning loop asks of any model, and the records it keeps.

A *workload* is a pair instantiated by Hydra from ``_target_``: a LightningModule (``model:``) and a
LightningDataModule (``datamodule:``). The loop (train, evaluate, compare, promote, the watch, the
server) never names a concrete class; it calls only these methods (cl_hpc/learn/base.py gives
every one a documented default to subclass, but duck typing works too):

Model (a ``pytorch_lightning.LightningModule``):
  - ``training_step`` / ``configure_optimizers``: Lightning's own; the fit runs them under the
    profiler's callback, and a stateful fine-tune keeps the user's optimizer set-up;
  - ``metrics``: a class attribute, metric name -> :class:`Direction` (the gate must know whether
    lower is better); the gate's metric must be one of them;
  - ``evaluate_batch(inputs, targets) -> {name: per-row tensor}``: per-row values whose mean is the
    metric of that name (``correct`` 0/1 rows make McNemar's test apply);
  - ``predict_batch(inputs) -> {name: tensor}``: outputs for the server, one row per input row;
  - ``output_signature() -> [Spec]``: what ``predict_batch`` returns;
  - optionally ``summarize(per_row) -> {name: value}`` (metrics that are not means, e.g.
    perplexity), ``flops_per_step(batch_size)`` or ``transformer_spec`` (MFU).

Data module (a ``pytorch_lightning.LightningDataModule``):
  - ``fit_state(frame)``: fit the preprocessing state (scalers, vocabularies) on training rows;
  - ``update_state(frame)``: a stateful continuation moves the parent's loaded state with new rows;
  - ``state_dict()`` / ``load_state_dict()``: Lightning's own; the state is versioned with the
    checkpoint and loaded with ``weights_only=True``, so it holds tensors, numbers, strings, lists
    and dicts (numpy scalars are saved as Python numbers, numeric arrays as tensors: see
    cl_hpc/learn/checkpoint.py; anything else is refused when the checkpoint is saved);
  - ``model_args() -> dict``: model init arguments that come from the data (feature and class
    counts, vocabulary size);
  - ``input_signature() -> [Spec]``: the raw inputs a request carries;
  - ``to_batch(frame) -> (inputs, targets or None)``: raw rows to model inputs (the preprocessing);
  - ``use(frame)`` and ``train_dataloader()``: the rows the next fit trains on;
  - optionally ``decode(outputs)`` (class indices to labels) and ``baseline_rows(frame)`` (per-row
    metric values of a trivial predictor: the gate's bar at a cold start).

This module is light (numpy only): the launcher imports it on login nodes.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np

from cl_hpc.config.ml import plain
from cl_hpc.errors import ClHpcError

MODEL_METHODS = ("training_step", "configure_optimizers", "evaluate_batch", "predict_batch", "output_signature")
DATA_METHODS = ("fit_state", "update_state", "state_dict", "load_state_dict", "model_args", "input_signature",
                "to_batch", "use", "train_dataloader")
CONTRACT_DOC = "the model contract in README.md (Bring your own model) and cl_hpc/learn/contract.py"


class ContractError(ClHpcError):
    """A model or data module does not do what the loop needs (names the class and what is missing)."""


class CannotContinue(ClHpcError):
    """Raised by a data module's ``update_state``: the parent cannot be fine-tuned on these rows
    (another feature list or label space); the loop trains from scratch instead, with this reason."""


class Direction(enum.Enum):
    """Which way a metric improves."""

    HIGHER = "higher"
    LOWER = "lower"

    @property
    def higher_is_better(self) -> bool:
        return self is Direction.HIGHER


# MLflow's ColSpec type names, by numpy dtype kind and size; a TensorSpec keeps the numpy name.
_MLFLOW_TYPES = {"float64": "double", "float32": "float", "int64": "long", "int32": "integer", "bool": "boolean",
                 "object": "string", "str": "string"}
_FROM_MLFLOW = {v: k for k, v in _MLFLOW_TYPES.items() if k != "object"}


@dataclass(frozen=True)
class Spec:
    """One named input or output, as MLflow records one: a column (``shape == ()``, one value per
    row) or a tensor (``shape`` per row, -1 for a free length)."""

    name: str
    dtype: str  # numpy dtype name: float32, float64, int64, int32, bool, str
    shape: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        if not self.shape and self.dtype in _MLFLOW_TYPES:
            return {"type": _MLFLOW_TYPES[self.dtype], "name": self.name, "required": True}
        return {"type": "tensor", "name": self.name, "tensor-spec": {"dtype": self.dtype, "shape": [-1, *self.shape]}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Spec":
        if data.get("type") == "tensor":
            tensor = data["tensor-spec"]
            return cls(str(data["name"]), str(tensor["dtype"]), tuple(int(n) for n in tensor["shape"][1:]))
        return cls(str(data["name"]), _FROM_MLFLOW.get(str(data["type"]), str(data["type"])))

    def describe(self) -> str:
        return f"{self.name}: {self.dtype}" + (f"[{', '.join(map(str, self.shape))}]" if self.shape else "")


@dataclass(frozen=True)
class Signature:
    """The inputs a model takes and the outputs it gives, recorded with every version: the gate
    refuses a challenger whose signature differs from the champion's, the server validates requests."""

    inputs: tuple[Spec, ...]
    outputs: tuple[Spec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": [s.to_dict() for s in self.inputs], "outputs": [s.to_dict() for s in self.outputs]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Signature":
        parts = {k: json.loads(v) if isinstance(v, str) else v for k, v in data.items()}  # MLflow keeps JSON text
        return cls(tuple(Spec.from_dict(s) for s in parts.get("inputs") or ()),
                   tuple(Spec.from_dict(s) for s in parts.get("outputs") or ()))

    def differences(self, other: "Signature") -> list[str]:
        """What differs from ``other`` (empty: the same), one line per input or output."""
        lines = []
        for side in ("inputs", "outputs"):
            mine, theirs = {s.name: s for s in getattr(self, side)}, {s.name: s for s in getattr(other, side)}
            for name in sorted(set(mine) | set(theirs)):
                a, b = mine.get(name), theirs.get(name)
                if a != b:
                    lines.append(f"{side[:-1]} {name!r}: {a.describe() if a else 'absent'} vs "
                                 f"{b.describe() if b else 'absent'}")
            if not lines and [s.name for s in getattr(self, side)] != [s.name for s in getattr(other, side)]:
                lines.append(f"{side} in another order: {[s.name for s in getattr(self, side)]} vs "
                             f"{[s.name for s in getattr(other, side)]}")
        return lines

    def describe(self) -> str:
        return (f"inputs ({', '.join(s.describe() for s in self.inputs)}) -> "
                f"outputs ({', '.join(s.describe() for s in self.outputs)})")


@dataclass(frozen=True)
class Evaluation:
    """A model's scores on one labelled window: what the gate, the evaluate task and the watch read."""

    rows: int
    metrics: dict[str, Optional[float]]  # window-level value of every metric the model reports
    per_row: dict[str, np.ndarray] = field(default_factory=dict)  # name -> value per row; its mean is the metric
    probs: Optional[np.ndarray] = None  # a classifier's class probabilities [rows, classes]
    y: Optional[np.ndarray] = None  # a classifier's true class index per row
    # per-row values of the data module's trivial predictor (the gate's bar at a cold start)
    baseline: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def correct(self) -> Optional[np.ndarray]:
        """Per-row correctness (0/1) where the model reports it: McNemar's test applies."""
        return self.per_row.get("correct")

    def summary(self) -> dict[str, Any]:
        """JSON-ready: the metrics and the row count (no arrays)."""
        return {**{k: (None if v is None else float(v)) for k, v in self.metrics.items()}, "rows": self.rows}


def directions(model: Any) -> dict[str, Direction]:
    """The model's ``metrics`` attribute as {name: Direction}; a ContractError when it is missing or bad."""
    raw = getattr(model, "metrics", None)
    name = class_path(model)
    if not isinstance(raw, Mapping) or not raw:
        raise ContractError(f"model {name} has no `metrics` class attribute; declare the metrics it reports and "
                            f"which way each improves, e.g. metrics = {{'accuracy': Direction.HIGHER}} "
                            f"(see {CONTRACT_DOC})")
    out = {}
    for metric, way in raw.items():
        try:
            out[str(metric)] = way if isinstance(way, Direction) else Direction(str(way).lower())
        except ValueError:
            raise ContractError(f"model {name}: metrics[{metric!r}] = {way!r}; valid: "
                                f"{[d.value for d in Direction]} or cl_hpc.learn.contract.Direction") from None
    return out


def require_metric(model: Any, metric: str, where: str) -> Direction:
    """The direction of ``metric``, or a ContractError naming the metrics the model does report."""
    known = directions(model)
    if metric not in known:
        raise ContractError(f"{where}: metric {metric!r} is not reported by model {class_path(model)}; it reports "
                            f"{sorted(known)} (its `metrics` attribute)")
    return known[metric]


def with_primary_metric(params: Optional[Mapping[str, Any]], model: Any) -> dict[str, Any]:
    """``params`` with ``metric`` filled in when it is None or absent: the model's primary metric, the
    first of its ``metrics`` (accuracy for the bundled classifier, per-token loss for the GPT)."""
    out = dict(params or {})
    if out.get("metric") is None:
        out["metric"] = next(iter(directions(model)))
    return out


def class_path(obj: Any) -> str:
    """``package.module.Class`` of an instance or class: what the registry records."""
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def signature_of(model: Any, datamodule: Any) -> Signature:
    """The workload's signature: the data module's raw inputs, the model's outputs."""
    return Signature(tuple(_specs(datamodule.input_signature(), f"{class_path(datamodule)}.input_signature()")),
                     tuple(_specs(model.output_signature(), f"{class_path(model)}.output_signature()")))


def _specs(items: Any, where: str) -> list[Spec]:
    specs = list(items or ())
    bad = [s for s in specs if not isinstance(s, Spec)]
    if bad or not specs:
        raise ContractError(f"{where} must return a non-empty list of cl_hpc.learn.contract.Spec; got {items!r}")
    return specs


@dataclass(frozen=True)
class Target:
    """A ``_target_`` config (``model:`` or ``datamodule:``): the class's dotted path and its init arguments."""

    path: str
    args: dict[str, Any]

    @classmethod
    def from_config(cls, conf: Optional[Mapping[str, Any]], group: str) -> "Target":
        raw = {str(k): v for k, v in (conf or {}).items()}
        path = raw.pop("_target_", None)
        if not isinstance(path, str) or not path.strip():
            raise ContractError(f"{group}: no `_target_`; give the class to instantiate, e.g. "
                                f"{group}: {{_target_: my_pkg.models.MyModule, ...}} (see {CONTRACT_DOC})")
        return cls(path.strip(), {k: plain(v) for k, v in raw.items() if not k.startswith("_")})
