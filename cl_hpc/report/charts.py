"""The run report's charts as inline SVG text (matplotlib, Agg): the Gantt chart of every attempt, a
task's profile timelines, MFU and stall fraction per task; and the DAG, drawn as plain SVG shapes.

Text stays text (``svg.fonttype: none``): a page is smaller, its numbers are searchable and a browser
test reads them. Each chart is one figure drawn with a few vectorised calls (one ``barh`` per kind of
bar, not one artist per attempt), so a 200-unit run's page renders in well under its 2 s budget
(``scripts/bench_report.py``). Colours follow the states' meaning, the same in every chart and the DAG.
"""

from __future__ import annotations

import html
import io
import re
import statistics
from collections import defaultdict
from typing import Any, Iterable, Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cl_hpc.report.records import AttemptBar, Limit, TaskNode, Timeline  # noqa: E402

# State colours (colour-blind safe, from the Okabe-Ito palette), shared by the DAG, the Gantt and the legend.
STATE_COLOURS = {
    "COMPLETED": "#009E73", "FAILED": "#D55E00", "RUNNING": "#0072B2", "RETRYING": "#E69F00",
    "PENDING": "#BBBBBB", "CANCELLED": "#999999", "PREEMPTED": "#CC79A7", "TIMEOUT": "#D55E00",
}
QUEUE_COLOUR = "#DDDDDD"
_STYLE: dict[str, Any] = {"svg.fonttype": "none", "font.size": 8, "axes.spines.top": False, "axes.spines.right": False,
          "svg.hashsalt": "cl_hpc"}
_ROW_IN = 0.2  # inches per Gantt row
_WIDTH_IN = 11.0  # fits 1280 px at 96 dpi with the page's margins


def _style() -> Any:
    return plt.rc_context(_STYLE)  # type: ignore[arg-type]  # the stubs want literal keys


def colour(state: str) -> str:
    return STATE_COLOURS.get(state, "#777777")


def svg(fig: Figure, tight: bool = True) -> str:
    """The figure as an inline ``<svg>`` element (no XML prolog, no fixed size: the page scales it).
    ``tight=False``: the figure set its own margins (a tight box costs a second layout pass, 0.6 s on a
    200-row Gantt chart)."""
    out = io.StringIO()
    fig.savefig(out, format="svg", bbox_inches="tight" if tight else None, metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = out.getvalue()
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, count=1, flags=re.S)  # RDF boilerplate: bytes, URLs
    # a fixed width/height in pt would overflow narrow pages; the viewBox keeps the aspect ratio
    return re.sub(r'<svg([^>]*?) width="[^"]*" height="[^"]*"', r'<svg\1 class="chart"', text, count=1)


# ---- the Gantt chart -----------------------------------------------------------------------------------


def gantt(attempts: Sequence[AttemptBar], as_of: float) -> str:
    """One row per unit, each attempt a grey queue-wait bar (submit to start, or to ``as_of`` while it waits)
    and a run bar (start to end, or to ``as_of`` while running) coloured by its state (an attempt that ended
    without a recorded start, a job Slurm killed before it began, has no bar); a retry is labelled #n, a
    limit (OOM, TIMEOUT) and an escalation are marked at the bar's end."""
    if not attempts:
        return ""
    rows = _unit_rows(attempts)
    t0 = min(t for a in attempts for t in (a.submitted, a.started) if t is not None)
    with _style():
        fig, ax = plt.subplots(figsize=(_WIDTH_IN, 0.9 + _ROW_IN * len(rows)))
        queued = [(rows[a.unit], waited[0] - t0, waited[1] - t0) for a in attempts
                  if (waited := _waited(a, as_of)) is not None]
        if queued:
            y, left, right = zip(*queued)
            ax.barh(y, [end - begin for begin, end in zip(left, right)], left=left, height=0.6, color=QUEUE_COLOUR,
                    edgecolor="#AAAAAA", linewidth=0.3, label="queue wait")
        ran = [a for a in attempts if a.started is not None]
        for state, group in _by_state(ran).items():
            ax.barh([rows[a.unit] for a in group], [_end(a, as_of) - a.started for a in group],  # type: ignore[operator]
                    left=[a.started - t0 for a in group], height=0.6, color=colour(state),  # type: ignore[operator]
                    label=state.lower())
        for a in ran:
            _marks(ax, a, rows[a.unit], _end(a, as_of) - t0)
        _gantt_axes(ax, rows, len(attempts))
        height = 0.9 + _ROW_IN * len(rows)
        label_in = 0.3 + 0.065 * max(len(u) for u in rows) * (5 / 8 if len(rows) > 40 else 1)
        fig.subplots_adjust(left=label_in / _WIDTH_IN, right=0.97, top=1 - 0.35 / height, bottom=0.45 / height)
        return svg(fig, tight=False)


