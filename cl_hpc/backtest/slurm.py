"""``--slurm``: the grid as ONE job array (element i replays cell i and writes its JSON) plus one
merge job that waits for the whole array (``afterok`` on the array id) and writes the report.

The scripts come from the project's pure renderer (cl_hpc/execute/slurm/sbatch.py) and are kept in
``OUT/slurm/``; submission goes through the one Slurm command layer (cl_hpc/execute/slurm/commands.py).
No torch is imported here.
"""

from __future__ import annotations

import shlex
import time
import uuid
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from cl_hpc.backtest.conf import BacktestConf
from cl_hpc.config.resources import Resources
from cl_hpc.execute.slurm import commands
from cl_hpc.execute.slurm.sbatch import SbatchJob, interpreter, render_sbatch

CELLS_SCRIPT, MERGE_SCRIPT = "cells.sbatch", "merge.sbatch"


def cluster_settings(cluster: Mapping[str, Any]) -> dict[str, Any]:
    """The cluster group's Slurm settings; with cluster=local (no such keys) Slurm's own defaults."""
    keys: dict[str, Any] = {"partition": None, "account": None, "qos": None, "setup": [], "python": None, "extra": {},
            "array_parallelism": None}
    return {k: cluster.get(k, default) if cluster.get(k) is not None else default for k, default in keys.items()}


def command(out: Path, overrides: Sequence[str], python: Optional[str], mode: str) -> str:
    """The job's command line; ``mode`` is ``--only-cell $SLURM_ARRAY_TASK_ID`` (left unquoted so the
    batch shell expands it) or ``--merge``."""
    argv = ["-m", "cl_hpc.backtest", "--out", str(out)]
    return " ".join([interpreter(python), *map(shlex.quote, argv), mode, *map(shlex.quote, overrides)])


def render_jobs(conf: BacktestConf, n_cells: int, out: Path, overrides: Sequence[str],
                cluster: Mapping[str, Any]) -> tuple[str, str]:
    """(array script, merge script); the merge script's dependency is filled in at submission."""
    site = cluster_settings(cluster)
    common: dict[str, Any] = dict(comment=f"cl_hpc backtest out={out}", folder=str(out / "slurm"),
                                  setup=tuple(site["setup"]), extra=dict(site["extra"]), use_srun=False)
    res = Resources(cpus=conf.threads, mem_gb=conf.slurm_mem_gb, time_min=conf.slurm_time_min,
                    partition=site["partition"], account=site["account"], qos=site["qos"])
    cells = SbatchJob(name="cl_hpc.backtest.cells", resources=res, array=tuple(range(n_cells)),
                      array_parallelism=site["array_parallelism"],
                      command=command(out, overrides, site["python"], "--only-cell $SLURM_ARRAY_TASK_ID"), **common)
    merge = SbatchJob(name="cl_hpc.backtest.merge", resources=res, dependency="afterok:{array_job}",
                      command=command(out, overrides, site["python"], "--merge"), **common)
    return render_sbatch(cells), render_sbatch(merge)


def submit(cells_script: str, merge_script: str, out: Path) -> tuple[str, str]:
    """Write both scripts into OUT/slurm and submit them; returns (array job id, merge job id).

    Each submission's scripts have names of their own (cells-<time>-<id>.sbatch): an sbatch whose
    answer was lost looks in squeue for a job of this very script (commands.sbatch), and with one
    fixed name it could adopt an earlier backtest's array, still queued, as this one's."""
    folder = out / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    cells_path, merge_path = script_paths(folder)
    cells_path.write_text(cells_script)
    array_job = _sbatch(cells_path)
    merge_path.write_text(merge_script.replace("{array_job}", array_job))
    return array_job, _sbatch(merge_path)


def script_paths(folder: Path) -> tuple[Path, Path]:
    """(cells script, merge script) for one submission, unique to it."""
    stamp = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    cells, merge = (name.replace(".sbatch", f"-{stamp}.sbatch") for name in (CELLS_SCRIPT, MERGE_SCRIPT))
    return folder / cells, folder / merge


def _sbatch(script: Path) -> str:
    return commands.sbatch(script)
