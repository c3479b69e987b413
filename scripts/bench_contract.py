#!/usr/bin/env python3
"""What does the model contract's indirection cost the default pipeline? Before and after, alternated in one run.

    PYTHONPATH=. python scripts/bench_contract.py                  # 5 reps, before = the commit before the contract
    PYTHONPATH=. python scripts/bench_contract.py --reps 9 --before 482fc84

Two checkouts side by side: ``--before`` (a git revision, checked out into a temporary worktree)
and this working tree. Each rep runs the default pipeline (``python -m cl_hpc.launch``: local mode,
SEA data, the MLP) once with each, in alternating order, on the same pre-generated landing zone,
each into its own fresh run and store directories. Printed per side: the launcher's wall time (a
whole launch: interpreter, imports, planning, every task process), each task's duration from its
attempt record, and the train task's fit seconds, as median and min-max over the reps, and the
after/before ratio of the medians with the paired ratio (the median over reps of after/before in
the same rep: on a shared machine whose speed drifts, the steadier figure).

The two sides do not run the same DAG: before, ingest -> features -> train -> evaluate (scaling was a
task of its own, written to Parquet); after, ingest -> train -> evaluate (scaling is the tabular
data module's state, computed in the train and evaluate processes). The whole-launch time is the
comparison that counts; the train-task figures show where the work moved.

Asserts nothing: a benchmark prints, the tests assert behaviour.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout.strip()


def _launch(code: Path, work: Path, landing: Path, tag: str) -> dict[str, float]:
    """One default launch with the code at ``code``; its wall time and the train task's figures."""
    run_root, store = work / f"runs-{tag}", work / f"store-{tag}"
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(code)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    args = [sys.executable, "-m", "cl_hpc.launch", f"run_root={run_root}", f"store.root={store}",
            f"data.landing_dir={landing}", "data.generator=none", "launch.follow=true", "rightsize.mode=off"]
    started = time.perf_counter()
    proc = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{tag}: the launch failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    (run,) = run_root.glob("2*")
    outputs = json.loads((run / "tasks" / "train" / "outputs.json").read_text())
    figures = {"launch_s": wall, "fit_s": float(outputs["seconds"])}
    for task in ("ingest", "features", "train", "evaluate"):  # features: before only
        record = run / "tasks" / task / "attempts" / "1.json"
        if record.exists():
            attempt = json.loads(record.read_text())
            figures[f"{task}_task_s"] = float(attempt["ended"]) - float(attempt["started"])
    figures.setdefault("features_task_s", 0.0)
    return figures


def _landing(code: Path, work: Path) -> Path:
    """The default SEA landing zone, generated once with the current code: both sides read the same files."""
    landing = work / "landing"
    env = {**os.environ, "PYTHONPATH": str(code)}
    subprocess.run([sys.executable, "-m", "cl_hpc.data", "simulate", "--landing-dir", str(landing), "--partitions",
                    "24"], cwd=work, env=env, check=True, capture_output=True, text=True, timeout=600)
    return landing


def _summary(values: list[float]) -> str:
    return f"median {statistics.median(values):7.3f} s  (min {min(values):.3f}, max {max(values):.3f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5, help="launches per side (default 5)")
    parser.add_argument("--before", default="482fc84", help="git revision of the code before the contract")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_contract.") as tmp:
        work, before = Path(tmp), Path(tmp) / "before"
        _git("worktree", "add", "--detach", str(before), args.before)
        try:
            landing = _landing(REPO, work)
            sides = {"before": before, "after": REPO}
            results: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
            for rep in range(args.reps):
                order = list(sides) if rep % 2 == 0 else list(reversed(sides))  # alternate who goes first
                for name in order:
                    results[name].append(_launch(sides[name], work / f"rep{rep}", landing, name))
                print(f"rep {rep + 1}/{args.reps}: " + ", ".join(
                    f"{n} launch {results[n][-1]['launch_s']:.2f} s" for n in sides), flush=True)
        finally:
            _git("worktree", "remove", "--force", str(before))
    print(f"\nthe default pipeline, {args.reps} launches per side, alternated; before = {args.before}, "
          f"after = {_git('rev-parse', '--short', 'HEAD')} + working tree")
    for key, what in (("launch_s", "whole launch"), ("ingest_task_s", "ingest task"),
                      ("features_task_s", "features task"), ("train_task_s", "train task"), ("fit_s", "train fit"),
                      ("evaluate_task_s", "evaluate task")):
        b, a = [r[key] for r in results["before"]], [r[key] for r in results["after"]]
        if not statistics.median(b):
            print(f"{what:13s} before {_summary(b)}\n{'':13s} after  {_summary(a)}")
            continue
        paired = statistics.median(x / y for x, y in zip(a, b))
        print(f"{what:13s} before {_summary(b)}\n{'':13s} after  {_summary(a)}\n{'':13s} ratio after/before: "
              f"{statistics.median(a) / statistics.median(b):.3f} (medians), {paired:.3f} (paired)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
