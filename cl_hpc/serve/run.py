"""Run the server: bind, publish the discovery file, serve until SIGTERM or SIGINT, drain, exit 0.

On a signal uvicorn stops accepting, lets the requests in flight finish (up to
``serve.graceful_timeout_s``), then the app's lifespan flushes the prediction log and withdraws the
discovery file. uvicorn re-raises the signal it caught once it is done (so a plain process dies of
it); the handlers installed here take that re-raised signal, so a drained server exits 0.
"""

from __future__ import annotations

import logging
import math
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from cl_hpc.config.serving import ServeConf, check_serve
from cl_hpc.errors import ConfigError

log = logging.getLogger(__name__)


# SIGTERM/SIGINT caught before serving began. Recorded from the process's first moments (catch_early), not
# from when serve() runs: Slurm may send --signal up to a minute early, i.e. while Python still imports,
# and a signal that finds no handler kills the job (FAILED 0:15) instead of ending it cleanly.
CAUGHT: list[int] = []


def catch_early() -> None:
    """Record SIGTERM and SIGINT from now on; serve() stops before serving, or drains, when one came."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: CAUGHT.append(signum))


def serve_conf(cfg: Any) -> ServeConf:
    from cl_hpc.config.ml import plain

    conf = ServeConf(**plain(cfg.serve))
    check_serve(conf)
    return conf


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything loads: a taken port fails first, and port 0
    gets a free one that the URL then names."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another serve.port "
                          f"(0 = any free port) or serve.host") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(cfg: Any) -> int:
    """``python -m cl_hpc.serve [overrides]``: serve until a signal; 0 after a clean drain."""
    conf = serve_conf(cfg)
    store_root = Path(str(cfg.store.root)).expanduser().resolve()
    log_dir = Path(conf.log_dir).expanduser().resolve() if conf.log_dir else store_root / "predictions"
    sock = bind(conf.host, conf.port)
    port = sock.getsockname()[1]
    caught = CAUGHT
    # From here on (from the process's start when __main__ called catch_early) a SIGTERM (scancel, Slurm's
    # --signal) never kills the process mid-start: before serving it stops the start, while serving uvicorn
    # takes it, and after the drain these handlers receive uvicorn's re-raise, so the process exits 0.
    catch_early()
    # imported after the checks: a bad value or a taken port is said at once, not after torch loads
    import uvicorn

    from cl_hpc.serve import discovery
    from cl_hpc.serve.app import ServerState, create_app
    from cl_hpc.serve.features import FeaturePaths
    from cl_hpc.serve.models import ModelSlot
    from cl_hpc.serve.predlog import PredictionLog

    slot = ModelSlot(store_root, conf.model, conf.alias, conf.poll_interval_s,
                     {"journal_mode": str(cfg.store.journal_mode), "busy_timeout_s": float(cfg.store.busy_timeout_s)},
                     feature_paths=FeaturePaths(conf.feature_store, conf.feature_catalog))
    state = ServerState(conf, slot, PredictionLog(log_dir, conf.flush_interval_s, conf.max_pending_rows))
    record = discovery.record_for(conf.host, port, conf.model, conf.alias, log_dir)
    if conf.discovery:
        path = discovery.publish(store_root, record)
        state.on_stop.append(lambda: discovery.withdraw(path))
    server = uvicorn.Server(uvicorn.Config(create_app(state), log_level="warning", access_log=conf.access_log,
                                           timeout_graceful_shutdown=math.ceil(conf.graceful_timeout_s), lifespan="on"))
    # A signal after the check below but before uvicorn installs its own handlers reaches ours:
    # once the app has started, it asks uvicorn to stop (drain) as if uvicorn had caught it.
    state.on_start.append(lambda: setattr(server, "should_exit", server.should_exit or bool(caught)))
    if caught:  # a signal while torch and the app loaded: nothing was served, nothing to drain
        sock.close()
        state.stop()
        print(f"stopped on {signal.Signals(caught[0]).name} before serving", file=sys.stderr, flush=True)
        return 0
    print(f"serving {conf.model or '(the registry’s only model)'} @{conf.alias} at {record.url}  "
          f"(docs {record.url}/docs, prediction log {log_dir}, pid {record.pid})", flush=True)
    server.run(sockets=[sock])
    if caught:
        print(f"stopped on {signal.Signals(caught[0]).name}: requests drained, prediction log flushed "
              f"({state.log.stats().rows_written} rows written)", file=sys.stderr, flush=True)
    return 0 if server.started else 1
