"""From the cells' replays to the report: a summary per cell, the freshness curve, the recommended
configuration, written as JSON + PNG and shown as rich tables.

Every window is scored on one metric (``result["metric"]``: the model's primary metric unless
backtest.metric names another; accuracy for the bundled MLP), read in its own direction
(``result["direction"]``: higher or lower is better). The keys are named after it: ``accuracy``
per window, ``mean_accuracy`` / ``worst_accuracy`` per cell for the MLP; ``loss`` /
``mean_loss`` / ``worst_loss`` for the GPT. Definitions (also written into the JSON, under ``rules``):

- mean / worst: over the scored windows (every window after the warm-up; excluded ones only with
  backtest.score_excluded), each window weighing the same; worst is the lowest value of a metric
  where higher is better, the highest of one where lower is;
- retrains: trainings after the warm-up model; compute sums every training, the warm-up included:
  FLOPs = FLOPs per training row (flops_per_step of the model on one batch, counted once per
  architecture, divided by the batch) x rows x epochs, i.e. FLOPs per step x steps; seconds are
  the fits' wall time (the one number that differs between two identical runs);
- freshness: the metric against staleness (windows since the model's last training, 0 = trained on
  everything up to the window before), per strategy over every cell of it;
- recommendation: the cell with the least training FLOPs among those whose mean is within the
  tolerance of the best (>= best x (1 - tolerance) where higher is better, <= best x (1 +
  tolerance) where lower is); ties go to fewer trainings, then to grid order.
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


def metric_of(rows: Sequence[Mapping[str, Any]]) -> tuple[str, bool]:
    """(metric name, higher is better) of cell results or summaries (every cell scores the same one);
    results from before the metric was recorded scored accuracy."""
    first = rows[0] if rows else {}
    return str(first.get("metric", "accuracy")), first.get("direction", "higher") == "higher"


def cell_summary(result: Mapping[str, Any]) -> dict[str, Any]:
    metric, higher = metric_of([result])
    scored = [e[metric] for e in result["evaluations"] if e["scored"] and e[metric] is not None]
    trainings = result["trainings"]
    return {**result["cell"], "metric": metric, "direction": "higher" if higher else "lower",
            f"mean_{metric}": float(np.mean(scored)) if scored else None,
            f"worst_{metric}": float(np.min(scored) if higher else np.max(scored)) if scored else None,
            "windows_scored": len(scored),
            "retrains": len(trainings) - 1,
            "stateful_updates": sum(t["mode"] == "stateful" for t in trainings),
            "flops": float(sum(t["flops"] for t in trainings)),
            "seconds": float(sum(t["seconds"] for t in trainings))}


def freshness(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The mean metric per (strategy, staleness), pooled over the strategy's cells, and over all cells."""
    metric, _ = metric_of(results)
    pools: dict[tuple[str, int], list[float]] = defaultdict(list)
    for result in results:
        for e in result["evaluations"]:
            if e["scored"] and e[metric] is not None:
                pools[(result["cell"]["strategy"], e["staleness"])].append(e[metric])
                pools[("all", e["staleness"])].append(e[metric])
    return [{"strategy": strategy, "staleness": staleness, f"mean_{metric}": float(np.mean(values)),
             "windows": len(values)} for (strategy, staleness), values in sorted(pools.items())]


def recommend(summaries: Sequence[Mapping[str, Any]], tolerance: float) -> dict[str, Any]:
    metric, higher = metric_of(summaries)
    key = f"mean_{metric}"
    ranked = [s for s in summaries if s[key] is not None]
    if not ranked:
        return {"cell": None, "why": "no cell scored any window"}
    best = (max if higher else min)(ranked, key=lambda s: s[key])
    bar = best[key] - abs(best[key]) * tolerance if higher else best[key] + abs(best[key]) * tolerance
    eligible = [s for s in ranked if (s[key] >= bar if higher else s[key] <= bar)]
    pick = min(eligible, key=lambda s: (s["flops"], s["retrains"], s["index"]))
    why = (f"{pick['name']}: the least training compute ({pick['flops']:.3g} FLOPs, {pick['retrains']} retrains) "
           f"among the {len(eligible)} cell(s) with mean {metric} {'>=' if higher else '<='} {bar:.4f} = best "
           f"{best[key]:.4f} ({best['name']}) x (1 {'-' if higher else '+'} {tolerance:g})")
    return {"cell": pick["name"], "cadence": pick["cadence"], "strategy": pick["strategy"], "index": pick["index"],
            "best_cell": best["name"], f"best_mean_{metric}": best[key], "floor": bar,
            "tolerance": tolerance, "why": why}


