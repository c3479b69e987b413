"""`python -m cl_hpc.serve loadgen`: replay a landing zone's rows as requests, and their labels as
outcomes after a delay, against a server on this machine.

It is bounded in count (``--requests``) and time (``--duration``), and it targets loopback only: a
load test of a server on another host is refused. The rows come from the data settings
(``data.*``: the zone, its label column); the server's own metadata (``GET /v2/models/{name}``)
says which columns are inputs. Each answer's ``request_id`` gets its row's label posted to
``/outcomes`` ``--outcome-delay`` later, batched, so the label join sees delayed outcomes as
production would.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import ipaddress
import json
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from cl_hpc.errors import ClHpcError, ConfigError

OUTCOME_BATCH = 500  # outcomes per POST /outcomes
READY_WAIT_S = 60.0  # how long a server may take to load its model before the load starts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help="the server (default: the newest live one of this store's "
                                                    "discovery files); loopback only")
    parser.add_argument("--requests", type=int, default=1000, help="the most requests to send (default 1000)")
    parser.add_argument("--duration", default="60s", help="the most time to send for (default 60s)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight at once (default 8)")
    parser.add_argument("--rows-per-request", type=int, default=1, help="rows in each request (default 1)")
    parser.add_argument("--outcome-delay", default="2s", help="when each row's label is posted (default 2s)")
    parser.add_argument("--no-outcomes", action="store_true", help="send requests only")
    parser.add_argument("--partitions", type=int, default=None,
                        help="replay the newest N partitions of the zone (default: data.eval_window)")
    parser.add_argument("--units", type=int, default=100, help="distinct unit ids to spread requests over")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")


@dataclass
class Summary:
    sent: int = 0
    answered: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    versions: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    outcomes_posted: int = 0
    outcome_errors: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.asarray([np.nan])
        return {"sent": self.sent, "answered": self.answered, "failed": self.sent - self.statuses.get(200, 0),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())}, "versions": dict(self.versions),
                "p50_ms": float(np.nanpercentile(lat, 50)), "p99_ms": float(np.nanpercentile(lat, 99)),
                "requests_per_s": self.sent / self.seconds if self.seconds else 0.0,
                "outcomes_posted": self.outcomes_posted, "outcome_errors": self.outcome_errors,
                "seconds": self.seconds}


def seconds(text: str, flag: str) -> float:
    try:
        value = pd.Timedelta(text).total_seconds()
    except (TypeError, ValueError):
        value = -1.0
    if value < 0:
        raise ConfigError(f"{flag} {text!r} is not a duration such as 500ms, 2s, 1m")
    return value


def check_loopback(url: str) -> str:
    """``url`` if it points at this machine's loopback; a load test never leaves the host."""
    host = urlsplit(url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as exc:
        raise ConfigError(f"--url {url}: cannot resolve {host!r} ({exc})") from None
    if not addresses or not all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback for a in addresses):
        raise ConfigError(f"--url {url}: {host} is not a loopback address; the load generator only targets this "
                          f"machine (127.0.0.1, ::1, localhost). Start the server with serve.host=127.0.0.1")
    return url.rstrip("/")


