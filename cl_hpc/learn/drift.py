"""Per-feature data drift between a reference window (what the model learnt from) and a current one.

Per feature (the result is JSON, to be logged with the run):

- numeric, with at most ``large_reference_rows`` reference values: the two-sample Kolmogorov-Smirnov
  test (scipy.stats.ks_2samp). It drifts when p < alpha / m: Bonferroni over the m features that get
  a test, so the chance of any false alarm over the whole dataset stays at most alpha;
- numeric, larger reference: the Wasserstein-1 distance (scipy.stats.wasserstein_distance) divided
  by the reference's std (or IQR), against ``wasserstein_threshold``. With that many rows every
  p-value is tiny for shifts nobody cares about; a distance in units of the reference's spread is an
  effect size, and it does not shrink as the windows grow;
- categorical: the chi-square test of homogeneity (scipy.stats.chi2_contingency, its default Yates
  correction when one degree of freedom is left) on the 2 x K table of category counts, at the same
  Bonferroni level. A category seen in one window only counts 0 in the other; categories whose
  expected count is below ``min_expected`` are pooled first (Cochran's rule for the chi2 approximation);
- every feature: the Population Stability Index over the reference's quantile bins (the categories,
  for a categorical feature), each proportion floored at ``psi_epsilon`` so an empty bin stays
  finite: "warn" from ``psi_warn``, "alert" from ``psi_alert``. PSI is reported next to the test; it
  does not decide ``drifted``.

The dataset drifts when at least ``share_threshold`` of its features drift.

A window is a pandas or a dask DataFrame. One ``dask.compute`` over both windows makes a summary per
partition, and the summaries are combined: category counts are summed (exact); a numeric feature
keeps a bottom-k sample (every value gets a seeded uniform random key; the ``sample_rows`` smallest
keys survive each partition and the merge), a uniform sample without replacement, or the whole column
when it holds no more. So dask gives exactly the pandas answers unless a feature has more than
``sample_rows`` values; then KS runs on the sample (valid, less power) and the Wasserstein distance
and PSI are estimates (sampling error about 1/sqrt(sample_rows) of a std).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from cl_hpc.config.ml import DataConf
from cl_hpc.data.landing import resolve_dir
from cl_hpc.data.windows import Partition, check_windows, dask_threads, list_partitions, read_window, select_windows
from cl_hpc.errors import ConfigError, DataError

SCALES = ("std", "iqr")
Frame = Any  # a pandas.DataFrame or a dask.dataframe.DataFrame


@dataclass
class DriftConf:
    """When a feature, and the dataset, count as drifted."""

    alpha: float = 0.05  # family-wise false-alarm rate over all tested features (each gets alpha / m)
    # above this many reference values a numeric feature gets the scaled Wasserstein distance, not KS
    large_reference_rows: int = 100_000
    wasserstein_threshold: float = 0.1  # scaled distance from which a feature drifts (0.1 = a tenth of a std)
    wasserstein_scale: str = "std"  # std | iqr (robust to outliers); the reference's, divides the distance
    psi_bins: int = 10  # quantile bins of the reference for a numeric PSI (fewer where values tie)
    psi_warn: float = 0.1  # PSI from which a feature is "warn" (the usual rule of thumb: moderate shift)
    psi_alert: float = 0.25  # PSI from which a feature is "alert" (a significant shift)
    psi_epsilon: float = 1e-4  # floor on a bin's proportion: an empty bin gives a large, finite PSI
    min_expected: float = 5.0  # chi-square: categories expected fewer times than this are pooled
    share_threshold: float = 0.5  # the dataset drifts when at least this share of its features drift
    sample_rows: int = 200_000  # numeric values kept per feature and window; more are bottom-k sampled
    seed: int = 0  # seed of the sample's random keys: the same data always gives the same answer

    def __post_init__(self) -> None:
        problems = _conf_problems(self)
        if problems:
            raise ConfigError("invalid drift config: " + "; ".join(problems))


def _conf_problems(c: DriftConf) -> list[str]:
    checks = [
        (0 < c.alpha < 1, f"alpha={c.alpha} must be in (0, 1)"),
        (c.large_reference_rows >= 1, f"large_reference_rows={c.large_reference_rows} must be >= 1"),
        (c.wasserstein_threshold > 0, f"wasserstein_threshold={c.wasserstein_threshold} must be > 0"),
        (c.wasserstein_scale in SCALES, f"wasserstein_scale={c.wasserstein_scale!r}; valid: {list(SCALES)}"),
        (c.psi_bins >= 2, f"psi_bins={c.psi_bins} must be >= 2"),
        (0 < c.psi_warn < c.psi_alert, f"psi_warn={c.psi_warn} and psi_alert={c.psi_alert} need 0 < warn < alert"),
        (0 < c.psi_epsilon < 1, f"psi_epsilon={c.psi_epsilon} must be in (0, 1)"),
        (c.min_expected >= 0, f"min_expected={c.min_expected} must be >= 0"),
        (0 < c.share_threshold <= 1, f"share_threshold={c.share_threshold} must be in (0, 1]"),
        (c.sample_rows >= 2, f"sample_rows={c.sample_rows} must be >= 2"),
    ]
    return [message for ok, message in checks if not ok]


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's verdict. ``drifted``: p_value < threshold for ks/chi2, statistic >= threshold
    for wasserstein."""

    feature: str
    kind: str  # numeric | categorical
    method: str  # ks | wasserstein | chi2
    statistic: float  # KS D, the chi-square statistic, or the scaled Wasserstein distance
    p_value: Optional[float]  # None for wasserstein: a distance, not a test
    threshold: float  # the Bonferroni level alpha / m for a test; the distance threshold for wasserstein
    drifted: bool
    psi: float
    psi_level: str  # ok | warn | alert
    n_reference: int  # non-null values in the reference window
    n_current: int  # non-null values in the current window
    sampled: bool  # the numbers come from a bottom-k sample of a window
    note: str = ""  # why a statistic is degenerate (a constant reference, a single category)


