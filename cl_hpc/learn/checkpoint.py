"""Checkpoints as plain ``torch.save`` dicts of tensors and primitives, checksummed with sha256.

Loading uses ``torch.load(weights_only=True)`` after the checksum matches the one the training
task recorded, so a swapped or corrupted file is refused before any of it is unpickled.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import torch

from cl_hpc.atomic import write_bytes_atomic
from cl_hpc.errors import ChecksumError, DataError
from cl_hpc.learn.nets import MLP

FORMAT = "cl_hpc.mlp/1"


class CheckpointChanged(ChecksumError):
    """The checkpoint's bytes are not the ones recorded; ``actual`` is their sha256 (the registry
    quarantines the version with it, without reading the file again)."""

    def __init__(self, message: str, actual: str) -> None:
        super().__init__(message)
        self.actual = actual


def save_checkpoint(path: Path, net: MLP, net_hparams: dict[str, Any], meta: dict[str, Any]) -> str:
    """Write the network and what serving needs (features, classes, scaling); return the sha256."""
    payload = {"format": FORMAT, "net": net_hparams, "state_dict": net.state_dict(), **meta}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_bytes_atomic(path, buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()  # of the bytes written, not a second read


def load_checkpoint(path: Path, expected_sha256: str) -> tuple[MLP, dict[str, Any]]:
    """(network in eval mode, the whole payload); DataError when the file is missing or altered.

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
    if payload.get("format") != FORMAT:
        raise DataError(f"checkpoint {path} has format {payload.get('format')!r}; this version reads {FORMAT!r}")
    net = MLP(**payload["net"])
    net.load_state_dict(payload["state_dict"])
    net.eval()
    return net, payload