def run_loadgen(cfg: Any, args: argparse.Namespace) -> int:
    duration, delay = seconds(args.duration, "--duration"), seconds(args.outcome_delay, "--outcome-delay")
    for flag in ("requests", "concurrency", "rows_per_request", "units"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= 1")
    url = check_loopback(args.url or _discovered(cfg))
    meta = _metadata(url)
    inputs = [t["name"] for t in meta["inputs"]]
    frame, label_col = _rows(cfg, inputs, args.partitions)
    print(f"loadgen: {url} ({meta['name']}), {len(frame)} rows of {label_col or 'no label'}; at most "
          f"{args.requests} requests in {duration:g} s, {args.concurrency} at once", flush=True)
    summary = asyncio.run(generate(url, frame, inputs, None if args.no_outcomes else label_col, args.requests,
                                   duration, args.concurrency, args.rows_per_request, delay, args.units))
    report = summary.to_json()
    print(json.dumps(report, sort_keys=True) if args.json else _shown(report), flush=True)
    return 0


def _discovered(cfg: Any) -> str:
    from cl_hpc.serve.discovery import find

    return find(Path(str(cfg.store.root)).expanduser().resolve(), cfg.serve.model).url


def _metadata(url: str) -> dict[str, Any]:
    import httpx

    deadline = time.monotonic() + READY_WAIT_S
    try:
        ready = httpx.get(f"{url}/v2/health/ready", timeout=10).json()
        while not ready.get("ready") and time.monotonic() < deadline:  # a server just started is loading
            time.sleep(0.2)
            ready = httpx.get(f"{url}/v2/health/ready", timeout=10).json()
        if not ready.get("ready"):
            raise ClHpcError(f"the server at {url} is not ready after {READY_WAIT_S:.0f} s: {ready.get('reason')}")
        response = httpx.get(f"{url}/v2/models/{ready['model']}", timeout=10)
        response.raise_for_status()
        return dict(response.json())
    except httpx.HTTPError as exc:
        raise ClHpcError(f"cannot read the model's metadata from {url}: {exc}") from None


def _rows(cfg: Any, inputs: list[str], partitions: Optional[int]) -> tuple[pd.DataFrame, Optional[str]]:
    """The newest partitions' rows, with the columns the model takes and the label."""
    from cl_hpc.config.ml import data_conf
    from cl_hpc.data.landing import ensure_landing_zone, resolve_dir
    from cl_hpc.data.partitions import list_partitions

    conf = data_conf(cfg.data)
    ensure_landing_zone(conf)
    parts = list_partitions(resolve_dir(conf.landing_dir), conf.timestamp_col)
    chosen = parts[-(partitions or conf.eval_window):]
    frame = pd.concat([pd.read_parquet(p.path) for p in chosen], ignore_index=True)
    missing = [c for c in inputs if c not in frame.columns]
    if missing:
        raise ConfigError(f"the landing zone {conf.landing_dir} lacks the model's inputs {missing}; point data.* at "
                          f"the zone the model was trained on")
    label = conf.label_col if conf.label_col in frame.columns else _next_column(frame, inputs, conf.timestamp_col)
    return frame[[*inputs, *([label] if label else [])]], label


def _next_column(frame: pd.DataFrame, inputs: list[str], timestamp_col: str) -> Optional[str]:
    """Without a label column (a token stream), the one column the inputs leave over is the outcome."""
    rest = [c for c in frame.columns if c not in inputs and c != timestamp_col]
    return rest[0] if len(rest) == 1 else None


def _batches(frame: pd.DataFrame, rows: int) -> Iterator[pd.DataFrame]:
    while True:  # the rows again from the start when the requests outnumber them
        for start in range(0, len(frame), rows):
            yield frame.iloc[start:start + rows]


async def generate(url: str, frame: pd.DataFrame, inputs: list[str], label_col: Optional[str], requests: int,
                   duration: float, concurrency: int, rows: int, delay: float, units: int) -> Summary:
    import httpx

    summary = Summary()
    due: list[tuple[float, int, int, dict[str, Any]]] = []  # a heap: (post at, request, row, outcome)
    batches = _batches(frame, rows)
    deadline = time.monotonic() + duration
    started = time.perf_counter()
    limits = httpx.Limits(max_connections=concurrency + 1, max_keepalive_connections=concurrency + 1)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        async def worker() -> None:
            while summary.sent < requests and time.monotonic() < deadline:
                batch = next(batches)
                summary.sent += 1
                unit = f"u{summary.sent % units}"
                records = batch[inputs].to_dict("records")
                t0 = time.perf_counter()
                try:
                    response = await client.post("/predict", json={"inputs": records, "unit": unit})
                except httpx.HTTPError:
                    summary.statuses[0] += 1
                    continue
                summary.latencies_ms.append((time.perf_counter() - t0) * 1e3)
                summary.statuses[response.status_code] += 1
                if response.status_code != 200:
                    continue
                body = response.json()
                summary.answered += 1
                summary.versions[body["version"]] += 1
                if label_col is not None:
                    at = time.monotonic() + delay
                    for row, label in enumerate(batch[label_col].tolist()):
                        if pd.isna(label):  # no label for this row: no outcome, as in production
                            continue
                        heapq.heappush(due, (at, summary.sent, row, {"request_id": body["request_id"], "row": row,
                                                                      "label": _jsonable(label)}))

        async def poster(final: asyncio.Event) -> None:
            while not (final.is_set() and not due):
                now = time.monotonic()
                ready: list[dict[str, Any]] = []
                while due and due[0][0] <= now and len(ready) < OUTCOME_BATCH:
                    ready.append(heapq.heappop(due)[3])
                if ready:
                    try:
                        response = await client.post("/outcomes", json={"outcomes": ready})
                    except httpx.HTTPError:  # the server went away: counted, and the summary still printed
                        summary.outcome_errors += len(ready)
                        continue
                    if response.status_code == 200:
                        summary.outcomes_posted += len(ready)
                    else:
                        summary.outcome_errors += len(ready)
                else:
                    await asyncio.sleep(min(0.05, max(0.0, due[0][0] - now)) if due else 0.05)

        final = asyncio.Event()
        posting = asyncio.create_task(poster(final))
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        summary.seconds = time.perf_counter() - started
        final.set()
        await posting
    return summary


def _jsonable(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _shown(report: dict[str, Any]) -> str:
    return (f"sent {report['sent']} requests in {report['seconds']:.1f} s ({report['requests_per_s']:.0f}/s): "
            f"{report['answered']} answered, {report['failed']} failed {report['statuses']}; "
            f"p50 {report['p50_ms']:.2f} ms, p99 {report['p99_ms']:.2f} ms; versions {report['versions']}; "
            f"{report['outcomes_posted']} outcomes posted ({report['outcome_errors']} refused)")
