"""Scale-out: completed runs per second with 1, 2 and 4 worker processes, and runs held in flight by one.

``python -m bench.scale`` starts, as real processes on 127.0.0.1: the scripted model answering every
request after one second (``python -m threadline.testing --first-delay 1.0``), one API process
(``threadline serve --no-worker``) and N ``threadline worker`` processes (default concurrency 500), all
on one database: a fresh SQLite file shared by the processes, then a fresh PostgreSQL database when one
answers on 127.0.0.1:5432 (dropped at the end).

- Throughput, for N = 1, 2, 4: R runs (``POST /v1/threads/runs``, one thread each) are created as fast
  as 32 concurrent clients can, and the benchmark waits until every one has ended. Runs/s is R over the
  time from the first request to the last completion; latency is per run, from its request to its
  completion.
- In flight: with no worker running, 500 runs are queued; then one worker starts. The peak number of
  runs ``in_progress`` at once shows how many the worker holds; each run's time in the worker (claimed
  to completed) against the model's one second shows whether latency stays flat. It is measured again
  with a model that takes five seconds (``--slow``), slow enough for the worker to claim all 500 before
  the first answers come back.

Completions are observed by reading the ``runs`` table every 50 ms from the benchmark process (a reader
beside the servers, cheaper than polling 500 runs over HTTP), so times are ±50 ms. The CPU each
process used comes from ``/proc``. It prints markdown tables and replaces its own section of
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    BETA,
    POSTGRES_USED,
    Child,
    add_postgres_arguments,
    child_env,
    free_port,
    log,
    machine,
    markdown_table,
    pct,
    postgres_database,
    postgres_skipped,
    publish,
    scripted_model_url,
    start_scripted_model,
    today,
    wait_healthy,
)

SECTION = "## Scale-out: worker processes and runs in flight"
MODEL_SECONDS = 1.0
SUBMITTERS = 32
SAMPLE_SECONDS = 0.05
START_TIMEOUT = 60.0
PHASE_TIMEOUT = 90.0
STOP_TIMEOUT = 20.0
TOTAL_TIMEOUT = 420.0
GOAL_IN_FLIGHT = 500
ENDED = frozenset({"completed", "failed", "cancelled", "expired", "incomplete", "requires_action"})


# --- processes ------------------------------------------------------------------------------------


def cpu(child: Child) -> float:
    """A process's CPU seconds so far (0 where there is no /proc)."""
    return child.cpu() or 0.0


@dataclass
class Stack:
    workdir: Path
    env: dict[str, str]
    db_url: str
    models: dict[float, tuple[Child, str]]
    """Scripted models by seconds to answer: the process and its base URL."""
    api: Child
    url: str
    children: list[Child] = field(default_factory=list)
    assistant_id: str = ""

    @property
    def model(self) -> Child:
        return self.models[MODEL_SECONDS][0]

    async def start_workers(self, count: int, tag: str, model_seconds: float = MODEL_SECONDS) -> list[Child]:
        """Worker processes whose model (the upstream) answers after ``model_seconds``."""
        argv = [sys.executable, "-m", "threadline.cli", "worker"]
        env = {**self.env, "THREADLINE_UPSTREAM_BASE_URL": self.models[model_seconds][1]}
        workers = [
            Child(
                f"worker {tag}-{i}",
                argv,
                env,
                self.workdir / f"worker-{tag}-{i}.log",
                stop_timeout=STOP_TIMEOUT,
            )
            for i in range(count)
        ]
        self.children += workers
        # Waited for without blocking the loop: the watcher may be sampling the runs meanwhile.
        await asyncio.gather(*(w.await_line("started (concurrency", START_TIMEOUT) for w in workers))
        return workers

    async def stop_workers(self, workers: list[Child]) -> None:
        await asyncio.gather(*(asyncio.to_thread(w.stop) for w in workers))


