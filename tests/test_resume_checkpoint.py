"""The resume checkpoint of a Lightning fit: exact resume, checksum, and loaded as data only.

Real Lightning fits on CPU. A Slurm pre-timeout signal is sent to this process from the fit's
own progress hook, so the fit checkpoints mid-epoch exactly as it would in a Slurm job.
"""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from cl_hpc.config.ml import fit_conf
from cl_hpc.context import Preempted
from cl_hpc.errors import ClHpcError
from cl_hpc.learn.contract import Target
from cl_hpc.learn.training import FitResult, fit
from cl_hpc.learn.workload import Workload, data_from, model_for

ROWS, BATCH, EPOCHS = 96, 8, 2  # 12 steps an epoch, 24 in all


def _data() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, 3))
    return pd.DataFrame(x, columns=["a", "b", "c"]).assign(y=(x[:, 0] > 0).astype(np.int64))


def _fit(root: Path, **kwargs: Any) -> FitResult:
    """A fresh tabular workload (as a requeued job builds one) fitted on the rows: 12 steps an epoch."""
    frame = _data()
    data_target = Target("cl_hpc.learn.tabular.TabularData", {"label_col": "y", "batch_size": BATCH})
    data = data_from(data_target)
    data.fit_state(frame)
    model, built = model_for(Target("cl_hpc.learn.tabular.TabularClassifier", {}), data)
    return fit(Workload(model, data, built, data_target), frame, fit_conf({"max_epochs": EPOCHS}), root, **kwargs)


def _signal_at(step: int) -> Callable[..., None]:
    """A progress hook that sends Slurm's pre-timeout signal when the fit reaches ``step``."""
    def progress(done: int, total: Any, note: str = "", force: bool = False) -> None:
        if done == step and note.startswith("epoch"):
            os.kill(os.getpid(), signal.SIGUSR2)
    return progress


def _preempted_fit(tmp_path: Path, step: int = 17) -> Path:
    """Fit until the signal at ``step`` (mid second epoch); the resume checkpoint it left."""
    resume = tmp_path / "resume-attempt0.ckpt"
    with pytest.raises(Preempted, match=f"at step {step}"):
        _fit(tmp_path, progress=_signal_at(step), resume_path=resume)
    assert resume.is_file()
    return resume


def _sidecar(resume: Path) -> Path:
    return resume.with_name(resume.name + ".sha256")


def test_a_fit_preempted_mid_epoch_resumes_to_the_exact_step_count(tmp_path: Path) -> None:
    resume = _preempted_fit(tmp_path)
    assert _sidecar(resume).read_text().split() == [hashlib.sha256(resume.read_bytes()).hexdigest()]
    result = _fit(tmp_path, resume_path=resume)
    assert result.steps == EPOCHS * ROWS // BATCH  # nothing lost, nothing done twice
    assert result.epochs == EPOCHS
    assert not resume.exists() and not _sidecar(resume).exists()  # done: nothing left to resume


def test_a_changed_resume_checkpoint_is_refused(tmp_path: Path) -> None:
    """A valid checkpoint with other contents (here: a step count moved back) is not resumed."""
    resume = _preempted_fit(tmp_path)
    state = torch.load(resume, weights_only=True)
    state["global_step"] = 3
    torch.save(state, resume)
    with pytest.raises(ClHpcError, match=r"(?s)resume checkpoint .*resume-attempt0\.ckpt has sha256 .*changed"):
        _fit(tmp_path, resume_path=resume)


def test_a_resume_checkpoint_without_its_checksum_is_refused(tmp_path: Path) -> None:
    resume = _preempted_fit(tmp_path)
    _sidecar(resume).unlink()
    with pytest.raises(ClHpcError, match="is missing"):
        _fit(tmp_path, resume_path=resume)


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
    with pytest.raises(ClHpcError, match="other than tensors and plain data"):
        _fit(tmp_path, resume_path=resume)
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
    result = _fit(tmp_path, resume_path=resume)
    assert result.steps == EPOCHS * ROWS // BATCH


_SAVE_KILLED = """
import os, signal, sys, torch
from pathlib import Path
from cl_hpc.learn.preemption import ResumeCheckpointIO
path, copy, point = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
state = torch.load(path, weights_only=True)
state['test_copy'] = copy  # other bytes, the same fit
sidecar_writes = 0

def kill_at(event, args):
    # SIGKILL when the save opens a temporary file: the checkpoint's ('before-bytes': the first
    # checksum write is done, the checkpoint not yet replaced) or the checksum's second one
    # ('after-bytes': the checkpoint is replaced, the checksum still lists two digests).
    global sidecar_writes
    if event != 'open' or not isinstance(args[0], str) or not args[0].endswith('.tmp'):
        return
    name = os.path.basename(args[0])
    if name.startswith('.' + path.name + '.sha256.'):
        sidecar_writes += 1
        if point == 'after-bytes' and sidecar_writes == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    elif name.startswith('.' + path.name + '.') and point == 'before-bytes':
        os.kill(os.getpid(), signal.SIGKILL)

sys.addaudithook(kill_at)
ResumeCheckpointIO().save_checkpoint(state, path)
print('not killed', flush=True)
"""


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_saves_killed_in_either_crash_window_leave_a_verified_checkpoint_and_two_digests_at_most(
        tmp_path: Path) -> None:
    """Real processes SIGKILLed inside ResumeCheckpointIO.save_checkpoint, one after another: after
    the checksum's first write, and after the checkpoint's bytes replaced the old file. After each,
    the checkpoint on disk is listed, the checksum lists no more than two digests, and a digest of
    a checkpoint no longer on disk is not listed; then the fit resumes from what is left."""
    import subprocess
    import sys

    resume = _preempted_fit(tmp_path)
    first = _sha(resume)
    on_disk = [first]
    for copy, point in enumerate(["after-bytes", "before-bytes", "after-bytes", "before-bytes"], start=1):
        done = subprocess.run([sys.executable, "-c", _SAVE_KILLED, str(resume), str(copy), point],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
        listed, before = _sidecar(resume).read_text().split(), on_disk[-1]
        on_disk.append(_sha(resume))
        # the file on disk before this save, then the new one (the file on disk now if its bytes landed)
        assert len(listed) == 2 and listed[0] == before and on_disk[-1] in listed, (point, listed)
        assert not set(listed) & set(on_disk) - {before, on_disk[-1]}, (point, listed)  # old ones dropped
    assert first not in _sidecar(resume).read_text().split()
    result = _fit(tmp_path, resume_path=resume)
    assert result.steps == EPOCHS * ROWS // BATCH
