"""The server's Prometheus metrics: requests, errors and a latency histogram per version, plus the
prediction log's and the model slot's state, on a registry of its own (two apps in one process,
as in the tests and the benchmark, never share counters)."""

from __future__ import annotations

from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# The *_created series double the scrape for no use here (counters start with the process).
disable_created_metrics()
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: a small model answers in well under a millisecond, a big one in hundreds.
BUCKETS = (0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ServerMetrics:
    def __init__(self, log_stats: Callable[[], Any], slot_state: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("cl_hpc_requests", "Answered requests", ["model", "version", "endpoint"],
                                registry=self.registry)
        self.rows = Counter("cl_hpc_predicted_rows", "Rows predicted", ["model", "version"], registry=self.registry)
        self.errors = Counter("cl_hpc_request_errors", "Refused or failed requests", ["endpoint", "status"],
                              registry=self.registry)
        self.latency = Histogram("cl_hpc_request_latency_seconds", "Time from request parsed to answer built",
                                 ["model", "version", "endpoint"], buckets=BUCKETS, registry=self.registry)
        self.outcomes = Counter("cl_hpc_outcomes", "Outcomes (labels, rewards) received", registry=self.registry)
        self.registry.register(_StateCollector(log_stats, slot_state))
        self._children: dict[tuple[str, str, str], tuple[Any, Any, Any]] = {}

    def answered(self, model: str, version: str, endpoint: str, rows: int, seconds: float) -> None:
        key = (model, version, endpoint)
        children = self._children.get(key)
        if children is None:  # labels() costs a lock and a dict lookup per call: resolve each child once
            children = (self.requests.labels(*key), self.rows.labels(model, version), self.latency.labels(*key))
            self._children[key] = children
        children[0].inc()
        children[1].inc(rows)
        children[2].observe(seconds)

    def refused(self, endpoint: str, status: int) -> None:
        self.errors.labels(endpoint, str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector:
    """Read at scrape time: the log's counters and which version answers."""

    def __init__(self, log_stats: Callable[[], Any], slot_state: Callable[[], dict[str, Any]]) -> None:
        self.log_stats, self.slot_state = log_stats, slot_state

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        stats = self.log_stats()
        for field, help_text in (("rows_written", "Prediction log rows on disk"),
                                 ("rows_dropped", "Prediction log rows dropped (memory bound reached)"),
                                 ("write_errors", "Prediction log shard writes that failed (retried)")):
            family = CounterMetricFamily(f"cl_hpc_prediction_log_{field}", help_text)
            family.add_metric([], float(getattr(stats, field, 0)))
            yield family
        pending = GaugeMetricFamily("cl_hpc_prediction_log_pending_rows", "Prediction log rows not yet on disk")
        pending.add_metric([], float(getattr(stats, "pending_rows", 0)))
        yield pending
        state = self.slot_state()
        info = GaugeMetricFamily("cl_hpc_model_serving", "1 for the version answering, with its alias",
                                 labels=["model", "version", "alias", "ready"])
        if state.get("version"):
            info.add_metric([state["model"], state["version"], state["alias"], str(state["ready"]).lower()], 1.0)
        yield info
        swaps = CounterMetricFamily("cl_hpc_model_swaps", "Hot swaps since start")
        swaps.add_metric([], float(state.get("swaps", 0)))
        yield swaps
        routing = GaugeMetricFamily("cl_hpc_experiment_routing", "1 for the experiment requests are routed by",
                                    labels=["experiment"])
        if state.get("experiment") is not None:
            routing.add_metric([str(state["experiment"])], 1.0)
        yield routing
        shadow = state.get("shadow")
        for field in ("submitted", "answered", "dropped", "failed"):
            family = CounterMetricFamily(f"cl_hpc_shadow_{field}", f"Shadow copies {field}")
            family.add_metric([], float(getattr(shadow, field, 0)))
            yield family