@contextlib.asynccontextmanager
async def stack(workdir: Path, db_url: str, delays: Sequence[float]) -> AsyncIterator[Stack]:
    """One scripted model per delay and the API process on ``db_url``; stops every process it or its
    users start."""
    children: list[Child] = []
    try:
        models: dict[float, tuple[Child, str]] = {}
        for delay in dict.fromkeys([MODEL_SECONDS, *delays]):
            model = start_scripted_model(workdir, f"{delay:g}s", delay, stop_timeout=STOP_TIMEOUT)
            children.append(model)
            models[delay] = (model, await asyncio.to_thread(scripted_model_url, model, START_TIMEOUT))
        env = child_env(
            {
                "THREADLINE_DATABASE_URL": db_url,
                "THREADLINE_UPSTREAM_BASE_URL": models[MODEL_SECONDS][1],
                "THREADLINE_DATA_DIR": str(workdir),
            }
        )
        port = free_port()
        api_argv = [sys.executable, "-m", "threadline.cli", "serve", "--no-worker", "--port", str(port)]
        api = Child("api", api_argv, env, workdir / "api.log", stop_timeout=STOP_TIMEOUT)
        children.append(api)
        url = await asyncio.to_thread(wait_healthy, api, port, START_TIMEOUT)
        running = Stack(workdir, env, db_url, models, api, url, children)
        async with httpx.AsyncClient(headers=BETA, timeout=10.0) as client:
            created = await client.post(f"{url}/assistants", json={"model": "gpt-4o", "name": "bench"})
            created.raise_for_status()
            running.assistant_id = created.json()["id"]
            for _ in range(10):  # warm the API's code paths and connections
                (await client.post(f"{url}/threads", json={})).raise_for_status()
        yield running
    finally:
        for child in reversed(children):
            await asyncio.to_thread(child.stop)


# --- submitting and watching runs -----------------------------------------------------------------


async def submit(running: Stack, count: int, errors: Counter[str]) -> tuple[dict[str, float], float, int]:
    """Create ``count`` runs, each on a new thread; returns their request times, how long it took and
    how many requests failed (counted by reason in ``errors``)."""
    started: dict[str, float] = {}
    failed = 0
    left = iter(range(count))
    limits = httpx.Limits(max_connections=SUBMITTERS, max_keepalive_connections=SUBMITTERS)
    body = {"assistant_id": running.assistant_id, "thread": {"messages": [{"role": "user", "content": "hi"}]}}
    begin = time.monotonic()
    async with httpx.AsyncClient(headers=BETA, limits=limits, timeout=30.0) as client:

        async def submitter() -> None:
            nonlocal failed
            for _ in left:
                at = time.monotonic()
                try:
                    response = await client.post(f"{running.url}/threads/runs", json=body)
                except httpx.HTTPError as exc:
                    failed += 1
                    errors[f"request: {type(exc).__name__}"] += 1
                    continue
                if response.status_code != 200:
                    failed += 1
                    errors[f"request: HTTP {response.status_code}"] += 1
                    continue
                started[response.json()["id"]] = at

        await asyncio.gather(*(submitter() for _ in range(SUBMITTERS)))
    return started, time.monotonic() - begin, failed


