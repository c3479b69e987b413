"""The shadow: copies of live requests answered by the challenger, off the request path.

A request copied to the shadow is handed over after its live answer is built, to a bounded queue
that one worker thread drains: the live answer never waits on the challenger. A copy that finds the
queue full (the experiment's ``shadow_queue``) is dropped and counted, so a slow challenger costs
coverage, never latency. The challenger's answers go to the prediction log as role ``shadow``, with
the experiment and arm, and are never returned.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

from cl_hpc.data.predictions import PredictionBatch, Role
from cl_hpc.learn.scoring import predict
from cl_hpc.serve import inputs as wire
from cl_hpc.serve.features import model_inputs
from cl_hpc.serve.predlog import PredictionLog
from cl_hpc.serve.routing import CHALLENGER, Routing

log = logging.getLogger(__name__)
MAX_DISTINCT_ERRORS = 100  # distinct failure messages logged (then only counted)


@dataclass(frozen=True)
class ShadowStats:
    submitted: int
    answered: int
    dropped: int  # the queue was full: the copy was never answered
    failed: int  # the challenger raised on the copy (another signature, a bug): logged once per message
    pending: int


class ShadowRunner:
    def __init__(self, log_to: PredictionLog) -> None:
        self.log = log_to
        self._queue: queue.Queue[Optional[tuple[Routing, Any, str, Optional[str]]]] = queue.Queue()
        self._counts = {"submitted": 0, "answered": 0, "dropped": 0, "failed": 0}
        self._seen_errors: set[str] = set()
        self._thread: Optional[threading.Thread] = None

    def submit(self, routing: Routing, frame: Any, request_id: str, unit: Optional[str]) -> bool:
        """Queue a copy (O(1), never blocks); False when the queue is at the experiment's bound."""
        limit = int(routing.config_queue)
        if self._queue.qsize() >= limit:
            self._counts["dropped"] += 1
            return False
        self._counts["submitted"] += 1
        self._queue.put_nowait((routing, frame, request_id, unit))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="cl_hpc-shadow", daemon=True)
            self._thread.start()
        return True

    def stop(self, timeout_s: float = 30.0) -> None:
        """Answer what is queued (up to ``timeout_s``), then stop: on SIGTERM the copies are logged too."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=timeout_s)

    def stats(self) -> ShadowStats:
        return ShadowStats(**self._counts, pending=self._queue.qsize())

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._answer(*item)
            except Exception as exc:  # one bad copy must not end the worker: later copies would all be dropped
                self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        self._counts["failed"] += 1
        message = f"{type(exc).__name__}: {exc}"[:300]
        if message not in self._seen_errors and len(self._seen_errors) < MAX_DISTINCT_ERRORS:
            self._seen_errors.add(message)
            log.warning("shadow failed on a copy: %s", message)

    def _answer(self, routing: Routing, frame: Any, request_id: str, unit: Optional[str]) -> None:
        shadow = routing.arms[CHALLENGER]
        started = time.perf_counter()
        try:
            model_frame, logged = model_inputs(shadow.features, frame)  # a challenger on catalog features fetches them
            outputs = wire.typed_outputs(shadow.signature, predict(shadow.workload, model_frame))
        except Exception as exc:  # the challenger's own failure: counted, never the live answer's
            self._failed(exc)
            return
        seconds = time.perf_counter() - started
        self.log.log(PredictionBatch(request_id, time.time(), shadow.name, shadow.version, Role.SHADOW, seconds * 1e3,
                                     logged, outputs, unit, routing.experiment_id, CHALLENGER))
        self._counts["answered"] += 1
