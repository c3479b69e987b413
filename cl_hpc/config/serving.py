"""The model server's settings (``serve:``; values in conf/serve/default.yaml, read by
``python -m cl_hpc.serve``). Light: the login node composes them with the rest of the config."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from cl_hpc.errors import ConfigError


@dataclass
class ServeConf:
    host: str = "127.0.0.1"  # address to bind; 0.0.0.0 serves other hosts (a Slurm job behind a login node)
    port: int = 8000  # TCP port; 0 = any free port (the URL printed and the discovery file say which)
    model: Optional[str] = None  # registry model name; None = the only model in the registry
    alias: str = "champion"  # the alias served; when it moves (promote, rollback) the server swaps
    # where the prediction log's shards go; None = <store.root>/predictions (beside the registry)
    log_dir: Optional[str] = None
    flush_interval_s: float = 1.0  # how often the log writes its batch: a kill -9 loses at most this much
    max_pending_rows: int = 1_000_000  # log rows held in memory while the disk refuses writes; past it, dropped
    max_batch_rows: int = 1024  # the most rows one request may carry
    max_body_mb: float = 16.0  # the largest request body read (413 beyond): a bound on memory and parse time
    poll_interval_s: float = 1.0  # how often the alias log is read for a move (off the request path)
    graceful_timeout_s: float = 30.0  # on SIGTERM/SIGINT: how long requests in flight may take to finish
    discovery: bool = True  # write <store.root>/servers/<id>.json (host, port, job id) while serving
    access_log: bool = False  # uvicorn's per-request access log (off: it costs throughput)
    # A version trained on catalog features (pipeline=features_train) reads them from the feature store it
    # was trained from and the catalog it was trained on; these move both (e.g. a copy on the serving node).
    feature_store: Optional[str] = None  # a feature store folder (holding online.sqlite); None = as recorded
    feature_catalog: Optional[str] = None  # a folder of view files; None = as recorded (bundled: conf/features)


    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 2**20)


def check_serve(conf: ServeConf) -> None:
    """Bad values fail before the port is bound or a model is loaded."""
    problems = []
    if not 0 <= conf.port <= 65535:
        problems.append(f"serve.port={conf.port}: valid ports are 0 (any free one) to 65535")
    for key, unit in (("flush_interval_s", "seconds"), ("poll_interval_s", "seconds"),
                      ("graceful_timeout_s", "seconds"), ("max_body_mb", "MB")):
        if not getattr(conf, key) > 0:
            problems.append(f"serve.{key}={getattr(conf, key)}: must be > 0 {unit}")
    for key in ("max_batch_rows", "max_pending_rows"):
        if getattr(conf, key) < 1:
            problems.append(f"serve.{key}={getattr(conf, key)}: must be >= 1")
    if not conf.alias.strip():
        problems.append("serve.alias is empty: name the alias to serve, e.g. champion")
    if problems:
        raise ConfigError("; ".join(problems) + " (see conf/serve/default.yaml)")
