"""``LeaseLoop``: the claim-and-lease loop the run worker and the job runner share.

A loop claims items (runs, jobs) under a lease that only its worker id can extend, holds up to
``concurrency`` of them in flight as asyncio tasks, renews their leases every third of the lease,
stops any whose lease it lost, sweeps up after dead workers on a timer, and on shutdown gives the
items in flight a grace period before handing the rest back. A subclass says only what differs:
what to claim, how to execute an item, how to renew, release and sweep, and what to wait for
between claims. Crash safety rests on the lease: the item of a worker that dies unannounced is
taken back by the sweep of any live one once its lease lapses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Coroutine, Sequence
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class LeaseLoop(ABC, Generic[T]):
    def __init__(
        self,
        worker_id: str,
        *,
        noun: str,
        concurrency: int,
        lease_seconds: float,
        sweep_seconds: float,
        batch: int | None = None,
        task_names: tuple[str, str, str],
    ) -> None:
        """``noun``: what the items are called in logs (``runs``); ``batch``: most items one claim
        takes; ``task_names``: the claiming, renewing and sweeping tasks' names."""
        self.worker_id = worker_id
        self.noun = noun
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.sweep_seconds = sweep_seconds
        self.batch = batch
        self.task_names = task_names
        self.running: dict[str, asyncio.Task[None]] = {}
        """Items in flight, by key: at most one task per key."""
        self.claimed: dict[str, T] = {}
        """The items in flight as claimed, by key."""
        self._stopping = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []

    # --- what a subclass supplies ----------------------------------------------------------

    @abstractmethod
    def key(self, item: T) -> str:
        """The item's id."""

    @abstractmethod
    async def claim(self, room: int) -> Sequence[T]:
        """Take up to ``room`` items under a lease for this worker."""

    @abstractmethod
    def execute(self, item: T) -> Coroutine[Any, Any, None]:
        """The coroutine that works on a claimed item; called before its task starts, so set-up
        done here (a subscription) sees everything from the claim on."""

    @abstractmethod
    async def renew(self, keys: Sequence[str], until: float) -> Collection[str]:
        """Extend this worker's leases on ``keys`` to ``until``; the keys it still holds."""

    @abstractmethod
    async def lost(self, key: str) -> bool:
        """Whether an item whose lease was not renewed must be stopped."""

    @abstractmethod
    async def release(self, key: str) -> bool:
        """Hand an unfinished item back at shutdown; whether it was."""

    @abstractmethod
    async def sweep_once(self) -> None:
        """One round of the periodic sweep (take back what dead workers left)."""

    @abstractmethod
    async def idle(self) -> None:
        """Wait for the next chance to claim (an announcement, a free slot, the poll)."""

    def interrupted(self) -> dict[str, asyncio.Task[None]]:
        """Items stopped at once on shutdown rather than given the grace, by key."""
        return {}

    # --- the loop --------------------------------------------------------------------------

    def start(self) -> None:
        claim, renew, sweep = self.task_names
        self._background = [
            asyncio.create_task(self._claim_forever(), name=claim),
            asyncio.create_task(self._renew_forever(), name=renew),
            asyncio.create_task(self._sweep_forever(), name=sweep),
        ]

    async def stop(self, grace: float) -> list[str]:
        """Stop claiming; give items in flight ``grace`` seconds, then hand the rest back.

        Leases keep being renewed while we wait, so no other worker takes an item we are finishing.
        Returns the keys handed back.
        """
        self._stopping.set()
        claim, *others = self._background
        claim.cancel()
        await asyncio.gather(claim, return_exceptions=True)
        interrupted = self.interrupted()
        for task in interrupted.values():
            task.cancel()
        if self.running:
            log.info(
                "worker %s: waiting up to %.0fs for %d %s in flight",
                self.worker_id, grace, len(self.running), self.noun,
            )  # fmt: skip
            await asyncio.wait(list(self.running.values()), timeout=grace)
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        unfinished = [*interrupted, *(key for key in self.running if key not in interrupted)]
        for task in list(self.running.values()):
            task.cancel()
        await asyncio.gather(*self.running.values(), return_exceptions=True)
        return [key for key in unfinished if await self.release(key)]

    async def _claim_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.claim_available()
            except Exception:
                log.exception("worker %s: claiming %s failed", self.worker_id, self.noun)
            await self.idle()

    async def claim_available(self) -> int:
        """Claim items until none are left or the loop is full; returns how many it took."""
        claimed = 0
        while not self._stopping.is_set():
            room = self.concurrency - len(self.running)
            if self.batch is not None:
                room = min(self.batch, room)
            if room <= 0:
                break
            items = await self.claim(room)
            for item in items:
                self._spawn(item)
            claimed += len(items)
            if len(items) < room:
                break
        return claimed

    def _spawn(self, item: T) -> None:
        key = self.key(item)
        work = self.execute(item)
        previous = self.running.get(key)
        if previous is not None and not previous.done():
            # Claimed again after our lease on it lapsed, while our old task is still winding down:
            # stop the old one and start only once it has ended, so the item never runs twice here.
            previous.cancel()
            work = self._after(previous, work)
        task = asyncio.create_task(work, name=f"{self.noun[:-1]}-{key}")
        self.running[key] = task
        self.claimed[key] = item

        def forget(done: asyncio.Task[None]) -> None:
            if self.running.get(key) is done:
                del self.running[key]
                del self.claimed[key]

        task.add_done_callback(forget)

    @staticmethod
    async def _after(previous: asyncio.Task[None], work: Coroutine[Any, Any, None]) -> None:
        try:
            await asyncio.gather(previous, return_exceptions=True)
        except BaseException:
            work.close()
            raise
        await work

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await self.renew_leases()
            except Exception:
                log.exception("worker %s: renewing the leases of %s failed", self.worker_id, self.noun)

    async def renew_leases(self) -> None:
        held = list(self.running)
        kept = set(await self.renew(held, time.time() + self.lease_seconds))
        for key in held:
            task = self.running.get(key)
            if key in kept or task is None or task.done():
                continue
            if await self.lost(key):
                task.cancel()

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_seconds)
            try:
                await self.sweep_once()
            except Exception:
                log.exception("worker %s: sweeping %s failed", self.worker_id, self.noun)