def _waited(a: AttemptBar, as_of: float) -> Optional[tuple[float, float]]:
    """Its queue wait to draw (from, to): submitted and started later, or still waiting; None otherwise."""
    if a.submitted is None:
        return None
    if a.started is None:
        return (a.submitted, as_of) if a.ended is None else None
    return (a.submitted, a.started) if a.started > a.submitted else None


def _unit_rows(attempts: Sequence[AttemptBar]) -> dict[str, int]:
    """Units top to bottom in the order they were first submitted, then started (a DAG's jobs are all
    submitted at its launch, so the start orders them)."""
    first: dict[str, tuple[float, float]] = {}
    for a in attempts:
        key = (_or_inf(a.submitted if a.submitted is not None else a.started), _or_inf(a.started))
        if a.unit not in first or key < first[a.unit]:
            first[a.unit] = key
    return {unit: i for i, unit in enumerate(sorted(first, key=lambda u: (*first[u], u)))}


def _or_inf(value: Optional[float]) -> float:
    return float("inf") if value is None else value


def _by_state(attempts: Iterable[AttemptBar]) -> dict[str, list[AttemptBar]]:
    groups: dict[str, list[AttemptBar]] = defaultdict(list)
    for a in attempts:
        groups[a.state].append(a)
    return groups


def _end(a: AttemptBar, as_of: float) -> float:
    return a.ended if a.ended is not None else as_of


def _marks(ax: Any, a: AttemptBar, y: int, end: float) -> None:
    notes = [f"#{a.attempt}"] if a.attempt > 1 else []
    if a.limit is not None:
        notes.append(a.limit.value)
    if a.escalation:
        notes.append("↑")  # what was raised: the page's table of retries (a reason is a sentence)
    if notes:
        important = a.limit is not None or a.state == "FAILED"
        ax.text(end, y, " " + " ".join(notes), va="center", fontsize=7, zorder=5,  # over a retry's bar
                color=STATE_COLOURS["FAILED"] if important else "#333333",
                bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none", "pad": 0.4})


def _gantt_axes(ax: Any, rows: dict[str, int], count: int) -> None:
    ax.set_yticks(list(rows.values()), list(rows))
    ax.set_ylim(len(rows) - 0.5, -0.5)  # the first submitted on top
    ax.set_xlabel("seconds since the first submission")
    ax.grid(axis="x", linewidth=0.3, alpha=0.6)
    if len(rows) > 40:  # a wide fan-out: every label would overlap
        ax.tick_params(axis="y", labelsize=5)
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False, ncols=4)  # above the bars
    ax.set_title(f"{count} attempts of {len(rows)} units: queue wait (grey) and run time", loc="left", fontsize=9)


# ---- per-task timelines --------------------------------------------------------------------------------


