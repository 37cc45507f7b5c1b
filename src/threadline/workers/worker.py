"""The worker: claims queued runs and drives many of them at once through the run loop, and runs
background jobs (``workers/jobs.py``) beside them.

Runs wait on the model, not the CPU, so one process holds up to ``worker_concurrency`` runs in
flight as asyncio tasks (the lease loop of ``workers/lease.py``). Each claimed run carries a lease
the worker renews; a run whose status moves away from ``in_progress`` under it (cancel, expiry) has
its task cancelled, which stops the model call. Idle workers sleep until the bus announces work,
with a slow poll as a safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Collection, Coroutine, Mapping, Sequence
from typing import Any

from threadline.config import Settings
from threadline.domain.clock import now
from threadline.domain.context import ContextBuilder
from threadline.domain.entities import Run
from threadline.domain.events import ErrorEvent, ObjectEvent, is_run_event
from threadline.domain.lifecycle import end_run, moved
from threadline.domain.model_calls import ModelCallObserver
from threadline.domain.ports.mcp import McpServers
from threadline.domain.ports.models import Router
from threadline.domain.ports.storage import Bus, Change, JobQueue, Stores, Subscription
from threadline.domain.prompt_messages import ImageSource
from threadline.domain.run_loop import RunLoop
from threadline.domain.run_states import ACTIVE, RunStatus
from threadline.tools.registry import ToolRegistry
from threadline.workers.jobs import Handler, JobObserver, JobRunner
from threadline.workers.lease import LeaseLoop

log = logging.getLogger(__name__)

JANITOR_BATCH = 500
"""Stale threads deleted per transaction."""

CLAIM_BATCH = 50
"""Runs taken per claiming statement: a burst of work fills the worker in a few round trips."""

# Statuses that, set by someone else, mean the worker must stop driving the run.
_STOP = frozenset({RunStatus.CANCELLING, RunStatus.CANCELLED, RunStatus.EXPIRED})


class Worker(LeaseLoop[Run]):
    def __init__(
        self,
        settings: Settings,
        stores: Stores,
        bus: Bus,
        router: Router,
        jobs: JobQueue | None = None,
        job_handlers: Mapping[str, Handler] | None = None,
        tools: ToolRegistry | None = None,
        *,
        observe_model_call: ModelCallObserver | None = None,
        observe_job: JobObserver | None = None,
        job_give_ups: Mapping[str, Handler] | None = None,
        images: ImageSource | None = None,
        on_claim: Callable[[Run], None] | None = None,
        interruptible_jobs: Collection[str] = (),
        mcp: McpServers | None = None,
    ) -> None:
        """``observe_model_call`` and ``observe_job`` are told of each model call and each job
        attempt (the runtime's metrics); ``images`` reads uploaded images for models that see;
        ``on_claim`` is told of each run claimed, before it is driven (a background response's
        recording is taken over there)."""
        self.on_claim = on_claim
        self.settings = settings
        self.stores = stores
        self.bus = bus
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tools = tools or ToolRegistry()
        builder = ContextBuilder(
            stores.threads,
            summaries=settings.summaries,
            default_window=settings.default_context_window,
            tools=tools,
            observe_model_call=observe_model_call,
            images=images,
        )
        self.loop = RunLoop(
            stores,
            bus,
            router,
            self.id,
            builder=builder,
            tools=tools,
            retries=settings.model_retries,
            observe_model_call=observe_model_call,
            mcp=mcp,
        )
        super().__init__(
            self.id,
            noun="runs",
            concurrency=settings.worker_concurrency,
            lease_seconds=settings.worker_lease_seconds,
            sweep_seconds=settings.sweep_interval_seconds,
            batch=CLAIM_BATCH,
            task_names=("threadline-claim", "threadline-leases", "threadline-sweeper"),
        )
        self._next_janitor = 0.0
        """When the next sweep also deletes stale threads (``time.monotonic``); the first one does."""
        self.jobs = (
            JobRunner(settings, jobs, self.id, job_handlers, observe_job, job_give_ups, interruptible_jobs)
            if jobs is not None
            else None
        )
        """Background jobs, run by the handlers registered for their kinds."""

    # --- what the lease loop asks of runs -------------------------------------------------

    def key(self, item: Run) -> str:
        return item.id

    async def claim(self, room: int) -> list[Run]:
        return await self.stores.runs.claim_next(
            self.id,
            time.time(),
            self.settings.worker_lease_seconds,
            room,
            self.settings.sandbox_affinity_seconds,
        )

    def execute(self, item: Run) -> Coroutine[Any, Any, None]:
        # Subscribe before the task starts, so a cancel that lands right away is still seen.
        subscription = self.bus.subscribe(item.id, is_run_event)  # only status changes wake it
        if self.on_claim is not None:
            try:
                self.on_claim(item)
            except Exception:
                log.exception("worker %s: run %s: the claim hook failed", self.id, item.id)
        return self._drive(item, subscription)

    async def renew(self, keys: Sequence[str], until: float) -> list[str]:
        return await self.stores.runs.renew_leases(self.id, keys, until)

    async def lost(self, key: str) -> bool:
        # Not renewed: either our own loop just ended the turn (completed, failed, requires_action)
        # and is still publishing its last events, which must not be cut short; or the run moved on
        # without us (cancelled, expired, taken over after our lease lapsed), so we stop driving it.
        run = await self.stores.runs.get_by_id(key)
        if (
            run is None
            or run.status in _STOP
            or (run.status is RunStatus.IN_PROGRESS and run.worker_id != self.id)
        ):
            log.info("worker %s: run %s is no longer ours; stopping it", self.id, key)
            return True
        return False

    async def release(self, key: str) -> bool:
        return await self._hand_back(key)

    async def sweep_once(self) -> None:
        await self.sweep()
        if time.monotonic() >= self._next_janitor:
            self._next_janitor = time.monotonic() + self.settings.janitor_interval_seconds
            await self.delete_stale_threads()

    async def idle(self) -> None:
        if len(self.running) >= self.concurrency:
            # Full: the next chance to claim is when one of our runs finishes.
            await asyncio.wait(list(self.running.values()), return_when=asyncio.FIRST_COMPLETED)
        else:
            # claim_available took everything queued; an announcement made meanwhile stays set.
            await self.bus.wait_for_work(self.settings.worker_poll_seconds)

    # --- the worker ------------------------------------------------------------------------

    def start(self) -> None:
        super().start()
        if self.jobs is not None:
            self.jobs.start()
        log.info("worker %s started (concurrency %d)", self.id, self.concurrency)

    async def stop(self, grace: float = 10.0) -> list[str]:
        """Stop claiming; give runs in flight ``grace`` seconds, then hand the rest back to the queue."""
        # Background jobs wind down alongside runs, within the same grace.
        jobs_stopped = asyncio.create_task(self.jobs.stop(grace)) if self.jobs is not None else None
        handed = await super().stop(grace)
        if jobs_stopped is not None:
            await jobs_stopped
        if handed:
            # Other workers take them now rather than at their next poll.
            await self.bus.notify_work()
        log.info("worker %s stopped (%d runs handed back)", self.id, len(handed))
        return handed

    async def _hand_back(self, run_id: str) -> bool:
        """Put a run we could not finish back in the queue for another worker to redo its turn."""
        run = await self.stores.runs.get_by_id(run_id)
        if run is None or run.status is not RunStatus.IN_PROGRESS or run.worker_id != self.id:
            return False
        queued = moved(run, RunStatus.QUEUED, worker_id=None, lease_expires_at=None)
        if not await self.stores.runs.transition(
            Change(run=queued, expect=frozenset({RunStatus.IN_PROGRESS}), owner=self.id)
        ):
            return False
        log.info("worker %s: handed run %s back to the queue", self.id, run_id)
        return True

    # --- driving a run ---------------------------------------------------------------------

    async def _drive(self, run: Run, subscription: Subscription) -> None:
        with subscription:
            work = asyncio.create_task(self.loop.execute(run))
            watch = asyncio.create_task(self._watch(subscription, work))
            try:
                await work
            except asyncio.CancelledError:
                if not work.cancelled():
                    # This task was cancelled (shutdown): take the run's own task down with it.
                    work.cancel()
                    await asyncio.gather(work, return_exceptions=True)
                    raise
            except Exception:
                # Not even the run's failure could be written (the database is unreachable, say):
                # put it back in the queue rather than leave it in progress until its lease lapses.
                log.exception("worker %s: run %s could not be finished; handing it back", self.id, run.id)
                with contextlib.suppress(Exception):
                    # Streams following the run end with an error; the run itself is retried.
                    await self.bus.publish(
                        run.id, ErrorEvent("The server had an error while running this run.")
                    )
                    if await self._hand_back(run.id):
                        await self.bus.notify_work()
            finally:
                watch.cancel()

    @staticmethod
    async def _watch(subscription: Subscription, work: asyncio.Task[None]) -> None:
        while True:
            event = await subscription.get()
            if isinstance(event, ObjectEvent) and isinstance(event.obj, Run) and event.obj.status in _STOP:
                work.cancel()
                return

    # --- expiry and the janitor -----------------------------------------------------------

    async def delete_stale_threads(self) -> dict[str, int]:
        """Delete threads inactive longer than their project's TTL, in batches; one process at a time."""
        total = {"threads": 0, "messages": 0, "runs": 0}
        async with self.stores.locks.exclusive("threadline-janitor") as mine:
            if not mine:
                return total
            for project in await self.stores.projects.list_projects():
                days = (
                    self.settings.thread_ttl_days
                    if project.thread_ttl_days is None
                    else project.thread_ttl_days
                )
                if days <= 0:
                    continue
                cutoff = int(time.time() - days * 86400)
                counts = {"threads": 0, "messages": 0, "runs": 0}
                while True:
                    deleted = await self.stores.threads.delete_stale(project.id, cutoff, limit=JANITOR_BATCH)
                    counts = {kind: counts[kind] + deleted[kind] for kind in counts}
                    if deleted["threads"] < JANITOR_BATCH:
                        break
                if counts["threads"]:
                    log.info(
                        "project %s: deleted %d threads inactive for %g days, with %d messages and %d runs",
                        project.id,
                        counts["threads"],
                        days,
                        counts["messages"],
                        counts["runs"],
                    )
                total = {kind: total[kind] + counts[kind] for kind in total}
        return total

    async def sweep(self) -> int:
        """Expire overdue runs and finish cancels a dead process left behind; one process at a time.

        Returns how many runs it ended.
        """
        ended = 0
        async with self.stores.locks.exclusive("threadline-sweeper") as mine:
            if not mine:
                return 0
            for run in await self.stores.runs.find_expired(now(), limit=100):
                if run.status in ACTIVE and await end_run(self.stores, self.bus, run, RunStatus.EXPIRED):
                    log.info("run %s expired (was %s)", run.id, run.status.value)
                    ended += 1
            for run in await self.stores.runs.find_stalled(time.time(), limit=100):
                if await end_run(self.stores, self.bus, run, RunStatus.CANCELLED):
                    log.info("run %s: finished a cancel its worker left behind", run.id)
                    ended += 1
        return ended
