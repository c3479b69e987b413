"""Instantiate a workload (model + data module) from its ``_target_`` configs or from a recorded
version, and check it against the model contract before anything trains on it.

Every failure is a ContractError that names the class, what it lacks and the contract's doc; a
class recorded by a version that moved or changed its signature names both the recorded and the
current shape.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from cl_hpc.learn.contract import (
    CONTRACT_DOC,
    DATA_METHODS,
    MODEL_METHODS,
    ContractError,
    Signature,
    Target,
    class_path,
    signature_of,
)

_CHECK_ROWS = 8  # rows of real data pushed through a new workload before it trains


@dataclass
class Workload:
    """A model and its data module, with what the registry records of them."""

    model: Any  # a LightningModule meeting the contract
    datamodule: Any  # a LightningDataModule meeting the contract
    model_target: Target  # the class and the init arguments it was built with (data-derived ones included)
    data_target: Target

    @property
    def signature(self) -> Signature:
        return signature_of(self.model, self.datamodule)


def import_class(path: str, what: str) -> type:
    """The class at ``path``; a ContractError when it does not import or is not a class."""
    module_name, _, name = path.rpartition(".")
    if not module_name:
        raise ContractError(f"{what}: {path!r} is not a dotted path; write package.module.Class")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # user code: any error while importing it is theirs to see
        raise ContractError(f"{what}: cannot import module {module_name!r} of {path!r}: {type(exc).__name__}: "
                            f"{exc} (is the package installed, or on PYTHONPATH?)") from exc
    obj = getattr(module, name, None)
    if not isinstance(obj, type):
        found = "nothing" if obj is None else f"a {type(obj).__name__}"
        raise ContractError(f"{what}: {path!r} names {found}, not a class (module {module.__file__})")
    return obj


def construct(cls: type, args: Mapping[str, Any], what: str) -> Any:
    """``cls(**args)``; arguments it does not take (or lacks) are a ContractError naming both sides."""
    try:
        inspect.signature(cls).bind(**args)
    except TypeError as exc:
        raise ContractError(f"{what}: {class_path(cls)}{inspect.signature(cls)} cannot take the arguments "
                            f"{sorted(args)}: {exc}") from None
    return cls(**args)


def data_from(target: Target, what: str = "datamodule") -> Any:
    cls = import_class(target.path, what)
    _require_methods(cls, DATA_METHODS, what)  # before construction: what is missing, not what __init__ did
    return construct(cls, target.args, what)


def model_for(target: Target, datamodule: Any, what: str = "model") -> tuple[Any, Target]:
    """The model built with its config's arguments plus those the data gives (``model_args``);
    a config value that contradicts the data's is an error, not silently replaced."""
    cls = import_class(target.path, what)
    # Checked on the class, before it is built: a LightningModule without its own __init__ takes
    # **kwargs by signature but refuses the data's arguments at run time.
    _require_methods(cls, MODEL_METHODS, what)
    from_data = dict(datamodule.model_args())
    clash = {k: (target.args[k], v) for k, v in from_data.items() if k in target.args and target.args[k] != v}
    if clash:
        detail = ", ".join(f"{k}={mine!r} but the data gives {theirs!r}" for k, (mine, theirs) in clash.items())
        raise ContractError(f"{what} {target.path}: {detail}; drop the value from the config (the data module "
                            f"{class_path(datamodule)} sets it)")
    accepted = _accepted(cls)
    args = {**{k: v for k, v in from_data.items() if accepted is None or k in accepted}, **target.args}
    return construct(cls, args, what), Target(target.path, args)