def timelines(task: str, series: Sequence[Timeline]) -> str:
    """A task's attempts overlaid (one line each; a fan-out's shards together): CPU, RSS against the
    memory request, and GPU utilisation, memory and power where there are GPUs."""
    if not series:
        return ""
    gpu = any(s.gpu_util_pct for s in series)
    panels = 5 if gpu else 2
    with _style():
        fig, axes = plt.subplots(1, panels, figsize=(_WIDTH_IN, 2.2), squeeze=False)
        axes = axes[0]
        alpha = 0.9 if len(series) <= 4 else max(0.25, 4 / len(series))
        for s in series:
            axes[0].plot(s.t, _nan(s.cpu_pct), linewidth=0.9, alpha=alpha)
            axes[1].plot(s.t, _nan(s.rss_mb), linewidth=0.9, alpha=alpha)
        _request_line(axes[0], [s.cpus_requested * 100 for s in series if s.cpus_requested], "requested cores")
        _request_line(axes[1], [s.mem_request_mb for s in series if s.mem_request_mb], "requested memory")
        axes[0].set_title("CPU % (100 = one core)", loc="left", fontsize=8)
        axes[1].set_title("RSS MB", loc="left", fontsize=8)
        if gpu:
            _gpu_panels(axes[2:], series, alpha)
        for ax in axes:
            ax.set_xlabel("s")
            ax.grid(linewidth=0.3, alpha=0.6)
        fig.suptitle(f"{task}: {len(series)} attempt{'s' if len(series) != 1 else ''}", x=0.01, ha="left",
                     fontsize=9)
        return svg(fig)


def _gpu_panels(axes: Sequence[Any], series: Sequence[Timeline], alpha: float) -> None:
    for ax, name, title in zip(axes, ("gpu_util_pct", "gpu_mem_mb", "gpu_power_w"),
                               ("GPU utilisation %", "GPU memory MB", "GPU power W")):
        for s in series:
            for per_gpu in getattr(s, name):
                ax.plot(s.t[:len(per_gpu)], _nan(per_gpu), linewidth=0.9, alpha=alpha)
        ax.set_title(title, loc="left", fontsize=8)


def _request_line(ax: Any, values: Sequence[float], label: str) -> None:
    if values:
        ax.axhline(max(values), color=STATE_COLOURS["FAILED"], linestyle="--", linewidth=1, label=label)
        ax.legend(loc="lower right", fontsize=6, frameon=False)


def _nan(values: Sequence[Optional[float]]) -> list[float]:
    return [float("nan") if v is None else v for v in values]


# ---- MFU and stalls -------------------------------------------------------------------------------------


def mfu_stalls(rows: Sequence[dict[str, Any]]) -> str:
    """Per task (a fan-out's shards together): the median MFU (of the datasheet peak and of the measured
    matmul ceiling) and data-loader stall fraction over its profiled attempts, whiskers from min to max."""
    per_task = _per_task(rows, ("mfu_datasheet", "mfu_ceiling", "stall"))
    if not per_task:
        return ""
    labels = [f"{task} ({n})" if n > 1 else task for task, (n, _) in per_task.items()]
    stats = [values for _, values in per_task.values()]
    y = list(range(len(labels)))
    with _style():
        fig, (mfu, stall) = plt.subplots(1, 2, figsize=(_WIDTH_IN, 0.9 + 0.3 * len(labels)), sharey=True)
        for ax, key, offset, colour_, label in ((mfu, "mfu_datasheet", -0.2, "#0072B2", "of the datasheet peak"),
                                                (mfu, "mfu_ceiling", 0.2, "#56B4E9", "of the measured matmul ceiling"),
                                                (stall, "stall", 0.0, "#E69F00", "median over attempts")):
            mid, low, high = zip(*(v[key] for v in stats))
            ax.barh([i + offset for i in y], mid, height=0.4, color=colour_, label=label,
                    xerr=[[m - lo for m, lo in zip(mid, low)], [hi - m for m, hi in zip(mid, high)]],
                    error_kw={"elinewidth": 0.8, "capsize": 2})
        stall.axvline(20, color=STATE_COLOURS["FAILED"], linestyle="--", linewidth=1, label="data-bound from 20%")
        mfu.set_yticks(y, labels)
        mfu.set_ylim(len(labels) - 0.5, -0.5)
        mfu.set_title("MFU %", loc="left", fontsize=9)
        stall.set_title("data-loader stall, % of step time", loc="left", fontsize=9)
        for ax in (mfu, stall):
            ax.legend(loc="upper left", bbox_to_anchor=(0.0, -0.12 - 0.6 / (0.9 + 0.3 * len(labels))), fontsize=6,
                      frameon=False, ncols=2)
            ax.grid(axis="x", linewidth=0.3, alpha=0.6)
        return svg(fig)


Spread = tuple[float, float, float]  # median, min, max


