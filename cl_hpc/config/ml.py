"""Typed schemas of the data and model groups (``conf/data/*.yaml``, ``conf/model/*.yaml``).

The root schema (``schema.py``) registers them; the tasks receive them back as plain dicts
(``run(ctx, data={...}, model={...})``) and turn them into these dataclasses with
:func:`data_conf` / :func:`model_conf`, which also check what a type alone cannot (window sizes,
drift positions). Light on purpose: the login node imports this module.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Type, TypeVar

from cl_hpc.errors import ConfigError

GENERATORS = ("sea", "hyperplane", "agrawal", "none")
MODELS = ("mlp",)

T = TypeVar("T")


@dataclass
class DataConf:
    """Where the time-partitioned data lives, how to generate it, and which windows to use."""

    landing_dir: str = "data/landing"  # folder of *.parquet partitions (any name); relative = to the cwd
    # river generator that fills an empty landing zone: sea | hyperplane | agrawal | none (your own files)
    generator: str = "sea"
    # noise of the generator: label-flip rate for SEA (noise) and Hyperplane (noise_percentage),
    # feature perturbation for Agrawal (perturbation)
    noise: float = 0.1
    # other keyword arguments for the river generator class, e.g. {n_features: 10} for Hyperplane.
    # Empty by default: Hydra merges dicts, so a default here would leak into every data/*.yaml.
    generator_params: Dict[str, Any] = field(default_factory=dict)
    # one concept per segment of the stream: SEA variant, Agrawal function, or Hyperplane seed offset
    concepts: List[int] = field(default_factory=lambda: [0, 2, 3])
    # partition index where each later concept starts: len(concepts)-1 entries, increasing
    drift_at: List[int] = field(default_factory=lambda: [6, 12])
    # rows over which a drift blends in (river's sigmoid width); None = as abrupt as river allows
    drift_width: Optional[int] = None
    seed: int = 42  # seed of the generated stream; the same settings always give the same files
    n_partitions: int = 24  # partitions to generate; raising it later appends the new ones (data "arrives")
    rows_per_partition: int = 2000  # rows in each generated partition
    start: str = "2026-01-01T00:00:00"  # timestamp of the first generated partition
    freq: str = "1h"  # time span of one partition, a fixed duration (pandas Timedelta string)
    timestamp_col: str = "ts"  # event-time column (Parquet timestamp type)
    label_col: str = "y"  # class label column (integer, bool or string)
    # feature columns (numeric); empty = every column but the label and the timestamp
    features: List[str] = field(default_factory=list)
    train_window: int = 8  # newest partitions to train on, just before the eval window
    eval_window: int = 4  # newest partitions, held out for evaluation (they come after the train window)
    as_of: Optional[str] = None  # see only partitions that start before this timestamp (backtests); None = all


@dataclass
class ModelConf:
    """The classifier and how to train it (CPU by default)."""

    name: str = "mlp"  # architecture; only "mlp" for now
    hidden: int = 64  # units per hidden layer
    layers: int = 2  # hidden layers (0 = logistic regression)
    dropout: float = 0.1  # dropout after each hidden layer
    lr: float = 0.003  # AdamW learning rate
    weight_decay: float = 0.0001  # AdamW weight decay
    batch_size: int = 256  # rows per optimiser step
    max_epochs: int = 8  # passes over the train window
    seed: int = 0  # seeds torch, numpy and the loader's shuffling (lightning.seed_everything)
    num_workers: int = 0  # DataLoader worker processes; 0 = load in the trainer (the window is in memory)


def _to_conf(cls: Type[T], params: Optional[Mapping[str, Any]], group: str) -> T:
    """Build a dataclass from a plain (or OmegaConf) mapping; unknown keys are a ConfigError."""
    raw = {str(k): _plain(v) for k, v in (params or {}).items()}
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ConfigError(f"unknown {group} key(s) {unknown}; valid keys: {names} (see conf/{group}/*.yaml)")
    return cls(**raw)


def _plain(value: Any) -> Any:
    """OmegaConf containers to plain lists/dicts, without importing omegaconf."""
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [_plain(v) for v in value]
    return value


def data_conf(params: Optional[Mapping[str, Any]] = None) -> DataConf:
    """The task param ``data`` as a checked DataConf (None = the defaults)."""
    conf = _to_conf(DataConf, params, "data")
    _check_data(conf)
    return conf


def model_conf(params: Optional[Mapping[str, Any]] = None) -> ModelConf:
    """The task param ``model`` as a checked ModelConf (None = the defaults)."""
    conf = _to_conf(ModelConf, params, "model")
    _check_model(conf)
    return conf


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def _check_data(c: DataConf) -> None:
    _require(c.generator in GENERATORS, f"data.generator={c.generator!r}; valid: {list(GENERATORS)}")
    _require(c.train_window >= 1 and c.eval_window >= 1,
             f"data.train_window={c.train_window} and data.eval_window={c.eval_window} must both be >= 1")
    _require(c.rows_per_partition >= 1, f"data.rows_per_partition={c.rows_per_partition} must be >= 1")
    if c.generator == "none":
        return  # the files are the user's: the generation settings do not apply
    _require(c.n_partitions >= c.train_window + c.eval_window,
             f"data.n_partitions={c.n_partitions} is less than train_window + eval_window "
             f"= {c.train_window + c.eval_window}; generate more partitions or shrink the windows")
    _require(0.0 <= c.noise <= 1.0, f"data.noise={c.noise} must be in [0, 1]")
    _require(len(c.concepts) >= 1, "data.concepts must name at least one concept, e.g. [0]")
    _require(len(c.drift_at) == len(c.concepts) - 1,
             f"data.drift_at={c.drift_at} needs len(concepts)-1 = {len(c.concepts) - 1} entries "
             f"(one partition index per concept after the first; concepts={c.concepts})")
    # A drift point may lie beyond n_partitions: that concept arrives with partitions appended later
    # (the stream, and so every file already written, stays the same).
    steps = [0, *c.drift_at]
    _require(all(a < b for a, b in zip(steps, steps[1:])),
             f"data.drift_at={c.drift_at} must be partition indices >= 1, strictly increasing")


def _check_model(c: ModelConf) -> None:
    _require(c.name in MODELS, f"model.name={c.name!r}; valid: {list(MODELS)}")
    _require(c.hidden >= 1 and c.layers >= 0, f"model.hidden={c.hidden} must be >= 1 and model.layers={c.layers} >= 0")
    _require(0.0 <= c.dropout < 1.0, f"model.dropout={c.dropout} must be in [0, 1)")
    _require(c.lr > 0 and c.weight_decay >= 0, f"model.lr={c.lr} must be > 0 and model.weight_decay >= 0")
    _require(c.batch_size >= 1 and c.max_epochs >= 1,
             f"model.batch_size={c.batch_size} and model.max_epochs={c.max_epochs} must both be >= 1")
    _require(c.num_workers >= 0, f"model.num_workers={c.num_workers} must be >= 0")
