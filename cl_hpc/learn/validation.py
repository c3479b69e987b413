"""Data validation before training: is this window fit to learn from?

A pure check of a pandas DataFrame against :class:`Expectations` (usually taken from a trusted
earlier window with :meth:`Expectations.from_frame`): the schema (missing, extra and mistyped
columns), NaN rates, labels outside the known classes, an empty window, and a shift of the label
distribution against a reference. Every check runs and every issue is reported, so one look at the
error shows all that is wrong with a batch.

What it catches: a column of NaNs, a string in a numeric column, a poisoned batch (all labels
flipped to one class) and flipped labels that move the label distribution. A pure permutation of
the labels keeps their distribution, so no check on the window alone can see it; the gate's
comparison with the champion on held-out data does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from pandas.api import types as ptypes

from cl_hpc.errors import ConfigError, DataError

# dtype kinds an expectation may name; any other string must equal str(dtype) exactly ("float32")
KINDS = ("float", "int", "numeric", "bool", "string", "category", "datetime")
_EXAMPLES = 3  # offending values quoted per issue


@dataclass(frozen=True)
class Expectations:
    """What a window must look like. Rates and distances are fractions in [0, 1]."""

    columns: Mapping[str, str]  # every expected column -> a KINDS entry or an exact dtype name
    label: Optional[str]  # the label column (also listed in columns); None = no label, no label checks
    classes: tuple[Any, ...]  # the known label values
    reference: Optional[Mapping[Any, float]] = None  # label counts or shares of a trusted window; None = no shift check
    max_nan_rate: float = 0.0  # most NaNs a column may hold, as a share of rows
    nan_rates: Mapping[str, float] = field(default_factory=dict)  # per-column overrides of max_nan_rate
    max_label_tv: Optional[float] = 0.2  # most total-variation distance from reference; None = unchecked
    max_class_shift: Optional[float] = None  # most change of any one class's share; None = unchecked
    allow_extra: bool = False  # extra columns are an issue unless allowed (they are not read)
    min_rows: int = 1  # fewer rows is an "empty" window

    def __post_init__(self) -> None:
        if self.label is not None and self.label not in self.columns:
            raise ConfigError(f"expectations: label {self.label!r} is not among the columns {list(self.columns)}")
        limits = [self.max_nan_rate, *self.nan_rates.values(), self.max_label_tv, self.max_class_shift]
        if any(v is not None and not 0.0 <= v <= 1.0 for v in limits):
            raise ConfigError(f"expectations: rates and distances must be in [0, 1], got max_nan_rate="
                              f"{self.max_nan_rate}, nan_rates={dict(self.nan_rates)}, max_label_tv="
                              f"{self.max_label_tv}, max_class_shift={self.max_class_shift}")

    @classmethod
    def from_frame(cls, df: pd.DataFrame, label: str, **limits: Any) -> Expectations:
        """Expect ``df``'s columns with their kinds, its label values and its label distribution."""
        if label not in df.columns:
            raise DataError(f"reference frame has no label column {label!r}; columns: {list(df.columns)}")
        counts = df[label].dropna().value_counts()
        classes = tuple(sorted(_plain(v) for v in counts.index))
        reference = {_plain(k): int(v) for k, v in counts.items()}
        columns = {str(c): _kind(df[c]) for c in df.columns}
        return cls(columns=columns, label=label, classes=classes, reference=reference, **limits)


@dataclass(frozen=True)
class Issue:
    """One thing wrong with the window."""

    check: str  # empty | missing_column | extra_column | dtype | nan_rate | unknown_label | label_shift
    column: Optional[str]  # the column it concerns; None for the window as a whole
    message: str  # says what was found and what was expected
    value: Optional[float] = None  # what was measured (rate, distance, count)
    limit: Optional[float] = None  # the bound it broke


@dataclass(frozen=True)
class ValidationReport:
    passed: bool
    rows: int
    issues: tuple[Issue, ...]
    label_distribution: dict[str, float]  # share of each known class among the known labels

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "rows": self.rows, "label_distribution": dict(self.label_distribution),
                "issues": [vars(i).copy() for i in self.issues]}


def validate_window(df: pd.DataFrame, expect: Expectations) -> ValidationReport:
    """Every issue of ``df`` against ``expect``; the window passes when there are none."""
    issues = _schema(df, expect)
    if len(df) < expect.min_rows:
        issues.append(Issue("empty", None, f"the window has {len(df)} rows, fewer than min_rows {expect.min_rows}",
                            float(len(df)), float(expect.min_rows)))
        return ValidationReport(False, len(df), tuple(issues), {})
    issues += _nan_rates(df, expect)
    shares: dict[str, float] = {}
    if expect.label is not None and expect.label in df.columns:
        issues += _unknown_labels(df[expect.label], expect)
        shares = label_shares(df[expect.label], expect.classes)
        issues += _label_shift(shares, expect)
    return ValidationReport(not issues, len(df), tuple(issues), shares)


def require_valid(df: pd.DataFrame, expect: Expectations, where: str = "the window") -> ValidationReport:
    """The report of a valid window; otherwise a DataError that lists every issue at once."""
    report = validate_window(df, expect)
    if report.passed:
        return report
    lines = "\n".join(f"  - {i.message}" for i in report.issues)
    raise DataError(f"{where} failed data validation ({len(report.issues)} issue(s), {report.rows} rows); "
                    f"nothing was trained on it:\n{lines}\nFix the batch, or widen the expectation that is "
                    f"too strict (max_nan_rate, nan_rates, max_label_tv, max_class_shift, allow_extra).")


