#!/usr/bin/env python
"""Issue 16's benchmark: the HTML report of a 200-unit run renders in <= 2 s and weighs <= 2 MB.

A real run first: the test suite's ``fanout`` pipeline (src -> shards x N -> more x 3 -> sink) on the
in-process backend, with the profiler on, so every unit has its attempt record and profile file exactly
as a run writes them (N = --units - 5). Then, ``--reps`` times: the report's data read from the run
directory (``cl_hpc.report.run_data.run_report``), the page rendered (``cl_hpc.report.pages.render_run``)
and written, each timed apart; printed with their distributions beside the goals, and the page's size.
The first rendering also pays for importing matplotlib and building its font cache: it is printed
apart (``cold``) and the goal is judged on the warm median, what a user's second report costs.

    python scripts/bench_report.py                    # 200 units, 5 reps
    python scripts/bench_report.py --units 1000 --json out.json

Asserts nothing: a benchmark prints; tests/test_bench_report.py checks that it runs.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
GOAL_S, GOAL_MB = 2.0, 2.0


def make_run(work: Path, units: int) -> Path:
    """A completed ``fanout`` run of ``units`` units (in process: seconds, not minutes)."""
    shards = ",".join(str(i) for i in range(max(units - 5, 1)))
    cmd = [sys.executable, "-m", "cl_hpc.launch", "hydra.searchpath=[file://tests/conf]", "cluster=inprocess",
           "pipeline=fanout", f"pipeline.tasks.shards.foreach=[{shards}]", f"run_root={work / 'runs'}",
           f"store.root={work / 'store'}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the pipeline's targets live in tests/tasks.py
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"the benchmark's run failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return next((work / "runs").glob("2*"))


def timed(call: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    out = call()
    return time.perf_counter() - started, out


def spread(seconds: list[float]) -> dict[str, float]:
    return {"runs": len(seconds), "median_s": statistics.median(seconds), "min_s": min(seconds),
            "max_s": max(seconds)}


def run(units: int, reps: int, scratch: Optional[Path] = None) -> dict[str, Any]:
    from cl_hpc.report.pages import render_run, write_page
    from cl_hpc.report.run_data import run_report
    from cl_hpc.rundir.layout import RunDir

    work = Path(tempfile.mkdtemp(prefix="bench_report-", dir=scratch))
    try:
        made, path = timed(lambda: make_run(work, units))
        run_dir = RunDir(path)
        data, render, total, size = [], [], [], 0
        for _ in range(reps + 1):  # the first is cold: imports, matplotlib's font cache
            read_s, report = timed(lambda: run_report(run_dir, work / "store"))
            render_s, page = timed(functools.partial(render_run, report))
            write_s, _ = timed(functools.partial(write_page, path / "report.html", page))
            data.append(read_s)
            render.append(render_s)
            total.append(read_s + render_s + write_s)
            size = len(page.encode("utf-8"))
        warm = total[1:]
        return {"units": len(report.attempts), "run_s": made, "cold_s": total[0], "data": spread(data[1:]),
                "render": spread(render[1:]), "total": spread(warm), "page_mb": size / 1e6,
                "meets_goal": statistics.median(warm) <= GOAL_S and size / 1e6 <= GOAL_MB,
                "goal_s": GOAL_S, "goal_mb": GOAL_MB}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def show(out: dict[str, Any]) -> None:
    print(f"report of a {out['units']}-attempt run (made in {out['run_s']:.1f} s, in process)")
    print(f"{'measure':28} {'runs':>5} {'median':>9} {'min':>9}   {'max':<9}")
    for label, key in (("run_report (read the run)", "data"), ("render_run (charts + page)", "render"),
                       ("together, written  [goal]", "total")):
        m = out[key]
        print(f"{label:28} {m['runs']:5d} {m['median_s']:8.3f}s {m['min_s']:8.3f}s - {m['max_s']:.3f}s")
    print(f"cold first report: {out['cold_s']:.2f} s (imports, font cache)")
    verdict = "ok" if out["meets_goal"] else "MISSED"
    print(f"page {out['page_mb']:.2f} MB; goal <= {out['goal_s']:g} s and <= {out['goal_mb']:g} MB: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=200, help="units of the run (default 200)")
    parser.add_argument("--reps", type=int, default=5, help="warm reports timed (default 5)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: the system's)")
    args = parser.parse_args()
    out = run(args.units, args.reps, args.dir)
    show(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
