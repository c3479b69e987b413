#!/usr/bin/env python3
"""What does serving through cl_hpc cost, and does the loop around it hold its figures? One run, side by side.

    PYTHONPATH=. python scripts/bench_serve.py                    # every part (a few minutes)
    PYTHONPATH=. python scripts/bench_serve.py --parts overhead,swap --rounds 5

Parts (``--parts``):
  overhead  ``python -m cl_hpc.serve`` (signature checks, prediction log, metrics, the alias watcher) against a
            bare FastAPI endpoint that calls the same model through the same ``scoring.predict`` in the same
            kind of process (uvicorn, one worker), with no log and no registry. Both run at once on loopback;
            rounds alternate between them, at 1 and at 8 concurrent clients. Printed: requests/s, p50 and p99
            latency, and the server's own CPU time per request (from /proc: the client's CPU, which shares
            these 2 cores, is not in it), as medians over the rounds, with ours/bare ratios.
  log       the prediction log's sustained write capacity and SIGTERM loss (scripts/bench_predlog.py).
  join      the label join on 1M predictions and outcomes (scripts/bench_labels.py).
  swap      10 promote/rollback alias moves while 8 clients send requests: failed requests, and the time from
            each move to the first answer by the new version.
  loop      data to serving, local mode: a labelled partition lands, ``python -m cl_hpc.watch`` fires, the
            continual pipeline trains and promotes 1.1, and the running server answers with it.

Goals (issue 13): throughput ratio >= 0.8 and <= 0.5 ms added to p50 at 1 and 8 clients; >= 50k log rows/s and 0
lost on SIGTERM; 1M joined in <= 10 s; 0 failed requests across 10 swaps; data to serving <= 30 s.
Asserts nothing: a benchmark prints, the tests assert behaviour.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

# At module level: FastAPI resolves the endpoint's (postponed) annotations in the module's globals.
from fastapi import Request
from fastapi.responses import JSONResponse

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
MODEL = "bench"
FEATURES = ["x0", "x1", "x2"]  # SEA's shape: three features, two classes


# ---- the model both servers serve -------------------------------------------------------------


def make_store(root: Path, versions: int = 2) -> None:
    """A registry with ``versions`` stateless versions of the bundled MLP (default size) on SEA-shaped rows,
    1.0 promoted to champion. Real checkpoints through the project's own save and register."""
    import numpy as np
    import pandas as pd
    import torch

    from cl_hpc.learn.checkpoint import save_workload
    from cl_hpc.learn.contract import Target
    from cl_hpc.learn.workload import Workload, data_from, model_for
    from cl_hpc.registry.store import ModelRegistry

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.uniform(0, 10, size=(400, 3)), columns=FEATURES).assign(y=lambda f: (f.x0 + f.x1 > 8))
    frame["y"] = frame["y"].astype(int)
    with ModelRegistry.open(root) as registry:
        for seed in range(versions):
            data_target = Target("cl_hpc.learn.tabular.TabularData", {"label_col": "y", "features": FEATURES})
            data = data_from(data_target)
            data.fit_state(frame)
            torch.manual_seed(seed)
            model, built = model_for(Target("cl_hpc.learn.tabular.TabularClassifier", {}), data)
            workload = Workload(model, data, built, data_target)
            path = root / "checkpoints" / f"v{seed}" / "model.pt"
            sha = save_workload(path, workload, {})
            registry.register(MODEL, path, strategy="stateless", checkpoint_sha256=sha, workdir=REPO,
                              model_class=built.path, init_args=built.args, datamodule_class=data_target.path,
                              signature=workload.signature.to_dict())
        registry.promote(MODEL, "1.0", reason="bench")


