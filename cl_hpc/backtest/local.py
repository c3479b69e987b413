"""Running the grid on this machine, and merging the cells' JSON into the report.

Kept out of ``__main__`` so that spawned pool workers can import what they run.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cl_hpc.atomic import read_json, write_json_atomic
from cl_hpc.backtest.conf import BacktestConf, Cell, WorkloadConf, cells, excluded_partitions
from cl_hpc.config.ml import DataConf
from cl_hpc.errors import ConfigError


@dataclass
class Setup:
    data: DataConf
    workload: WorkloadConf
    conf: BacktestConf
    cluster: dict[str, Any]

    def meta(self) -> dict[str, Any]:
        """What the numbers depend on: stored with every cell, checked again when merging."""
        return {"data": dataclasses.asdict(self.data), **self.workload.meta(),
                "backtest": dataclasses.asdict(self.conf)}


def cell_path(out: Path, index: int) -> Path:
    return out / "cells" / f"cell-{index:03d}.json"


def run_cells(setup: Setup, out: Path, todo: list[Cell], console: Console) -> None:
    """Replay ``todo`` and write each cell's JSON, with a rich progress bar per cell (or per pool)."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=not console.is_terminal) as progress:
        if setup.conf.workers > 1 and len(todo) > 1:
            _in_pool(setup, out, todo, progress)
        else:
            _in_turn(setup, out, todo, progress)


def _in_turn(setup: Setup, out: Path, todo: list[Cell], progress: Progress) -> None:
    from cl_hpc.backtest.history import load_history

    history = load_history(setup.data)
    excluded = frozenset(excluded_partitions(setup.conf.exclude, history.starts))
    for cell in todo:
        bar = progress.add_task(cell.name, total=None)
        result = _replay(setup, history, excluded, cell,
                         lambda done, total, bar=bar: progress.update(bar, completed=done, total=total))
        write_json_atomic(cell_path(out, cell.index), {"config": setup.meta(), "result": result})


def _replay(setup: Setup, history: Any, excluded: frozenset[int], cell: Cell, progress: Any = None) -> dict[str, Any]:
    from cl_hpc.backtest.replay import run_cell

    return run_cell(history, cell, setup.workload, setup.conf, setup.data.train_window, excluded, progress)


def _in_pool(setup: Setup, out: Path, todo: list[Cell], progress: Progress) -> None:
    """Spawned workers (no fork after torch started threads), each reading the history once."""
    from cl_hpc.backtest.history import load_history

    load_history(setup.data)  # generates the zone once, here, rather than under a lock in every worker
    bar = progress.add_task(f"{len(todo)} cells in {setup.conf.workers} processes", total=len(todo))
    with ProcessPoolExecutor(setup.conf.workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_pool_cell, setup, cell) for cell in todo]
        for future in as_completed(futures):
            cell, result = future.result()
            write_json_atomic(cell_path(out, cell.index), {"config": setup.meta(), "result": result})
            progress.advance(bar)


_HISTORY: dict[str, Any] = {}  # a pool worker's history, read once for all its cells


def _pool_cell(setup: Setup, cell: Cell) -> tuple[Cell, dict[str, Any]]:
    from cl_hpc.backtest.history import load_history

    if "h" not in _HISTORY:
        _HISTORY["h"] = load_history(setup.data, cpus=1)
    history = _HISTORY["h"]
    excluded = frozenset(excluded_partitions(setup.conf.exclude, history.starts))
    return cell, _replay(setup, history, excluded, cell)


def merge(setup: Setup, out: Path, console: Console) -> int:
    from cl_hpc.backtest.report import build_report, print_report, write_report

    results = [_read_cell(setup, out, cell) for cell in cells(setup.conf)]
    report = build_report(results, setup.conf.tolerance, setup.meta())
    json_path, png_path = write_report(report, out)
    print_report(report, console)
    console.print(f"wrote {json_path} and {png_path}", highlight=False)
    return 0


def _read_cell(setup: Setup, out: Path, cell: Cell) -> dict[str, Any]:
    path = cell_path(out, cell.index)
    stored = read_json(path)
    if stored is None:
        raise ConfigError(f"{path} is missing: cell {cell.index} ({cell.name}) has not run; see the logs in "
                          f"{out / 'slurm'} or run `python -m cl_hpc.backtest --only-cell {cell.index} --out {out}`")
    if stored["config"] != setup.meta():
        changed = sorted(k for k in setup.meta() if stored["config"].get(k) != setup.meta()[k])
        raise ConfigError(f"{path} was replayed with other {changed} settings than this merge; use the same "
                          f"overrides, or another --out")
    return stored["result"]
