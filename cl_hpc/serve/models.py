"""The served model: loaded by alias through the registry, watched, and swapped without a restart.

A :class:`ModelSlot` owns one background thread. It polls the alias's newest event in the alias
log (one indexed SQLite row, every ``poll_interval_s``: never on a request's path), and when the
alias points somewhere new it loads that version off the request path (checksum verified,
``weights_only=True``, the recorded classes rebuilt through the model contract) and only then
swaps one reference. A request reads that reference once at its start, so it is answered whole by
one version, and no request fails or waits while another version loads.

Readiness says why it is not ready: the store or model or alias is missing, the version is
quarantined, or its classes no longer load. A version that cannot be loaded leaves the previous
one answering (the server is then not ready, with the reason), so clients that ignore readiness
lose nothing.
"""

from __future__ import annotations

import collections
import enum
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from cl_hpc.errors import ClHpcError
from cl_hpc.learn.contract import ContractError, Signature, Spec

log = logging.getLogger(__name__)

RETRY_FIRST_S, RETRY_MAX_S = 1.0, 60.0  # backoff of a failed load of the alias's version
MAX_EXTRA_VERSIONS = 4  # versions kept loaded for requests by number, besides the alias's


class Readiness(enum.Enum):
    LOADING = "loading"  # nothing loaded yet, a load is under way
    READY = "ready"  # the alias's version answers
    NOT_READY = "not_ready"  # the alias's version cannot be served (the reason says why)


@dataclass(frozen=True)
class Loaded:
    """One loaded version: everything a request needs, read through one reference."""

    name: str
    version: str  # "X.Y"
    workload: Any  # cl_hpc.learn.workload.Workload
    signature: Signature
    model_class: str
    outputs: tuple[Spec, ...]  # what an answer carries: the signature's outputs, then any the data module decodes
    loaded_at: float
    load_s: float
    # a version trained on catalog features: requests carry entity keys, the server fetches the features
    features: Optional[Any] = None  # cl_hpc.serve.features.ServedFeatures

    @property
    def request_signature(self) -> Signature:
        """What a request carries: the model's inputs, or the entity keys of the features it was trained on."""
        return self.signature if self.features is None else self.features.keys


@dataclass(frozen=True)
class Health:
    state: Readiness
    reason: str  # empty when ready
    serving: Optional[str]  # the version answering now (None: none loaded)
    target: Optional[str]  # the version the alias names


