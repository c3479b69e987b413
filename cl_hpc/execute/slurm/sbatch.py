"""Render one sbatch script: a pure function of a job description, tested against stored files.

The script keeps submitit's layout (log paths with %j or %A_%a in submitit's folder, the pre-timeout
USR2 signal) and runs the job's command under srun, which gives each of tasks_per_node processes its
SLURM_PROCID. Every value is shell-quoted; sbatch honours quotes in #SBATCH lines.
"""

from __future__ import annotations

import math
import shlex
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping

from cl_hpc.config.resources import Resources
from cl_hpc.errors import ConfigError

USR_SIG = "USR2"  # the pre-timeout signal: PreemptionCheckpoint saves on it (submitit uses the same)


@dataclass(frozen=True)
class SbatchJob:
    name: str  # --job-name: cl_hpc.<run_id>.<task>, so a run can be found from Slurm alone
    comment: str  # --comment: cl_hpc run=<run_id> task=<task>
    resources: Resources  # already merged with the cluster's defaults (partition, account, qos)
    folder: str  # submitit folder: logs and pickles live here
    command: str = ""  # the job's command line (cl_hpc.execute.slurm.job), a shell string
    array: tuple[int, ...] | None = None  # shard indices of a fan-out (one job array); None = a plain job
    array_parallelism: int | None = None  # at most this many shards at once (--array=...%N)
    dependency: str | None = None  # e.g. "afterok:12:13,aftercorr:14"
    kill_on_invalid_dep: bool = True  # a dependent of a failed job is cancelled, never left pending
    signal_delay_s: int = 90  # USR2 this long before the time limit: the checkpoint window
    setup: tuple[str, ...] = ()  # shell lines before the task (module load, venv activation)
    use_srun: bool | None = None  # srun gives each process its SLURM_PROCID; None = only for several
    extra: Mapping[str, Any] = field(default_factory=dict)  # cluster-wide extra sbatch options


def interpreter(python: str | None) -> str:
    """``cluster.python`` as the shell words every job starts with: task jobs, retry guards and
    backtest cells alike. A command line (``apptainer exec img.sif python3``) is split as a shell
    would split it and each word quoted again; None is the launcher's own interpreter."""
    if python is None:
        return shlex.quote(sys.executable)
    try:
        words = shlex.split(python)
    except ValueError as exc:
        raise ConfigError(f"cluster.python={python!r} is not a valid command line ({exc}); give the compute "
                          f"nodes' interpreter, e.g. /path/to/.venv/bin/python or 'apptainer exec img.sif python3' "
                          f"(quote a path that holds spaces)") from None
    if not words:
        raise ConfigError("cluster.python is empty; leave it unset (null) for the launcher's own interpreter, "
                          "or give the compute nodes' one, e.g. /path/to/.venv/bin/python")
    return " ".join(map(shlex.quote, words))


def slurm_time(minutes: float) -> str:
    """Slurm keeps limits in whole minutes: round up, never cut a task short."""
    total = max(1, math.ceil(minutes - 1e-9))
    days, rest = divmod(total, 24 * 60)
    hours, mins = divmod(rest, 60)
    return f"{days}-{hours:02d}:{mins:02d}:00" if days else f"{hours:02d}:{mins:02d}:00"


def slurm_mem(mem_gb: float) -> str:
    return f"{max(1, round(mem_gb * 1024))}M"  # MiB: exact for fractional GB, unlike a G suffix


def gres(res: Resources) -> str | None:
    if not res.gpus:
        return None
    return f"gpu:{res.gpu_type}:{res.gpus}" if res.gpu_type else f"gpu:{res.gpus}"


def resource_options(res: Resources) -> dict[str, Any]:
    """Portable resources as sbatch options (flag without dashes -> value; True = bare flag)."""
    options: dict[str, Any] = {
        "partition": res.partition, "account": res.account, "qos": res.qos,
        "nodes": res.nodes, "ntasks-per-node": res.tasks_per_node, "cpus-per-task": res.cpus,
        "mem": slurm_mem(res.mem_gb), "time": slurm_time(res.time_min), "gres": gres(res),
        "constraint": res.constraint,
    }
    options.update({str(k).replace("_", "-"): v for k, v in res.extra.items()})
    return {k: v for k, v in options.items() if v is not None and v is not False}


def log_paths(job: SbatchJob) -> tuple[str, str]:
    """submitit's file names: <job id>_<task>_log.out, with %A_%a for array shards."""
    job_id = "%A_%a" if job.array is not None else "%j"
    return f"{job.folder}/{job_id}_%t_log.out", f"{job.folder}/{job_id}_%t_log.err"


def render_sbatch(job: SbatchJob) -> str:
    stdout, stderr = log_paths(job)
    options: dict[str, Any] = {"job-name": job.name, "comment": job.comment}
    options.update(resource_options(job.resources))
    if job.array is not None:
        throttle = f"%{job.array_parallelism}" if job.array_parallelism else ""
        options["array"] = ",".join(map(str, job.array)) + throttle
    if job.dependency:
        options["dependency"] = job.dependency
        options["kill-on-invalid-dep"] = "yes" if job.kill_on_invalid_dep else "no"
    srun = uses_srun(job)
    # Without srun the task is the batch shell itself (exec), and only B: signals the batch shell.
    signal = f"{USR_SIG}@{job.signal_delay_s}" if srun else f"B:{USR_SIG}@{job.signal_delay_s}"
    options.update({"output": stdout.replace("%t", "0"), "error": stderr.replace("%t", "0"),
                    "open-mode": "append", "signal": signal})
    options.update({str(k).replace("_", "-"): v for k, v in job.extra.items() if k not in options})
    lines = ["#!/bin/bash", f"# {' '.join(job.comment.split())}: written by cl_hpc (cl_hpc/execute/slurm/sbatch.py)"]
    lines += [_flag(k, v) for k, v in options.items()]
    lines += ["", "set -e"]
    if job.setup:
        lines += ["# setup (cluster.setup)", *job.setup]
    launcher = ["srun", "--unbuffered", "--output", stdout, "--error", stderr] if srun else ["exec"]
    lines += [" ".join([*map(shlex.quote, launcher), job.command]).strip(), ""]
    return "\n".join(lines)


def uses_srun(job: SbatchJob) -> bool:
    if job.use_srun is not None:
        return job.use_srun
    return job.resources.nodes * job.resources.tasks_per_node > 1


def _flag(key: str, value: Any) -> str:
    if "\n" in f"{key}{value}" or "\r" in f"{key}{value}":
        # a line break would end the #SBATCH line and run the rest as a shell command
        raise ValueError(f"sbatch option --{key}={value!r} contains a line break; remove it from the config")
    if value is True:
        return f"#SBATCH --{key}"
    return f"#SBATCH --{key}={shlex.quote(str(value))}"
