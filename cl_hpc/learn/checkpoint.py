"""Checkpoints of any workload as plain ``torch.save`` dicts of tensors and primitives, checksummed.

The payload records the model's class path and init arguments, its state dict, the data module's
class, arguments and preprocessing state, and the signature. Loading verifies the sha256 the
training task recorded, unpickles with ``torch.load(weights_only=True)`` (never a pickled module),
instantiates the recorded classes and loads their states: a class that moved or changed its
signature is a ContractError naming the recorded and the current shape.

Files of the first format (``cl_hpc.mlp/1``: the bundled MLP only) still load, as the tabular workload.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any, Mapping

import torch

from cl_hpc.atomic import write_bytes_atomic
from cl_hpc.errors import ChecksumError, DataError
from cl_hpc.learn.contract import ContractError, Target, class_path
from cl_hpc.learn.workload import Workload, construct, import_class

FORMAT = "cl_hpc.model/2"
_MLP_V1 = "cl_hpc.mlp/1"


class CheckpointChanged(ChecksumError):
    """The checkpoint's bytes are not the ones recorded; ``actual`` is their sha256 (the registry
    quarantines the version with it, without reading the file again)."""

    def __init__(self, message: str, actual: str) -> None:
        super().__init__(message)
        self.actual = actual


def save_workload(path: Path, workload: Workload, meta: Mapping[str, Any]) -> str:
    """Write the model, the data module's state and the signature; return the sha256 of the bytes."""
    payload = {
        "format": FORMAT,
        "model_class": workload.model_target.path, "init_args": dict(workload.model_target.args),
        "state_dict": {k: v.detach().cpu() for k, v in workload.model.state_dict().items()},
        "datamodule_class": workload.data_target.path, "datamodule_args": dict(workload.data_target.args),
        "datamodule_state": workload.datamodule.state_dict(),
        "signature": workload.signature.to_dict(), "meta": dict(meta),
    }
    buffer = io.BytesIO()
    try:
        torch.save(payload, buffer)
    except Exception as exc:
        raise ContractError(f"the checkpoint of {class_path(workload.model)} cannot be saved: {exc} (init "
                            f"arguments and the data module's state_dict() must be tensors, numbers, strings, "
                            f"lists and dicts: they are loaded with weights_only=True)") from exc
    write_bytes_atomic(path, buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()  # of the bytes written, not a second read


def read_payload(path: Path, expected_sha256: str) -> dict[str, Any]:
    """The verified payload; DataError when the file is missing or altered.

    The file is read once, and the bytes whose sha256 matched are the ones unpickled: a file
    swapped after it was hashed cannot be loaded unverified.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"checkpoint {path} does not exist; re-run the train task") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise CheckpointChanged(f"checkpoint {path} has sha256 {actual}, but the train task recorded "
                                f"{expected_sha256}: the file was changed after training; re-run the train task",
                                actual)
    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if payload.get("format") == _MLP_V1:
        return _from_mlp_v1(payload)
    if payload.get("format") != FORMAT:
        raise DataError(f"checkpoint {path} has format {payload.get('format')!r}; this version reads {FORMAT!r} "
                        f"(and {_MLP_V1!r})")
    return payload


def load_workload(path: Path, expected_sha256: str, where: str = "") -> Workload:
    """The recorded model (eval mode, CPU) and data module (its state loaded), verified first."""
    return workload_from(read_payload(path, expected_sha256), where or f"checkpoint {path}")


def workload_from(payload: Mapping[str, Any], where: str) -> Workload:
    model_target = Target(payload["model_class"], dict(payload["init_args"]))
    data_target = Target(payload["datamodule_class"], dict(payload["datamodule_args"]))
    datamodule = construct(_recorded_class(data_target.path, where, "data module"), data_target.args,
                           f"{where}: recorded data module")
    datamodule.load_state_dict(payload["datamodule_state"])
    model = construct(_recorded_class(model_target.path, where, "model"), model_target.args, f"{where}: recorded model")
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise ContractError(f"{where}: the weights recorded for {model_target.path} do not fit the class as it is "
                            f"now (init arguments {model_target.args}): {exc}") from None
    model.eval()
    return Workload(model, datamodule, model_target, data_target)


def _recorded_class(path: str, where: str, what: str) -> type:
    try:
        return import_class(path, f"{where}: recorded {what}")
    except ContractError as exc:
        raise ContractError(f"{exc}; the version was trained with {path}: install the code that defines it, "
                            f"or retrain") from None


def _from_mlp_v1(old: Mapping[str, Any]) -> dict[str, Any]:
    """A first-format MLP checkpoint as the tabular workload's payload (same weights, same scaling)."""
    from cl_hpc.learn.strategies import Moments

    net = dict(old["net"])
    moments = old.get("moments") or Moments.from_std(2.0, old["mean"], old["std"]).to_dict()  # n=2: m2 = std^2
    state = {f"net.{k}": v for k, v in old["state_dict"].items()}
    classes = list(old["classes"])
    return {
        "format": FORMAT, "model_class": "cl_hpc.learn.tabular.TabularClassifier",
        "init_args": {k: net[k] for k in ("n_features", "n_classes", "hidden", "layers", "dropout")},
        "state_dict": state, "datamodule_class": "cl_hpc.learn.tabular.TabularData",
        "datamodule_args": {"label_col": old.get("label_col", "y"), "features": list(old["features"])},
        "datamodule_state": {"features": list(old["features"]), "classes": classes,
                             "class_counts": [1] * len(classes), "label_col": old.get("label_col", "y"),
                             "moments": moments},
        "signature": None, "meta": {k: old[k] for k in ("window_digest",) if k in old},
    }