RULES = {
    "metric": "the model's primary metric unless backtest.metric names another, in its own direction; mean and "
              "worst over the scored windows (after the warm-up; excluded windows only with "
              "backtest.score_excluded), each window weighing the same",
    "staleness": "windows between the model's last training and the scored window (0 = trained on "
                 "everything up to the window before)",
    "compute": "every training, warm-up included: FLOPs per row (flops_per_step / batch, counted once) x rows "
               "x epochs; seconds = wall time of the fits",
    "recommendation": "least training FLOPs among cells whose mean is within the tolerance of the best (>= best x "
                      "(1 - tolerance) where higher is better, <= best x (1 + tolerance) where lower is; the bar is "
                      "'floor'); ties: fewer trainings, then grid order",
    "triggers": "cadence 'trigger': evaluated at the end of each non-excluded window on every usable row since "
                "the model's training (as cl_hpc.watch gathers them); the metric at promotion = the model's metric "
                "on its training rows",
    "exclusion": "excluded partitions are never trained on, replayed or used as a drift reference, and fire "
                 "no trigger; they are scored only with backtest.score_excluded",
}


def build_report(results: Sequence[Mapping[str, Any]], tolerance: float, meta: Mapping[str, Any]) -> dict[str, Any]:
    ordered = sorted(results, key=lambda r: r["cell"]["index"])
    summaries = [cell_summary(r) for r in ordered]
    metric, higher = metric_of(ordered)
    return {**meta, "metric": metric, "direction": "higher" if higher else "lower", "rules": RULES,
            "summary": summaries, "freshness": freshness(ordered), "recommendation": recommend(summaries, tolerance),
            "cells": list(ordered)}


def write_report(report: Mapping[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    plot_freshness(report["freshness"], out / PLOT, report.get("metric", "accuracy"))
    write_json_atomic(out / RESULTS, report)  # last: whoever sees the results sees the whole report
    return out / RESULTS, out / PLOT


def plot_freshness(rows: Sequence[Mapping[str, Any]], path: Path, metric: str = "accuracy") -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a compute node
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for strategy in sorted({r["strategy"] for r in rows}):
        points = sorted((r["staleness"], r[f"mean_{metric}"]) for r in rows if r["strategy"] == strategy)
        style: dict[str, Any] = {"color": "0.4", "linestyle": "--"} if strategy == "all" else {}
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=strategy, **style)
    ax.set(xlabel="staleness (windows since the model's last training)", ylabel=f"mean {metric}",
           title=f"Freshness: {metric} vs. model age")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def print_report(report: Mapping[str, Any], console: Console) -> None:
    metric = report.get("metric", "accuracy")
    console.print(summary_table(report["summary"], report["recommendation"].get("cell"), metric))
    console.print(freshness_table(report["freshness"], metric))
    console.print(f"recommended: {report['recommendation']['why']}", highlight=False)


def summary_table(summaries: Sequence[Mapping[str, Any]], pick: Any, metric: str = "accuracy") -> Table:
    table = Table(title="Backtest: one row per cadence x strategy")
    short = "acc" if metric == "accuracy" else metric
    for column in ("cell", f"mean {short}", f"worst {short}", "scored", "retrains", "stateful", "GFLOPs", "train s"):
        table.add_column(column, justify="left" if column == "cell" else "right")
    for s in summaries:
        table.add_row(("* " if s["name"] == pick else "") + s["name"], _num(s[f"mean_{metric}"]),
                      _num(s[f"worst_{metric}"]), str(s["windows_scored"]), str(s["retrains"]),
                      str(s["stateful_updates"]), f"{s['flops'] / 1e9:.3f}", f"{s['seconds']:.1f}")
    return table


def freshness_table(rows: Sequence[Mapping[str, Any]], metric: str = "accuracy") -> Table:
    strategies = sorted({r["strategy"] for r in rows}, key=lambda s: (s == "all", s))
    table = Table(title=f"Freshness: mean {metric} (windows) by staleness")
    table.add_column("staleness", justify="right")
    for strategy in strategies:
        table.add_column(strategy, justify="right")
    cells = {(r["strategy"], r["staleness"]): r for r in rows}
    for staleness in sorted({r["staleness"] for r in rows}):
        row = [cells.get((s, staleness)) for s in strategies]
        table.add_row(str(staleness), *(f"{r[f'mean_{metric}']:.4f} ({r['windows']})" if r else "" for r in row))
    return table


def _num(value: Any) -> str:
    return "" if value is None else f"{value:.4f}"