@dataclass(frozen=True)
class DatasetDrift:
    """The dataset's verdict and every feature's."""

    features: tuple[FeatureDrift, ...]
    share: float  # drifted features / features
    share_threshold: float
    drifted: bool  # share >= share_threshold
    alpha: float
    rows_reference: int
    rows_current: int

    @property
    def drifted_features(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]

    @property
    def psi_alerts(self) -> list[str]:
        return [f.feature for f in self.features if f.psi_level == "alert"]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only; :meth:`from_dict` reads it back."""
        summary = {k: v for k, v in dataclasses.asdict(self).items() if k != "features"}
        return {**summary, "n_features": len(self.features), "drifted_features": self.drifted_features,
                "psi_alerts": self.psi_alerts, "features": [dataclasses.asdict(f) for f in self.features]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetDrift:
        names = {f.name for f in dataclasses.fields(cls)} - {"features"}
        features = tuple(FeatureDrift(**f) for f in data["features"])
        return cls(features=features, **{k: data[k] for k in names})


# --- pure statistics on arrays ------------------------------------------------------------------


def quantile_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """Inner edges at the reference's 1/bins .. (bins-1)/bins quantiles (numpy's linear method);
    repeated edges (tied values) are merged, so a discrete feature gets fewer bins."""
    return np.unique(np.quantile(reference, np.linspace(0.0, 1.0, bins + 1)[1:-1]))


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin (-inf, e0], (e0, e1], ..., (e_last, inf)."""
    return np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)


def psi(reference_counts: np.ndarray, current_counts: np.ndarray, epsilon: float = 1e-4) -> float:
    """Population Stability Index: sum over bins of (c - r) * ln(c / r), shares floored at epsilon."""
    r = np.maximum(np.asarray(reference_counts, float) / np.sum(reference_counts), epsilon)
    c = np.maximum(np.asarray(current_counts, float) / np.sum(current_counts), epsilon)
    return float(np.sum((c - r) * np.log(c / r)))