class ModelSlot:
    """The alias's current version, kept fresh by one watcher thread."""

    def __init__(self, store_root: Path, name: Optional[str], alias: str, poll_interval_s: float = 1.0,
                 store_options: Optional[dict[str, Any]] = None, clock: Callable[[], float] = time.time,
                 feature_paths: Optional[Any] = None) -> None:
        self.store_root, self.alias, self.poll_interval_s = Path(store_root), alias, poll_interval_s
        self.feature_paths = feature_paths  # cl_hpc.serve.features.FeaturePaths (None: as each version trained)
        self.requested_name = name
        self.name: Optional[str] = name
        self.store_options = store_options or {}
        self.clock = clock
        self.current: Optional[Loaded] = None  # swapped whole; readers take one snapshot
        self._health = Health(Readiness.LOADING, "starting", None, None)
        self._seen: Optional[tuple[Any, ...]] = None  # the alias state last acted on
        self._retry_at: Optional[float] = None  # when a failed load of the alias's version is tried again
        self._backoff_s = RETRY_FIRST_S
        # versions asked for by number (v2 .../versions/X.Y/infer), the most recently used last
        self._versions: collections.OrderedDict[str, Loaded] = collections.OrderedDict()
        self._versions_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.swaps = 0
        self.routing: Optional[Any] = None  # cl_hpc.serve.routing.Routing of the running experiment, if any
        self.routing_error = ""

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="cl_hpc-model-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def wait_ready(self, timeout_s: float) -> Health:
        """Poll until the first load finished (ready or not), or the deadline."""
        deadline = time.monotonic() + timeout_s
        while self._health.state is Readiness.LOADING and time.monotonic() < deadline:
            time.sleep(0.02)
        return self._health

    @property
    def health(self) -> Health:
        return self._health

    # ---- the watcher ------------------------------------------------------------------------

    def _watch(self) -> None:
        registry = None
        while not self._stop.is_set():
            try:
                registry = registry or self._open()
                self.check(registry)
                self._follow_experiment(registry)
            except ClHpcError as exc:
                self._not_ready(str(exc))
            except Exception as exc:  # the watcher must outlive a bad poll; the reason is served
                log.exception("model watch: unexpected error")
                self._not_ready(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.poll_interval_s)
        if registry is not None:
            registry.close()

    def _follow_experiment(self, registry: Any, first: Optional[Loaded] = None) -> None:
        """The running experiment's routing (cl_hpc/serve/routing.py), rebuilt when it has a new event; a
        version it cannot load leaves every request to the alias's version, with the reason logged.
        ``first``: the alias's version loaded but not yet current (an arm of that version reuses it)."""
        from cl_hpc.registry.versions import parse_version
        from cl_hpc.rollout.experiments import ExperimentStore
        from cl_hpc.serve.routing import routing_for

        if self.name is None:
            return

        def load(version: str) -> Loaded:
            if first is not None and str(parse_version(version)) == first.version:
                return first
            return self.version(version)

        try:
            self.routing = routing_for(ExperimentStore(registry.store), self.name, load, self.routing)
            self.routing_error = ""
        except Exception as exc:  # any bad experiment: routing off, the alias's version answers; never not-ready
            reason = f"{type(exc).__name__}: {exc}"
            if reason != self.routing_error:
                log.warning("experiment routing off, the alias's version answers: %s", reason)
            self.routing, self.routing_error = None, reason

    def _open(self) -> Any:
        from cl_hpc.registry.store import ModelRegistry
        from cl_hpc.store.db import DB_NAME

        if not (self.store_root / DB_NAME).exists():
            raise ClHpcError(f"no store at {self.store_root / DB_NAME} (store.root): train and promote a model "
                             f"first, e.g. python -m cl_hpc.launch pipeline=continual")
        return ModelRegistry.open(self.store_root, **self.store_options)

    def check(self, registry: Any) -> None:
        """One poll: resolve the alias; load and swap when it names another version."""
        name = self.name or self._only_model(registry)
        event = registry.last_event(name, self.alias)
        target = registry.aliases(name).get(self.alias) if event is None else event.to_version
        if target is None:
            registry.require_model(name)
            known = ", ".join(sorted(registry.aliases(name))) or "none yet"
            raise ClHpcError(f"model {name} has no alias {self.alias!r} (its aliases: {known}); promote a version: "
                             f"python -m cl_hpc.registry promote {name} <X.Y> --alias {self.alias} --reason ...")
        state = (name, str(target), event.id if event else None)
        if state == self._seen and (self._retry_at is None or time.monotonic() < self._retry_at):
            return  # nothing moved, and no failed load is due for another try
        if state != self._seen:
            self._backoff_s = RETRY_FIRST_S
        self._seen = state
        self.name = name
        self._load(registry, name, str(target))

    def _load(self, registry: Any, name: str, version: str) -> None:
        serving = self.current.version if self.current else None
        self._health = Health(self._health.state if self.current else Readiness.LOADING,
                              self._health.reason, serving, version)
        try:
            loaded = load_version(registry, name, version, self.clock, self.feature_paths)
        except ClHpcError as exc:
            # Tried again later, backing off: a checkpoint restored or a package installed heals it without a move.
            self._retry_at = time.monotonic() + self._backoff_s
            self._backoff_s = min(RETRY_MAX_S, self._backoff_s * 2)
            still = f"; still answering with {serving}" if serving else ""
            self._not_ready(f"{self.alias} -> {name} {version} cannot be served: {exc}{still}", target=version)
            return
        self._retry_at = None
        if self.current is None:
            # Routing before the first answer: a (re)started server answers by the running experiment's stored
            # weights from its first request, not by the alias's version alone until the next poll.
            self._follow_experiment(registry, loaded)
        if self.current is not None and self.current.version != loaded.version:
            self.swaps += 1
        self.current = loaded  # the swap: one reference, read once per request
        self._health = Health(Readiness.READY, "", loaded.version, version)
        log.info("serving %s %s (%s, loaded in %.2f s)", name, version, self.alias, loaded.load_s)

    def _only_model(self, registry: Any) -> str:
        names = registry.names()
        if len(names) == 1:
            return str(names[0])
        listing = ", ".join(names) or "none"
        raise ClHpcError(f"serve.model is not set and the registry at {self.store_root} holds "
                         f"{'no model' if not names else 'several models'} ({listing}); set serve.model=<name>")

    def _not_ready(self, reason: str, target: Optional[str] = None) -> None:
        serving = self.current.version if self.current else None
        if reason != self._health.reason:
            log.warning("not ready: %s", reason)
        self._health = Health(Readiness.NOT_READY, reason, serving, target or self._health.target)

    # ---- explicit versions ------------------------------------------------------------------

    def version(self, version: str) -> Loaded:
        """A version by number (the v2 ``/versions/X.Y/infer``): the current one, or one loaded once
        and kept (call it off the event loop: the first request for a version waits on its load)."""
        from cl_hpc.registry.versions import parse_version

        key = str(parse_version(version))  # "2.00" and "2.0" are one version, loaded once
        current = self.current
        if current is not None and current.version == key:
            return current
        cached = self._versions.get(key)
        if cached is not None:  # no lock: a cached version never waits on another's load
            return cached
        with self._versions_lock:
            if key not in self._versions:
                if self.name is None:
                    raise ClHpcError(f"no model is served yet ({self._health.reason})")
                registry = self._open()
                try:
                    self._versions[key] = load_version(registry, self.name, key, self.clock, self.feature_paths)
                finally:
                    registry.close()
                while len(self._versions) > MAX_EXTRA_VERSIONS:  # bounded memory, whatever clients ask for
                    self._versions.popitem(last=False)
            self._versions.move_to_end(key)
            return self._versions[key]


