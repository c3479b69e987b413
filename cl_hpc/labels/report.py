"""What one label join did, as a typed record (returned, printed, and the pipeline task's outputs)."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from rich.table import Table


class OutcomeStatus(enum.Enum):
    """What became of an outcome row, decided once, in the run where every prediction it could
    belong to lies before the watermark (before that it is pending, and read again next run)."""

    USED = "used"  # it labels a prediction of a partition this run wrote
    LATE = "late"  # its prediction's partition was written by an earlier run: kept in _outcomes/, not lost
    OUTSIDE_WINDOW = "outside_window"  # it belongs to a prediction written now, but came after the window
    SUPERSEDED = "superseded"  # an earlier outcome labels its prediction
    UNMATCHED = "unmatched"  # no logged prediction (of the role, within the lookback) is its
    NO_VALUE = "no_value"  # it carries no label (labels.value=label) or no reward (value=reward)
    PENDING = "pending"  # it may still label a prediction whose partition is not mature yet


@dataclass(frozen=True)
class Delays:
    """Outcome time - prediction time of the labelled predictions, seconds (None when there are none)."""

    p50: Optional[float] = None
    p90: Optional[float] = None
    p99: Optional[float] = None
    max: Optional[float] = None

    @classmethod
    def of(cls, seconds: np.ndarray) -> Delays:
        if not len(seconds):
            return cls()
        p50, p90, p99 = (float(v) for v in np.percentile(seconds, [50, 90, 99]))
        return cls(p50, p90, p99, float(seconds.max()))


@dataclass(frozen=True)
class JoinReport:
    run: Optional[str]  # the run's stamp in the ledger; None when it changed nothing
    now: str  # the clock the run used (ISO 8601, UTC)
    watermark: str  # every prediction before it is joined (ISO 8601, UTC)
    log_dir: str
    out_dir: str
    written: tuple[str, ...]  # partition files this run wrote
    skipped: tuple[str, ...]  # mature partitions whose file was there already (never rewritten)
    mature: int  # predictions of the written partitions, before dropping
    labelled: int  # of those, labelled by an outcome within the window
    defaulted: int  # of those, given default_label (missing=default)
    dropped: int  # of those, left out (missing=drop)
    pending: int  # predictions not mature yet: a later run joins them
    late_predictions: int  # predictions logged after their partition was written: kept in _late/
    delays: Delays
    outcomes_read: int
    outcomes: dict[str, int]  # OutcomeStatus value -> outcome rows decided (or pending) in this run
    files: tuple[str, ...]  # side files written: _late/, _outcomes/, _ledger/

    @property
    def coverage(self) -> Optional[float]:
        """Share of the mature predictions that an outcome labelled (None: nothing matured)."""
        return self.labelled / self.mature if self.mature else None

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.update(written=list(self.written), skipped=list(self.skipped), files=list(self.files),
                   coverage=self.coverage)
        return out


def summary_table(report: JoinReport) -> Table:
    """The report as a two-column rich table (plain text cells: paths are not markup)."""
    table = Table(title=f"label join {report.run or '(nothing new)'} · {report.out_dir}", title_justify="left",
                  show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value", overflow="fold")
    for what, value in _rows(report):
        table.add_row(what, value)
    return table


def _rows(r: JoinReport) -> list[tuple[str, str]]:
    cover = "-" if r.coverage is None else f"{r.coverage:.1%}"
    d = r.delays
    delays = "-" if d.max is None else f"p50 {d.p50:.1f} s · p90 {d.p90:.1f} s · p99 {d.p99:.1f} s · max {d.max:.1f} s"
    outcomes = " · ".join(f"{k} {v}" for k, v in r.outcomes.items() if v) or "-"
    return [
        ("clock", f"now {r.now} · watermark {r.watermark}"),
        ("partitions", f"{len(r.written)} written, {len(r.skipped)} already there"
                       + (f" ({_span(r.written)})" if r.written else "")),
        ("predictions", f"{r.mature} mature: {r.labelled} labelled, {r.defaulted} defaulted, {r.dropped} dropped; "
                        f"{r.pending} pending; {r.late_predictions} late"),
        ("label coverage", cover),
        ("label delay", delays),
        ("outcomes", f"{r.outcomes_read} read: {outcomes}"),
        ("files", "\n".join(r.files) or "-"),
    ]


def _span(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else f"{names[0]} .. {names[-1]}"