def psi_numeric(reference: np.ndarray, current: np.ndarray, bins: int = 10, epsilon: float = 1e-4) -> float:
    edges = quantile_edges(reference, bins)
    return psi(bin_counts(reference, edges), bin_counts(current, edges), epsilon)


def psi_level(value: float, conf: DriftConf) -> str:
    return "alert" if value >= conf.psi_alert else "warn" if value >= conf.psi_warn else "ok"


def pool_rare(table: np.ndarray, min_expected: float) -> np.ndarray:
    """Pool the columns of a 2 x K count table whose smaller expected count is under min_expected.

    A column's expected counts are its total times each row's share, so it is rare exactly when its
    total is below ``min_expected * N / smallest row total``. If the pooled column is still rare it is
    folded into the smallest kept one rather than left to break the approximation.
    """
    need = min_expected * table.sum() / table.sum(axis=1).min()
    rare = table.sum(axis=0) < need
    if not rare.any():
        return table
    kept, pooled = table[:, ~rare].copy(), table[:, rare].sum(axis=1)
    if pooled.sum() >= need or kept.shape[1] == 0:
        return np.column_stack([kept, pooled])
    kept[:, kept.sum(axis=0).argmin()] += pooled
    return kept


# --- reading windows: one summary per partition, then combined --------------------------------


@dataclass
class _Column:
    n: int  # non-null values in the window (all of them, not only the kept sample)
    keys: np.ndarray  # the kept values' random keys
    values: np.ndarray  # at most sample_rows values, a uniform sample when n exceeds it


@dataclass
class _Summary:
    rows: int
    numeric: dict[str, _Column]
    counts: dict[str, Counter[str]]


def _bottom_k(column: _Column, k: int) -> _Column:
    if len(column.keys) <= k:
        return column
    keep = np.argpartition(column.keys, k - 1)[:k]
    return _Column(column.n, column.keys[keep], column.values[keep])


def _summarise_part(part: pd.DataFrame, kinds: dict[str, str], k: int, seed: tuple[int, ...],
                    label: str) -> _Summary:
    keys = np.random.default_rng(seed).random(len(part))
    summary = _Summary(len(part), {}, {})
    for name, kind in kinds.items():
        col = part[name]
        present = col.notna().to_numpy()
        if kind == "categorical":
            summary.counts[name] = Counter({str(v): int(c) for v, c in col[present].value_counts().items()})
            continue
        values = col.to_numpy(dtype=float, na_value=np.nan)[present]
        if not np.isfinite(values).all():
            raise DataError(f"numeric feature {name!r} holds infinite values in the {label} window; "
                            f"clean them (or replace them with nulls, which are skipped)")
        summary.numeric[name] = _bottom_k(_Column(len(values), keys[present], values), k)
    return summary


def _merge(parts: Sequence[_Summary], k: int) -> _Summary:
    merged = _Summary(sum(p.rows for p in parts), {}, {})
    for name in parts[0].numeric:
        cols = [p.numeric[name] for p in parts]
        joined = _Column(sum(c.n for c in cols), np.concatenate([c.keys for c in cols]),
                         np.concatenate([c.values for c in cols]))
        merged.numeric[name] = _bottom_k(joined, k)
    for name in parts[0].counts:
        merged.counts[name] = sum((p.counts[name] for p in parts), Counter())
    return merged


def _is_dask(frame: Frame) -> bool:
    return type(frame).__module__.startswith(("dask.", "dask_expr."))  # no dask import for pandas input


def _part_summaries(frame: Frame, kinds: dict[str, str], conf: DriftConf, window: int, label: str) -> list[Any]:
    """Pandas: the summary of the frame as one partition. Dask: one delayed summary per partition."""
    selected = frame[list(kinds)]  # read only the features' columns
    if not _is_dask(frame):
        return [_summarise_part(selected, kinds, conf.sample_rows, (conf.seed, window, 0), label)]
    import dask

    summarise = dask.delayed(_summarise_part, pure=True)
    return [summarise(part, kinds, conf.sample_rows, (conf.seed, window, i), label)
            for i, part in enumerate(selected.to_delayed())]


