"""Right-sizing on the live Slurm cluster, measured by Slurm itself (sacct), in three runs:

1. declared: ~4x the memory and ~5x the time the task needs (mem_gb 1.75, time_min 20), profiled;
2. rightsize.mode=auto: the request comes from run 1's profile. Targets: memory efficiency
   (MaxRSS / ReqMem) >= 80% and time efficiency (Elapsed / Timelimit) >= 75%, no OOM;
3. the task's memory need grows past run 2's request: the OOM is caught by the retry guard, which
   escalates from the measured peak, and the run completes.

    python scripts/bench_rightsize.py                   # about 9 minutes: runs 1 and 2 hold 234 s
    python scripts/bench_rightsize.py --seconds 60      # quicker; time efficiency then suffers from
                                                        # Slurm's whole-minute limits, as it would

Prints a table and PASS/FAIL against the targets; asserts nothing (a benchmark, not a test).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from scripts.bench_dag import CONF_DIR, clean_env  # noqa: E402

SACCT = "JobID,State,ReqMem,MaxRSS,Timelimit,ElapsedRaw"


def launch(work: Path, spec: Path, *extra: str) -> Path:
    env = {**clean_env(), "CL_HPC_BENCH_SPEC": str(spec), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "cl_hpc.launch", "cluster=slurm", "pipeline=sizing_bench", "launch.follow=true",
           f"run_root={work}/runs", f"store.root={work}/store", f"hydra.searchpath=[file://{CONF_DIR}]", *extra]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    print("".join(line + "\n" for line in proc.stdout.splitlines() if line.startswith(("rightsize", "run "))), end="")
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
    return sorted((work / "runs").iterdir())[-1]


def jobs_of(run: Path) -> list[dict[str, str]]:
    """Every job the run's task went through (the first and any retries), with sacct's view."""
    entry = json.loads((run / "slurm.json").read_text())["launches"]["0"]["work"]
    ids = [h["job_id"] for h in entry.get("history", [])] + [entry["job_id"]]
    out = subprocess.run(["sacct", "-n", "-P", "-X", "-o", SACCT, "-j", ",".join(ids)], capture_output=True,
                         text=True, env=clean_env(), check=True).stdout
    rows = [dict(zip(SACCT.split(","), line.split("|"))) for line in out.splitlines() if line]
    steps = subprocess.run(["sacct", "-n", "-P", "-o", "JobID,MaxRSS", "-j", ",".join(ids)], capture_output=True,
                           text=True, env=clean_env(), check=True).stdout
    for row in rows:  # MaxRSS lives on the steps (.batch), not on the allocation's own row
        rss = [_mb(line.split("|")[1], "K") for line in steps.splitlines() if line.startswith(row["JobID"] + ".")]
        row["MaxRSS_MB"] = max([r for r in rss if r] or [0.0])
    return rows


def _mb(text: str, bare: str = "M") -> float | None:
    from cl_hpc.execute.slurm.parse import parse_mem_mb

    return parse_mem_mb(text, bare_unit=bare) if text else None


def _minutes(limit: str) -> float:
    from cl_hpc.execute.slurm.parse import parse_time_min

    return parse_time_min(limit) or 0.0


def report(label: str, run: Path) -> list[dict[str, float | str]]:
    out = []
    for row in jobs_of(run):
        req = _mb(row["ReqMem"]) or 0.0
        mem_eff, time_eff = row["MaxRSS_MB"] / req, float(row["ElapsedRaw"]) / 60 / _minutes(row["Timelimit"])
        out.append({"run": label, "job": row["JobID"], "state": row["State"], "req_mb": req,
                    "maxrss_mb": row["MaxRSS_MB"], "mem_eff": mem_eff, "limit": row["Timelimit"],
                    "elapsed_s": float(row["ElapsedRaw"]), "time_eff": time_eff})
        print(f"{label:<26} job {row['JobID']:>6} {row['State']:<14} ReqMem {req:7.0f} MB  MaxRSS "
              f"{row['MaxRSS_MB']:6.0f} MB  mem eff {mem_eff:6.1%}   limit {row['Timelimit']}  elapsed "
              f"{float(row['ElapsedRaw']):5.0f} s  time eff {time_eff:6.1%}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=400, help="memory the task holds in runs 1-2 (MiB)")
    parser.add_argument("--seconds", type=float, default=234, help="how long it holds it in runs 1-2")
    parser.add_argument("--grow-mb", type=int, default=700, help="what it holds in run 3 (past run 2's request)")
    parser.add_argument("--workdir", type=Path, default=None, help="run dirs and store (default: a temp dir)")
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_rightsize."))
    spec = work / "spec.json"
    spec.write_text(json.dumps({"mb": args.mb, "seconds": args.seconds}))
    print(f"bench_rightsize: files in {work}")
    first = report("1 declared (4x mem, 5x time)", launch(work, spec, "rightsize.mode=off"))
    second = report("2 rightsize.mode=auto", launch(work, spec, "rightsize.mode=auto"))
    spec.write_text(json.dumps({"mb": args.grow_mb, "seconds": 10}))
    third = report("3 need grows, auto", launch(work, spec, "rightsize.mode=auto"))
    last = second[-1]
    print(f"\nrun 1 efficiency: memory {first[-1]['mem_eff']:.1%}, time {first[-1]['time_eff']:.1%}")
    print(f"run 2 memory efficiency {last['mem_eff']:.1%} (target >= 80%): "
          f"{'PASS' if last['mem_eff'] >= 0.8 else 'FAIL'}")
    print(f"run 2 time efficiency   {last['time_eff']:.1%} (target >= 75%): "
          f"{'PASS' if last['time_eff'] >= 0.75 else 'FAIL'}")
    print(f"run 2 without OOM: {'PASS' if all(r['state'] == 'COMPLETED' for r in second) else 'FAIL'}")
    grown = third[-1]["state"] == "COMPLETED" and any(r["state"] != "COMPLETED" for r in third[:-1])
    states = " -> ".join(str(r["state"]) for r in third)
    asked = " -> ".join(f"{float(r['req_mb']):.0f}" for r in third)
    print(f"run 3 OOM caught and escalated to success: {'PASS' if grown else 'FAIL'} ({states}; ReqMem {asked} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
