"""The resume checkpoint of a Lightning fit: exact resume, checksum, and loaded as data only.

Real Lightning fits on CPU. A Slurm pre-timeout signal is sent to this process from the fit's
own progress hook, so the fit checkpoints mid-epoch exactly as it would in a Slurm job.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cl_hpc.config.ml import ModelConf, model_conf
from cl_hpc.context import Preempted
from cl_hpc.errors import ClHpcError
from cl_hpc.learn.training import fit

ROWS, BATCH, EPOCHS = 96, 8, 2  # 12 steps an epoch, 24 in all


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, 3)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


def _conf() -> ModelConf:
    return dataclasses.replace(model_conf(None), batch_size=BATCH, max_epochs=EPOCHS, num_workers=0)


def _signal_at(step: int) -> Callable[..., None]:
    """A progress hook that sends Slurm's pre-timeout signal when the fit reaches ``step``."""
    def progress(done: int, total: Any, note: str = "", force: bool = False) -> None:
        if done == step and note.startswith("epoch"):
            os.kill(os.getpid(), signal.SIGUSR2)
    return progress


def _preempted_fit(tmp_path: Path, step: int = 17) -> Path:
    """Fit until the signal at ``step`` (mid second epoch); the resume checkpoint it left."""
    x, y = _data()
    resume = tmp_path / "resume-attempt0.ckpt"
    with pytest.raises(Preempted, match=f"at step {step}"):
        fit(x, y, 2, _conf(), tmp_path, progress=_signal_at(step), resume_path=resume)
    assert resume.is_file()
    return resume


def _sidecar(resume: Path) -> Path:
    return resume.with_name(resume.name + ".sha256")


def test_a_fit_preempted_mid_epoch_resumes_to_the_exact_step_count(tmp_path: Path) -> None:
    resume = _preempted_fit(tmp_path)
    assert _sidecar(resume).read_text().split() == [hashlib.sha256(resume.read_bytes()).hexdigest()]
    x, y = _data()
    result = fit(x, y, 2, _conf(), tmp_path, resume_path=resume)
    assert result.steps == EPOCHS * ROWS // BATCH  # nothing lost, nothing done twice
    assert result.epochs == EPOCHS
    assert not resume.exists() and not _sidecar(resume).exists()  # done: nothing left to resume


def test_a_changed_resume_checkpoint_is_refused(tmp_path: Path) -> None:
    """A valid checkpoint with other contents (here: a step count moved back) is not resumed."""
    resume = _preempted_fit(tmp_path)
    state = torch.load(resume, weights_only=True)
    state["global_step"] = 3
    torch.save(state, resume)
    x, y = _data()
    with pytest.raises(ClHpcError, match=r"(?s)resume checkpoint .*resume-attempt0\.ckpt has sha256 .*changed"):
        fit(x, y, 2, _conf(), tmp_path, resume_path=resume)


def test_a_resume_checkpoint_without_its_checksum_is_refused(tmp_path: Path) -> None:
    resume = _preempted_fit(tmp_path)
    _sidecar(resume).unlink()
    x, y = _data()
    with pytest.raises(ClHpcError, match="is missing"):
        fit(x, y, 2, _conf(), tmp_path, resume_path=resume)


class _Payload:
    """Unpickling this object creates the marker file: proof that pickled code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return open, (str(self.marker), "w")


def test_a_pickled_object_in_a_resume_checkpoint_never_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even with a matching checksum (whoever wrote the file wrote that too) and torch's pre-2.6
    default of a full unpickle (forced here through torch's own switch), the object is not built."""
    resume = _preempted_fit(tmp_path)
    marker = tmp_path / "pwned"
    state = torch.load(resume, weights_only=True)
    state["callbacks"]["evil"] = _Payload(marker)
    torch.save(state, resume)
    _sidecar(resume).write_text(hashlib.sha256(resume.read_bytes()).hexdigest() + "\n")
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # what torch 2.3-2.5 do by default
    x, y = _data()
    with pytest.raises(ClHpcError, match="other than tensors and plain data"):
        fit(x, y, 2, _conf(), tmp_path, resume_path=resume)
    assert not marker.exists()


_SAVE_TAGGED_CUDA = """
import sys, torch
from pathlib import Path
from cl_hpc.learn.preemption import ResumeCheckpointIO
state = torch.load(sys.argv[1], weights_only=True)
# This process tags every CPU storage 'cuda:0', as a GPU fit's checkpoint is tagged.
torch.serialization.register_package(0, lambda s: 'cuda:0' if s.device.type == 'cpu' else None, lambda s, loc: None)
ResumeCheckpointIO().save_checkpoint(state, Path(sys.argv[1]))
"""


def test_a_gpu_fit_checkpoint_resumes_through_lightning_onto_the_cpu(tmp_path: Path) -> None:
    """Lightning's Strategy.load_checkpoint passes no map_location; its TorchCheckpointIO then maps
    every storage to the CPU (the strategy moves them to the rank's device later). The resume
    checkpoint IO must do the same: with torch's own default each storage goes back to the device
    it was saved from (every DDP rank onto cuda:0; no resume at all without CUDA, as here)."""
    import subprocess
    import sys

    resume = _preempted_fit(tmp_path)
    subprocess.run([sys.executable, "-c", _SAVE_TAGGED_CUDA, str(resume)], check=True, timeout=300)
    with pytest.raises(RuntimeError, match="CUDA"):  # the file really is tagged for a GPU
        torch.load(resume, weights_only=True)
    x, y = _data()
    result = fit(x, y, 2, _conf(), tmp_path, resume_path=resume)
    assert result.steps == EPOCHS * ROWS // BATCH