def _summarise(reference: Frame, current: Frame, kinds: dict[str, str], conf: DriftConf) -> tuple[_Summary, _Summary]:
    ref = _part_summaries(reference, kinds, conf, 0, "reference")
    cur = _part_summaries(current, kinds, conf, 1, "current")
    if _is_dask(reference) or _is_dask(current):
        import dask

        ref, cur = dask.compute(ref, cur)  # both windows in one pass, partitions in parallel
    return _merge(ref, conf.sample_rows), _merge(cur, conf.sample_rows)


# --- checks -------------------------------------------------------------------------------------


def _kinds(reference: Frame, features: Optional[Sequence[str]], categorical: Sequence[str]) -> dict[str, str]:
    names = list(reference.columns) if features is None else list(features)
    if not names or len(set(names)) != len(names):
        raise DataError(f"features {names} must be non-empty and name each column once (features=[...])")
    unknown = sorted(set(categorical) - set(names))
    if unknown:
        raise DataError(f"categorical features {unknown} are not among the features {names}")
    return {n: "categorical" if n in categorical else "numeric" for n in names}


def _check_columns(frame: Frame, kinds: dict[str, str], label: str) -> None:
    """Names and dtypes come from the frame's metadata: a dask window is not read for this."""
    columns = list(frame.columns)
    for name, kind in kinds.items():
        if name not in columns:
            raise DataError(f"feature {name!r} is missing from the {label} window; its columns are {columns}")
        dtype = frame.dtypes[name]
        if kind == "numeric" and not pd.api.types.is_numeric_dtype(dtype):
            raise DataError(f"numeric feature {name!r} has dtype {dtype} in the {label} window, not a number; "
                            f"fix the data, or pass it in categorical=[...] to compare its categories")


def _check_counts(summary: _Summary, label: str) -> None:
    if summary.rows == 0:
        raise DataError(f"the {label} window has no rows; widen it or check its partitions")
    sizes = {**{n: c.n for n, c in summary.numeric.items()}, **{n: sum(c.values()) for n, c in summary.counts.items()}}
    for name, size in sizes.items():
        if size == 0:
            raise DataError(f"feature {name!r} has no non-null values in the {label} window ({summary.rows} rows)")


# --- per-feature verdicts -----------------------------------------------------------------------


def _scaled_wasserstein(ref: np.ndarray, cur: np.ndarray, conf: DriftConf) -> tuple[float, str]:
    distance = float(stats.wasserstein_distance(ref, cur))
    q25, q75 = np.quantile(ref, [0.25, 0.75])
    scale = float(q75 - q25) if conf.wasserstein_scale == "iqr" else float(np.std(ref, ddof=1))
    if scale > 0:
        return distance / scale, ""
    return distance, f"the reference's {conf.wasserstein_scale} is 0, so the distance is not scaled"


def _numeric(name: str, ref: _Column, cur: _Column, level: float, conf: DriftConf) -> FeatureDrift:
    psi_value = psi_numeric(ref.values, cur.values, conf.psi_bins, conf.psi_epsilon)
    common: dict[str, Any] = dict(feature=name, kind="numeric", psi=psi_value, psi_level=psi_level(psi_value, conf),
                                  n_reference=ref.n, n_current=cur.n, sampled=max(ref.n, cur.n) > conf.sample_rows)
    if ref.n > conf.large_reference_rows:
        distance, note = _scaled_wasserstein(ref.values, cur.values, conf)
        threshold = 0.0 if note else conf.wasserstein_threshold  # unscaled: any difference is drift
        drifted = distance > 0 if note else distance >= threshold
        return FeatureDrift(method="wasserstein", statistic=distance, p_value=None, threshold=threshold,
                            drifted=bool(drifted), note=note, **common)
    result = stats.ks_2samp(ref.values, cur.values)
    p_value = float(result.pvalue)
    return FeatureDrift(method="ks", statistic=float(result.statistic), p_value=p_value, threshold=level,
                        drifted=p_value < level, **common)


