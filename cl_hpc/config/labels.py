"""Settings of the label join (``python -m cl_hpc.labels join``, the ``labels`` pipeline task):
which prediction log to read, the landing zone to append labelled partitions to, and how long an
outcome may take to arrive.

Light on purpose (no pandas at import): the root schema imports it on the login node. The
durations are checked by :func:`labels_conf`, which imports pandas only when called.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from cl_hpc.config.ml import plain
from cl_hpc.errors import ConfigError


class Missing(enum.Enum):
    """What becomes of a prediction whose outcome did not arrive within the window."""

    DROP = "drop"  # left out of the landing zone (counted)
    DEFAULT = "default"  # kept, labelled default_label (e.g. "no click" in Facebook's online joiner)


class Value(enum.Enum):
    """What an outcome gives the label column."""

    LABEL = "label"  # its label (JSON text in the log, decoded: a class keeps its type)
    REWARD = "reward"  # its reward, a float


@dataclass
class LabelsConf:
    """The label join: predictions + outcomes that arrived within ``window`` -> labelled partitions."""

    # the prediction log: predictions/ and outcomes/ under it (the server writes <store.root>/predictions by default)
    log_dir: str = "store/predictions"
    out_dir: str = "data/landing/served"  # landing zone the labelled partitions are appended to (data.landing_dir)
    window: str = "1h"  # how long after a prediction its outcome may arrive (pandas Timedelta string)
    missing: str = "drop"  # a prediction without an outcome in the window: drop | default (gets default_label)
    default_label: Any = None  # the label of such a prediction with missing=default, e.g. 0
    value: str = "label"  # what the label column holds: label (the outcome's label) | reward (its reward)
    label_col: str = "y"  # name of the label column in the landing zone (data.label_col)
    timestamp_col: str = "ts"  # name of the prediction-time column in the landing zone (data.timestamp_col)
    freq: str = "1h"  # span of prediction time one output partition covers (data.freq)
    role: str = "live"  # whose predictions are labelled: live (answers clients got) | shadow
    # a shadow's joined copies: the zone of a join with role=shadow (out_dir=this), read with out_dir by the
    # experiment controller (experiment decide/report, watch); None: no shadow zone
    shadow_out_dir: Optional[str] = None
    # how far before an outcome its prediction is looked for when it matches nothing newer (a late
    # outcome rather than an unmatched one); >= window. Longer costs a read of older key columns.
    lookback: str = "1D"
    # the clock, ISO 8601 (tests and backtests); None = now. A partition [H, H+freq) is written once
    # H + freq + window <= now
    now: Optional[str] = None


def labels_conf(params: Optional[Mapping[str, Any]] = None) -> LabelsConf:
    """The ``labels`` settings as a checked LabelsConf (None = the defaults); every bad value is named
    in one ConfigError before anything is read or written."""
    raw = {str(k): plain(v) for k, v in (params or {}).items()}
    names = [f.name for f in dataclasses.fields(LabelsConf)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ConfigError(f"unknown labels key(s) {unknown}; valid keys: {names} (see cl_hpc/config/labels.py)")
    conf = LabelsConf(**raw)
    problems = [p for p in _problems(conf) if p]
    if problems:
        raise ConfigError("labels: " + "; ".join(problems) + " (see cl_hpc/config/labels.py)")
    return conf


def _problems(c: LabelsConf) -> list[Optional[str]]:
    spans = {key: _duration(c, key) for key in ("window", "freq", "lookback")}
    found = [problem for _, problem in spans.values()]
    found += [_choice(c.missing, Missing, "missing"), _choice(c.value, Value, "value"), _choice(c.role, _Role, "role")]
    if c.missing == Missing.DEFAULT.value and c.default_label is None:
        found.append("missing=default needs default_label, e.g. default_label=0")
    (window, _), (lookback, _) = spans["window"], spans["lookback"]
    if window is not None and lookback is not None and lookback < window:
        found.append(f"lookback={c.lookback!r} must be >= window={c.window!r}")
    found += [f"{key} must not be empty" for key in ("log_dir", "out_dir", "label_col", "timestamp_col")
              if not str(getattr(c, key) or "").strip()]
    if c.label_col == c.timestamp_col:
        found.append(f"label_col and timestamp_col are both {c.label_col!r}")
    if c.now is not None:
        found.append(_time_problem(c.now))
    return found


class _Role(enum.Enum):  # cl_hpc.data.predictions.Role, not imported here: that module loads numpy and pyarrow
    LIVE = "live"
    SHADOW = "shadow"


def _choice(value: Any, kind: type[enum.Enum], key: str) -> Optional[str]:
    valid = [m.value for m in kind]
    return None if value in valid else f"{key}={value!r} is not one of {valid}"


def _duration(c: LabelsConf, key: str) -> tuple[Any, Optional[str]]:
    """(the field as a positive pandas Timedelta, None), or (None, what is wrong with it)."""
    import pandas as pd

    text = getattr(c, key)
    try:
        value = pd.Timedelta(text)
    except (TypeError, ValueError):
        return None, f"{key}={text!r} is not a duration; use e.g. '30min', '1h', '1D'"
    return (value, None) if value > pd.Timedelta(0) else (None, f"{key}={text!r} must be positive")


def _time_problem(text: str) -> Optional[str]:
    import pandas as pd

    try:
        pd.Timestamp(text)
    except (TypeError, ValueError):
        return f"now={text!r} is not a timestamp; use ISO 8601, e.g. 2026-01-01T05:00:00"
    return None
