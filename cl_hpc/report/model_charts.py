"""The model page's drawings: the X.Y lineage as plain SVG (each version a ``<g class="version">`` a
test or a stylesheet can find, as the run page's DAG), and matplotlib SVG charts in the run page's
style (:mod:`cl_hpc.report.charts`): the alias timeline, the metrics across versions, the triggers'
values against their thresholds and the backtest's freshness curve.

Times on the charts are UTC, as the page's ``when`` filter writes them. matplotlib's date numbers
are days since 1970-01-01 UTC, so an epoch second is ``t / 86400`` and no datetime is built per point.
"""

from __future__ import annotations

import html
from collections import defaultdict
from datetime import timezone
from typing import Any, Mapping, Optional, Sequence

import matplotlib.dates as mdates

from cl_hpc.report.charts import _WIDTH_IN, STATE_COLOURS, _style, plt, svg
from cl_hpc.report.model_page import AliasMove, FreshnessPoint, Kind, VersionNode, WatchCheck

# Okabe-Ito, as the run page: a retrain dark blue, a fine-tune sky blue; hybrid orange (the backtest's third).
KIND_COLOURS = {Kind.STATELESS: "#0072B2", Kind.STATEFUL: "#56B4E9"}
STRATEGY_COLOURS = {"stateless": "#0072B2", "stateful": "#56B4E9", "hybrid": "#E69F00", "all": "#666666"}
REJECTED = "#BBBBBB"  # a challenger the gate (or an experiment) turned down
BAD, WARN = STATE_COLOURS["FAILED"], STATE_COLOURS["RETRYING"]
_DAY = 86400.0
_MAX_PANELS = 4  # metrics charted; the table has every one

# ---- the lineage tree ---------------------------------------------------------------------------------

_W, _H, _GAP_X, _GAP_Y = 150, 56, 34, 26


def lineage(versions: Sequence[VersionNode]) -> str:
    """One row per major (its retrain X.0, then each fine-tune X.1, X.2, ... to its right), an arrow from
    each parent: solid within a major (a fine-tune), dashed into an X.0 that recorded the version it
    replaced. A version's fill says its kind, grey when rejected; its border an alias, a stale gate or
    a quarantine."""
    if not versions:
        return ""
    rows = {major: i for i, major in enumerate(sorted({v.major for v in versions}))}
    where = {v.version: (10 + v.minor * (_W + _GAP_X), 10 + rows[v.major] * (_H + _GAP_Y)) for v in versions}
    width = max(x for x, _ in where.values()) + _W + 10
    height = max(y for _, y in where.values()) + _H + 10
    parts = [f'<svg class="lineage" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             f'xmlns="http://www.w3.org/2000/svg" role="img" aria-label="version lineage">',
             '<defs><marker id="lineage-arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
             'markerHeight="6" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker>'
             '</defs>']
    parts.extend(_edge(v, where) for v in versions if v.parent in where)
    parts.extend(_version(v, *where[v.version]) for v in versions)
    parts.append("</svg>")
    return "".join(parts)


def _edge(v: VersionNode, where: Mapping[str, tuple[int, int]]) -> str:
    (px, py), (cx, cy) = where[v.parent], where[v.version]  # type: ignore[index]
    common = (f'class="edge" data-from="{v.parent}" data-to="{v.version}" fill="none" stroke="#555" '
              f'stroke-width="1.2" marker-end="url(#lineage-arrow)"')
    if py == cy:  # a fine-tune: the next box on the same row
        return f'<path {common} d="M {px + _W} {py + _H / 2} L {cx} {cy + _H / 2}" data-kind="fine-tune"/>'
    down = cy > py
    y1, y2 = (py + _H, cy) if down else (py, cy + _H)
    mid = (y1 + y2) / 2
    return (f'<path {common} stroke-dasharray="5 3" data-kind="retrain" '
            f'd="M {px + _W / 2} {y1} C {px + _W / 2} {mid} {cx + _W / 2} {mid} {cx + _W / 2} {y2}"/>')


def _version(v: VersionNode, x: int, y: int) -> str:
    rejected = "rejected" in v.tags
    fill = REJECTED if rejected else KIND_COLOURS[v.kind]
    ink = "#fff" if fill == KIND_COLOURS[Kind.STATELESS] else "#222"
    stroke, width, dash = _border(v)
    attrs = (f'data-version="{v.version}" data-strategy="{v.kind.value}" data-strategy-name="{_e(v.strategy)}" '
             f'data-parent="{v.parent or ""}" data-tags="{_e(" ".join(v.marks))}" '
             f'data-aliases="{_e(" ".join(v.aliases))}"')
    third = " ".join([*v.aliases, *v.marks]) or _gate_text(v)
    mid = x + _W / 2
    return (f'<g class="version" {attrs}><title>{_e(_hover(v))}</title>'
            f'<rect x="{x}" y="{y}" width="{_W}" height="{_H}" rx="6" fill="{fill}" stroke="{stroke}" '
            f'stroke-width="{width}"{dash}/>'
            f'<text x="{mid}" y="{y + 17}" text-anchor="middle" font-size="13" font-weight="bold" fill="{ink}">'
            f'{v.version}</text>'
            f'<text x="{mid}" y="{y + 32}" text-anchor="middle" font-size="10" fill="{ink}">{_e(v.strategy)}</text>'
            f'<text x="{mid}" y="{y + 47}" text-anchor="middle" font-size="10" font-weight="bold" fill="{ink}">'
            f'{_e(_clip(third, 26))}</text></g>')


