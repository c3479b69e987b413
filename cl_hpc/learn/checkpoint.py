"""Checkpoints of any workload as plain ``torch.save`` dicts of tensors and primitives, checksummed.

The payload records the model's class path and init arguments, its state dict, the data module's
class, arguments and preprocessing state, and the signature. Loading verifies the sha256 the
training task recorded, unpickles with ``torch.load(weights_only=True)`` (never a pickled module),
instantiates the recorded classes and loads their states: a class that moved or changed its
signature is a ContractError naming the recorded and the current shape.

Saving converts numpy values in the init arguments and the data module's state, which
``weights_only`` refuses, into what it accepts: numpy scalars (``np.float64(1.5)``, ``frame[c].max()``)
become Python numbers, numeric arrays become tensors, other arrays lists; a user's
``load_state_dict`` therefore gets a tensor where its ``state_dict`` gave an array. Before the file is
written the bytes are loaded back with ``weights_only=True``: a value it still refuses is a
ContractError naming its key path, so no version that cannot be loaded is ever written.

Files of the first format (``cl_hpc.mlp/1``: the bundled MLP only) still load, as the tabular workload.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import torch

from cl_hpc.atomic import write_bytes_atomic
from cl_hpc.errors import ChecksumError, DataError
from cl_hpc.learn.contract import ContractError, Target, class_path
from cl_hpc.learn.workload import Workload, construct, import_class

FORMAT = "cl_hpc.model/2"
_MLP_V1 = "cl_hpc.mlp/1"
_ALLOWED = ("tensors, Python numbers (int, float, bool), strings, bytes, None, and lists, tuples and dicts of "
            "them: the checkpoint is loaded with torch.load(weights_only=True)")


class CheckpointChanged(ChecksumError):
    """The checkpoint's bytes are not the ones recorded; ``actual`` is their sha256 (the registry
    quarantines the version with it, without reading the file again)."""

    def __init__(self, message: str, actual: str) -> None:
        super().__init__(message)
        self.actual = actual


def save_workload(path: Path, workload: Workload, meta: Mapping[str, Any]) -> str:
    """Write the model, the data module's state and the signature; return the sha256 of the bytes.
    Numpy values are converted (see the module's doc); anything that would not load back is a
    ContractError, raised before the file is written."""
    payload = {
        "format": FORMAT,
        "model_class": workload.model_target.path, "init_args": _weights_only(dict(workload.model_target.args)),
        "state_dict": {k: v.detach().cpu() for k, v in workload.model.state_dict().items()},
        "datamodule_class": workload.data_target.path,
        "datamodule_args": _weights_only(dict(workload.data_target.args)),
        "datamodule_state": _weights_only(workload.datamodule.state_dict()),
        "signature": _weights_only(workload.signature.to_dict()), "meta": _weights_only(dict(meta)),
    }
    buffer = io.BytesIO()
    try:
        torch.save(payload, buffer)
    except Exception as exc:
        raise ContractError(f"the checkpoint of {class_path(workload.model)} cannot be saved: {exc} (init "
                            f"arguments and the data module's state_dict() must be {_ALLOWED})") from exc
    _require_loadable(buffer.getvalue(), payload, workload)
    write_bytes_atomic(path, buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()  # of the bytes written, not a second read


def _weights_only(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers, numeric arrays as tensors and other arrays as
    lists, through dicts, lists and tuples: the same values, in types ``weights_only`` loads."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy()) if value.dtype.kind in "biuf" else _weights_only(value.tolist())
    if type(value) is dict:  # a dict subclass (defaultdict, a user's) is left for the check to name
        return {_weights_only(k): _weights_only(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_weights_only(v) for v in value)
    return value


def _require_loadable(data: bytes, payload: Mapping[str, Any], workload: Workload) -> None:
    """Load the bytes as every reader will; a ContractError naming the first value it refuses."""
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        path, value = _refused(payload, "") or ("the checkpoint", payload)
        refused = re.search(r"Unsupported global: GLOBAL \S+", str(exc))  # torch's advice to trust it is not ours
        raise ContractError(f"the checkpoint of {class_path(workload.model)} (data module "
                            f"{class_path(workload.datamodule)}) would not load back: {path} is a "
                            f"{_type_name(value)}, which torch.load(weights_only=True) refuses "
                            f"({refused.group(0) if refused else type(exc).__name__}); init arguments and the data "
                            f"module's state_dict() must be {_ALLOWED}") from None


def _refused(value: Any, path: str) -> Optional[tuple[str, Any]]:
    """(key path, e.g. ``datamodule_state['scaler']['mean']``, and value) of the innermost value that
    does not load with ``weights_only=True``; None when ``value`` loads."""
    if _loads(value):
        return None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, item in items:
        inner = _refused(item, f"{path}[{key!r}]" if path else str(key))
        if inner is not None:
            return inner
    return (path, value) if path else None


def _loads(value: Any) -> bool:
    buffer = io.BytesIO()
    try:
        torch.save(value, buffer)
        torch.load(io.BytesIO(buffer.getvalue()), map_location="cpu", weights_only=True)
    except Exception:
        return False
    return True


def _type_name(value: Any) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def read_payload(path: Path, expected_sha256: str, train_rows: Optional[int] = None) -> dict[str, Any]:
    """The verified payload; DataError when the file is missing or altered. ``train_rows``: the rows
    the version trained on, as its registry record says (a first-format file without stored moments
    needs it to merge its scaling forward).

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
        return _from_mlp_v1(payload, train_rows)
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
    state = payload["datamodule_state"]
    try:
        datamodule.load_state_dict(state)
    except Exception as exc:  # user code: a state format that changed since the version was saved
        keys = sorted(map(str, state)) if isinstance(state, Mapping) else type(state).__name__
        raise ContractError(f"{where}: the data module state recorded for {data_target.path} (keys {keys}) does not "
                            f"load into the class as it is now: {type(exc).__name__}: {exc}; make its "
                            f"load_state_dict read the recorded format, or retrain") from exc
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


def _from_mlp_v1(old: Mapping[str, Any], train_rows: Optional[int] = None) -> dict[str, Any]:
    """A first-format MLP checkpoint as the tabular workload's payload (same weights, same scaling).
    Files from before the moments were stored give their count as ``train_rows`` (the registry's
    record); without it the scaling still applies, but a stateful update is refused: merging with a
    made-up count would move the mean almost entirely to the new rows."""
    from cl_hpc.learn.strategies import Moments

    net = dict(old["net"])
    moments, no_update = old.get("moments"), None
    if not moments:
        count = float(train_rows) if train_rows is not None and train_rows >= 2 else None
        moments = Moments.from_std(count or 2.0, old["mean"], old["std"]).to_dict()  # n=2: m2 = std^2
        if count is None:
            no_update = ("is a first-format checkpoint without its feature statistics' row count (no train_rows "
                         "recorded), so its scaling cannot be merged with new rows")
    state = {f"net.{k}": v for k, v in old["state_dict"].items()}
    classes = list(old["classes"])
    return {
        "format": FORMAT, "model_class": "cl_hpc.learn.tabular.TabularClassifier",
        "init_args": {k: net[k] for k in ("n_features", "n_classes", "hidden", "layers", "dropout")},
        "state_dict": state, "datamodule_class": "cl_hpc.learn.tabular.TabularData",
        "datamodule_args": {"label_col": old.get("label_col", "y"), "features": list(old["features"])},
        "datamodule_state": {"features": list(old["features"]), "classes": classes,
                             "class_counts": [1] * len(classes), "label_col": old.get("label_col", "y"),
                             "moments": moments, **({"no_update": no_update} if no_update else {})},
        "signature": None, "meta": {k: old[k] for k in ("window_digest",) if k in old},
    }
