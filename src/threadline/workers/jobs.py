"""``JobRunner``: runs background jobs from the durable queue, inside the worker process.

Handlers are registered by kind (``runner.register("file.ingest", handler)``); a worker claims
only the kinds it has handlers for. Each claimed job is leased and the lease renewed while its
handler runs. A handler that raises is retried with exponential backoff until the job runs out of
attempts; a job whose worker died is taken back by the reaper once its lease lapses and run again
by whichever worker claims it next. Handlers must therefore be safe to run more than once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from threadline.config import Settings
from threadline.domain.entities import Job
from threadline.domain.ports.storage import JobQueue

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


class JobRunner:
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
        self.settings = settings
        self.interruptible = frozenset(interruptible)
        self.give_up: dict[str, Handler] = dict(give_up or {})
        self.queue = queue
        self.worker_id = worker_id
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self.observe = observe
        """Told of each attempt whose outcome was written (not of jobs handed back or taken over)."""
        self.running: dict[str, asyncio.Task[None]] = {}
        self._kinds: dict[asyncio.Task[None], str] = {}
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []

    def register(self, kind: str, handler: Handler) -> None:
        """Run ``handler`` for jobs of ``kind`` (from the worker's event loop); takes effect at once."""
        self.handlers[kind] = handler
        self._wake.set()

    def start(self) -> None:
        self._background = [
            asyncio.create_task(self._claim_forever(), name="threadline-jobs"),
            asyncio.create_task(self._renew_forever(), name="threadline-job-leases"),
            asyncio.create_task(self._reap_forever(), name="threadline-job-reaper"),
        ]

    async def stop(self, grace: float) -> None:
        """Stop claiming, give running jobs ``grace`` seconds, then hand the rest back."""
        self._stopping.set()
        claim, *others = self._background
        claim.cancel()
        await asyncio.gather(claim, return_exceptions=True)
        interrupted = self.interrupted()
        for task in interrupted.values():
            task.cancel()
        if self.running:
            await asyncio.wait(list(self.running.values()), timeout=grace)
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        unfinished = [*interrupted, *(job_id for job_id in self.running if job_id not in interrupted)]
        for task in list(self.running.values()):
            task.cancel()
        await asyncio.gather(*self.running.values(), return_exceptions=True)
        for job_id in unfinished:
            if await self.queue.release_job(job_id, self.worker_id, time.time()):
                log.info("worker %s: handed job %s back to the queue", self.worker_id, job_id)

    def interrupted(self) -> dict[str, asyncio.Task[None]]:
        """The running jobs of interruptible kinds, by id."""
        return {
            job_id: task
            for job_id, task in self.running.items()
            if self._kinds.get(task) in self.interruptible
        }

    # --- claiming --------------------------------------------------------------------------

    async def _claim_forever(self) -> None:
        enqueued = getattr(self.queue, "enqueued", None)
        while not self._stopping.is_set():
            try:
                await self.claim_available()
            except Exception:
                log.exception("worker %s: claiming jobs failed", self.worker_id)
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

    async def claim_available(self) -> int:
        """Claim due jobs until none are left or the runner is full; returns how many it took."""
        claimed = 0
        while not self._stopping.is_set():
            room = self.settings.job_concurrency - len(self.running)
            if room <= 0:
                break
            jobs = await self.queue.claim_jobs(
                self.worker_id, list(self.handlers), time.time(), self.settings.job_lease_seconds, room
            )
            for job in jobs:
                task = asyncio.create_task(self._run(job), name=f"job-{job.id}")
                self.running[job.id] = task
                self._kinds[task] = job.kind
                task.add_done_callback(self._forget(job.id))
            claimed += len(jobs)
            if len(jobs) < room:
                break
        return claimed

    def _forget(self, job_id: str) -> Callable[[asyncio.Task[None]], None]:
        def forget(task: asyncio.Task[None]) -> None:
            self.running.pop(job_id, None)
            self._kinds.pop(task, None)

        return forget

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

    # --- leases ----------------------------------------------------------------------------

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.job_lease_seconds / 3)
            try:
                await self.renew_leases()
            except Exception:
                log.exception("worker %s: renewing job leases failed", self.worker_id)

    async def renew_leases(self) -> None:
        held = list(self.running)
        until = time.time() + self.settings.job_lease_seconds
        kept = set(await self.queue.renew_job_leases(self.worker_id, held, until))
        for job_id in held:
            task = self.running.get(job_id)
            if job_id not in kept and task is not None and not task.done():
                # Reaped (we were too slow to renew) and perhaps running elsewhere: stop our copy.
                log.warning("worker %s: lost the lease of job %s; stopping it", self.worker_id, job_id)
                task.cancel()

    async def _reap_forever(self) -> None:
        purged_at = 0.0
        while True:
            await asyncio.sleep(self.settings.sweep_interval_seconds)
            try:
                reaped = await self.queue.reap_jobs(time.time())
                if time.monotonic() - purged_at > PURGE_EVERY_SECONDS:
                    purged_at = time.monotonic()
                    await self.queue.purge_jobs(time.time() - KEEP_FINISHED_SECONDS)
            except Exception:
                log.exception("worker %s: reaping jobs failed", self.worker_id)
                continue
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