def _categorical(name: str, ref: Counter[str], cur: Counter[str], level: float, conf: DriftConf) -> FeatureDrift:
    categories = sorted(set(ref) | set(cur))
    table = np.array([[ref[c] for c in categories], [cur[c] for c in categories]])
    psi_value = psi(table[0], table[1], conf.psi_epsilon)
    pooled = pool_rare(table, conf.min_expected)
    statistic, p_value, note = 0.0, 1.0, "a single category (after pooling the rare ones): nothing to test"
    if pooled.shape[1] >= 2:
        chi2, p, _, _ = stats.chi2_contingency(pooled)
        statistic, p_value, note = float(chi2), float(p), ""
    return FeatureDrift(feature=name, kind="categorical", method="chi2", statistic=statistic, p_value=p_value,
                        threshold=level, drifted=p_value < level, psi=psi_value,
                        psi_level=psi_level(psi_value, conf), n_reference=int(table[0].sum()),
                        n_current=int(table[1].sum()), sampled=False, note=note)


def detect_drift(reference: Frame, current: Frame, features: Optional[Sequence[str]] = None,
                 categorical: Sequence[str] = (), conf: Optional[DriftConf] = None) -> DatasetDrift:
    """Compare two windows (pandas or dask DataFrames) feature by feature.

    ``features``: the columns to compare (None = every column of the reference); those named in
    ``categorical`` get chi-square, the others must be numeric (bool counts) and get KS or the
    scaled Wasserstein distance. Nulls are skipped. Bad input is a DataError naming the feature.
    """
    conf = conf or DriftConf()
    kinds = _kinds(reference, features, categorical)
    _check_columns(reference, kinds, "reference")
    _check_columns(current, kinds, "current")
    ref, cur = _summarise(reference, current, kinds, conf)
    _check_counts(ref, "reference")
    _check_counts(cur, "current")
    tested = sum(1 for n, k in kinds.items() if k == "categorical" or ref.numeric[n].n <= conf.large_reference_rows)
    level = conf.alpha / max(tested, 1)  # Bonferroni
    results = tuple(_numeric(n, ref.numeric[n], cur.numeric[n], level, conf) if k == "numeric"
                    else _categorical(n, ref.counts[n], cur.counts[n], level, conf) for n, k in kinds.items())
    share = sum(f.drifted for f in results) / len(results)
    return DatasetDrift(features=results, share=share, share_threshold=conf.share_threshold,
                        drifted=share >= conf.share_threshold, alpha=conf.alpha,
                        rows_reference=ref.rows, rows_current=cur.rows)


# --- the landing zone ---------------------------------------------------------------------------


def window_drift(data: DataConf, reference: Sequence[Partition], current: Sequence[Partition],
                 conf: Optional[DriftConf] = None, cpus: Optional[int] = None) -> DatasetDrift:
    """Drift of the data's features between two lists of landing-zone partitions.

    Every file of both windows is checked against the reference's first file (columns, types)
    before any row is read; the windows are then read lazily with dask on ``cpus`` threads.
    """
    if not reference or not current:
        raise DataError(f"drift needs partitions in both windows; got {len(reference)} reference and "
                        f"{len(current)} current partition files")
    cols = check_windows({"reference": list(reference), "current": list(current)}, data)
    with dask_threads(cpus):
        return detect_drift(read_window(list(reference), cols), read_window(list(current), cols),
                            features=cols.features, conf=conf)


def landing_drift(data: DataConf, conf: Optional[DriftConf] = None, cpus: Optional[int] = None) -> DatasetDrift:
    """Drift from the train window (reference) to the eval window (current) that ``data`` selects."""
    train, evaluate = select_windows(list_partitions(resolve_dir(data.landing_dir), data.timestamp_col), data)
    return window_drift(data, train, evaluate, conf, cpus)
