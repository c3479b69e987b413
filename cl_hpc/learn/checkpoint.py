"""Checkpoints as plain ``torch.save`` dicts of tensors and primitives, checksummed with sha256.

Loading uses ``torch.load(weights_only=True)`` after the checksum matches the one the training
task recorded, so a swapped or corrupted file is refused before any of it is unpickled.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from cl_hpc.atomic import write_bytes_atomic
from cl_hpc.data.files import sha256_file
from cl_hpc.errors import DataError
from cl_hpc.learn.nets import MLP

FORMAT = "cl_hpc.mlp/1"


def save_checkpoint(path: Path, net: MLP, net_hparams: dict[str, Any], meta: dict[str, Any]) -> str:
    """Write the network and what serving needs (features, classes, scaling); return the sha256."""
    payload = {"format": FORMAT, "net": net_hparams, "state_dict": net.state_dict(), **meta}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes_atomic(path, buffer.getvalue())
    return sha256_file(path)


def load_checkpoint(path: Path, expected_sha256: str) -> tuple[MLP, dict[str, Any]]:
    """(network in eval mode, the whole payload); DataError when the file is missing or altered."""
    if not path.is_file():
        raise DataError(f"checkpoint {path} does not exist; re-run the train task")
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise DataError(f"checkpoint {path} has sha256 {actual}, but the train task recorded {expected_sha256}: "
                        f"the file was changed after training; re-run the train task")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != FORMAT:
        raise DataError(f"checkpoint {path} has format {payload.get('format')!r}; this version reads {FORMAT!r}")
    net = MLP(**payload["net"])
    net.load_state_dict(payload["state_dict"])
    net.eval()
    return net, payload
