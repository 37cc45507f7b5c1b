"""The in-process event bus: run events from the worker to the HTTP streams that follow them.

Topics are run ids. Subscribing is synchronous, so a caller can subscribe before it does what makes
events happen and never miss the first one. A slow or vanished subscriber only loses its own queue;
publishers never wait for subscribers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from threadline.domain.events import Event


class Subscription:
    def __init__(self, bus: LocalBus, topic: str, wants: Callable[[Event], bool] | None = None) -> None:
        self._bus = bus
        self.topic = topic
        self.wants = wants
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self._closed = False

    async def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or ``None`` when ``timeout`` passes first."""
        if not self.queue.empty():
            return self.queue.get_nowait()  # no timer for an event already here
        try:
            # A timeout scope, not wait_for: on Python 3.11 wait_for makes a task of its own for every
            # wait (a held poll or a stream waits once per event).
            async with asyncio.timeout(timeout):
                return await self.queue.get()
        except TimeoutError:
            return None

    def close(self) -> None:
        """Stop receiving events; safe to call more than once."""
        if not self._closed:
            self._closed = True
            self._bus._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalBus:
    def __init__(self) -> None:
        self._subscriptions: dict[str, set[Subscription]] = {}
        self._work = asyncio.Event()

    async def publish(self, topic: str, event: Event) -> None:
        for subscription in self._subscriptions.get(topic, ()):
            if subscription.wants is None or subscription.wants(event):
                subscription.queue.put_nowait(event)

    def subscribe(self, topic: str, wants: Callable[[Event], bool] | None = None) -> Subscription:
        """Follow ``topic``: every event, or those ``wants`` accepts (the others never wake it)."""
        subscription = Subscription(self, topic, wants)
        self._subscriptions.setdefault(topic, set()).add(subscription)
        return subscription

    def subscriber_count(self, topic: str) -> int:
        """How many subscriptions follow ``topic`` (streams, held polls, the worker driving the run)."""
        return len(self._subscriptions.get(topic, ()))

    def _unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._subscriptions.get(subscription.topic)
        if subscribers is not None:
            subscribers.discard(subscription)
            if not subscribers:
                del self._subscriptions[subscription.topic]

    async def notify_work(self) -> None:
        self._work.set()

    async def wait_for_work(self, timeout: float) -> None:
        """Return when work was announced since the last call, or after ``timeout`` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._work.wait(), timeout)
        self._work.clear()

    async def aclose(self) -> None:
        self._subscriptions.clear()
