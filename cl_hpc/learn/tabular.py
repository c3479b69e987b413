"""The bundled tabular workload: an MLP classifier on standardised numeric features.

One implementation of the model contract (cl_hpc/learn/contract.py), not a special case. The data
module's preprocessing state is the feature scaling (count, mean and M2 per feature, mergeable
without the data: a stateful update moves it with the new rows, Chan et al.'s parallel update) and
the label space (the class values, in index order, and the training class counts: the cold-start
baseline predicts their prior).
"""

from __future__ import annotations

from typing import Any, ClassVar, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from cl_hpc.errors import DataError
from cl_hpc.learn.base import LoopDataModule, LoopModule
from cl_hpc.learn.contract import CannotContinue, Direction, Spec
from cl_hpc.learn.metrics import _EPS, classification_metrics
from cl_hpc.learn.nets import MLP
from cl_hpc.learn.strategies import Moments


class TabularClassifier(LoopModule):
    """Any number of classes (two logits for a binary task, so one code path serves both)."""

    metrics: ClassVar[Mapping[str, Direction]] = {
        "accuracy": Direction.HIGHER, "log_loss": Direction.LOWER, "macro_f1": Direction.HIGHER,
        "roc_auc": Direction.HIGHER}

    def __init__(self, n_features: int, n_classes: int, hidden: int = 64, layers: int = 2, dropout: float = 0.1,
                 lr: float = 3e-3, weight_decay: float = 1e-4) -> None:
        super().__init__()
        _check_args(n_features=n_features, n_classes=n_classes, hidden=hidden, layers=layers, dropout=dropout, lr=lr,
                    weight_decay=weight_decay)
        self.net = MLP(n_features, n_classes, hidden, layers, dropout)
        self.n_classes, self.lr, self.weight_decay = n_classes, lr, weight_decay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> dict[str, Any]:
        x, y = batch
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        correct = (logits.argmax(dim=1) == y).sum()
        # Returned (not self.log-ged): the callbacks aggregate them without a logger.
        return {"loss": loss, "correct": correct.detach(), "rows": len(y)}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    def evaluate_batch(self, inputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        probs = torch.softmax(self.net(inputs), dim=1)
        correct = (probs.argmax(dim=1) == targets).float()
        nll = -torch.log(probs.gather(1, targets[:, None])[:, 0].clamp(min=_EPS))
        return {"correct": correct, "accuracy": correct, "log_loss": nll, "probs": probs, "target": targets}

    def predict_batch(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        probs = torch.softmax(self.net(inputs), dim=1)
        return {"class": probs.argmax(dim=1), "probs": probs}

    def output_signature(self) -> list[Spec]:
        return [Spec("class", "int64"), Spec("probs", "float32", (self.n_classes,))]

    def summarize(self, per_row: Mapping[str, np.ndarray]) -> dict[str, Optional[float]]:
        probs, y = per_row["probs"], per_row["target"].astype(np.int64)
        if not len(y):
            return {name: None for name in self.metrics}
        return {k: v for k, v in classification_metrics(probs, y).items() if k in self.metrics}


class TabularData(LoopDataModule):
    """Rows of numeric features and a class label; features standardised with the state's moments."""

    def __init__(self, label_col: str = "y", features: Sequence[str] = (), timestamp_col: str = "ts",
                 batch_size: int = 256, num_workers: int = 0, seed: int = 0) -> None:
        super().__init__(batch_size, num_workers, seed)
        self.label_col, self.timestamp_col, self.wanted = label_col, timestamp_col, list(features)
        self.features: list[str] = []
        self.classes: list[Any] = []
        self.class_counts: list[int] = []
        self.moments: Optional[Moments] = None
        self.no_update: Optional[str] = None  # why update_state cannot move this state (an old checkpoint's)

    # ---- state ------------------------------------------------------------------------------

    def fit_state(self, frame: pd.DataFrame) -> None:
        self.features = self._resolve(frame)
        labels = frame[self.label_col]
        counts = labels.value_counts()
        self.classes = sorted(counts.index.tolist())
        if len(self.classes) < 2:
            raise DataError(f"the training rows have a single class {self.classes} in column {self.label_col!r}; "
                            f"a classifier needs two: widen data.train_window")
        self.class_counts = [int(counts[c]) for c in self.classes]
        self.moments, self.no_update = moments_of(self._raw(frame)), None

    def update_state(self, frame: pd.DataFrame) -> None:
        if self.no_update:
            raise CannotContinue(self.no_update)
        if self._resolve(frame) != self.features:
            raise CannotContinue(f"was trained on features {self.features}, the new rows have {self._resolve(frame)}")
        unseen = sorted(set(frame[self.label_col].unique().tolist()) - set(self.classes))
        if unseen:
            raise CannotContinue(f"predicts classes {self.classes}, the new rows bring {unseen}")
        counts = frame[self.label_col].value_counts()
        self.class_counts = [n + int(counts.get(c, 0)) for n, c in zip(self.class_counts, self.classes)]
        assert self.moments is not None  # loaded with the parent's state
        self.moments = self.moments.merge(moments_of(self._raw(frame)))

    def state_dict(self) -> dict[str, Any]:
        return {"features": list(self.features), "classes": _plain_list(self.classes),
                "class_counts": list(self.class_counts), "label_col": self.label_col,
                "moments": self.moments.to_dict() if self.moments else None,
                **({"no_update": self.no_update} if self.no_update else {})}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.features, self.classes = list(state_dict["features"]), list(state_dict["classes"])
        self.class_counts = [int(n) for n in state_dict["class_counts"]]
        self.moments = Moments.from_dict(state_dict["moments"]) if state_dict.get("moments") else None
        self.no_update = state_dict.get("no_update")

    # ---- the contract -----------------------------------------------------------------------

    def model_args(self) -> dict[str, Any]:
        return {"n_features": len(self.features), "n_classes": len(self.classes)}

    def input_signature(self) -> list[Spec]:
        return [Spec(name, "float64") for name in self.features]

    def to_batch(self, frame: pd.DataFrame) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        if self.moments is None:
            raise RuntimeError("TabularData.to_batch before fit_state or load_state_dict")
        present = set(frame.columns.tolist())  # `in frame.columns` costs ~30 us a name on pandas 3's string index
        missing = [f for f in self.features if f not in present]
        if missing:
            raise DataError(f"rows lack feature column(s) {missing}; the model takes {self.features}")
        mean, std = np.asarray(self.moments.mean), np.asarray(self.moments.std)
        x = torch.from_numpy(((self._raw(frame) - mean) / std).astype(np.float32))
        if self.label_col not in present:
            return x, None
        return x, torch.from_numpy(self.class_index(frame[self.label_col]))

    def class_index(self, labels: pd.Series, unknown: Optional[int] = None) -> np.ndarray:
        """Class index per label; a label outside the classes is a DataError, or ``unknown`` when given."""
        index = {value: i for i, value in enumerate(self.classes)}
        mapped = labels.map(lambda v: index.get(_plain(v), -1)).to_numpy(dtype=np.int64)
        if unknown is None and (mapped < 0).any():
            unseen = sorted(set(labels[mapped < 0].tolist()))
            raise DataError(f"label values {unseen[:10]} in column {self.label_col!r} are not among the model's "
                            f"classes {self.classes} (it never saw them in training)")
        return np.where(mapped < 0, unknown if unknown is not None else -1, mapped)

    def decode(self, outputs: Mapping[str, np.ndarray]) -> dict[str, Any]:
        labels = [self.classes[int(i)] for i in np.asarray(outputs["class"])]
        return {**outputs, "label": labels}

    def baseline_rows(self, frame: pd.DataFrame) -> dict[str, np.ndarray]:
        """The class prior of the training rows: majority-class accuracy, the prior's log-loss."""
        prior = np.asarray(self.class_counts, dtype=float)
        prior /= prior.sum()
        y = self.class_index(frame[self.label_col])
        correct = (y == int(prior.argmax())).astype(float)
        return {"correct": correct, "accuracy": correct, "log_loss": -np.log(np.clip(prior[y], _EPS, 1.0))}

    def _resolve(self, frame: pd.DataFrame) -> list[str]:
        if self.wanted:
            missing = [f for f in self.wanted if f not in frame.columns]
            if missing:
                raise DataError(f"feature column(s) {missing} are not in the rows (columns: {list(frame.columns)}); "
                                f"data.features names them")
            return list(self.wanted)
        return [c for c in frame.columns if c not in (self.label_col, self.timestamp_col)]

    def _raw(self, frame: pd.DataFrame) -> np.ndarray:
        features = self.features or self._resolve(frame)
        if list(frame.columns) == features:  # the server's rows come in this order: skip pandas' reindex
            return frame.to_numpy(dtype=np.float64)
        return frame[features].to_numpy(dtype=np.float64)


def moments_of(raw: np.ndarray) -> Moments:
    raw = raw.astype(np.float64)
    mean = raw.mean(axis=0) if len(raw) else np.zeros(raw.shape[1])
    return Moments(float(len(raw)), tuple(map(float, mean)), tuple(map(float, ((raw - mean) ** 2).sum(axis=0))))


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _plain_list(values: list[Any]) -> list[Any]:
    return [_plain(v) for v in values]


def _check_args(**args: Any) -> None:
    problems = []
    if args["n_features"] < 1 or args["n_classes"] < 2:
        problems.append(f"n_features={args['n_features']} must be >= 1 and n_classes={args['n_classes']} >= 2")
    if args["hidden"] < 1 or args["layers"] < 0:
        problems.append(f"hidden={args['hidden']} must be >= 1 and layers={args['layers']} >= 0")
    if not 0.0 <= args["dropout"] < 1.0:
        problems.append(f"dropout={args['dropout']} must be in [0, 1)")
    if not (args["lr"] > 0 and args["weight_decay"] >= 0):
        problems.append(f"lr={args['lr']} must be > 0 and weight_decay={args['weight_decay']} >= 0")
    if problems:
        from cl_hpc.errors import ConfigError

        raise ConfigError("model (TabularClassifier): " + "; ".join(problems) + " (conf/model/mlp.yaml)")