def _per_task(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, tuple[int, dict[str, Spread]]]:
    """task -> (profiled attempts, {key: (median, min, max) in %}) over the attempts that measured any key."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if any(r.get(k) is not None for k in keys):
            groups[str(r["key"]).split("[", 1)[0]].append(r)
    out = {}
    for task, group in groups.items():
        values = {}
        for k in keys:
            got = [_pct(r.get(k)) for r in group]
            values[k] = (statistics.median(got), min(got), max(got))
        out[task] = (len(group), values)
    return out


def _pct(value: Optional[float]) -> float:
    return 0.0 if value is None else 100.0 * value


# ---- the DAG ---------------------------------------------------------------------------------------------

_NODE_W, _NODE_H, _GAP_X, _GAP_Y = 150, 44, 50, 16


def dag(tasks: Sequence[TaskNode]) -> str:
    """The pipeline as layers left to right (a task one column right of its deepest dependency), each box
    coloured by its state, with its units' states counted; edges as straight arrows. Plain SVG: each node
    is a ``<g class="dag-node" data-task=... data-state=...>`` a test or a stylesheet can find."""
    if not tasks:
        return ""
    depth = _depths(tasks)
    columns: dict[int, list[TaskNode]] = defaultdict(list)
    for t in tasks:
        columns[depth[t.name]].append(t)
    where = {t.name: (d * (_NODE_W + _GAP_X) + 10, i * (_NODE_H + _GAP_Y) + 10)
             for d, col in columns.items() for i, t in enumerate(col)}
    width = (max(columns) + 1) * (_NODE_W + _GAP_X) - _GAP_X + 20
    height = max(len(c) for c in columns.values()) * (_NODE_H + _GAP_Y) - _GAP_Y + 20
    parts = [f'<svg class="dag" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="pipeline DAG">',
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" '
             'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#666"/></marker></defs>']
    for t in tasks:
        for dep in t.depends_on:
            if dep in where:
                (x1, y1), (x2, y2) = where[dep], where[t.name]
                parts.append(f'<line x1="{x1 + _NODE_W}" y1="{y1 + _NODE_H / 2}" x2="{x2}" y2="{y2 + _NODE_H / 2}" '
                             f'stroke="#666" stroke-width="1.2" marker-end="url(#arrow)"/>')
    parts.extend(_node(t, *where[t.name]) for t in tasks)
    parts.append("</svg>")
    return "".join(parts)


def _depths(tasks: Sequence[TaskNode]) -> dict[str, int]:
    by_name = {t.name: t for t in tasks}
    depth: dict[str, int] = {}

    def of(name: str, seen: frozenset[str] = frozenset()) -> int:
        if name not in depth:
            deps = [d for d in by_name[name].depends_on if d in by_name and d not in seen]
            depth[name] = 1 + max((of(d, seen | {name}) for d in deps), default=-1)
        return depth[name]

    for t in tasks:
        of(t.name)
    return depth


def _node(t: TaskNode, x: float, y: float) -> str:
    name, state = html.escape(t.name), html.escape(t.state)
    counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(t.unit_states.items()) if n)
    detail = html.escape(counts if t.units > 1 else t.state.lower())
    return (f'<g class="dag-node" data-task="{name}" data-state="{state}">'
            f'<title>{name}: {html.escape(counts)}</title>'
            f'<rect x="{x}" y="{y}" width="{_NODE_W}" height="{_NODE_H}" rx="6" fill="{colour(t.state)}" '
            f'fill-opacity="0.85" stroke="#333" stroke-width="0.8"/>'
            f'<text x="{x + _NODE_W / 2}" y="{y + 18}" text-anchor="middle" font-size="12" font-weight="bold" '
            f'fill="#fff">{name}{f" ×{t.units}" if t.units > 1 else ""}</text>'
            f'<text x="{x + _NODE_W / 2}" y="{y + 34}" text-anchor="middle" font-size="10" fill="#fff">{detail}</text>'
            f'</g>')


def limits_seen(attempts: Sequence[AttemptBar]) -> dict[str, int]:
    """How many attempts each limit ended (for the page's summary line)."""
    out = {limit.value: 0 for limit in Limit}
    for a in attempts:
        if a.limit is not None:
            out[a.limit.value] += 1
    return out
