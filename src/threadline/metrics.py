"""Prometheus metrics: what a process did (runs ended, tokens, time) and what the database holds now.

One :class:`Metrics` per runtime, on its own registry (several apps can live in one process, as in
the tests). Counters and histograms are fed by the store, which reports each run that reaches a
final status after its write committed, and by the worker: the run loop reports each model call,
the job runner each job attempt whose outcome it wrote. Gauges (runs and jobs by status, workers
holding runs, embedded models up, uploads in progress) are read when ``GET /metrics`` is scraped. Every process exposes
its own figures; sum them across processes in Prometheus.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from threadline.domain.entities import Run
from threadline.domain.model_calls import ModelCall
from threadline.domain.ports.models import Usage
from threadline.domain.run_states import TERMINAL
from threadline.workers.jobs import JobAttempt

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

_RUN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_FIRST_EVENT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
MAX_MODEL_LABELS = 50
"""Distinct model names labelled one by one; calls to any further name count under ``other`` (with
a catch-all route the name is whatever clients ask for, and every name is a new series)."""


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
        self.uploads = Gauge(
            "threadline_uploads_in_progress",
            "File uploads this process is receiving now (capped per project by THREADLINE_UPLOAD_CONCURRENCY)",
            registry=self.registry,
        )
        self.models_up = Gauge(
            "threadline_embedded_model_up",
            "1 when an embedded model has loaded and passed its start-up check, else 0",
            ["model"],
            registry=self.registry,
        )
        self.model_call_seconds = Histogram(
            "threadline_model_call_duration_seconds",
            "A model call's request to the end of its stream, by upstream model, purpose and outcome",
            ["model", "purpose", "outcome"],
            buckets=_RUN_BUCKETS,
            registry=self.registry,
        )
        self.model_first_event_seconds = Histogram(
            "threadline_model_call_first_event_seconds",
            "A model call's request to the model's first event, by upstream model, purpose and outcome",
            ["model", "purpose", "outcome"],
            buckets=_FIRST_EVENT_BUCKETS,
            registry=self.registry,
        )
        self.jobs = Gauge(
            "threadline_jobs",
            "Background jobs in the database now, by status (finished ones are kept a week)",
            ["status"],
            registry=self.registry,
        )
        self.jobs_ended = Counter(
            "threadline_jobs_ended",
            "Background jobs that succeeded or failed for good in this process, by kind",
            ["kind", "status"],
            registry=self.registry,
        )
        self.job_seconds = Histogram(
            "threadline_job_duration_seconds",
            "One attempt of a background job in this process, by kind and outcome",
            ["kind", "outcome"],
            buckets=_RUN_BUCKETS,
            registry=self.registry,
        )
        self.api_requests = Counter(
            "threadline_api_requests",
            "Requests to the model routes (chat completions, embeddings), by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.api_tokens = Counter(
            "threadline_api_tokens",
            "Tokens of the model routes' requests, by route, prompt or completion",
            ["route", "kind"],
            registry=self.registry,
        )
        self.api_seconds = Histogram(
            "threadline_api_request_duration_seconds",
            "A model route's request to its last byte, by route",
            ["route"],
            buckets=_FIRST_EVENT_BUCKETS,
            registry=self.registry,
        )
        self._models: set[str] = set()

    def run_moved(self, run: Run) -> None:
        """Called by the store after a run's status change committed."""
        if run.status not in TERMINAL:
            return
        self.runs_ended.labels(run.status.value).inc()
        self.run_seconds.observe(max(0.0, time.time() - run.created_at))
        if run.usage:
            self.tokens.labels("prompt").inc(run.usage.get("prompt_tokens", 0))
            self.tokens.labels("completion").inc(run.usage.get("completion_tokens", 0))

    def model_called(self, call: ModelCall) -> None:
        """Called by the run loop after each model call (each attempt, summaries too)."""
        if call.model not in self._models and len(self._models) < MAX_MODEL_LABELS:
            self._models.add(call.model)
        labels = (call.model if call.model in self._models else "other", call.purpose, call.outcome)
        self.model_call_seconds.labels(*labels).observe(call.seconds)
        if call.first_event_seconds is not None:
            self.model_first_event_seconds.labels(*labels).observe(call.first_event_seconds)

    def api_called(self, route: str, status: int, seconds: float, usage: Usage | None) -> None:
        """Called by the model routes (``/v1/chat/completions``, ``/v1/embeddings``) as a request ends."""
        self.api_requests.labels(route, str(status)).inc()
        self.api_seconds.labels(route).observe(seconds)
        if usage is not None:
            self.api_tokens.labels(route, "prompt").inc(usage.prompt_tokens)
            self.api_tokens.labels(route, "completion").inc(usage.completion_tokens)

    def job_attempted(self, attempt: JobAttempt) -> None:
        """Called by the job runner after it wrote an attempt's outcome."""
        self.job_seconds.labels(attempt.kind, attempt.outcome).observe(attempt.seconds)
        if attempt.outcome != "retrying":
            self.jobs_ended.labels(attempt.kind, attempt.outcome).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