def _border(v: VersionNode) -> tuple[str, float, str]:
    if v.quarantined:
        return BAD, 3.0, ""
    if "stale-gate" in v.tags:
        return WARN, 2.5, ' stroke-dasharray="5 3"'
    if v.aliases:
        return "#000", 2.5, ""
    return "#333", 0.8, ""


def _gate_text(v: VersionNode) -> str:
    if v.gate_value is None:
        return ""
    return f"{v.gate_metric} {v.gate_value:.4g}"


def _hover(v: VersionNode) -> str:
    lines = [f"{v.version}: {v.strategy}" + (f" of {v.parent}" if v.parent else ""),
             *([f"aliases: {', '.join(v.aliases)}"] if v.aliases else []),
             *([f"tags: {', '.join(v.tags)}"] if v.tags else []),
             *([f"quarantined: {v.quarantined}"] if v.quarantined else []),
             *([f"gate: {v.gate_metric} {_num(v.gate_value)} vs champion {_num(v.champion_at_gate)}"
                f" ({'passed' if v.gate_passed else 'failed'})"] if v.gate_metric else []),
             *([f"why {v.kind.value}: {v.strategy_reason}"] if v.strategy_reason else [])]
    return "\n".join(lines)


def _num(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.4g}"


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def _e(text: str) -> str:
    return html.escape(text, quote=True)


# ---- the alias timeline ----------------------------------------------------------------------------


def alias_timeline(events: Sequence[AliasMove], kinds: Mapping[str, Kind], as_of: float) -> str:
    """One row per alias: a bar for each stretch it pointed at one version (labelled, coloured by the
    version's kind), to the next move or ``as_of``; a rollback marked ▼ at its time."""
    if not events:
        return ""
    rows = {alias: i for i, alias in enumerate(dict.fromkeys(e.alias for e in events))}
    spans = _spans(events, as_of)
    with _style():
        fig, ax = plt.subplots(figsize=(_WIDTH_IN, 1.1 + 0.4 * len(rows)))
        for kind, colour in KIND_COLOURS.items():
            group = [s for s in spans if kinds.get(s[3]) == kind]
            if group:
                ax.barh([rows[s[0]] for s in group], [(s[2] - s[1]) / _DAY for s in group],
                        left=[s[1] / _DAY for s in group], height=0.55, color=colour, edgecolor="#fff",
                        linewidth=0.8, label=f"{kind.value} version")
        for alias, start, end, version in spans:
            ax.text((start + end) / 2 / _DAY, rows[alias], version, ha="center", va="center", fontsize=7)
        backs = [e for e in events if e.action.startswith("rollback")]
        if backs:
            ax.scatter([e.at / _DAY for e in backs], [rows[e.alias] - 0.42 for e in backs], marker="v", s=28,
                       color=BAD, zorder=5, label="rollback")
        _time_axis(ax)
        ax.set_yticks(list(rows.values()), list(rows))
        ax.set_ylim(len(rows) - 0.4, -0.7)
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False, ncols=3)
        ax.set_title(f"{len(events)} alias moves", loc="left", fontsize=9)
        return svg(fig)


def _spans(events: Sequence[AliasMove], as_of: float) -> list[tuple[str, float, float, str]]:
    """(alias, start, end, version) for each stretch between an alias's moves."""
    by_alias: dict[str, list[AliasMove]] = defaultdict(list)
    for e in events:
        by_alias[e.alias].append(e)
    out: list[tuple[str, float, float, str]] = []
    for alias, moves in by_alias.items():
        ends = [m.at for m in moves[1:]] + [max(as_of, moves[-1].at)]
        out.extend((alias, m.at, end, m.to_version) for m, end in zip(moves, ends))
    return out


def _time_axis(ax: Any) -> None:
    locator = mdates.AutoDateLocator(tz=timezone.utc)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=timezone.utc))
    ax.set_xlabel("UTC")
    ax.grid(axis="x", linewidth=0.3, alpha=0.6)


# ---- metrics across versions -----------------------------------------------------------------------


