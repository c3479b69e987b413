"""A stateful fine-tune keeps the model's own optimizer set-up and scales its learning rates: the
user's optimizer and scheduler (examples/my_models: SGD + cosine) run as the model configured them,
at fine_tune_lr_scale x, on a real Lightning fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl

from cl_hpc.config.ml import fit_conf
from cl_hpc.learn.contract import Target
from cl_hpc.learn.training import fit
from cl_hpc.learn.workload import Workload, data_from, model_for

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "my_models"


class LrSeen(pl.Callback):
    """The learning rate of each optimizer step, as the optimizer had it when the step ran."""

    def __init__(self) -> None:
        self.lrs: list[float] = []

    def on_train_batch_start(self, trainer: pl.Trainer, module: pl.LightningModule, batch: object, i: int) -> None:
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])


@pytest.fixture(autouse=True)
def _example_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE))


def _frame(rows: int = 256) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(rows, 3)), columns=["a", "b", "c"])
    frame["y"] = (frame["a"] + frame["b"] > 0).astype("int64")
    frame["ts"] = pd.date_range("2026-01-01", periods=rows, freq="min")
    return frame


def _workload(lr: float) -> Workload:
    data_target = Target("my_models.churn.ChurnData", {"label_col": "y", "batch_size": 64})
    data = data_from(data_target)
    data.fit_state(_frame())
    model, built = model_for(Target("my_models.churn.GatedResNet", {"lr": lr, "epochs_per_cycle": 4}), data)
    return Workload(model, data, built, data_target)


@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_the_users_optimizer_and_schedule_run_at_the_scaled_learning_rate(tmp_path: Path, scale: float,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    seen = LrSeen()
    original_fit = pl.Trainer.fit

    def fit_with(self: pl.Trainer, *args: object, **kwargs: object) -> object:
        self.callbacks.append(seen)  # observe the real fit cl_hpc runs, without changing it
        return original_fit(self, *args, **kwargs)

    monkeypatch.setattr(pl.Trainer, "fit", fit_with)
    fit(_workload(lr=0.08), _frame(), fit_conf({"max_epochs": 2}), tmp_path, lr_scale=scale)
    steps_per_epoch = 256 // 64
    first, second = seen.lrs[0], seen.lrs[steps_per_epoch]
    assert first == pytest.approx(0.08 * scale)  # the user's SGD, at the scaled rate
    # the user's cosine schedule over 4 epochs, from the scaled base: epoch 2 runs at base x (1 + cos(pi/4)) / 2
    assert second == pytest.approx(0.08 * scale * (1 + np.cos(np.pi / 4)) / 2)
