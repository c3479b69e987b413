"""Discovery files: where the live servers are, beside the store, so clients and the controller
find a server that Slurm placed on some node.

``<store.root>/servers/<host>-<port>-<pid>.json`` holds the URL, host, port, pid, Slurm job id,
model and alias. The server writes it (atomically) once its port is bound and removes it after
its log is flushed; a server killed with -9 leaves its file, which :func:`probe` then reports as
unreachable rather than listing it as live.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from cl_hpc.atomic import write_json_atomic

SERVERS_DIR = "servers"


@dataclass(frozen=True)
class ServerRecord:
    url: str
    host: str  # a name other nodes can reach (the node's host name when bound to 0.0.0.0)
    port: int
    pid: int
    hostname: str  # the node the process runs on
    job_id: Optional[str]  # SLURM_JOB_ID, when the server is a Slurm job
    model: Optional[str]
    alias: str
    log_dir: str
    started: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ServerRecord":
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__})  # type: ignore[arg-type]


def reachable_host(bound: str) -> str:
    """The host to put in a URL: a wildcard bind is reached through the node's name."""
    return socket.gethostname() if bound in ("0.0.0.0", "::", "") else bound


def record_for(host: str, port: int, model: Optional[str], alias: str, log_dir: Path) -> ServerRecord:
    reach = reachable_host(host)
    shown = f"[{reach}]" if ":" in reach else reach
    return ServerRecord(url=f"http://{shown}:{port}", host=reach, port=port, pid=os.getpid(),
                        hostname=socket.gethostname(), job_id=os.environ.get("SLURM_JOB_ID"), model=model,
                        alias=alias, log_dir=str(log_dir), started=time.time())


def path_for(store_root: Path, record: ServerRecord) -> Path:
    safe = record.hostname.replace("/", "_")
    return store_root / SERVERS_DIR / f"{safe}-{record.port}-{record.pid}.json"


def publish(store_root: Path, record: ServerRecord) -> Path:
    path = path_for(store_root, record)
    write_json_atomic(path, asdict(record))
    return path


def withdraw(path: Path) -> None:
    path.unlink(missing_ok=True)


def listed(store_root: Path) -> list[tuple[Path, ServerRecord]]:
    """Every discovery file, newest first; unreadable ones are skipped (a file being replaced)."""
    out = []
    for path in sorted((store_root / SERVERS_DIR).glob("*.json")):
        try:
            out.append((path, ServerRecord.from_json(json.loads(path.read_text()))))
        except (OSError, ValueError, TypeError):
            continue
    return sorted(out, key=lambda item: -(item[1].started or 0))


def probe(record: ServerRecord, timeout_s: float = 2.0) -> dict[str, Any]:
    """Ask the server itself: {"reachable", "ready", "serving", "reason"}."""
    import httpx

    try:
        response = httpx.get(f"{record.url}/v2/health/ready", timeout=timeout_s)
        body = response.json()
        return {"reachable": True, "ready": bool(body.get("ready")), "serving": body.get("serving"),
                "reason": body.get("reason") or ""}
    except (httpx.HTTPError, ValueError) as exc:
        return {"reachable": False, "ready": False, "serving": None, "reason": f"{type(exc).__name__}: {exc}"}


def find(store_root: Path, model: Optional[str] = None, timeout_s: float = 2.0) -> ServerRecord:
    """The newest reachable server (of ``model``, when given); a ClHpcError naming what was found."""
    from cl_hpc.errors import ClHpcError

    seen = []
    for _, record in listed(store_root):
        if model is not None and record.model not in (None, model):
            continue
        if probe(record, timeout_s)["reachable"]:
            return record
        seen.append(record.url)
    where = store_root / SERVERS_DIR
    raise ClHpcError(f"no live server{' of ' + model if model else ''} in {where}"
                     + (f" (unreachable: {', '.join(seen)})" if seen else "")
                     + "; start one with python -m cl_hpc.serve (or sbatch slurm/serve.sbatch)")
