"""Prometheus metrics: what a process did (runs ended, tokens, time) and what the database holds now.

One :class:`Metrics` per runtime, on its own registry (several apps can live in one process, as in
the tests). Counters and histograms are fed by the store, which reports each run that reaches a
final status after its write committed; gauges (runs waiting, workers holding runs, embedded models
up) are read when ``GET /metrics`` is scraped. Every process exposes its own figures; sum them
across processes in Prometheus.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from threadline.domain.entities import Run
from threadline.domain.run_states import TERMINAL

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_RUN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.runs_ended = Counter(
            "threadline_runs_ended",
            "Runs that reached a final status in this process, by status",
            ["status"],
            registry=self.registry,
        )
        self.run_seconds = Histogram(
            "threadline_run_duration_seconds",
            "From a run's creation to its final status",
            buckets=_RUN_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter(
            "threadline_tokens",
            "Tokens of runs that ended in this process, prompt or completion",
            ["kind"],
            registry=self.registry,
        )
        self.runs = Gauge(
            "threadline_runs",
            "Runs in the database now, by active status (queued is the queue depth)",
            ["status"],
            registry=self.registry,
        )
        self.workers = Gauge(
            "threadline_workers_holding_runs",
            "Workers (in any process) holding at least one run under a live lease",
            registry=self.registry,
        )
        self.models_up = Gauge(
            "threadline_embedded_model_up",
            "1 when an embedded model has loaded and passed its start-up check, else 0",
            ["model"],
            registry=self.registry,
        )

    def run_moved(self, run: Run) -> None:
        """Called by the store after a run's status change committed."""
        if run.status not in TERMINAL:
            return
        self.runs_ended.labels(run.status.value).inc()
        self.run_seconds.observe(max(0.0, time.time() - run.created_at))
        if run.usage:
            self.tokens.labels("prompt").inc(run.usage.get("prompt_tokens", 0))
            self.tokens.labels("completion").inc(run.usage.get("completion_tokens", 0))

    def render(self) -> bytes:
        return generate_latest(self.registry)