def bare_server(store: str, port_file: str) -> None:
    """The baseline: one FastAPI endpoint, the same model through the same scoring.predict, nothing else."""
    import socket

    import numpy as np
    import pandas as pd
    import uvicorn
    from fastapi import FastAPI

    from cl_hpc.learn.scoring import predict
    from cl_hpc.registry.store import ModelRegistry

    with ModelRegistry.open(store) as registry:
        workload = registry.load_model(MODEL, "champion")
    app = FastAPI()

    @app.post("/predict")
    async def bare_predict(request: Request) -> JSONResponse:
        payload = json.loads(await request.body())
        outputs = predict(workload, pd.DataFrame(payload["inputs"]))
        rows = [dict(zip(outputs, values)) for values in zip(*(np.asarray(v).tolist() for v in outputs.values()))]
        return JSONResponse({"outputs": rows})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    Path(port_file).write_text(str(sock.getsockname()[1]))
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])


# ---- clients --------------------------------------------------------------------------------


async def load(url: str, concurrency: int, seconds: float, body: dict[str, Any]) -> dict[str, Any]:
    """``concurrency`` loops of POST /predict for ``seconds``: requests, failures, latencies."""
    import httpx

    latencies: list[float] = []
    failures = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        async def loop() -> None:
            nonlocal failures
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                response = await client.post("/predict", json=body)
                latencies.append(time.perf_counter() - t0)
                failures += response.status_code != 200

        await asyncio.gather(*(loop() for _ in range(concurrency)))
    return {"requests": len(latencies), "failures": failures, "latencies": latencies}


def cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else float("nan")


# ---- servers as processes ----------------------------------------------------------------------


def start_ours(store: Path, model: str = MODEL) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([PY, "-m", "cl_hpc.serve", "serve.port=0", f"store.root={store}", f"serve.model={model}",
                             "serve.poll_interval_s=0.2"], cwd=store.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"at (http://\S+)", line)
    if not match:
        proc.kill()
        raise RuntimeError(f"cl_hpc.serve did not start: {line}{proc.stderr.read() if proc.stderr else ''}")
    wait_ready(match.group(1))
    return proc, match.group(1)


