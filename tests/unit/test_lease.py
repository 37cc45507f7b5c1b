"""The lease loop itself (``workers/lease.py``), on the real job queue, its timers left out.

The loop under test claims jobs and runs a gated coroutine for each, so a test decides when work
ends; leases are renewed and lapsed by calling the loop and the queue directly (the reaper is given
a time past the lease), never by waiting for a timer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Collection, Coroutine, Sequence
from typing import Any, ClassVar

import pytest

from tests.unit.conftest import Domain, wait_until
from threadline.domain.entities import Job
from threadline.store.jobs import SqlJobQueue
from threadline.workers.lease import LeaseLoop

pytestmark = pytest.mark.anyio

LEASE = 30.0
KIND = "work"


class Loop(LeaseLoop[Job]):
    """Runs each claimed job until its gate opens; holds its copy of a job until it has ended,
    even when cancelled (a worker winding down)."""

    made: ClassVar[list[Loop]] = []

    def __init__(self, queue: SqlJobQueue, concurrency: int = 4) -> None:
        super().__init__(
            "worker-1",
            noun="jobs",
            concurrency=concurrency,
            lease_seconds=LEASE,
            sweep_seconds=3600.0,
            task_names=("claim", "renew", "sweep"),
        )
        self.queue = queue
        Loop.made.append(self)
        self.gates: dict[str, asyncio.Event] = {}
        self.started: list[str] = []
        self.active: dict[str, int] = {}
        self.most_at_once = 0
        self.ahead = 0.0
        """Seconds the loop's clock runs ahead of the queue's (to claim what the reaper requeued)."""

    def gate(self, key: str) -> asyncio.Event:
        return self.gates.setdefault(key, asyncio.Event())

    def key(self, item: Job) -> str:
        return item.id

    async def claim(self, room: int) -> list[Job]:
        return await self.queue.claim_jobs(self.worker_id, [KIND], time.time() + self.ahead, LEASE, room)

    def execute(self, item: Job) -> Coroutine[Any, Any, None]:
        return self._work(item.id)

    async def _work(self, key: str) -> None:
        self.started.append(key)
        self.active[key] = self.active.get(key, 0) + 1
        self.most_at_once = max(self.most_at_once, self.active[key])
        try:
            await self.gate(key).wait()
        except asyncio.CancelledError:
            await self.gate(key).wait()
            raise
        finally:
            self.active[key] -= 1

    async def renew(self, keys: Sequence[str], until: float) -> Collection[str]:
        return await self.queue.renew_job_leases(self.worker_id, keys, until)

    async def lost(self, key: str) -> bool:
        return True

    async def release(self, key: str) -> bool:
        return await self.queue.release_job(key, self.worker_id, time.time())

    async def sweep_once(self) -> None:
        await self.queue.reap_jobs(time.time())

    async def idle(self) -> None:
        await asyncio.sleep(3600)


@pytest.fixture
async def queue(domain: Domain) -> AsyncIterator[SqlJobQueue]:
    """The real job queue; the loops a test made are let go of at its end, whatever happened."""
    queue = SqlJobQueue(domain.db)
    yield queue
    for loop in Loop.made:
        for gate in loop.gates.values():
            gate.set()
        for task in [*loop.running.values(), *loop._background]:
            task.cancel()
        await asyncio.gather(*loop.running.values(), *loop._background, return_exceptions=True)
    Loop.made.clear()


async def _job(queue: SqlJobQueue, job_id: str) -> Job:
    job = await queue.get_job(job_id)
    assert job is not None
    return job


async def test_claims_no_more_than_its_concurrency(queue: SqlJobQueue) -> None:
    for n in range(5):
        await queue.enqueue(KIND, {"n": n})
    loop = Loop(queue, concurrency=2)
    assert await loop.claim_available() == 2
    assert await loop.claim_available() == 0
    (first, _) = loop.running
    loop.gate(first).set()
    await wait_until(lambda: first not in loop.running, what="the first job to end")
    assert await loop.claim_available() == 1
    assert len(loop.running) == 2
    for key in list(loop.running):
        loop.gate(key).set()
    await asyncio.gather(*loop.running.values())


async def test_renews_the_leases_of_work_in_flight_and_stops_work_whose_lease_lapsed(
    queue: SqlJobQueue,
) -> None:
    job = await queue.enqueue(KIND, {})
    loop = Loop(queue)
    assert await loop.claim_available() == 1
    claimed = await _job(queue, job.id)
    assert claimed.status == "running" and claimed.lease_expires_at is not None

    await loop.renew_leases()
    renewed = await _job(queue, job.id)
    assert renewed.lease_expires_at is not None and renewed.lease_expires_at > claimed.lease_expires_at
    assert not loop.running[job.id].done()

    # The lease lapses (the reaper of any worker sees it past due): the next renewal stops our copy.
    (reaped,) = await queue.reap_jobs(renewed.lease_expires_at + 1)
    assert reaped.status == "queued"
    task = loop.running[job.id]
    await loop.renew_leases()
    loop.gate(job.id).set()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()


async def test_gives_unfinished_work_back_on_stop(queue: SqlJobQueue) -> None:
    done, unfinished = await queue.enqueue(KIND, {}), await queue.enqueue(KIND, {})
    loop = Loop(queue)
    loop.start()
    await wait_until(lambda: len(loop.started) == 2, what="both jobs to start")
    loop.gate(done.id).set()
    await wait_until(lambda: done.id not in loop.running, what="the first job to end")
    await queue.finish_job(done.id, loop.worker_id, time.time())

    stopping = asyncio.create_task(loop.stop(grace=0.0))
    # Cancelled, it still winds down until let go; only then is it handed back.
    await wait_until(lambda: loop.running[unfinished.id].cancelling() > 0, what="the cancel")
    assert (await _job(queue, unfinished.id)).status == "running"
    loop.gate(unfinished.id).set()
    assert await stopping == [unfinished.id]

    back = await _job(queue, unfinished.id)
    assert (back.status, back.worker_id, back.attempts) == ("queued", None, 0)
    assert (await _job(queue, done.id)).status == "succeeded"
    assert not loop.running


async def test_never_runs_one_job_twice_at_once(queue: SqlJobQueue) -> None:
    job = await queue.enqueue(KIND, {})
    loop = Loop(queue)
    assert await loop.claim_available() == 1
    await wait_until(lambda: loop.started == [job.id], what="the job to start")
    old = loop.running[job.id]

    # Our lease lapsed and the job went back to the queue while our copy still runs; we claim it again.
    claimed = await _job(queue, job.id)
    assert claimed.lease_expires_at is not None
    lapsed = claimed.lease_expires_at + 1
    await queue.reap_jobs(lapsed)
    loop.ahead = lapsed - time.time() + 1
    assert await loop.claim_available() == 1
    new = loop.running[job.id]
    assert new is not old

    # The old copy is told to stop; the new one waits for it to end before starting.
    assert old.cancelling() > 0
    loop.gate(job.id).set()
    await wait_until(lambda: len(loop.started) == 2, what="the new copy to start")
    await new
    assert old.cancelled()
    assert loop.most_at_once == 1
    assert not loop.running and not loop.claimed
