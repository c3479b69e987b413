"""The champion/challenger gate under attack (issue 5): challengers made worse on purpose are
rejected every time, and a genuinely better one is promoted.

For each seed: a landing zone with an abrupt SEA concept drift, a champion 1.0 trained before the
drift, then four challengers after it, each a real run of the continual pipeline (or, for the
checkpoint, of the registry):

- better:      a stateful fine-tune on the new concept's data            -> must be promoted
- flipped:     half the train window's labels flipped; validation loosened so that the gate itself
               has to catch it                                            -> must be rejected
- truncated:   training cut to a handful of steps at a tiny learning rate  -> must be rejected
- corrupted:   a registered challenger whose checkpoint bytes changed      -> promote refused

    python scripts/bench_gate.py --seeds 3

Prints one line per challenger and a PASS/FAIL summary; asserts nothing (a benchmark).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
DATA = ["data.rows_per_partition=500", "data.concepts=[0,3]", "data.drift_at=[14]", "fit.max_epochs=3"]


def launch(work: Path, seed: int, partitions: int, *extra: str) -> tuple[int, dict]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "cl_hpc.launch", "cluster=inprocess", "pipeline=continual",
           f"data.landing_dir={work}/landing", f"data.seed={seed}", f"data.n_partitions={partitions}",
           f"run_root={work}/runs", f"store.root={work}/store", *DATA, *extra]
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=900)
    run = sorted((work / "runs").iterdir())[-1]
    promote = run / "tasks" / "promote" / "outputs.json"
    return proc.returncode, json.loads(promote.read_text()) if promote.exists() else {}


def registry(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cl_hpc.registry", "--store-root", str(work / "store"),
                           "--name", "continual", *args], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def flip_new_labels(landing: Path) -> None:
    """Flip every label of the newest half of the train window (the 4 partitions before the 4 held out)."""
    for part in sorted(landing.glob("part-*.parquet"))[-8:-4]:
        table = pq.read_table(part)
        y = table.column("y").to_pylist()
        flipped = pa.array([1 - v for v in y], type=table.schema.field("y").type)
        pq.write_table(table.set_column(table.schema.get_field_index("y"), "y", flipped), part)


def one_seed(seed: int, root: Path) -> list[tuple[str, bool, str]]:
    work = root / f"seed{seed}"
    work.mkdir(parents=True)
    rc, first = launch(work, seed, 16)
    if rc != 0 or first.get("version") != "1.0":
        return [("bootstrap", False, f"the champion 1.0 was not made (rc {rc})")]
    out = []
    rc, better = launch(work, seed, 22)
    out.append(("better", bool(better.get("promoted")), f"{better.get('version')} {better.get('strategy')}"))
    rc, truncated = launch(work, seed, 22, "launch.resume=null", "fit.max_epochs=1", "model.lr=0.00001",
                           "pipeline.tasks.train.params.strategy.kind=stateless")
    out.append(("truncated", not truncated.get("promoted", False), f"{truncated.get('version')} rc {rc}"))
    flip_new_labels(work / "landing")
    rc, flipped = launch(work, seed, 22, "pipeline.tasks.validate.params.max_label_tv=1.0")
    out.append(("flipped", not flipped.get("promoted", False), f"{flipped.get('version')} rc {rc}"))
    out.append(corrupted(work))
    return out


def corrupted(work: Path) -> tuple[str, bool, str]:
    listing = json.loads(registry(work, "list", "--json").stdout)["continual"]
    newest = listing["versions"][-1]
    path = Path(newest["checkpoint_path"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    path.write_bytes(bytes(data))
    proc = registry(work, "promote", newest["version"], "--reason", "bench: corrupted checkpoint")
    refused = proc.returncode != 0 and "sha256" in (proc.stdout + proc.stderr)
    return "corrupted", refused, f"{newest['version']}: {(proc.stdout + proc.stderr).strip().splitlines()[-1][:90]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="independent landing zones (default: 3)")
    parser.add_argument("--workdir", type=Path, default=None, help="where runs go (default: a temp dir)")
    args = parser.parse_args(argv)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="bench_gate."))
    print(f"bench_gate: files in {root}")
    results = []
    for seed in range(args.seeds):
        for case, ok, detail in one_seed(seed, root):
            results.append((case, ok))
            print(f"seed {seed}  {case:<10} {'as required' if ok else 'WRONG':<12} {detail}")
    for case in ("better", "truncated", "flipped", "corrupted"):
        oks = [ok for c, ok in results if c == case]
        verb = "promoted" if case == "better" else "rejected"
        print(f"{case:<10} {verb} {sum(oks)}/{len(oks)}: {'PASS' if oks and all(oks) else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