def load_version(registry: Any, name: str, version: str, clock: Callable[[], float] = time.time,
                 feature_paths: Optional[Any] = None) -> Loaded:
    """One version through the registry: refused when quarantined, else verified and rebuilt (with its
    catalog features bound, when it was trained on them)."""
    from cl_hpc.serve.features import FeaturePaths, served_features

    started = time.perf_counter()
    record = registry.get(name, version)
    if not record.promotable:
        raise ClHpcError(f"{record.label} is quarantined ({record.quarantined})")
    workload = registry.load_model(name, record.version)
    signature = workload.signature
    if record.signature:  # requests are checked against what was recorded, and the code must still agree
        recorded = Signature.from_dict(record.signature)
        changed = recorded.differences(signature)
        if changed:
            raise ContractError(f"{record.label} was registered with signature {recorded.describe()}, but its classes "
                                f"as installed now give {signature.describe()} ({'; '.join(changed)}): install the "
                                f"code it was trained with, or retrain")
    features = served_features(record.config.get("features"), signature, record.label,
                               feature_paths or FeaturePaths())
    return Loaded(name=name, version=str(record.version), workload=workload, signature=signature,
                  outputs=warm_up(workload, signature),
                  model_class=record.model_class or type(workload.model).__module__, loaded_at=clock(),
                  load_s=time.perf_counter() - started, features=features)


def warm_up(workload: Any, signature: Signature) -> tuple[Spec, ...]:
    """One prediction on a row of zeros, at load, off the request path: the first request does not pay
    for lazy initialisation (~10-20 ms on the MLP), and the outputs the data module adds when it
    decodes (a classifier's ``label``) are known for the v2 metadata. A model that refuses zeros
    keeps its signature's outputs; its first request then warms it."""
    import numpy as np
    import pandas as pd

    from cl_hpc.learn.scoring import predict
    from cl_hpc.serve.inputs import typed_outputs

    row = {s.name: np.zeros(1, dtype=s.dtype) if s.dtype not in ("str", "object") else [""] for s in signature.inputs}
    try:
        outputs = typed_outputs(signature, predict(workload, pd.DataFrame(row)))
    except Exception as exc:  # user code on a made-up row: not an error of the version
        log.info("warm-up prediction on zeros failed (%s: %s); the first request warms the model", type(exc).__name__,
                 exc)
        return signature.outputs
    known = {s.name for s in signature.outputs}
    extra = tuple(Spec(name, "str" if values.dtype.kind in "OU" else values.dtype.name, tuple(values.shape[1:]))
                  for name, values in outputs.items() if name not in known)
    return (*signature.outputs, *extra)