def metrics_chart(versions: Sequence[VersionNode], metrics: Sequence[str]) -> str:
    """One panel per metric (gate metrics first), versions left to right: each version's score coloured
    by its kind (× when rejected or stale), the champion's at its gate as a ring joined to it."""
    shown = [m for m in metrics if any(m in v.metrics for v in versions)][:_MAX_PANELS]
    if not shown:
        return ""
    gates = {v.gate_metric for v in versions}
    with _style():
        fig, axes = plt.subplots(len(shown), 1, figsize=(_WIDTH_IN, 0.9 + 1.8 * len(shown)), sharex=True,
                                 squeeze=False)
        for ax, metric in zip(axes[:, 0], shown):
            _metric_panel(ax, versions, metric)
            ax.set_title(metric + (" (the gate's metric)" if metric in gates else ""), loc="left", fontsize=8)
        last = axes[-1, 0]
        last.set_xticks(range(len(versions)), [v.version for v in versions],
                        rotation=90 if len(versions) > 20 else 0, fontsize=6 if len(versions) > 40 else 7)
        last.set_xlabel("version")
        axes[0, 0].legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False, ncols=4)
        return svg(fig)


def _metric_panel(ax: Any, versions: Sequence[VersionNode], metric: str) -> None:
    points = [(i, v.metrics[metric], v) for i, v in enumerate(versions) if metric in v.metrics]
    ax.plot([p[0] for p in points], [p[1] for p in points], color="#999999", linewidth=0.7, zorder=1)
    turned_down = [p for p in points if {"rejected", "stale-gate"} & set(p[2].tags)]
    for kind, colour in KIND_COLOURS.items():
        group = [p for p in points if p[2].kind == kind and p not in turned_down]
        if group:
            ax.scatter([p[0] for p in group], [p[1] for p in group], color=colour, s=22, zorder=3,
                       label=f"{kind.value} version")
    if turned_down:
        ax.scatter([p[0] for p in turned_down], [p[1] for p in turned_down], marker="x", color=BAD, s=26, zorder=3,
                   label="rejected / stale gate")
    champ = [(i, v.metrics[f"champion_{metric}"], v.metrics.get(metric)) for i, v in enumerate(versions)
             if f"champion_{metric}" in v.metrics]
    if champ:
        ax.vlines([c[0] for c in champ], [min(c[1], c[2] if c[2] is not None else c[1]) for c in champ],
                  [max(c[1], c[2] if c[2] is not None else c[1]) for c in champ], colors="#999999",
                  linestyles=":", linewidth=0.8, zorder=2)
        ax.scatter([c[0] for c in champ], [c[1] for c in champ], facecolors="none", edgecolors="#000", s=30,
                   zorder=4, label="champion at the gate")
    ax.grid(linewidth=0.3, alpha=0.6)


# ---- the watch's triggers --------------------------------------------------------------------------


def triggers_chart(checks: Sequence[WatchCheck]) -> str:
    """Each trigger's value over its threshold at every check (it fires at 1; a fired one ringed in
    red), and a dashed line at each launch."""
    series: dict[str, list[tuple[float, float, bool]]] = defaultdict(list)
    for c in checks:
        for t in c.triggers:
            if t.ratio is not None:
                series[t.name].append((c.at / _DAY, t.ratio, t.fired))
    if not series:
        return ""
    with _style():
        fig, ax = plt.subplots(figsize=(_WIDTH_IN, 2.8))
        for name, points in series.items():
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", linewidth=0.9, label=name)
        hits = [p for points in series.values() for p in points if p[2]]
        if hits:
            ax.scatter([p[0] for p in hits], [p[1] for p in hits], s=60, facecolors="none", edgecolors=BAD, zorder=5)
        ax.axhline(1.0, color=BAD, linestyle="--", linewidth=1, label="fires at 1")
        launches = [c.at / _DAY for c in checks if c.run_id]
        if launches:
            ax.vlines(launches, 0, 1, transform=ax.get_xaxis_transform(), colors="#333", linestyles=":",
                      linewidth=0.8, label="launch")
        if max(p[1] for points in series.values() for p in points) > 5:
            ax.set_yscale("symlog", linthresh=1.0)
        _time_axis(ax)
        ax.set_ylabel("value / threshold")
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False, ncols=7)
        return svg(fig)


# ---- the backtest's freshness curve ------------------------------------------------------------------


def freshness_chart(points: Sequence[FreshnessPoint], metric: str) -> str:
    """The backtest's mean metric against staleness, one line per strategy, all cells pooled dashed."""
    if not points:
        return ""
    strategies = sorted({p.strategy for p in points}, key=lambda s: (s == "all", s))
    with _style():
        fig, ax = plt.subplots(figsize=(_WIDTH_IN, 2.8))
        for strategy in strategies:
            mine = sorted((p.staleness, p.mean) for p in points if p.strategy == strategy)
            style: dict[str, Any] = {"linestyle": "--"} if strategy == "all" else {}
            ax.plot([m[0] for m in mine], [m[1] for m in mine], marker="o", markersize=3, label=strategy,
                    color=STRATEGY_COLOURS.get(strategy), **style)
        ax.set_xticks(sorted({p.staleness for p in points}))
        ax.set(xlabel="staleness (windows since the model's last training)", ylabel=f"mean {metric}")
        ax.grid(linewidth=0.3, alpha=0.6)
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False, ncols=4)
        return svg(fig)
