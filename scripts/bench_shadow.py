#!/usr/bin/env python3
"""What does a shadow cost the live answers? One server, with and without a running shadow, side by side.

    PYTHONPATH=. python scripts/bench_shadow.py                       # 5 rounds of 5 s per side
    PYTHONPATH=. python scripts/bench_shadow.py --rounds 7 --seconds 8 --json

One ``python -m cl_hpc.serve`` (the model and store of scripts/bench_serve.py: the bundled MLP, versions
1.0 champion and 2.0) on loopback. Its mode toggles between rounds: *none* (no experiment) and *shadow*
(``python -m cl_hpc.experiment start experiment=shadow experiment.challenger=2.0 experiment.shadow_share=1.0``:
every live request is copied to 2.0 on the server's shadow thread; ``stop`` ends it). The order alternates
per round (none first on even rounds, shadow first on odd ones), so a drift of the machine hits both sides.
With ``--pin`` (the default where the machine has 2 or more CPUs), the server's threads run on CPU 0 and the
clients on the others, so the client's own work does not take the server's CPU (the shadow thread shares the
server's CPU and its GIL, as it does in production).

1. Capacity: closed loop (``--concurrency`` clients sending back to back) for ``--capacity-seconds`` per side
   and round (``--capacity-rounds``); the best round without shadow is the server's capacity (other load on
   the machine only ever lowers a round, so the best is the closest to what the server can do).
2. Half capacity, open loop: requests sent at fixed intervals at half that rate, whatever the answers do,
   for ``--seconds`` per side and round. Latency runs from each request's scheduled send time, so a
   stalled server is not hidden by a client that waited for it (coordinated omission). Printed per round:
   live p50/p99 and the achieved throughput; then medians (min-max), the median of the per-round deltas
   (shadow - none) and ratios (shadow / none), and the shadow's copies (submitted, answered, dropped) from
   the server's /metrics.

Goal (issue 14): at half capacity, the live p50 rises by <= 0.5 ms and the throughput falls by <= 10 % with a
shadow. Asserts nothing: a benchmark prints, the tests assert behaviour. ``main(argv)`` is callable from
scripts/bench_experiments.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_serve  # noqa: E402  (scripts/ is not a package: the serve benchmark's store, server and client)

MODES = ("none", "shadow")
SHADOW = ("experiment=shadow", "experiment.challenger=2.0", "experiment.unit=request", "experiment.shadow_share=1.0")
BODY = {"inputs": [{name: 5.0 + i for i, name in enumerate(bench_serve.FEATURES)}]}


# ---- the server's mode --------------------------------------------------------------------------


def experiment_cli(store: Path, *args: str) -> str:
    proc = subprocess.run([bench_serve.PY, "-m", "cl_hpc.experiment", *args, f"store.root={store}"],
                          cwd=bench_serve.REPO, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"cl_hpc.experiment {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc.stdout


def metric(url: str, name: str) -> float:
    """The sum of the /metrics samples called ``name``; 0 when there are none."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(float(s.value) for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == name)


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


class Mode:
    """Starts and stops the shadow experiment through the CLI; waits until the server routes by it."""

    def __init__(self, store: Path, url: str, pid: int) -> None:
        self.store, self.url, self.pid, self.running = store, url, pid, 0

    def set(self, mode: str) -> None:
        if mode == "shadow" and not self.running:
            line = experiment_cli(self.store, "start", *SHADOW, "--reason", "bench_shadow")
            self.running = int(line.split()[1])  # "experiment <id> started: ..."
        elif mode == "none" and self.running:
            experiment_cli(self.store, "stop", str(self.running), "--reason", "bench_shadow round over")
            self.running = 0
        wait_until(lambda: metric(self.url, "cl_hpc_experiment_routing") == (1 if self.running else 0),
                   f"the server to route by mode {mode}")
        # A stopped shadow's queued copies are still answered: a round starts once none is left, or the
        # previous round's copies would load this one.
        wait_until(lambda: (c := self.copies())["submitted"] <= c["answered"] + c["failed"],
                   "the shadow's queue to drain", timeout_s=120)

    def copies(self) -> dict[str, float]:
        return {k: metric(self.url, f"cl_hpc_shadow_{k}_total") for k in ("submitted", "answered", "dropped",
                                                                          "failed")}

    def cpu_s(self) -> float:
        """The server process's CPU seconds (its shadow thread's included; the client's not)."""
        return bench_serve.cpu_seconds(self.pid)


