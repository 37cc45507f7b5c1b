"""The background job queue, run by real workers on SQLite and PostgreSQL: retries with backoff,
jobs that run out of attempts, a worker killed mid-job whose job another takes over once its lease
lapses, and two workers sharing a queue without running any job twice."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.conftest import database_url, server_settings
from tests.support import ThreadlineServer, wait_for
from threadline.domain.entities import Job
from threadline.store.database import Database, migrate
from threadline.store.jobs import SqlJobQueue
from threadline.testing import ScriptedModel
from threadline.workers.jobs import Handler

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]


class Queue:
    """The job queue as a client outside the workers sees it (another process, in effect)."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.db = Database(url)
        self.queue = SqlJobQueue(self.db)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def enqueue(self, kind: str, payload: dict[str, Any] | None = None, max_attempts: int = 5) -> Job:
        job: Job = self.run(self.queue.enqueue(kind, payload or {}, max_attempts=max_attempts))
        return job

    def get(self, job_id: str) -> Job:
        job: Job | None = self.run(self.queue.get_job(job_id))
        assert job is not None
        return job

    def wait(self, job_id: str, status: str, timeout: float = 20) -> Job:
        return wait_for(
            lambda: (job := self.get(job_id)).status == status and job,
            timeout=timeout,
            interval=0.05,
            what=f"job {job_id} to be {status}",
        )

    def close(self) -> None:
        self.run(self.db.dispose())
        self.loop.close()


@pytest.fixture
def start_server(
    model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., ThreadlineServer]]:
    started: list[ThreadlineServer] = []

    def start(job_handlers: Mapping[str, Handler], **overrides: Any) -> ThreadlineServer:
        quick = {"job_lease_seconds": 1.0, "job_retry_seconds": 0.3}
        settings = server_settings(model, tmp_path_factory).replace(**{**quick, **overrides})
        server = ThreadlineServer(settings, job_handlers=job_handlers)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def queue_for() -> Iterator[Callable[[ThreadlineServer | str], Queue]]:
    opened: list[Queue] = []

    def open_queue(target: ThreadlineServer | str) -> Queue:
        url = target if isinstance(target, str) else target.settings.effective_database_url
        opened.append(Queue(url))
        return opened[-1]

    yield open_queue
    for queue in opened:
        queue.close()


def test_a_failing_job_is_retried_with_backoff_until_it_succeeds(
    start_server: Callable[..., ThreadlineServer], queue_for: Callable[..., Queue]
) -> None:
    calls: list[tuple[float, int]] = []

    async def flaky(job: Job) -> None:
        calls.append((time.monotonic(), job.attempts))
        if len(calls) < 3:
            raise RuntimeError(f"boom {len(calls)}")

    queue = queue_for(start_server({"flaky": flaky}))
    job = queue.enqueue("flaky", {"file_id": "file-x"})
    done = queue.wait(job.id, "succeeded")
    assert [attempt for _, attempt in calls] == [1, 2, 3]
    assert done.attempts == 3 and done.last_error == "RuntimeError: boom 2"
    assert done.worker_id is None and done.finished_at is not None
    # Backoff doubles from THREADLINE_JOB_RETRY_SECONDS: 0.3 s, then 0.6 s.
    assert calls[1][0] - calls[0][0] >= 0.3
    assert calls[2][0] - calls[1][0] >= 0.6


def test_a_job_that_keeps_failing_ends_failed(
    start_server: Callable[..., ThreadlineServer], queue_for: Callable[..., Queue]
) -> None:
    calls: list[str] = []

    async def broken(job: Job) -> None:
        calls.append(job.id)
        raise ValueError("unreadable file")

    queue = queue_for(start_server({"broken": broken}, job_retry_seconds=0.05))
    job = queue.enqueue("broken", max_attempts=2)
    failed = queue.wait(job.id, "failed")
    assert calls == [job.id, job.id]
    assert failed.attempts == 2 and failed.last_error == "ValueError: unreadable file"
    assert failed.finished_at is not None and failed.worker_id is None


def test_a_killed_workers_job_is_taken_over_after_its_lease_lapses(
    start_server: Callable[..., ThreadlineServer], queue_for: Callable[..., Queue], tmp_path: Path
) -> None:
    url = database_url(tmp_path)
    migrate(url)
    queue = queue_for(url)
    job = queue.enqueue("slow", {"step": "ingest"})
    marker = tmp_path / "started"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    worker = subprocess.Popen([sys.executable, "-m", "tests.job_worker", url, str(marker)], cwd=ROOT, env=env)
    try:
        wait_for(marker.exists, timeout=60, what="the worker process to start the job")
    finally:
        worker.kill()  # SIGKILL: no hand-back, its lease simply stops being renewed
        worker.wait(timeout=20)
    held = queue.get(job.id)
    assert (held.status, held.attempts, held.worker_id is not None) == ("running", 1, True)
    assert held.lease_expires_at is not None

    taken: list[tuple[float, int]] = []

    async def slow(job: Job) -> None:
        taken.append((time.time(), job.attempts))

    start_server({"slow": slow}, database_url=url)
    done = queue.wait(job.id, "succeeded")
    assert taken and taken[0][0] >= held.lease_expires_at
    assert done.attempts == 2
    assert done.last_error == "the worker running it stopped renewing its lease"


def test_two_workers_share_a_queue_and_run_each_job_once(
    start_server: Callable[..., ThreadlineServer], queue_for: Callable[..., Queue], tmp_path: Path
) -> None:
    url = database_url(tmp_path)
    migrate(url)
    ran: list[str] = []
    workers: list[str] = []

    async def count(job: Job) -> None:
        ran.append(job.id)
        workers.append(job.worker_id or "")
        await asyncio.sleep(0.01)

    queue = queue_for(url)
    jobs = [queue.enqueue("count", {"n": n}) for n in range(40)]
    start_server({"count": count}, database_url=url, job_concurrency=4)
    start_server({"count": count}, database_url=url, job_concurrency=4)
    for job in jobs:
        queue.wait(job.id, "succeeded")
    assert sorted(ran) == sorted(job.id for job in jobs)
    assert all(queue.get(job.id).attempts == 1 for job in jobs)


def test_finished_jobs_are_purged_after_they_have_been_kept(
    start_server: Callable[..., ThreadlineServer], queue_for: Callable[..., Queue]
) -> None:
    async def quick(job: Job) -> None:
        return None

    queue = queue_for(start_server({"quick": quick}))
    done = queue.wait(queue.enqueue("quick").id, "succeeded")
    waiting = queue.enqueue("nobody-runs-this")
    assert done.finished_at is not None
    assert queue.run(queue.queue.purge_jobs(done.finished_at)) == 0
    assert queue.run(queue.queue.purge_jobs(done.finished_at + 1)) == 1
    assert queue.run(queue.queue.get_job(done.id)) is None
    assert queue.get(waiting.id).status == "queued"  # only finished jobs go


def test_jobs_of_kinds_a_worker_cannot_run_stay_queued(
    start_server: Callable[..., ThreadlineServer], queue_for: Callable[..., Queue]
) -> None:
    async def known(job: Job) -> None:
        return None

    queue = queue_for(start_server({"known": known}))
    other = queue.enqueue("unknown")
    done = queue.wait(queue.enqueue("known").id, "succeeded")
    assert done.attempts == 1
    assert queue.get(other.id).status == "queued" and queue.get(other.id).attempts == 0