def check_batches(workload: Workload, frame: pd.DataFrame) -> None:
    """Push a few real rows through to_batch, predict_batch and evaluate_batch: a data module whose
    batches do not fit the model fails here, before a training step, with both classes named."""
    import torch

    model, data = workload.model, workload.datamodule
    rows = frame.head(_CHECK_ROWS)
    where = f"data module {class_path(data)} with model {class_path(model)}"
    try:
        inputs, targets = data.to_batch(rows)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            outputs = model.predict_batch(inputs)
            scores = model.evaluate_batch(inputs, targets) if targets is not None else {}
        model.train(was_training)
    except ContractError:
        raise
    except Exception as exc:
        raise ContractError(f"{where}: a batch of {len(rows)} rows does not fit the model: {type(exc).__name__}: "
                            f"{exc} (see {CONTRACT_DOC})") from exc
    _check_outputs(where, "predict_batch", outputs, len(rows))
    _check_outputs(where, "evaluate_batch", scores, len(rows))
    named = [s.name for s in workload.signature.outputs]
    if sorted(outputs) != sorted(named):
        raise ContractError(f"{where}: predict_batch returned {sorted(outputs)}, but output_signature() names "
                            f"{named}")


def _check_outputs(where: str, method: str, returned: Any, rows: int) -> None:
    """``returned`` must be a dict of name -> tensor or array with one row per input row (what the
    scoring path concatenates); a ContractError says what came back instead."""
    import torch

    expected = (f"expected a dict of name -> tensor or numpy array with one value per row ({rows} rows, "
                f"first dimension {rows}; see {CONTRACT_DOC})")
    if not isinstance(returned, dict):
        raise ContractError(f"{where}: {method} returned {_describe(returned)}; {expected}")
    for name, values in returned.items():
        if not isinstance(values, (torch.Tensor, np.ndarray)) or values.ndim < 1 or len(values) != rows:
            hint = " (a batch mean? return the per-row values: the loop takes their mean)" if (
                isinstance(values, (torch.Tensor, np.ndarray)) and values.ndim == 0) else ""
            raise ContractError(f"{where}: {method} returned {name!r} = {_describe(values)} for {rows} input "
                                f"rows{hint}; {expected}")


def _describe(value: Any) -> str:
    shape = getattr(value, "shape", None)
    return f"a {type(value).__module__}.{type(value).__qualname__}" + (
        f" of shape {tuple(shape)}" if shape is not None else "")


def _accepted(cls: type) -> set[str] | None:
    """The init parameters ``cls`` takes by name; None when it takes **kwargs (anything)."""
    params = inspect.signature(cls).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


def _require_methods(obj: Any, names: tuple[str, ...], what: str) -> None:
    missing = missing_contract_methods(obj, names)
    if missing:
        raise ContractError(f"{what} {class_path(obj)} lacks what the loop needs: {', '.join(missing)} "
                            f"(see {CONTRACT_DOC}; subclassing cl_hpc.learn.base.LoopModule / LoopDataModule "
                            f"gives documented defaults)")


def missing_contract_methods(obj: Any, names: tuple[str, ...]) -> list[str]:
    """Methods ``obj`` (an instance or a class) lacks, counting the base classes' NotImplementedError
    stubs (and Lightning's own placeholders for training_step, configure_optimizers and
    train_dataloader) as lacking."""
    from cl_hpc.learn import base

    stubs = {name: getattr(cls, name) for cls in (base.LoopModule, base.LoopDataModule)
             for name in ("evaluate_batch", "predict_batch", "output_signature", "input_signature", "to_batch")
             if hasattr(cls, name)}
    missing = []
    for name in names:
        method = getattr(obj if isinstance(obj, type) else type(obj), name, None)
        if not callable(method) or stubs.get(name) is method or _lightning_placeholder(method):
            missing.append(name)
    return missing


_PLACEHOLDERS = ("training_step", "configure_optimizers", "train_dataloader")  # Lightning's warn/raise stubs


def _lightning_placeholder(method: Any) -> bool:
    module = getattr(method, "__module__", "") or ""
    return module.startswith(("pytorch_lightning.", "lightning.")) and getattr(method, "__name__", "") in _PLACEHOLDERS
