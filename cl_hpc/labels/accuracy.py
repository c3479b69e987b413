"""The accuracy of served traffic per version, read from the labelled landing zone: the answer the
client got (``_output.<name>``, logged at serving time) against the label that came later. No model
is loaded and nothing is rescored, so it measures what production saw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from cl_hpc.data.partitions import list_partitions, utc_naive
from cl_hpc.labels.write import OUTPUT_META_PREFIX

COLUMNS = ["version", "rows", "correct", "accuracy"]


def served_accuracy(out_dir: Path | str, label_col: str = "y", output: str = "class",
                    since: Optional[pd.Timestamp] = None, with_defaulted: bool = False) -> pd.DataFrame:
    """One row per served version (``_version``): rows with a label, answers equal to it, and their
    share. Partitions without the ``_output.<output>`` column (a model that logs no class) are
    left out; so are rows labelled by ``default_label`` unless ``with_defaulted`` (no outcome
    came, so the label is an assumption, not an observation). ``since``: partitions starting at or
    after it only (a naive time is UTC)."""
    parts = list_partitions(Path(out_dir))
    if since is not None:
        parts = [p for p in parts if p.start >= utc_naive(pd.Timestamp(since))]
    answer = OUTPUT_META_PREFIX + output
    frames = [_read(p.path, label_col, answer, with_defaulted) for p in parts]
    rows = pd.concat([f for f in frames if f is not None and len(f)] or [pd.DataFrame(columns=["v", "hit"])])
    if not len(rows):
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(COLUMNS, ("str", "int64", "int64", "float64"))})
    table = rows.groupby("v", sort=True)["hit"].agg(["size", "sum"]).reset_index()
    table.columns = ["version", "rows", "correct"]
    table["rows"], table["correct"] = table["rows"].astype("int64"), table["correct"].astype("int64")
    table["accuracy"] = table["correct"] / table["rows"]
    return table[COLUMNS]


def _read(path: Path, label_col: str, answer: str, with_defaulted: bool) -> Optional[pd.DataFrame]:
    names = pq.read_schema(path).names
    if answer not in names or label_col not in names or "_version" not in names:
        return None
    wanted = ["_version", label_col, answer] + (["_defaulted"] if "_defaulted" in names else [])
    frame = pd.read_parquet(path, columns=wanted)
    if not with_defaulted and "_defaulted" in frame:
        frame = frame[~frame["_defaulted"].astype(bool)]
    frame = frame[frame[label_col].notna()]
    return pd.DataFrame({"v": frame["_version"].astype(str), "hit": _equal(frame[label_col], frame[answer])})


def _equal(label: pd.Series, answer: pd.Series) -> pd.Series:
    """Numbers compare as numbers (a class 1 equals a label 1.0), anything else as its text."""
    if pd.api.types.is_numeric_dtype(label) and pd.api.types.is_numeric_dtype(answer):
        return label.astype("float64") == answer.astype("float64")
    return label.astype(str) == answer.astype(str)


def served_hits(paths: Sequence[Path], label_col: str, output: str, version: str,
                timestamp_col: str = "ts") -> np.ndarray:
    """1 where the answer ``version`` gave equals the label joined later, 0 where not: one entry per
    labelled row it served in ``paths`` (defaulted labels left out), oldest first. What the watch's
    performance trigger reads with ``source: served``: its accuracy and its error stream."""
    answer = OUTPUT_META_PREFIX + output
    frames = []
    for path in paths:
        names = pq.read_schema(path).names
        if answer not in names or label_col not in names or "_version" not in names:
            continue
        wanted = [c for c in ("_version", "_defaulted", timestamp_col) if c in names] + [label_col, answer]
        frame = pd.read_parquet(path, columns=list(dict.fromkeys(wanted)))
        frame = frame[(frame["_version"].astype(str) == version) & frame[label_col].notna()]
        if "_defaulted" in frame:
            frame = frame[~frame["_defaulted"].astype(bool)]
        frames.append(frame)
    if not frames:
        return np.zeros(0, dtype=np.int64)
    for frame in frames:  # one file's times may carry a zone and another's not: compare them all in UTC
        if timestamp_col in frame:
            frame[timestamp_col] = utc_naive(frame[timestamp_col])
    rows = pd.concat(frames, ignore_index=True)
    if timestamp_col in rows:
        rows = rows.sort_values(timestamp_col, kind="mergesort", ignore_index=True)
    return _equal(rows[label_col], rows[answer]).to_numpy(dtype=np.int64)
