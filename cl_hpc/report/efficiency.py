"""`python -m cl_hpc.report efficiency [RUN]`: what each task attempt asked for, what it used, and
what its next run should ask for: a seff/jobstats-like table built from the profile records.

Per attempt: requested vs used memory, CPU, time and GPUs, with efficiency percentages; MFU
(against the datasheet peak and the measured matmul ceiling), the data-loader stall fraction,
energy; then the right-sizer's recommendation for the task and the core-hours and GPU-hours it
would have saved on this run. On Slurm the records are first joined with sacct (via ``status``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from rich.table import Table

from cl_hpc.cli import run_parser
from cl_hpc.errors import ClHpcError
from cl_hpc.rightsize import apply as rs
from cl_hpc.rightsize.recommend import Recommendation
from cl_hpc.rundir.layout import RunDir, resolve_run
from cl_hpc.status import _refresh_store, collect
from cl_hpc.store.db import Store
from cl_hpc.store.profiles import attempt_elapsed_s, attempt_peak_mb, by_attempt, profile_rows
from cl_hpc.ui import make_console


def efficiency_rows(rows: Sequence[Mapping[str, Any]], recs: Mapping[str, Recommendation]) -> list[dict[str, Any]]:
    """One row per attempt (segments merged): the report's numbers, pure."""
    return [_attempt(key, attempt, segs, recs.get(segs[0]["task"]))
            for (_, key, attempt), segs in by_attempt(rows).items()]


def _attempt(key: str, attempt: int, segs: list[Mapping[str, Any]], rec: Recommendation | None) -> dict[str, Any]:
    last = segs[-1]
    elapsed = attempt_elapsed_s(segs)
    peak_gb = (attempt_peak_mb(segs) or 0.0) / 1024
    cores = ((last["cpu_pct_mean"] or 0.0) + (last["workers_cpu_pct_mean"] or 0.0)) / 100
    if last["sacct_total_cpu_s"] and elapsed:
        cores = last["sacct_total_cpu_s"] / elapsed  # Slurm's own count, children included
    req_cpus, req_gpus = int(last["req_cpus"] or 1), int(last["req_gpus"] or 0)
    gpu_util = json.loads(last["gpu_util_pct"]) if last["gpu_util_pct"] else []
    hours = elapsed / 3600
    out = {
        "key": key, "attempt": attempt, "state": last["state"], "segments": len(segs),
        "mem_req_gb": last["req_mem_gb"], "mem_used_gb": peak_gb, "mem_eff": _ratio(peak_gb, last["req_mem_gb"]),
        "cpus_req": req_cpus, "cpus_used": cores, "cpu_eff": _ratio(cores, req_cpus),
        "time_req_min": last["req_time_min"], "time_used_min": elapsed / 60,
        "time_eff": _ratio(elapsed / 60, last["req_time_min"]),
        "gpus_req": req_gpus, "gpu_util_pct": gpu_util, "mfu_datasheet": last["mfu_datasheet"],
        "mfu_ceiling": last["mfu_ceiling"], "stall": last["stall_fraction"], "energy_j": last["energy_j"],
        "diagnosis": last["stall_diagnosis"],
    }
    if rec is not None:
        res = rec.resources
        out.update(recommended=f"cpus={res.cpus} gpus={res.gpus} mem={res.mem_gb:.3g}G time={res.time_min:g}m",
                   core_h_saved=max(req_cpus - res.cpus, 0) * hours, gpu_h_saved=max(req_gpus - res.gpus, 0) * hours,
                   reasons=[f"{c.field}: {c.reason}" for c in rec.changes])
    return out


def _ratio(used: float | None, requested: float | None) -> float | None:
    return used / requested if used is not None and requested else None


def table(run: RunDir, rows: list[dict[str, Any]]) -> Table:
    t = Table(title=f"efficiency · run {run.run_id}", title_justify="left")
    for col in ("unit", "state", "memory used/req", "cpu used/req", "time used/req", "gpu util", "MFU sheet/ceil",
                "stall", "energy", "next run", "saves"):
        t.add_column(col)
    for r in rows:
        t.add_row(f"{r['key']} #{r['attempt']}", str(r["state"]),
                  f"{r['mem_used_gb']:.2f}/{r['mem_req_gb']:g} G {_pct(r['mem_eff'])}",
                  f"{r['cpus_used']:.2f}/{r['cpus_req']} {_pct(r['cpu_eff'])}",
                  f"{r['time_used_min']:.1f}/{r['time_req_min']:g} m {_pct(r['time_eff'])}",
                  " ".join(f"{u:.0f}%" for u in r["gpu_util_pct"] if u is not None) or "-",
                  f"{_pct(r['mfu_datasheet'])}/{_pct(r['mfu_ceiling'])}", _pct(r["stall"]),
                  f"{r['energy_j'] / 3600:.2f} Wh" if r["energy_j"] else "-", r.get("recommended", "-"),
                  f"{r.get('core_h_saved', 0):.3f} core-h {r.get('gpu_h_saved', 0):.3f} GPU-h")
    return t


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}" if value >= 0.01 else f"{value:.1%}"


def efficiency(run: RunDir, store_root: Path | None) -> list[dict[str, Any]]:
    info = collect(run)  # on Slurm: reconciles and joins the profiles with sacct
    _refresh_store(info, store_root)
    plan, conf = info["plan"], dict(info["plan"].meta.get("store") or {})
    recs: dict[str, Recommendation] = {}
    if conf.get("root") or store_root:
        with Store(store_root or conf["root"], conf.get("journal_mode", "delete")) as db:
            recs = rs.recommend_plan(plan, rs.history_from_store(db, plan))
    return efficiency_rows(profile_rows(run), recs)


def main(argv: list[str] | None = None) -> int:
    """``argv``: what follows ``efficiency`` on the command line."""
    parser = run_parser("python -m cl_hpc.report efficiency", __doc__)
    parser.add_argument("--store-root", type=Path, default=None, help="store holding the history (default: the run's)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(sys.argv[2:] if argv is None else list(argv))
    console = make_console()
    try:
        run = resolve_run(args.run_root, args.run)
        rows = efficiency(run, args.store_root)
    except ClHpcError as exc:
        console.print(f"error: {exc}", style="red", highlight=False)
        return 2
    if args.json:
        print(json.dumps({"run_id": run.run_id, "attempts": rows}, indent=2, default=str))
    elif not rows:
        console.print(f"run {run.run_id} has no profile records (profile.enabled=false, or no task has run yet)")
    else:
        console.print(table(run, rows))
        for r in rows:
            for line in [r["diagnosis"]] if r.get("diagnosis") and r.get("stall") is not None else []:
                console.print(f"{r['key']}: {line}", highlight=False)
    return 0