class Watcher:
    """Reads the runs table every 50 ms: first time each run is seen in progress and ended, and the
    most runs in progress at once."""

    def __init__(self, db_url: str) -> None:
        from sqlalchemy.ext.asyncio import create_async_engine

        self.engine = create_async_engine(db_url, pool_size=1, max_overflow=0)
        self.base_seq = 0
        self.in_progress: dict[str, float] = {}
        self.ended: dict[str, float] = {}
        self.statuses: dict[str, str] = {}
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    async def _query(self, sql: str, **params: Any) -> list[Any]:
        from sqlalchemy import text

        async with self.engine.connect() as conn:
            return list((await conn.execute(text(sql), params)).all())

    async def start(self) -> None:
        self.in_progress, self.ended, self.statuses, self.peak = {}, {}, {}, 0
        rows = await self._query("SELECT COALESCE(MAX(seq), 0) FROM runs")
        self.base_seq = int(rows[0][0])
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            rows = await self._query("SELECT id, status FROM runs WHERE seq > :seq", seq=self.base_seq)
            now = time.monotonic()
            busy = 0
            for run_id, status in rows:
                self.statuses[run_id] = status
                if status == "in_progress":
                    busy += 1
                    self.in_progress.setdefault(run_id, now)
                elif status in ENDED:
                    self.ended.setdefault(run_id, now)
            self.peak = max(self.peak, busy)
            await asyncio.sleep(SAMPLE_SECONDS)

    async def failure_reasons(self, errors: Counter[str]) -> None:
        """Count the runs that did not complete, by status and error message."""
        rows = await self._query(
            "SELECT status, last_error FROM runs WHERE seq > :seq AND status <> 'completed'",
            seq=self.base_seq,
        )
        for status, last_error in rows:
            message = ""
            if last_error:
                error = json.loads(last_error) if isinstance(last_error, str) else last_error
                message = f": {str(error.get('message', ''))[:90]}"
            errors[f"run {status}{message}"] += 1

    async def wait_ended(self, ids: Sequence[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(run_id in self.ended for run_id in ids):
                return True
            await asyncio.sleep(SAMPLE_SECONDS)
        return False

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def close(self) -> None:
        await self.stop()
        await self.engine.dispose()


# --- phases ---------------------------------------------------------------------------------------


@dataclass
class Phase:
    label: str
    workers: int
    runs: int
    completed: int = 0
    failed: int = 0
    """Requests that failed, or runs that ended other than completed or did not end in time."""
    seconds: float = 0.0
    submit_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    in_worker: list[float] = field(default_factory=list)
    """Claimed (first seen in progress) to ended, per completed run."""
    waits: list[float] = field(default_factory=list)
    """Request to claimed, per completed run: time spent queued."""
    ends: list[float] = field(default_factory=list)
    """When each completed run was seen completed."""
    peak: int = 0
    model_seconds: float = MODEL_SECONDS
    claimed_in_model_time: int = 0
    """In flight: runs claimed within one model answer's time of the first claim."""
    errors: Counter[str] = field(default_factory=Counter)
    cpu: dict[str, float] = field(default_factory=dict)
    """CPU seconds per role (api, workers, model) over the phase."""

    @property
    def rate(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0

    @property
    def steady_rate(self) -> float:
        """Completions per second between the 10th and the 90th percentile completion: the rate while
        the pipeline is full, without the first model second and the tail."""
        ends = sorted(self.ends)
        if len(ends) < 10:
            return float("nan")
        low, high = round(0.1 * (len(ends) - 1)), round(0.9 * (len(ends) - 1))
        span = ends[high] - ends[low]
        return (high - low) / span if span > 0 else float("nan")


def cpu_of(running: Stack, workers: list[Child]) -> dict[str, float]:
    return {
        "api": cpu(running.api),
        "workers": sum(cpu(w) for w in workers),
        "model": cpu(running.model),
    }


REFUSED = "too many clients already"


def note_refused(phase: Phase, children: list[tuple[Child, int]]) -> None:
    """Count PostgreSQL's refusals in the processes' logs: runs and requests fail with a generic error."""
    refused = sum(
        child.count_since(offset, f"TooManyConnectionsError: sorry, {REFUSED}") for child, offset in children
    )
    if refused:
        phase.errors[f"logged by the processes: PostgreSQL refused a connection ({REFUSED})"] += refused


def settle(phase: Phase, watcher: Watcher, started: dict[str, float], begin: float) -> None:
    done = [run_id for run_id in started if watcher.statuses.get(run_id) == "completed"]
    phase.completed = len(done)
    phase.failed += len(started) - len(done)
    phase.latencies = [watcher.ended[r] - started[r] for r in done]
    phase.in_worker = [watcher.ended[r] - watcher.in_progress[r] for r in done if r in watcher.in_progress]
    phase.waits = [watcher.in_progress[r] - started[r] for r in done if r in watcher.in_progress]
    phase.ends = [watcher.ended[r] for r in done]
    phase.seconds = max((watcher.ended[r] for r in done), default=begin) - begin
    phase.peak = watcher.peak


async def throughput(running: Stack, watcher: Watcher, workers_n: int, runs: int) -> Phase:
    phase = Phase(f"{workers_n} worker{'s' if workers_n > 1 else ''}", workers_n, runs)
    workers = await running.start_workers(workers_n, f"t{workers_n}")
    api_log = running.api.size()
    try:
        await watcher.start()
        cpu0 = cpu_of(running, workers)
        begin = time.monotonic()
        started, phase.submit_seconds, phase.failed = await submit(running, runs, phase.errors)
        if not await watcher.wait_ended(list(started), PHASE_TIMEOUT):
            log(f"  {len(started) - len(watcher.ended)} runs did not end within {PHASE_TIMEOUT:.0f}s")
        await watcher.stop()
        cpu1 = cpu_of(running, workers)
        phase.cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
        settle(phase, watcher, started, begin)
        await watcher.failure_reasons(phase.errors)
        note_refused(phase, [(running.api, api_log), *((w, 0) for w in workers)])
    finally:
        await watcher.stop()
        await running.stop_workers(workers)
    log(
        f"  {phase.label}: {phase.rate:.0f} runs/s, p50 {pct(phase.latencies, 0.5):.2f}s,"
        f" p95 {pct(phase.latencies, 0.95):.2f}s, peak in flight {phase.peak}, {phase.failed} failed"
    )
    return phase


async def in_flight(running: Stack, watcher: Watcher, runs: int, model_seconds: float) -> Phase:
    """Queue ``runs`` with no worker running, then start one worker and let it take them all."""
    phase = Phase("in flight", 1, runs, model_seconds=model_seconds)
    api_log = running.api.size()
    await watcher.start()
    started, phase.submit_seconds, phase.failed = await submit(running, runs, phase.errors)
    workers: list[Child] = []
    try:
        cpu0 = cpu_of(running, [])
        begin = time.monotonic()
        workers = await running.start_workers(1, f"inflight-{model_seconds:g}s", model_seconds)
        if not await watcher.wait_ended(list(started), PHASE_TIMEOUT):
            log(f"  {len(started) - len(watcher.ended)} runs did not end within {PHASE_TIMEOUT:.0f}s")
        await watcher.stop()
        cpu1 = cpu_of(running, workers)
        # The worker's own CPU from its start (it did not exist at cpu0).
        phase.cpu = {k: cpu1[k] - cpu0.get(k, 0.0) for k in cpu1}
        settle(phase, watcher, started, begin)
        await watcher.failure_reasons(phase.errors)
        note_refused(phase, [(running.api, api_log), *((w, 0) for w in workers)])
        # Counted from the first claim rather than the worker's launch (its imports are not the runs').
        claims = sorted(watcher.in_progress[r] for r in started if r in watcher.in_progress)
        first_claim = claims[0] if claims else begin
        phase.seconds = max(phase.ends, default=first_claim) - first_claim
        phase.claimed_in_model_time = sum(1 for at in claims if at - first_claim <= model_seconds)
    finally:
        await watcher.stop()
        await running.stop_workers(workers)
    log(
        f"  in flight, {model_seconds:g} s model: peak {phase.peak}, drained in {phase.seconds:.2f}s,"
        f" in-worker p50 {pct(phase.in_worker, 0.5):.2f}s p95 {pct(phase.in_worker, 0.95):.2f}s,"
        f" {phase.failed} failed"
    )
    return phase


async def measure(
    workdir: Path, db_url: str, counts: Sequence[int], runs: int, queued: int, slow: float
) -> list[Phase]:
    phases = []
    delays = [MODEL_SECONDS, *([slow] if slow else [])]
    async with stack(workdir, db_url, delays) as running:
        watcher = Watcher(db_url)
        try:
            for n in counts:
                phases.append(await throughput(running, watcher, n, runs))
            for delay in delays:
                phases.append(await in_flight(running, watcher, queued, delay))
        finally:
            await watcher.close()
    return phases


# --- report ---------------------------------------------------------------------------------------


def s(seconds: float) -> str:
    return f"{seconds:.2f}"


def throughput_table(results: list[tuple[str, list[Phase]]]) -> str:
    head = ["database", "workers", "runs/s", "steady runs/s", "created/s", "p50 s", "p95 s", "max s"]
    head += ["queued p50 s", "peak in flight", "failed", "CPU ms/run: API", "workers", "model"]
    rows = []
    for name, phases in results:
        for p in phases:
            if p.label == "in flight":
                continue
            per_run = {k: v / p.completed * 1000 if p.completed else float("nan") for k, v in p.cpu.items()}
            rows.append(
                [
                    name,
                    str(p.workers),
                    f"**{p.rate:.0f}**",
                    f"{p.steady_rate:.0f}",
                    f"{p.runs / p.submit_seconds:.0f}" if p.submit_seconds else "n/a",
                    s(pct(p.latencies, 0.5)),
                    s(pct(p.latencies, 0.95)),
                    s(max(p.latencies, default=float("nan"))),
                    s(pct(p.waits, 0.5)),
                    str(p.peak),
                    f"{p.failed} / {p.runs}",
                    f"{per_run['api']:.1f}",
                    f"{per_run['workers']:.1f}",
                    f"{per_run['model']:.1f}",
                ]
            )
    return markdown_table(head, rows)


def in_flight_table(results: list[tuple[str, list[Phase]]]) -> str:
    head = ["database", "model s", "runs queued", "claimed within the model's time", "peak in flight"]
    head += ["in worker p50 s", "p95 s", "max s", "all done after s", "runs/s", "failed", "worker CPU ms/run"]
    rows = []
    for name, phases in results:
        for p in phases:
            if p.label != "in flight":
                continue
            rows.append(
                [
                    name,
                    f"{p.model_seconds:g}",
                    str(p.runs),
                    str(p.claimed_in_model_time),
                    f"**{p.peak}**",
                    f"**{s(pct(p.in_worker, 0.5))}**",
                    s(pct(p.in_worker, 0.95)),
                    s(max(p.in_worker, default=float("nan"))),
                    s(p.seconds),
                    f"{p.rate:.0f}",
                    f"{p.failed} / {p.runs}",
                    f"{p.cpu.get('workers', 0.0) / p.completed * 1000:.1f}" if p.completed else "n/a",
                ]
            )
    return markdown_table(head, rows)


def error_lines(results: list[tuple[str, list[Phase]]]) -> list[str]:
    lines = []
    for name, phases in results:
        for p in phases:
            what = p.label if p.label != "in flight" else f"in flight, {p.model_seconds:g} s model"
            for reason, count in p.errors.most_common(4):
                lines.append(f"- {name}, {what}: {count} × {reason}")
    return lines


def report(
    results: list[tuple[str, list[Phase]]], *, info: str, pg: str, runs: int, queued: int, slow: float
) -> str:
    def goal(model_seconds: float) -> tuple[str, int, float]:
        """Met or not, the lowest peak and the highest p95 in the worker, for one model time."""
        held = [
            p
            for _, phases in results
            for p in phases
            if p.label == "in flight" and p.model_seconds == model_seconds
        ]
        peak = min((p.peak for p in held), default=0)
        p95 = max((pct(p.in_worker, 0.95) for p in held), default=float("nan"))
        met = bool(held) and peak >= GOAL_IN_FLIGHT and p95 <= 2 * model_seconds
        return ("met" if met else "not met"), peak, p95

    verdict, peak, p95 = goal(MODEL_SECONDS)
    slow_line = []
    if slow:
        slow_verdict, slow_peak, slow_p95 = goal(slow)
        slow_line = [
            f"- with the {slow:g} s model: **{slow_verdict}** (lowest peak {slow_peak}, highest p95 in the"
            f" worker {slow_p95:.2f} s)"
        ]
    errors = error_lines(results)
    return "\n".join(
        [
            f"- date: {today()}; machine: {info}",
            "- model: the scripted model (`python -m threadline.testing --first-delay 1`): every answer starts"
            " after 1 s, then streams at once"
            + (f"; for the second in-flight row, another one with `--first-delay {slow:g}`" if slow else ""),
            "- processes: the model, one `threadline serve --no-worker`, N `threadline worker`"
            " (`THREADLINE_WORKER_CONCURRENCY` 500, the default) and the benchmark client, all on the same"
            f" cores; SQLite: one WAL file shared by the processes; PostgreSQL: {pg}",
            f"- reproduce: `python -m bench.scale` (about 3 minutes; these figures: `--runs {runs}"
            f" --queued {queued}`)",
            "",
            f"**Throughput.** {runs} runs per row, each `POST /v1/threads/runs` on a new thread, sent by"
            f" {SUBMITTERS} concurrent clients as fast as the API answers (created/s). Runs/s is completed runs"
            " over the time from the first request to the last completion; steady runs/s counts only"
            " between the 10th and the 90th percentile completion (the rate once the pipeline is full)."
            " Latency is per run, from its request to its completion; queued is request to claimed. CPU"
            " ms/run is each role's CPU time over the row divided by the runs completed (1000 ms of CPU a"
            " second is one whole core).",
            "",
            throughput_table(results),
            "",
            "On SQLite the API and the workers share no event bus (it lives in each process), so a worker"
            " finds new runs at its next poll (`THREADLINE_WORKER_POLL_SECONDS`, 1 s): that wait is part of"
            " every queued time. On PostgreSQL, LISTEN/NOTIFY wakes the workers at once. All processes share"
            " the same cores: where they are already busy, another worker process adds CPU per run (the"
            " workers column) rather than runs per second.",
            "",
            f"**In flight.** {queued} runs queued while no worker runs, then one worker starts and claims"
            " them. Peak in flight is the most runs seen `in_progress` at once; in worker is each run's time"
            " from claimed to completed, against the model's own time; all done after counts from the first"
            " claim to the last completion.",
            "",
            in_flight_table(results),
            "",
            "A worker claims queued runs in batches of 50 (one transaction each) while it already drives"
            " the runs it holds, so the first runs can finish before the last are claimed: the peak is"
            " about what it claims within one model time (the column before it). With a model slow enough"
            " for every claim to land first, the peak shows the worker's own limit and the time in the"
            " worker shows whether holding that many slows each one down.",
            "",
            *(["Runs or requests that did not complete:", "", *errors, ""] if errors else []),
            *(
                [
                    "PostgreSQL refused connections: each Threadline process may open up to 30 pooled"
                    " connections plus 2 for the event bus, so the API and a few busy workers can reach"
                    " PostgreSQL's default limit of 100. A run whose failure could not be written either"
                    " stays `in_progress` until its lease (30 s) lapses and a worker claims it again:"
                    " the rows' maximum latencies of about 30 s.",
                    "",
                ]
                if any(REFUSED in line for line in errors)
                else []
            ),
            f"Goal: one worker holds {GOAL_IN_FLIGHT} runs in flight with flat latency (p95 in the worker"
            " within 2× the model's time):",
            "",
            f"- with the {MODEL_SECONDS:g} s model: **{verdict}** (lowest peak {peak}, highest p95 in the"
            f" worker {p95:.2f} s)",
            *slow_line,
        ]
    )


async def bench(args: argparse.Namespace, workdir: Path) -> tuple[list[tuple[str, list[Phase]]], str]:
    results = []
    counts = [int(n) for n in args.workers]
    log("SQLite")
    sqlite_dir = workdir / "sqlite"
    sqlite_dir.mkdir()
    sqlite_url = f"sqlite+aiosqlite:///{sqlite_dir / 'threadline.db'}"
    results.append(
        ("SQLite", await measure(sqlite_dir, sqlite_url, counts, args.runs, args.queued, args.slow))
    )
    pg = await postgres_skipped(args.no_postgres, args.postgres_admin_url)
    if pg is None:
        log("PostgreSQL")
        pg_dir = workdir / "postgres"
        pg_dir.mkdir()
        async with postgres_database(args.postgres_admin_url) as url:
            results.append(
                ("PostgreSQL", await measure(pg_dir, url, counts, args.runs, args.queued, args.slow))
            )
        pg = POSTGRES_USED
    return results, pg


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n")[0])
    parser.add_argument("--workers", nargs="+", default=["1", "2", "4"], help="worker process counts")
    parser.add_argument("--runs", type=int, default=400, help="runs per throughput measurement")
    parser.add_argument("--queued", type=int, default=500, help="runs queued for the in-flight measurement")
    parser.add_argument(
        "--slow", type=float, default=5.0, help="model seconds of a second in-flight row (0: skip it)"
    )
    add_postgres_arguments(parser)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md")
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 2000 or not 1 <= args.queued <= 2000:
        parser.error("--runs and --queued in [1, 2000]")
    if not 0 <= args.slow <= 30:
        parser.error("--slow in [0, 30]")
    if not all(w.isdigit() and 1 <= int(w) <= 8 for w in args.workers):
        parser.error("--workers: counts in [1, 8]")
    info = str(machine())
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="threadline-bench-") as tmp:
        results, pg = asyncio.run(asyncio.wait_for(bench(args, Path(tmp)), TOTAL_TIMEOUT))
    body = report(results, info=info, pg=pg, runs=args.runs, queued=args.queued, slow=args.slow)
    publish([(SECTION, body)], write=not args.no_write, began=began)


if __name__ == "__main__":
    main()
