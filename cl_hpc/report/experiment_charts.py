"""The experiment page's charts, in the run page's style (:mod:`cl_hpc.report.charts`): traffic per arm
over time with the weights in force, the intervals as the evidence accrued, and a canary's ramp with
the guard check that ended each step.

Times are UTC, as on the model page (:func:`cl_hpc.report.model_charts._time_axis`): matplotlib's date
numbers are days since 1970-01-01 UTC, so an epoch second is ``t / 86400``.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from cl_hpc.report.charts import _WIDTH_IN, STATE_COLOURS, _style, plt, svg
from cl_hpc.report.experiment_page import POSTERIOR, Estimate, Evidence, RampStep, Traffic
from cl_hpc.report.model_charts import _DAY, _time_axis
from cl_hpc.rollout.records import ExperimentKind
from cl_hpc.rollout.steps import CHALLENGER, CHAMPION

# Okabe-Ito, as every page: the champion the run page's blue, the challenger orange, a bandit's others after.
_ARM_PALETTE = ("#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
GOOD, BAD, WAITING, GREY = (STATE_COLOURS["COMPLETED"], STATE_COLOURS["FAILED"], STATE_COLOURS["RETRYING"],
                            STATE_COLOURS["CANCELLED"])
# What ended a step or an experiment, by the colour it is drawn (and listed) in.
OUTCOME_COLOURS = {"start": "#333333", "step": GOOD, "promote": GOOD, "rollback": BAD, "reject": BAD, "halt": BAD,
                   "stop": GREY, "wait": WAITING, "snapshot": GREY}
_MARKERS = {"step": "o", "promote": "*", "rollback": "v", "reject": "v", "halt": "s", "stop": "x"}


def arm_colours(arms: Sequence[str]) -> dict[str, str]:
    fixed = {CHAMPION: STATE_COLOURS["RUNNING"], CHALLENGER: STATE_COLOURS["RETRYING"]}
    others = iter(_ARM_PALETTE)
    return {arm: fixed.get(arm) or next(others, "#777777") for arm in arms}


def _legend(ax: Any, ncols: int = 6) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False, ncols=ncols)


# ---- traffic --------------------------------------------------------------------------------------------


def traffic_chart(traffic: Traffic, kind: ExperimentKind, colours: Mapping[str, str]) -> str:
    """Requests routed to each arm per time bin (a shadow's copies dashed); under it, for a split, each
    arm's observed share of the routed requests per bin against the weight in force (a step line)."""
    split = kind in (ExperimentKind.AB, ExperimentKind.CANARY, ExperimentKind.BANDIT)
    edges = np.asarray(traffic.edges) / _DAY
    with _style():
        fig, axes = plt.subplots(2 if split else 1, 1, figsize=(_WIDTH_IN, 4.6 if split else 2.6), sharex=True,
                                 squeeze=False)
        top = axes[0, 0]
        for arm, counts in traffic.routed.items():
            top.stairs(counts, edges, color=colours[arm], linewidth=1.4, label=f"{arm}: routed")
        for arm, counts in traffic.copies.items():
            if any(counts):
                top.stairs(counts, edges, color=colours[arm], linewidth=1.2, linestyle="--", label=f"{arm}: copies")
        top.set_ylabel(f"requests per {_bin_width(traffic.edges)}")
        top.grid(linewidth=0.3, alpha=0.6)
        _legend(top)
        if split:
            _shares(axes[1, 0], traffic, colours)
        _time_axis(axes[-1, 0])
        return svg(fig)


def _shares(ax: Any, traffic: Traffic, colours: Mapping[str, str]) -> None:
    edges = np.asarray(traffic.edges)
    total = np.sum([np.asarray(c) for c in traffic.routed.values()], axis=0)
    middles = (edges[:-1] + edges[1:]) / 2 / _DAY
    for arm, counts in traffic.routed.items():
        seen = total > 0
        ax.scatter(middles[seen], np.asarray(counts)[seen] / total[seen], s=9, color=colours[arm], zorder=3,
                   label=f"{arm}: observed")
        splits = [(t, w) for t, w in traffic.splits if t < edges[-1]]  # a decision at the end lasts no time
        at = [t / _DAY for t, _ in splits] + [edges[-1] / _DAY]
        weights = [w.get(arm, 0.0) for _, w in splits]
        ax.stairs(weights, at, color=colours[arm], linewidth=1.0, alpha=0.8, label=f"{arm}: weight")
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("share of requests")
    ax.grid(linewidth=0.3, alpha=0.6)
    _legend(ax)


def _bin_width(edges: Sequence[float]) -> str:
    from cl_hpc.report.pages import _duration

    return _duration(edges[1] - edges[0]) if len(edges) > 1 else "bin"


# ---- the intervals --------------------------------------------------------------------------------------


def intervals_chart(evidence: Evidence, colours: Mapping[str, str], span: Optional[Sequence[float]] = None) -> str:
    """One panel per measure that has points: each arm's accuracy, accuracy and latency challenger minus
    champion (zero dotted), a bandit's posteriors; each estimate a line in its interval's band, the
    controller's own test at its written looks as error bars (hollow: its look now, not written).
    ``span``: the time axis's (start, end) in epoch seconds, the traffic chart's, so the two line up."""
    panels = [p for p in _panels(evidence, colours) if p[1]]
    if not panels:
        return ""
    with _style():
        fig, axes = plt.subplots(len(panels), 1, figsize=(_WIDTH_IN, 0.9 + 1.9 * len(panels)), sharex=True,
                                 squeeze=False)
        for ax, (title, series, difference) in zip(axes[:, 0], panels):
            for label, points, colour in series:
                (_posterior if points and points[0].test == POSTERIOR else _band)(ax, points, colour, label)
            looks = [p for p in evidence.looks if p.metric == title.split(" ")[0]] if difference else []
            _looks(ax, looks)
            if difference:
                ax.axhline(0.0, color="#333", linestyle=":", linewidth=0.8)
            ax.set_title(title, loc="left", fontsize=8)
            ax.grid(linewidth=0.3, alpha=0.6)
            _legend(ax, 4)
        if span is not None:
            axes[-1, 0].set_xlim(span[0] / _DAY, span[-1] / _DAY)
        _time_axis(axes[-1, 0])
        return svg(fig)


Series = list[tuple[str, list[Estimate], str]]


def _panels(evidence: Evidence, colours: Mapping[str, str]) -> list[tuple[str, Series, bool]]:
    level = f"{1 - evidence.alpha:.0%}"
    looks = {p.metric for p in evidence.looks}
    return [
        (f"accuracy per arm ({level} Wilson interval)",
         [(arm, points, colours[arm]) for arm, points in evidence.accuracy.items()], False),
        (f"accuracy challenger - champion ({level} two-proportion z interval)",
         [("difference", evidence.accuracy_diff, "#333333")] if evidence.accuracy_diff or "accuracy" in looks else [],
         True),
        (f"latency_ms challenger - champion ({level} Welch interval)",
         [("difference", evidence.latency_diff, "#333333")] if evidence.latency_diff or "latency_ms" in looks else [],
         True),
        (f"reward per arm ({level} credible interval of the Beta posterior)",
         [(arm, points, colours[arm]) for arm, points in evidence.posterior.items()], False),
    ]


def _band(ax: Any, points: list[Estimate], colour: str, label: str) -> None:
    """A series recomputed at cut times: its estimate as a line in its interval's band."""
    if not points:
        return
    at = [p.at / _DAY for p in points]
    ax.fill_between(at, [p.low for p in points], [p.high for p in points], color=colour, alpha=0.18, linewidth=0)
    ax.plot(at, [p.value for p in points], color=colour, linewidth=1.2, marker=".", markersize=3, label=label)


def _posterior(ax: Any, points: list[Estimate], colour: str, label: str) -> None:
    """A series kept at the controller's looks only: one error bar per look, the means joined thinly."""
    at = [p.at / _DAY for p in points]
    values = np.array([p.value for p in points])
    spread = [values - [p.low for p in points], [p.high for p in points] - values]
    ax.errorbar(at, values, yerr=spread, fmt="o-", markersize=4, capsize=4, linewidth=0.8, color=colour, alpha=0.85,
                label=label)


def _looks(ax: Any, looks: list[Estimate]) -> None:
    for written in (True, False):
        mine = [p for p in looks if p.written is written]
        if not mine:
            continue
        at = [p.at / _DAY for p in mine]
        values = np.array([p.value for p in mine])
        spread = [values - [p.low for p in mine], [p.high for p in mine] - values]
        ax.errorbar(at, values, yerr=spread, fmt="D", markersize=5, capsize=4, color="#000",
                    mfc="#000" if written else "none", zorder=5,
                    label=f"controller's {mine[0].test}: " + ("written look" if written else "its look now"))


# ---- the canary's ramp ----------------------------------------------------------------------------------


def ramp_chart(ramp: Sequence[RampStep], planned: Sequence[float], as_of: float) -> str:
    """The challenger's share (%) step by step, each step's end marked by the check that ended it (a pass:
    the next step; ★ promoted, ▼ rolled back, ■ halted, × stopped) and its judge score; the planned
    steps dotted."""
    with _style():
        fig, ax = plt.subplots(figsize=(_WIDTH_IN, 2.8))
        for level in planned:
            ax.axhline(level, color="#999", linestyle=":", linewidth=0.7)
        for step in ramp:
            _step(ax, step, as_of)
        ax.set_ylim(-5, 108)
        ax.set_yticks(sorted({0.0, *planned}))
        ax.set_ylabel("challenger's share (%)")
        _time_axis(ax)
        _legend(ax)
        return svg(fig)


def _step(ax: Any, step: RampStep, as_of: float) -> None:
    end = step.end if step.end is not None else max(as_of, step.start)
    share = step.share * 100
    ax.plot([step.start / _DAY, end / _DAY], [share, share], color=STATE_COLOURS["RETRYING"], linewidth=2.2,
            solid_capstyle="butt")
    if step.ended_by is None:
        ax.annotate("running", (end / _DAY, share), xytext=(4, 4), textcoords="offset points", fontsize=7)
        return
    after = share if step.after is None else step.after * 100
    colour = OUTCOME_COLOURS.get(step.ended_by, GREY)
    ax.plot([end / _DAY, end / _DAY], [share, after], color=colour, linewidth=1.0, linestyle="--")
    ax.scatter([end / _DAY], [after], marker=_MARKERS.get(step.ended_by, "o"), s=46, color=colour, zorder=5,
               label=_unique(ax, step.ended_by))
    ax.annotate(_label(step), (end / _DAY, share), xytext=(-4, 6), textcoords="offset points", fontsize=7,
                ha="right")


def _label(step: RampStep) -> str:
    return f"{step.ended_by}" + ("" if step.score is None else f" (score {step.score:.0f})")


def _unique(ax: Any, label: str) -> Optional[str]:
    """A legend entry once per outcome."""
    return None if label in ax.get_legend_handles_labels()[1] else label
