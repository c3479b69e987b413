"""``python -m cl_hpc.backtest [--out DIR] [--slurm [--dry-run]] [--only-cell I | --merge] [OVERRIDES]``

Replays the landing zone's history for every cadence x strategy and writes OUT/backtest.json,
OUT/freshness.png and one OUT/cells/cell-NNN.json per cell, then prints the tables.

Config: the data and the workload come from the project's Hydra config, composed exactly as the
launcher composes it, so every ``data=...``, ``data.*=...``, ``model=...``, ``model.*=...``,
``datamodule.*=...`` and ``fit.*=...`` override works: any model meeting the contract (README: Bring
your own model) is replayed, scored on ``backtest.metric`` (null = its primary metric). Other groups
are composed and ignored, except cluster=slurm's partition/account/qos/setup/python for --slurm.
``backtest.*=...`` overrides set the backtest's own BacktestConf (cl_hpc/backtest/conf.py), with the
same value syntax: ``backtest.cadences=[1,2,4,8,trigger] backtest.exclude=[5,'9-10']``.
A window is one partition; data.train_window is the stateless training window, data.eval_window is
not used (the backtest scores every window after the warm-up, one at a time).

Modes: by default every cell runs here (backtest.workers processes at once) with a progress bar;
``--only-cell I`` replays cell I alone (a job array element); ``--merge`` builds the report from
OUT/cells; ``--slurm`` submits the grid as one job array plus a merge job that waits for it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from rich.console import Console

from cl_hpc.backtest.conf import BacktestConf, Cell, WorkloadConf, backtest_conf, cells, workload_conf
from cl_hpc.backtest.local import Setup, merge, run_cells
from cl_hpc.config.ml import data_conf
from cl_hpc.data.landing import resolve_dir
from cl_hpc.errors import ClHpcError, ConfigError
from cl_hpc.ui import make_console

PREFIX = "backtest."


def main(argv: Optional[Sequence[str]] = None) -> None:
    console = make_console()
    try:
        code = run(list(sys.argv[1:] if argv is None else argv), console)
    except ClHpcError as exc:
        console.print(f"error: {exc}", style="red", highlight=False, markup=False)
        code = 2
    sys.exit(code)


def run(argv: list[str], console: Console) -> int:
    args = _parser().parse_intermixed_args(argv)  # options and overrides in any order
    setup = load_setup(args.overrides)
    out = Path(args.out or Path("runs") / time.strftime("backtest-%Y%m%d-%H%M%S")).resolve()  # runs/ is git-ignored
    if args.slurm:
        return _submit(setup, out, args.overrides, args.dry_run, console)
    if args.only_cell is not None:
        run_cells(setup, out, [_cell(setup, args.only_cell)], console)
        return 0
    if not args.merge:
        run_cells(setup, out, cells(setup.conf), console)
    return merge(setup, out, console)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cl_hpc.backtest", description=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="output folder (default: runs/backtest-<YYYYmmdd-HHMMSS>)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--slurm", action="store_true", help="submit the grid as one job array + a merge job")
    mode.add_argument("--only-cell", type=int, metavar="I", help="replay cell I only (a job array element)")
    mode.add_argument("--merge", action="store_true", help="build the report from OUT/cells")
    parser.add_argument("--dry-run", action="store_true", help="with --slurm: print the scripts, submit nothing")
    parser.add_argument("overrides", nargs="*",
                        help="Hydra overrides (data=..., model=..., model.*=..., fit.*=...) and backtest.*=...")
    return parser


def load_setup(overrides: Sequence[str]) -> Setup:
    own = [o for o in overrides if o.lstrip("+").startswith(PREFIX)]
    cfg = _compose([o for o in overrides if o not in own])
    from omegaconf import OmegaConf

    cluster = OmegaConf.to_container(cfg.cluster, resolve=True)
    data = data_conf(cfg.data)
    data = dataclasses.replace(data, landing_dir=str(resolve_dir(data.landing_dir)))  # same in every job
    plain = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("model", "datamodule", "fit")}
    workload = workload_conf(plain["model"], plain["datamodule"], plain["fit"])  # type: ignore[arg-type]
    check_targets(workload)
    return Setup(data, workload, _backtest(own), dict(cluster))  # type: ignore[arg-type]


def check_targets(workload: WorkloadConf) -> None:
    """The model and data module classes import and take the configured arguments (the model's
    data-derived ones, such as n_features, come later): a typo fails here, before any cell runs."""
    import inspect

    from cl_hpc.learn.contract import ContractError, class_path
    from cl_hpc.learn.workload import import_class

    for what, target in (("model", workload.model), ("datamodule", workload.datamodule)):
        cls = import_class(target.path, what)
        try:
            inspect.signature(cls).bind_partial(**target.args)
        except TypeError as exc:
            raise ContractError(f"{what}: {class_path(cls)}{inspect.signature(cls)} cannot take the arguments "
                                f"{sorted(target.args)}: {exc} (conf/model/*.yaml, {what}.*=... overrides)") from None


def _compose(overrides: list[str]) -> Any:
    from cl_hpc.config.compose import compose_config

    return compose_config(overrides, "The data, model, datamodule and fit keys are in conf/data, conf/model and "
                                     "cl_hpc/config/ml.py; backtest.* keys in cl_hpc/backtest/conf.py.")


def _backtest(overrides: list[str]) -> BacktestConf:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    dotlist = [o.lstrip("+")[len(PREFIX):] for o in overrides]
    try:
        merged = OmegaConf.merge(OmegaConf.structured(BacktestConf), OmegaConf.from_dotlist(dotlist))
        return backtest_conf(OmegaConf.to_container(merged, resolve=True))  # type: ignore[arg-type]
    except OmegaConfBaseException as exc:
        raise ConfigError(f"backtest overrides {overrides}: {exc}; the keys are in cl_hpc/backtest/conf.py") from exc


def _cell(setup: Setup, index: int) -> Cell:
    grid = cells(setup.conf)
    if not 0 <= index < len(grid):
        raise ConfigError(f"--only-cell {index}: the grid has cells 0..{len(grid) - 1} "
                          f"({len(setup.conf.cadences)} cadences x {len(setup.conf.strategies)} strategies)")
    return grid[index]


def _submit(setup: Setup, out: Path, overrides: Sequence[str], dry_run: bool, console: Console) -> int:
    from cl_hpc.backtest import slurm
    from cl_hpc.data.landing import ensure_landing_zone

    ensure_landing_zone(setup.data)  # once, here, rather than under a lock in every array element
    pinned = [*overrides, f"data.landing_dir={resolve_dir(setup.data.landing_dir)}"]  # the jobs' cwd may differ
    scripts = slurm.render_jobs(setup.conf, len(cells(setup.conf)), out, pinned, setup.cluster)
    if dry_run:
        console.print(f"# {slurm.CELLS_SCRIPT}\n{scripts[0]}\n# {slurm.MERGE_SCRIPT}\n{scripts[1]}", markup=False,
                      highlight=False)
        return 0
    array_job, merge_job = slurm.submit(*scripts, out)
    console.print(f"submitted {len(cells(setup.conf))} cells as job array {array_job} and the merge as job "
                  f"{merge_job} (afterok); results in {out}, logs in {out / 'slurm'}", highlight=False)
    return 0


if __name__ == "__main__":
    main()
