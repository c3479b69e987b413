"""Typed schemas of the data group (``conf/data/*.yaml``) and of ``fit:``, how any model is trained.

The ``model:`` and ``datamodule:`` keys are ``_target_`` configs of the user's (or the bundled)
classes: cl_hpc/learn/contract.py checks them, not a schema here.

The root schema (``schema.py``) registers them; the tasks receive them back as plain dicts
(``run(ctx, data={...}, fit={...})``) and turn them into these dataclasses with
:func:`data_conf` / :func:`fit_conf`, which also check what a type alone cannot (window sizes,
drift positions). Light on purpose: the login node imports this module.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Type, TypeVar

from cl_hpc.errors import ConfigError

GENERATORS = ("sea", "hyperplane", "agrawal", "tokens", "users", "none")

T = TypeVar("T")


@dataclass
class DataConf:
    """Where the time-partitioned data lives, how to generate it, and which windows to use."""

    landing_dir: str = "data/landing"  # folder of *.parquet partitions (any name); relative = to the cwd
    # generator that fills an empty landing zone: sea | hyperplane | agrawal (river), tokens (a drifting
    # token stream for language models: cl_hpc/data/tokens.py), users (simulated users' events, keyed by
    # user_id, for the feature store: cl_hpc/data/users.py) | none (your own files)
    generator: str = "sea"
    # noise of the generator: label-flip rate for SEA (noise), Hyperplane (noise_percentage) and users,
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
    # class label column (integer, bool or string); None = the rows carry no label (a token stream,
    # whose data module makes its targets from the rows themselves)
    label_col: Optional[str] = "y"
    # feature columns (numeric); empty = every column but the label, the timestamp and metadata (names starting with _)
    features: List[str] = field(default_factory=list)
    train_window: int = 8  # newest partitions to train on, just before the eval window
    eval_window: int = 4  # newest partitions, held out for evaluation (they come after the train window)
    as_of: Optional[str] = None  # see only partitions that start before this timestamp (backtests); None = all


PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "64-true")
ACCELERATORS = ("auto", "cpu", "gpu")


@dataclass
class FitConf:
    """How the Lightning Trainer fits any model (``model:`` and ``datamodule:`` say what it fits)."""

    max_epochs: int = 8  # passes over the training rows
    max_steps: int = -1  # stop after this many optimizer steps; -1 = no limit (max_epochs decides)
    seed: int = 0  # seeds torch, numpy and the loader's shuffling (lightning.seed_everything)
    # auto: a GPU when the task's resources give it one (resources.gpus) and CUDA sees it, else the CPU
    accelerator: str = "auto"
    # Lightning precision; None = bf16-mixed on a GPU, 32-true on the CPU
    precision: Optional[str] = None
    gradient_clip_val: Optional[float] = None  # clip the gradient norm to this; None = no clipping


def _to_conf(cls: Type[T], params: Optional[Mapping[str, Any]], group: str) -> T:
    """Build a dataclass from a plain (or OmegaConf) mapping; unknown keys are a ConfigError."""
    raw = {str(k): plain(v) for k, v in (params or {}).items()}
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ConfigError(f"unknown {group} key(s) {unknown}; valid keys: {names} (see conf/{group}/*.yaml)")
    return cls(**raw)


def plain(value: Any) -> Any:
    """OmegaConf containers to plain lists/dicts, without importing omegaconf."""
    if hasattr(value, "items"):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":
        return [plain(v) for v in value]
    return value


def generator_params(conf: DataConf, defaults: Mapping[str, Any], stream: str, where: str) -> dict[str, Any]:
    """``data.generator_params`` of a bundled stream, refused when it names a setting the stream lacks."""
    given = dict(conf.generator_params)
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(f"data.generator_params {unknown} are not settings of the {stream}; valid: "
                          f"{sorted(defaults)} (see {where})")
    return given


def data_conf(params: Optional[Mapping[str, Any]] = None) -> DataConf:
    """The task param ``data`` as a checked DataConf (None = the defaults)."""
    conf = _to_conf(DataConf, params, "data")
    _check_data(conf)
    return conf


def fit_conf(params: Optional[Mapping[str, Any]] = None) -> FitConf:
    """The task param ``fit`` as a checked FitConf (None = the defaults)."""
    conf = _to_conf(FitConf, params, "fit")
    _check_fit(conf)
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
    _require(c.generator != "tokens" or c.label_col is None,
             f"data.label_col={c.label_col!r}: the token stream writes no label column (its targets are the "
             f"next tokens); set data.label_col: null (conf/data/tokens.yaml)")
    _require(c.generator == "tokens" or c.label_col is not None,
             f"data.generator={c.generator!r} writes a label column: data.label_col must name it, not null")
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


def _check_fit(c: FitConf) -> None:
    _require(c.max_epochs >= 1, f"fit.max_epochs={c.max_epochs} must be >= 1")
    _require(c.max_steps == -1 or c.max_steps >= 1, f"fit.max_steps={c.max_steps} must be >= 1, or -1 for no limit")
    _require(c.accelerator in ACCELERATORS, f"fit.accelerator={c.accelerator!r}; valid: {list(ACCELERATORS)}")
    _require(c.precision is None or c.precision in PRECISIONS,
             f"fit.precision={c.precision!r}; valid: {list(PRECISIONS)} or null (bf16-mixed on GPU, 32-true on CPU)")
    _require(c.gradient_clip_val is None or c.gradient_clip_val > 0,
             f"fit.gradient_clip_val={c.gradient_clip_val} must be > 0, or null")