def label_shares(labels: pd.Series, classes: Sequence[Any]) -> dict[str, float]:
    """Share of each known class among the labels that are known classes (keys: str(class))."""
    known = labels[labels.isin(list(classes))]
    counts = known.value_counts()
    total = int(counts.sum())
    return {str(c): (float(counts.get(c, 0)) / total if total else 0.0) for c in classes}


# --- checks --------------------------------------------------------------------------------------

def _schema(df: pd.DataFrame, expect: Expectations) -> list[Issue]:
    issues = [Issue("missing_column", c, f"column {c!r} is missing (expected {kind}); got {list(df.columns)}")
              for c, kind in expect.columns.items() if c not in df.columns]
    if not expect.allow_extra:
        issues += [Issue("extra_column", str(c), f"column {c!r} is not expected (expected columns: "
                         f"{list(expect.columns)}; allow_extra=True permits it)")
                   for c in df.columns if c not in expect.columns]
    for column, spec in expect.columns.items():
        if column in df.columns and not _dtype_matches(df[column], spec):
            issues.append(_dtype_issue(df[column], str(column), spec))
    return issues


def _dtype_issue(series: pd.Series, column: str, spec: str) -> Issue:
    message = f"column {column!r} has dtype {series.dtype}, expected {spec}"
    if spec in ("float", "int", "numeric") or spec.lower().startswith(("float", "int", "uint")):
        bad = series[pd.to_numeric(series, errors="coerce").isna() & series.notna()]
        if len(bad):
            examples = ", ".join(repr(v) for v in bad.unique()[:_EXAMPLES])
            message += f": {len(bad)} value(s) are not numbers, e.g. {examples}"
            return Issue("dtype", column, message, float(len(bad)), 0.0)
    return Issue("dtype", column, message)


def _nan_rates(df: pd.DataFrame, expect: Expectations) -> list[Issue]:
    issues = []
    for column in expect.columns:
        if column not in df.columns:
            continue
        nans = int(df[column].isna().sum())
        limit = expect.nan_rates.get(column, 0.0 if column == expect.label else expect.max_nan_rate)
        rate = nans / len(df)
        if rate > limit:
            issues.append(Issue("nan_rate", column, f"column {column!r} is {rate:.1%} NaN ({nans} of {len(df)} "
                                f"rows), more than its limit {limit:.1%}", rate, limit))
    return issues


def _unknown_labels(labels: pd.Series, expect: Expectations) -> list[Issue]:
    present = labels.dropna()
    unknown = present[~present.isin(list(expect.classes))]
    if unknown.empty:
        return []
    top = unknown.value_counts().head(_EXAMPLES)
    examples = ", ".join(f"{v!r} ({n} rows)" for v, n in top.items())
    return [Issue("unknown_label", expect.label, f"label column {expect.label!r} has {len(unknown)} value(s) "
                  f"outside the known classes {list(expect.classes)}: {examples}", float(len(unknown)), 0.0)]


def _label_shift(shares: dict[str, float], expect: Expectations) -> list[Issue]:
    if expect.reference is None or not shares or sum(shares.values()) == 0:
        return []
    ref = _reference_shares(expect)
    diffs = {c: shares[c] - ref[c] for c in shares}
    issues = []
    tv = 0.5 * sum(abs(d) for d in diffs.values())
    if expect.max_label_tv is not None and tv > expect.max_label_tv:
        issues.append(Issue("label_shift", expect.label, f"label column {expect.label!r}: distribution {_fmt(shares)} "
                            f"is {tv:.3f} in total variation from the reference {_fmt(ref)}, more than "
                            f"max_label_tv {expect.max_label_tv}", tv, expect.max_label_tv))
    limit = expect.max_class_shift
    issues += [Issue("label_shift", expect.label, f"label column {expect.label!r}: class {c} makes up {shares[c]:.1%} "
                     f"of rows vs {ref[c]:.1%} in the reference ({d:+.1%}), beyond max_class_shift {limit}",
                     abs(d), limit)
               for c, d in diffs.items() if limit is not None and abs(d) > limit]
    return issues


def _reference_shares(expect: Expectations) -> dict[str, float]:
    raw = {str(_plain(k)): float(v) for k, v in (expect.reference or {}).items()}
    total = sum(raw.get(str(c), 0.0) for c in expect.classes)
    if total <= 0:
        raise DataError(f"the reference label distribution {dict(expect.reference or {})} has no mass on the "
                        f"known classes {list(expect.classes)}")
    return {str(c): raw.get(str(c), 0.0) / total for c in expect.classes}


# --- dtypes --------------------------------------------------------------------------------------

def _dtype_matches(series: pd.Series, spec: str) -> bool:
    dtype = series.dtype
    is_bool = ptypes.is_bool_dtype(dtype)
    checks = {
        "float": lambda: ptypes.is_float_dtype(dtype),
        "int": lambda: ptypes.is_integer_dtype(dtype) and not is_bool,
        "numeric": lambda: ptypes.is_numeric_dtype(dtype) and not is_bool,
        "bool": lambda: is_bool,
        "string": lambda: ptypes.is_string_dtype(series) and not isinstance(dtype, pd.CategoricalDtype),
        "category": lambda: isinstance(dtype, pd.CategoricalDtype),
        "datetime": lambda: ptypes.is_datetime64_any_dtype(dtype),
    }
    return checks[spec]() if spec in checks else str(dtype) == spec


def _kind(series: pd.Series) -> str:
    """The loosest kind that still means something: int and float are both "numeric", so a column
    that gains a NaN (and turns float) is reported once, as NaNs, not also as a dtype change."""
    for kind in ("bool", "numeric", "datetime", "category", "string"):
        if _dtype_matches(series, kind):
            return kind
    return str(series.dtype)


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _fmt(shares: Mapping[str, float]) -> str:
    return "{" + ", ".join(f"{c}: {p:.3f}" for c, p in shares.items()) + "}"