# ---- load ---------------------------------------------------------------------------------------
# httpx costs its client ~2 ms of CPU a request: on 2 cores, the client, not the server, set the "capacity"
# (pinned, httpx reached ~480 req/s while the server's CPU was half idle). This client writes the request
# bytes once and reads a Content-Length answer off a kept-alive connection: some tens of us a request.


class Connection:
    """One kept-alive HTTP/1.1 connection that POSTs the same body (uvicorn answers with a Content-Length)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> None:
        self.reader, self.writer, self.request = reader, writer, request

    @classmethod
    async def open(cls, url: str, path: str = "/predict") -> "Connection":
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        body = json.dumps(BODY).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n")
        return cls(reader, writer, head.encode() + body)

    async def post(self) -> int:
        """The answer's status code, once its body is read."""
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next((int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:")),
                      None)
        if length is None:
            raise RuntimeError(f"an answer without Content-Length: {lines[0]}")
        await self.reader.readexactly(length)
        return int(lines[0].split()[1])

    def close(self) -> None:
        self.writer.close()


async def open_loop(url: str, rate: float, seconds: float) -> dict[str, Any]:
    """Requests at fixed intervals of 1/``rate`` for ``seconds``, sent whether or not earlier ones returned
    (each on an idle connection, or a new one)."""
    latencies: list[float] = []
    failures = 0
    idle: list[Connection] = []
    opened: list[Connection] = []

    async def one(scheduled: float) -> None:
        nonlocal failures
        if idle:
            conn = idle.pop()
        else:
            conn = await Connection.open(url)
            opened.append(conn)
        status = await conn.post()  # awaited first: `failures += await ...` would read failures before the await
        failures += status != 200
        latencies.append(time.perf_counter() - scheduled)
        idle.append(conn)

    start = time.perf_counter()
    sent = []
    for i in range(int(rate * seconds)):
        scheduled = start + i / rate
        if scheduled > time.perf_counter():
            await asyncio.sleep(scheduled - time.perf_counter())
        sent.append(asyncio.create_task(one(scheduled)))
    await asyncio.gather(*sent)
    elapsed = time.perf_counter() - start
    for conn in opened:
        conn.close()
    return {"rps": len(latencies) / elapsed, "p50_ms": bench_serve.pct(latencies, 50) * 1e3,
            "p99_ms": bench_serve.pct(latencies, 99) * 1e3, "requests": len(latencies), "failures": failures,
            "connections": len(opened)}


async def closed_loop_async(url: str, concurrency: int, seconds: float) -> int:
    """Requests answered by ``concurrency`` connections, each sending its next as soon as one is answered."""
    answered = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal answered
        conn = await Connection.open(url)
        while time.perf_counter() < deadline:
            status = await conn.post()
            answered += status == 200
        conn.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return answered


def closed_loop(url: str, concurrency: int, seconds: float) -> float:
    asyncio.run(closed_loop_async(url, concurrency, 0.5))  # warm the server's caches
    return asyncio.run(closed_loop_async(url, concurrency, seconds)) / seconds


def pin(server_pid: int) -> str:
    """The server's threads on CPU 0 (threads it starts later inherit it), this process on the rest."""
    import psutil

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return "not pinned: one CPU"
    for thread in psutil.Process(server_pid).threads():
        os.sched_setaffinity(thread.id, {cpus[0]})
    os.sched_setaffinity(0, set(cpus[1:]))
    return f"server on CPU {cpus[0]}, clients on {cpus[1:]}"


def rounds_of(n: int) -> list[tuple[int, tuple[str, ...]]]:
    """Each round's order: none first on even rounds, shadow first on odd ones."""
    return [(r, MODES if r % 2 == 0 else MODES[::-1]) for r in range(n)]


# ---- the run ------------------------------------------------------------------------------------


def run(rounds: int = 5, seconds: float = 5.0, capacity_rounds: int = 3, capacity_seconds: float = 3.0,
        concurrency: int = 8, pinned: bool = True, work: Optional[Path] = None,
        show: Callable[[str], None] = print) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench_shadow-", dir=work) as tmp:
        store = Path(tmp) / "store"
        bench_serve.make_store(store, versions=2)
        proc, url = bench_serve.start_ours(store)
        mine = os.sched_getaffinity(0)
        try:
            placed = pin(proc.pid) if pinned else "not pinned"
            show(f"{url}: {placed}")
            mode = Mode(store, url, proc.pid)
            capacity = _capacity(mode, url, capacity_rounds, capacity_seconds, concurrency, show)
            rate = capacity["none"]["max"] / 2
            show(f"open loop at half capacity: {rate:.0f} req/s, {rounds} rounds of {seconds:g} s per side")
            runs = _half_capacity(mode, url, rate, rounds, seconds, show)
            mode.set("none")
        finally:
            code = bench_serve.stop(proc)
            os.sched_setaffinity(0, mine)  # a caller (bench_experiments) gets its CPUs back
    return {"capacity": capacity, "rate": rate, "rounds": runs, "summary": summarize(runs), "server_exit": code,
            "settings": {"pinned": placed, "rounds": rounds, "seconds": seconds, "capacity_rounds": capacity_rounds,
                         "capacity_seconds": capacity_seconds, "concurrency": concurrency}}


def _capacity(mode: Mode, url: str, rounds: int, seconds: float, concurrency: int,
              show: Callable[[str], None]) -> dict[str, Any]:
    rps: dict[str, list[float]] = {m: [] for m in MODES}
    dropped = dict.fromkeys(MODES, 0.0)
    for r, order in rounds_of(rounds):
        for side in order:
            mode.set(side)
            before = mode.copies()
            rps[side].append(closed_loop(url, concurrency, seconds))
            dropped[side] += mode.copies()["dropped"] - before["dropped"]
        show(f"capacity round {r}: none {rps['none'][-1]:.0f} req/s, shadow {rps['shadow'][-1]:.0f} req/s "
             f"({concurrency} clients back to back; shadow copies dropped so far {dropped['shadow']:.0f})")
    out: dict[str, Any] = {m: _spread(v) for m, v in rps.items()}
    out["shadow_ratio"] = statistics.median(s / n for s, n in zip(rps["shadow"], rps["none"]))
    out["shadow_dropped"] = dropped["shadow"]
    return out


def _half_capacity(mode: Mode, url: str, rate: float, rounds: int, seconds: float,
                   show: Callable[[str], None]) -> list[dict[str, Any]]:
    runs = []
    for r, order in rounds_of(rounds):
        row: dict[str, Any] = {"round": r}
        for side in order:
            mode.set(side)
            asyncio.run(open_loop(url, rate, 0.5))  # warm: the first copies load nothing, the pool is open
            before, cpu0 = mode.copies(), mode.cpu_s()
            row[side] = asyncio.run(open_loop(url, rate, seconds))
            row[side]["cpu_us"] = (mode.cpu_s() - cpu0) / max(1, row[side]["requests"]) * 1e6
            row[side]["copies"] = {k: v - before[k] for k, v in mode.copies().items()}
        runs.append(row)
        n, s = row["none"], row["shadow"]
        show(f"round {r}: none p50 {n['p50_ms']:.2f} ms p99 {n['p99_ms']:.2f} ms {n['rps']:.0f} req/s cpu "
             f"{n['cpu_us']:.0f} us/req | shadow p50 {s['p50_ms']:.2f} ms p99 {s['p99_ms']:.2f} ms "
             f"{s['rps']:.0f} req/s cpu {s['cpu_us']:.0f} us/req | copies "
             f"{s['copies']['submitted']:.0f} submitted, {s['copies']['answered']:.0f} answered, "
             f"{s['copies']['dropped']:.0f} dropped | failures {n['failures'] + s['failures']}")
    return runs


def _spread(values: Sequence[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": list(values)}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per side the median (min-max) of each measure; per round the shadow's delta and ratio, then their median."""
    out: dict[str, Any] = {}
    for key in ("p50_ms", "p99_ms", "rps", "cpu_us"):
        none, shadow = [r["none"][key] for r in runs], [r["shadow"][key] for r in runs]
        out[key] = {"none": _spread(none), "shadow": _spread(shadow),
                    "delta": _spread([s - n for s, n in zip(shadow, none)]),
                    "ratio": _spread([s / n for s, n in zip(shadow, none)])}
    out["copies"] = {k: sum(r["shadow"]["copies"][k] for r in runs) for k in ("submitted", "answered", "dropped",
                                                                              "failed")}
    out["failures"] = sum(r[m]["failures"] for r in runs for m in MODES)
    return out


def report(res: dict[str, Any], show: Callable[[str], None] = print) -> None:
    cap, s = res["capacity"], res["summary"]

    def fmt(d: dict[str, Any], digits: int = 2) -> str:
        return f"{d['median']:.{digits}f} ({d['min']:.{digits}f} to {d['max']:.{digits}f})"

    show(f"capacity, closed loop ({res['settings']['concurrency']} clients): none {fmt(cap['none'], 0)} req/s, "
         f"shadow {fmt(cap['shadow'], 0)} req/s; shadow/none {cap['shadow_ratio']:.3f}; copies dropped at capacity "
         f"{cap['shadow_dropped']:.0f}")
    show(f"half capacity, open loop at {res['rate']:.0f} req/s, {len(res['rounds'])} rounds, median (min to max):")
    for key, name in (("p50_ms", "live p50 ms"), ("p99_ms", "live p99 ms"), ("rps", "throughput req/s"),
                      ("cpu_us", "server cpu us/req")):
        d = s[key]
        show(f"  {name:17} none {fmt(d['none'])} | shadow {fmt(d['shadow'])} | delta {fmt(d['delta'], 3)} | "
             f"ratio {fmt(d['ratio'], 3)}")
    c = s["copies"]
    show(f"  shadow copies: {c['submitted']:.0f} submitted, {c['answered']:.0f} answered, {c['dropped']:.0f} dropped, "
         f"{c['failed']:.0f} failed; "
         f"failed requests {s['failures']}")
    show(f"goal: p50 delta <= 0.5 ms (median {s['p50_ms']['delta']['median']:+.3f}), throughput ratio >= 0.9 "
         f"(median {s['rps']['ratio']['median']:.3f})")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="alternated open-loop rounds per side (default 5)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of one open-loop round (default 5)")
    parser.add_argument("--capacity-rounds", type=int, default=3, help="alternated closed-loop rounds (default 3)")
    parser.add_argument("--capacity-seconds", type=float, default=3.0, help="length of one (default 3)")
    parser.add_argument("--concurrency", type=int, default=8, help="closed-loop clients (default 8)")
    parser.add_argument("--no-pin", action="store_true", help="leave the server and the clients on every CPU")
    parser.add_argument("--json", action="store_true", help="print every number as JSON too")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    res = run(args.rounds, args.seconds, args.capacity_rounds, args.capacity_seconds, args.concurrency,
              not args.no_pin)
    report(res)
    if args.json:
        print(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
