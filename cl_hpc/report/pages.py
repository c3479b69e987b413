"""Pages from report records: jinja2 templates (cl_hpc/report/templates/) with the charts inlined, one
self-contained HTML file each (inline SVG and CSS; no script, font or image from anywhere), written
atomically so a reader never sees half a page.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

import jinja2

from cl_hpc.atomic import write_bytes_atomic
from cl_hpc.report import charts
from cl_hpc.report.records import AttemptBar, RunReport, Timeline, TimeSource

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("cl_hpc.report", "templates"),
                          autoescape=jinja2.select_autoescape(["j2", "html"]), undefined=jinja2.StrictUndefined,
                          trim_blocks=True, lstrip_blocks=True)


def _when(epoch: Optional[float]) -> str:
    if epoch is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.0%}" if value >= 0.01 else f"{value:.1%}"


_ENV.filters.update(when=_when, duration=_duration, pct=_pct)


_ENDED_BADLY = ("FAILED", "TIMEOUT", "PREEMPTED")  # attempt states the retries table lists


def _version() -> str:
    from cl_hpc.registry.provenance import package_versions

    return package_versions(("cl_hpc",))["cl_hpc"]  # installed, else the checkout's cl_hpc.__version__


def render_run(report: RunReport) -> str:
    """The run's page: state, summary, DAG, Gantt, failures, per-task profiles, MFU/stalls, efficiency."""
    grouped = _by_task(report.timelines)
    sampled = {task: series for task, series in grouped.items() if any(s.t for s in series)}
    drawn = {"dag": charts.dag(report.tasks), "gantt": charts.gantt(report.attempts, report.as_of),
             "timelines": {task: charts.timelines(task, series) for task, series in sampled.items()},
             "unsampled": [task for task in grouped if task not in sampled],
             "mfu": charts.mfu_stalls(report.efficiency)}
    root = next((f for f in report.failures if f.root_cause), None)
    return _ENV.get_template("run.html.j2").render(
        r=report, s=_summary(report), charts=drawn, root=root, sources=_sources(report.attempts),
        diagnoses=_diagnoses(report.efficiency),
        ended_badly=[a for a in report.attempts if a.state in _ENDED_BADLY or a.limit is not None or a.escalation],
        version=_version(), written=_when(report.as_of))


def _by_task(series: list[Timeline]) -> dict[str, list[Timeline]]:
    """Timelines grouped by task (a unit ``map[3]`` belongs to ``map``), in the order they appear."""
    groups: dict[str, list[Timeline]] = defaultdict(list)
    for s in series:
        groups[s.unit.split("[", 1)[0]].append(s)
    return dict(groups)


def _diagnoses(rows: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    """(task, diagnosis, attempts) once per distinct diagnosis of a task: a fan-out says it once."""
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for r in rows:
        if r.get("diagnosis") and r.get("stall") is not None:
            counts[(str(r["key"]).split("[", 1)[0], str(r["diagnosis"]))] += 1
    return [(task, text, n) for (task, text), n in counts.items()]


def _summary(report: RunReport) -> dict[str, Any]:
    attempts = report.attempts
    starts = [t for a in attempts for t in (a.submitted if a.submitted is not None else a.started,) if t is not None]
    ends = [a.ended if a.ended is not None else report.as_of for a in attempts if a.started is not None]
    queue = sum(a.started - a.submitted for a in attempts if a.started is not None and a.submitted is not None)
    units = {a.unit for a in attempts} | {f.unit for f in report.failures}
    count = sum(t.units for t in report.tasks) or len(units)
    return {"units": count, "attempts": len(attempts), "failed": len({f.unit for f in report.failures}),
            "retries": sum(1 for a in attempts if a.attempt > 1), "limits": charts.limits_seen(attempts),
            "wall": (max(ends) - min(starts)) if starts and ends else None, "queue": queue if attempts else None}


def _sources(attempts: list[AttemptBar]) -> str:
    kinds = {a.source for a in attempts}
    names = {TimeSource.SACCT: "Slurm's accounting (sacct Submit, Start, End)",
             TimeSource.LOCAL: "the run directory's attempt records"}
    return " and ".join(names[k] for k in TimeSource if k in kinds) or "nowhere yet"


def write_page(path: Path, text: str) -> Path:
    write_bytes_atomic(path, text.encode("utf-8"))
    return path