def start_bare(store: Path) -> tuple[subprocess.Popen[str], str]:
    port_file = store.parent / "bare.port"
    port_file.unlink(missing_ok=True)
    proc = subprocess.Popen([PY, __file__, "--bare-server", str(store), str(port_file)], text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    deadline = time.monotonic() + 120
    while not port_file.exists() or not port_file.read_text():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("the bare server did not start")
        time.sleep(0.1)
    url = f"http://127.0.0.1:{port_file.read_text()}"
    wait_ready(url, path="/docs")
    return proc, url


def wait_ready(url: str, path: str = "/v2/health/ready", timeout_s: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + path, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready in {timeout_s} s")


def stop(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


# ---- parts --------------------------------------------------------------------------------------


def overhead(work: Path, rounds: int, seconds: float) -> dict[str, Any]:
    store = work / "store"
    ours, ours_url = start_ours(store)
    bare, bare_url = start_bare(store)
    body = {"inputs": [{name: 5.0 + i for i, name in enumerate(FEATURES)}]}
    result: dict[str, Any] = {}
    try:
        for concurrency in (1, 8):
            runs: dict[str, list[dict[str, float]]] = {"ours": [], "bare": []}
            for r in range(rounds):
                order = [("ours", ours, ours_url), ("bare", bare, bare_url)]
                for side, proc, url in (order if r % 2 == 0 else order[::-1]):
                    asyncio.run(load(url, concurrency, 0.5, body))  # warm the connection pool and caches
                    cpu0 = cpu_seconds(proc.pid)
                    out = asyncio.run(load(url, concurrency, seconds, body))
                    cpu = cpu_seconds(proc.pid) - cpu0
                    runs[side].append({"rps": out["requests"] / seconds, "p50_ms": pct(out["latencies"], 50) * 1e3,
                                       "p99_ms": pct(out["latencies"], 99) * 1e3, "failures": out["failures"],
                                       "cpu_us": cpu / max(1, out["requests"]) * 1e6})
            result[f"c{concurrency}"] = summarize_overhead(runs)
    finally:
        stop(ours)
        stop(bare)
    return result


def summarize_overhead(runs: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    med = {side: {k: statistics.median(r[k] for r in rows) for k in rows[0]} for side, rows in runs.items()}
    spread = {side: {k: (min(r[k] for r in rows), max(r[k] for r in rows)) for k in ("rps", "p50_ms")}
              for side, rows in runs.items()}
    return {"ours": med["ours"], "bare": med["bare"], "spread": spread,
            "throughput_ratio": med["ours"]["rps"] / med["bare"]["rps"],
            "p50_added_ms": med["ours"]["p50_ms"] - med["bare"]["p50_ms"],
            "cpu_ratio": med["ours"]["cpu_us"] / med["bare"]["cpu_us"],
            "failures": sum(r["failures"] for rows in runs.values() for r in rows)}


def swap(work: Path, swaps: int = 10) -> dict[str, Any]:
    """Alias moves under load: every request must succeed, and each move must show in the answers."""
    import httpx

    from cl_hpc.registry.store import ModelRegistry

    store = work / "store"
    proc, url = start_ours(store)
    body = {"inputs": [{name: 1.0 for name in FEATURES}]}
    seen: list[float] = []

    async def run() -> dict[str, Any]:
        stop_load = asyncio.Event()
        counts = {"requests": 0, "failures": 0}
        versions: dict[str, int] = {}
        limits = httpx.Limits(max_connections=9, max_keepalive_connections=9)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
            async def loop() -> None:
                while not stop_load.is_set():
                    response = await client.post("/predict", json=body)
                    counts["requests"] += 1
                    if response.status_code != 200:
                        counts["failures"] += 1
                    else:
                        v = response.json()["version"]
                        versions[v] = versions.get(v, 0) + 1

            loops = [asyncio.create_task(loop()) for _ in range(8)]
            with ModelRegistry.open(store) as registry:
                for i in range(swaps):
                    target = "2.0" if i % 2 == 0 else "1.0"
                    moved = time.perf_counter()
                    registry.promote(MODEL, target, reason=f"bench swap {i}")  # ms; its SQLite handle is this thread's
                    while True:
                        response = await client.post("/predict", json=body)
                        if response.status_code == 200 and response.json()["version"] == target:
                            break
                        await asyncio.sleep(0.01)
                    seen.append(time.perf_counter() - moved)
            stop_load.set()
            await asyncio.gather(*loops)
        return {**counts, "versions": versions}

    try:
        out = asyncio.run(run())
    finally:
        code = stop(proc)
    return {**out, "swaps": swaps, "exit_code": code, "move_to_answer_s": {
        "median": statistics.median(seen), "min": min(seen), "max": max(seen)}}


def loop_to_serving(work: Path) -> dict[str, Any]:
    """Data to serving in local mode, as the README's loop runs it: champion 1.0 serves drifted traffic whose
    labels come back; the clock starts when the label join's partitions land, and stops when the running server
    answers with the 1.1 that the watch's pipeline trained on them and promoted."""
    demo = work / "loop"
    demo.mkdir()
    data = ["data.n_partitions=12", "data.drift_at=[6,13]", "data.rows_per_partition=800", "fit.max_epochs=4"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PY, *args], cwd=demo, env=env, check=True, capture_output=True, text=True)

    run("-m", "cl_hpc.launch", "pipeline=continual", *data)
    proc, url = start_ours(demo / "store", model="continual")
    try:
        run("-m", "cl_hpc.data", "simulate", "--landing-dir", "data/landing/sea", "--partitions", "4")
        run("-m", "cl_hpc.serve", "loadgen", "--url", url, "--partitions", "3", "--requests", "2000",
            "--outcome-delay", "0.5s", *data)
        decided, deadline = 0, time.monotonic() + 120
        while decided < 2000 and time.monotonic() < deadline:  # a partition is written once its window passed
            report = json.loads(run("-m", "cl_hpc.labels", "join", "--json", "labels.out_dir=data/labelled",
                                    "labels.window=2s", "labels.freq=1s").stdout)
            decided += report["labelled"] + report["dropped"] + report["defaulted"]
            time.sleep(0.2)
        landed = time.perf_counter()
        watch = subprocess.run([PY, "-m", "cl_hpc.watch", "--", "pipeline=continual", "data.landing_dir=data/labelled",
                                "data.generator=none", "data.train_window=1", "data.eval_window=1", "fit.max_epochs=4",
                                "trigger.performance.source=served"], cwd=demo, env=env, capture_output=True,
                               text=True)
        pipeline_done = time.perf_counter()
        version = answering(url)
        deadline = time.monotonic() + 60
        while version == "1.0" and time.monotonic() < deadline:
            time.sleep(0.02)
            version = answering(url)
        return {"data_to_serving_s": time.perf_counter() - landed, "watch_and_pipeline_s": pipeline_done - landed,
                "version": version, "watch_exit": watch.returncode,
                "fired": [line.strip() for line in watch.stdout.splitlines() if "fired yes" in line]}
    finally:
        stop(proc)


def answering(url: str) -> Optional[str]:
    import httpx

    response = httpx.post(url + "/predict", json={"inputs": [{"x0": 1.0, "x1": 2.0, "x2": 3.0}]}, timeout=10)
    return response.json().get("version") if response.status_code == 200 else None


# ---- main ---------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="overhead,log,join,swap,loop")
    parser.add_argument("--rounds", type=int, default=5, help="alternated rounds per side and concurrency")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one round")
    parser.add_argument("--join-rows", type=int, default=1_000_000)
    parser.add_argument("--bare-server", nargs=2, metavar=("STORE", "PORT_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server:
        bare_server(*args.bare_server)
        return 0
    parts = args.parts.split(",")
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench_serve-") as tmp:
        work = Path(tmp)
        make_store(work / "store")
        if "overhead" in parts:
            report["overhead"] = overhead(work, args.rounds, args.seconds)
            show_overhead(report["overhead"])
        if "log" in parts:
            sys.path.insert(0, str(REPO / "scripts"))
            import bench_predlog

            report["log"] = bench_predlog.run(5.0)
            bench_predlog.show(report["log"])
        if "join" in parts:
            sys.path.insert(0, str(REPO / "scripts"))
            import bench_labels

            report["join"] = j = bench_labels.run(args.join_rows)
            print(f"join: {args.join_rows} predictions and their outcomes joined in median {j['median_s']:.2f} s "
                  f"(runs {', '.join(f'{t:.2f}' for t in j['join_s'])}; {j['ratio_to_target']:.2f} of the 10 s goal); "
                  f"coverage {j['coverage']:.3f}; a rerun that adds nothing {j['rerun_s']:.2f} s")
        if "swap" in parts:
            report["swap"] = swap(work)
            s = report["swap"]
            print(f"swap: {s['swaps']} alias moves under 8 clients: {s['requests']} requests, {s['failures']} failed; "
                  f"move -> first answer by the new version: median {s['move_to_answer_s']['median']:.2f} s "
                  f"({s['move_to_answer_s']['min']:.2f}-{s['move_to_answer_s']['max']:.2f}); versions {s['versions']}; "
                  f"server exit {s['exit_code']}")
        if "loop" in parts:
            report["loop"] = loop_to_serving(work)
            s = report["loop"]
            print(f"loop: data to serving {s['data_to_serving_s']:.1f} s (watch + pipeline "
                  f"{s['watch_and_pipeline_s']:.1f} s), now answering {s['version']} (goal <= 30 s)")
    print(json.dumps(report, indent=1, default=str))
    return 0


def show_overhead(result: dict[str, Any]) -> None:
    for key, r in result.items():
        o, b = r["ours"], r["bare"]
        print(f"overhead {key}: ours {o['rps']:.0f} req/s p50 {o['p50_ms']:.2f} ms p99 {o['p99_ms']:.2f} ms "
              f"cpu {o['cpu_us']:.0f} us/req | bare {b['rps']:.0f} req/s p50 {b['p50_ms']:.2f} ms p99 "
              f"{b['p99_ms']:.2f} ms cpu {b['cpu_us']:.0f} us/req | throughput ratio {r['throughput_ratio']:.3f} "
              f"(goal >= 0.8), p50 added {r['p50_added_ms']:+.3f} ms (goal <= 0.5), server cpu ratio "
              f"{r['cpu_ratio']:.3f}; failures {r['failures']}")


if __name__ == "__main__":
    sys.exit(main())
