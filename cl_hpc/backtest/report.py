"""From the cells' replays to the report: a summary per cell, the freshness curve, the recommended
configuration, written as JSON + PNG and shown as rich tables.

Definitions (also written into the JSON, under ``rules``):

- mean / worst accuracy: over the scored windows (every window after the warm-up; excluded ones only
  with backtest.score_excluded), each window weighing the same;
- retrains: trainings after the warm-up model; compute sums every training, the warm-up included:
  FLOPs = FLOPs per training row (flops_per_step of the model on one batch, counted once per
  architecture, divided by the batch) x rows x epochs, i.e. FLOPs per step x steps; seconds are
  the fits' wall time (the one number that differs between two identical runs);
- freshness: accuracy against staleness (windows since the model's last training, 0 = trained on
  everything up to the window before), per strategy over every cell of it;
- recommendation: the cell with the least training FLOPs among those whose mean accuracy is at
  least best x (1 - tolerance), best being the highest mean accuracy of the grid; ties go to fewer
  trainings, then to grid order.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from rich.console import Console
from rich.table import Table

from cl_hpc.atomic import write_json_atomic

RESULTS, PLOT = "backtest.json", "freshness.png"


def cell_summary(result: Mapping[str, Any]) -> dict[str, Any]:
    scored = [e["accuracy"] for e in result["evaluations"] if e["scored"]]
    trainings = result["trainings"]
    return {**result["cell"],
            "mean_accuracy": float(np.mean(scored)) if scored else None,
            "worst_accuracy": float(np.min(scored)) if scored else None,
            "windows_scored": len(scored),
            "retrains": len(trainings) - 1,
            "stateful_updates": sum(t["mode"] == "stateful" for t in trainings),
            "flops": float(sum(t["flops"] for t in trainings)),
            "seconds": float(sum(t["seconds"] for t in trainings))}


def freshness(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean accuracy per (strategy, staleness), pooled over the strategy's cells, and over all cells."""
    pools: dict[tuple[str, int], list[float]] = defaultdict(list)
    for result in results:
        for e in result["evaluations"]:
            if e["scored"]:
                pools[(result["cell"]["strategy"], e["staleness"])].append(e["accuracy"])
                pools[("all", e["staleness"])].append(e["accuracy"])
    return [{"strategy": strategy, "staleness": staleness, "mean_accuracy": float(np.mean(values)),
             "windows": len(values)} for (strategy, staleness), values in sorted(pools.items())]


def recommend(summaries: Sequence[Mapping[str, Any]], tolerance: float) -> dict[str, Any]:
    ranked = [s for s in summaries if s["mean_accuracy"] is not None]
    if not ranked:
        return {"cell": None, "why": "no cell scored any window"}
    best = max(ranked, key=lambda s: s["mean_accuracy"])
    floor = best["mean_accuracy"] * (1 - tolerance)
    eligible = [s for s in ranked if s["mean_accuracy"] >= floor]
    pick = min(eligible, key=lambda s: (s["flops"], s["retrains"], s["index"]))
    why = (f"{pick['name']}: the least training compute ({pick['flops']:.3g} FLOPs, {pick['retrains']} retrains) "
           f"among the {len(eligible)} cell(s) with mean accuracy >= {floor:.4f} = best {best['mean_accuracy']:.4f} "
           f"({best['name']}) x (1 - {tolerance:g})")
    return {"cell": pick["name"], "cadence": pick["cadence"], "strategy": pick["strategy"], "index": pick["index"],
            "best_cell": best["name"], "best_mean_accuracy": best["mean_accuracy"], "floor": floor,
            "tolerance": tolerance, "why": why}


RULES = {
    "accuracy": "mean and worst over the scored windows (after the warm-up; excluded windows only with "
                "backtest.score_excluded), each window weighing the same",
    "staleness": "windows between the model's last training and the scored window (0 = trained on "
                 "everything up to the window before)",
    "compute": "every training, warm-up included: FLOPs per row (flops_per_step / batch, counted once) x rows "
               "x epochs; seconds = wall time of the fits",
    "recommendation": "least training FLOPs among cells with mean accuracy >= best x (1 - tolerance); ties: "
                      "fewer trainings, then grid order",
    "triggers": "cadence 'trigger': evaluated at the end of each non-excluded window on every usable row since "
                "the model's training (as cl_hpc.watch gathers them); accuracy at promotion = the model's accuracy "
                "on its training rows",
    "exclusion": "excluded partitions are never trained on, replayed or used as a drift reference, and fire "
                 "no trigger; they are scored only with backtest.score_excluded",
}


def build_report(results: Sequence[Mapping[str, Any]], tolerance: float, meta: Mapping[str, Any]) -> dict[str, Any]:
    ordered = sorted(results, key=lambda r: r["cell"]["index"])
    summaries = [cell_summary(r) for r in ordered]
    return {**meta, "rules": RULES, "summary": summaries, "freshness": freshness(ordered),
            "recommendation": recommend(summaries, tolerance), "cells": list(ordered)}


def write_report(report: Mapping[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    plot_freshness(report["freshness"], out / PLOT)
    write_json_atomic(out / RESULTS, report)  # last: whoever sees the results sees the whole report
    return out / RESULTS, out / PLOT


def plot_freshness(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a compute node
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for strategy in sorted({r["strategy"] for r in rows}):
        points = sorted((r["staleness"], r["mean_accuracy"]) for r in rows if r["strategy"] == strategy)
        style: dict[str, Any] = {"color": "0.4", "linestyle": "--"} if strategy == "all" else {}
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=strategy, **style)
    ax.set(xlabel="staleness (windows since the model's last training)", ylabel="mean accuracy",
           title="Freshness: accuracy vs. model age")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def print_report(report: Mapping[str, Any], console: Console) -> None:
    console.print(summary_table(report["summary"], report["recommendation"].get("cell")))
    console.print(freshness_table(report["freshness"]))
    console.print(f"recommended: {report['recommendation']['why']}", highlight=False)


def summary_table(summaries: Sequence[Mapping[str, Any]], pick: Any) -> Table:
    table = Table(title="Backtest: one row per cadence x strategy")
    for column in ("cell", "mean acc", "worst acc", "scored", "retrains", "stateful", "GFLOPs", "train s"):
        table.add_column(column, justify="left" if column == "cell" else "right")
    for s in summaries:
        table.add_row(("* " if s["name"] == pick else "") + s["name"], _num(s["mean_accuracy"]),
                      _num(s["worst_accuracy"]), str(s["windows_scored"]), str(s["retrains"]),
                      str(s["stateful_updates"]), f"{s['flops'] / 1e9:.3f}", f"{s['seconds']:.1f}")
    return table


def freshness_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    strategies = sorted({r["strategy"] for r in rows}, key=lambda s: (s == "all", s))
    table = Table(title="Freshness: mean accuracy (windows) by staleness")
    table.add_column("staleness", justify="right")
    for strategy in strategies:
        table.add_column(strategy, justify="right")
    cells = {(r["strategy"], r["staleness"]): r for r in rows}
    for staleness in sorted({r["staleness"] for r in rows}):
        row = [cells.get((s, staleness)) for s in strategies]
        table.add_row(str(staleness), *(f"{r['mean_accuracy']:.4f} ({r['windows']})" if r else "" for r in row))
    return table


def _num(value: Any) -> str:
    return "" if value is None else f"{value:.4f}"
