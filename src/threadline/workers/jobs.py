"""``JobRunner``: runs background jobs from the durable queue, inside the worker process.

Handlers are registered by kind (``runner.register("file.ingest", handler)``); a worker claims
only the kinds it has handlers for. Each claimed job is leased and the lease renewed while its
handler runs (the lease loop of ``workers/lease.py``). A handler that raises is retried with
exponential backoff until the job runs out of attempts; a job whose worker died is taken back by
the reaper once its lease lapses and run again by whichever worker claims it next. Handlers must
therefore be safe to run more than once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from threadline.config import Settings
from threadline.domain.entities import Job
from threadline.domain.ports.storage import JobQueue
from threadline.workers.lease import LeaseLoop

log = logging.getLogger(__name__)

Handler = Callable[[Job], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class JobAttempt:
    """One run of a job's handler whose outcome was written, as the runner reports it (metrics)."""

    kind: str
    outcome: Literal["succeeded", "retrying", "failed"]
    """``retrying``: the handler raised and the job will be tried again; ``failed``: for good."""
    seconds: float
    """How long the handler ran."""


JobObserver = Callable[[JobAttempt], None]

MAX_BACKOFF_SECONDS = 3600.0
KEEP_FINISHED_SECONDS = 7 * 24 * 3600.0
"""How long finished jobs stay in the table, for whoever wants to see how they went."""
PURGE_EVERY_SECONDS = 3600.0


def backoff(settings: Settings, attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failed ones: doubling, capped at an hour."""
    return float(min(settings.job_retry_seconds * 2 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS))


class JobRunner(LeaseLoop[Job]):
    def __init__(
        self,
        settings: Settings,
        queue: JobQueue,
        worker_id: str,
        handlers: Mapping[str, Handler] | None = None,
        observe: JobObserver | None = None,
        give_up: Mapping[str, Handler] | None = None,
        interruptible: Collection[str] = (),
    ) -> None:
        """``give_up``: by kind, what to do with a job that failed for good because the worker running
        its last attempt died (the reaper marked it failed; its handler never saw that attempt end).
        ``interruptible``: kinds stopped at once when the runner stops, and handed back, rather than
        given the grace (a file being indexed can be indexed again; waiting for it would hold the
        server up)."""
        super().__init__(
            worker_id,
            noun="jobs",
            concurrency=settings.job_concurrency,
            lease_seconds=settings.job_lease_seconds,
            sweep_seconds=settings.sweep_interval_seconds,
            task_names=("threadline-jobs", "threadline-job-leases", "threadline-job-reaper"),
        )
        self.settings = settings
        self.interruptible = frozenset(interruptible)
        self.give_up: dict[str, Handler] = dict(give_up or {})
        self.queue = queue
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.observe = observe
        """Told of each attempt whose outcome was written (not of jobs handed back or taken over)."""
        self._wake = asyncio.Event()
        self._purged_at = 0.0

    def register(self, kind: str, handler: Handler) -> None:
        """Run ``handler`` for jobs of ``kind`` (from the worker's event loop); takes effect at once."""
        self.handlers[kind] = handler
        self._wake.set()

    def interrupted(self) -> dict[str, asyncio.Task[None]]:
        """The running jobs of interruptible kinds, by id."""
        return {
            job_id: task
            for job_id, task in self.running.items()
            if self.claimed[job_id].kind in self.interruptible
        }

    # --- what the lease loop asks of jobs -------------------------------------------------

    def key(self, item: Job) -> str:
        return item.id

    async def claim(self, room: int) -> list[Job]:
        return await self.queue.claim_jobs(
            self.worker_id, list(self.handlers), time.time(), self.settings.job_lease_seconds, room
        )

    def execute(self, item: Job) -> Coroutine[Any, Any, None]:
        return self._run(item)

    async def renew(self, keys: Sequence[str], until: float) -> list[str]:
        return await self.queue.renew_job_leases(self.worker_id, keys, until)

    async def lost(self, key: str) -> bool:
        # Reaped (we were too slow to renew) and perhaps running elsewhere: stop our copy.
        log.warning("worker %s: lost the lease of job %s; stopping it", self.worker_id, key)
        return True

    async def release(self, key: str) -> bool:
        if not await self.queue.release_job(key, self.worker_id, time.time()):
            return False
        log.info("worker %s: handed job %s back to the queue", self.worker_id, key)
        return True

    async def idle(self) -> None:
        enqueued = getattr(self.queue, "enqueued", None)
        waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._wake.wait())]
        if isinstance(enqueued, asyncio.Event):
            waits.append(asyncio.ensure_future(enqueued.wait()))
        if self.running:
            waits.extend(self.running.values())
        await asyncio.wait(
            waits, timeout=self.settings.worker_poll_seconds, return_when=asyncio.FIRST_COMPLETED
        )
        for waiter in waits[:2]:
            waiter.cancel()
        self._wake.clear()
        if isinstance(enqueued, asyncio.Event):
            enqueued.clear()

    async def sweep_once(self) -> None:
        reaped = await self.queue.reap_jobs(time.time())
        if time.monotonic() - self._purged_at > PURGE_EVERY_SECONDS:
            self._purged_at = time.monotonic()
            await self.queue.purge_jobs(time.time() - KEEP_FINISHED_SECONDS)
        if reaped:
            log.info("took back %d jobs whose workers stopped renewing their leases", len(reaped))
            self._wake.set()
        for job in reaped:
            if job.status == "failed" and job.kind in self.give_up:
                # Its last attempt died with its worker: its handler's own last-try path never ran.
                try:
                    await self.give_up[job.kind](job)
                except Exception:
                    log.exception("worker %s: giving up job %s failed", self.worker_id, job.id)

    # --- running a job ---------------------------------------------------------------------

    async def _run(self, job: Job) -> None:
        handler = self.handlers[job.kind]
        started = time.monotonic()
        try:
            await handler(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Shielded, as below: the outcome is written even if the task is cancelled meanwhile.
            seconds = time.monotonic() - started
            await asyncio.shield(self._failed(job, f"{type(exc).__name__}: {exc}", seconds))
            return
        seconds = time.monotonic() - started
        if await asyncio.shield(self.queue.finish_job(job.id, self.worker_id, time.time())):
            self._report(job, "succeeded", seconds)
        else:
            log.warning("worker %s: job %s finished after it was taken over", self.worker_id, job.id)

    async def _failed(self, job: Job, error: str, seconds: float) -> None:
        if job.attempts < job.max_attempts:
            delay = backoff(self.settings, job.attempts)
            log.warning(
                "job %s (%s) failed on attempt %d of %d, retrying in %.1fs: %s",
                job.id, job.kind, job.attempts, job.max_attempts, delay, error,
            )  # fmt: skip
            if await self.queue.fail_job(job.id, self.worker_id, error, time.time() + delay):
                self._report(job, "retrying", seconds)
        else:
            log.error(
                "job %s (%s) failed for good after %d attempts: %s", job.id, job.kind, job.attempts, error
            )
            if await self.queue.fail_job(job.id, self.worker_id, error, None):
                self._report(job, "failed", seconds)

    def _report(self, job: Job, outcome: Literal["succeeded", "retrying", "failed"], seconds: float) -> None:
        """Tell the observer of an attempt whose outcome was written; ``seconds``: the handler's time."""
        if self.observe is None:
            return
        try:
            self.observe(JobAttempt(job.kind, outcome, seconds))
        except Exception:
            log.exception("reporting job %s failed", job.id)
