"""The PostgreSQL event bus: LISTEN/NOTIFY, so a stream on one process follows a run on another.

Every process delivers its own events to its local subscribers at once (``LocalBus``) and also
sends them with ``NOTIFY``; each process LISTENs and hands other processes' events to its local
subscribers. Notifications carry the process's id so nobody receives its own events twice.
PostgreSQL caps a payload near 8000 bytes: larger object events travel as a reference and the
receiver reads the object back from the database; any other large event (a long text or code delta)
travels as numbered chunks of its encoding that the receiver joins before delivering it, so every
subscriber sees the same events on every bus. Work announcements wake idle workers everywhere.

Publishing never waits for the network: notifications go out in order from a queue. A publisher's
events for one run therefore reach its local subscribers together, with no other process's events
for that run slipped in between (an API process announcing ``created``, ``queued`` while a worker
already reports ``in_progress``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from threadline.domain.entities import Message, Run, RunStep, Thread
from threadline.domain.events import Event, ObjectEvent
from threadline.events import codec
from threadline.events.bus import LocalBus

log = logging.getLogger(__name__)

EVENTS_CHANNEL = "threadline_events"
WORK_CHANNEL = "threadline_work"
MAX_PAYLOAD = 7000  # bytes; PostgreSQL's limit is 8000
CHUNK_BYTES = 5000  # of an oversized event's encoding per notification: 6,668 once in base64

Loader = Callable[[str, str], Awaitable[Thread | Run | RunStep | Message | None]]
"""Reads an object back by kind (``run``, ``step``, ``message``, ``thread``) and id."""


class PostgresBus(LocalBus):
    def __init__(self, dsn: str, loader: Loader) -> None:
        super().__init__()
        self._dsn = dsn
        self._loader = loader
        self._origin = uuid.uuid4().hex[:12]
        self._listener: asyncpg.Connection | None = None
        self._sender: asyncpg.Connection | None = None
        # Outgoing notifications (channel, payload), sent one at a time in publishing order.
        self._outbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._sending: asyncio.Task[None] | None = None
        # Notifications are handled one at a time, in arrival order, even when one must be read back.
        self._inbox: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._consumer: asyncio.Task[None] | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._closing = False
        # Chunks of oversized events received so far, by sender and event.
        self._chunks: dict[tuple[str, str], list[bytes]] = {}

    async def start(self) -> None:
        self._consumer = asyncio.create_task(self._consume(), name="threadline-bus")
        await self._listen()
        self._sender = await asyncpg.connect(self._dsn)
        self._sending = asyncio.create_task(self._send(), name="threadline-bus-send")

    @property
    def connected(self) -> bool:
        """Whether notifications from other processes are being received (for readiness)."""
        return self._listener is not None and not self._listener.is_closed()

    async def _listen(self) -> None:
        listener = await asyncpg.connect(self._dsn)
        await listener.add_listener(EVENTS_CHANNEL, self._on_event)
        await listener.add_listener(WORK_CHANNEL, self._on_work)
        listener.add_termination_listener(self._on_listener_lost)
        self._listener = listener

    def _on_listener_lost(self, _conn: Any) -> None:
        if self._closing:
            return
        log.warning("lost the PostgreSQL connection that receives events; reconnecting")
        self._listener = None
        self._reconnecting = asyncio.create_task(self._reconnect(), name="threadline-bus-reconnect")

    async def _reconnect(self) -> None:
        delay = 0.5
        while not self._closing:
            try:
                await self._listen()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning(
                    "could not reconnect to PostgreSQL for events (%s); retrying in %.1fs", exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
                continue
            log.info("receiving events from PostgreSQL again")
            # Work announced while we were away was missed: look for it now.
            self._work.set()
            return

    async def aclose(self) -> None:
        self._closing = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        if self._consumer is not None:
            self._consumer.cancel()
        if self._sending is not None:
            # What is still queued (a stopping worker's last events) goes out before the connection closes.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._outbox.join(), timeout=5)
            self._sending.cancel()
        for conn in (self._listener, self._sender):
            if conn is not None:
                await conn.close()
        await super().aclose()

    async def publish(self, topic: str, event: Event) -> None:
        await super().publish(topic, event)
        for payload in self._payloads(topic, event):
            self._outbox.put_nowait((EVENTS_CHANNEL, payload))

    async def notify_work(self) -> None:
        await super().notify_work()
        self._outbox.put_nowait((WORK_CHANNEL, self._origin))

    def _payloads(self, topic: str, event: Event) -> list[str]:
        head = {"o": self._origin, "t": topic}
        text = codec.dumps({**head, "e": codec.encode(event)})
        if len(text.encode()) <= MAX_PAYLOAD:
            return [text]
        if isinstance(event, ObjectEvent):
            return [codec.dumps({**head, "e": codec.reference(event)})]
        # Chunks of the encoded event, base64 so their size is known: (chunk id, number, count).
        raw = text.encode()
        key = uuid.uuid4().hex[:12]
        count = -(-len(raw) // CHUNK_BYTES)
        return [
            codec.dumps(
                {
                    **head,
                    "c": [key, n, count],
                    "d": base64.b64encode(raw[start : start + CHUNK_BYTES]).decode(),
                }
            )
            for n, start in enumerate(range(0, len(raw), CHUNK_BYTES))
        ]

    async def _send(self) -> None:
        while True:
            channel, payload = await self._outbox.get()
            try:
                if self._sender is None or self._sender.is_closed():
                    self._sender = await asyncpg.connect(self._dsn)
                await self._sender.execute("SELECT pg_notify($1, $2)", channel, payload)
            except Exception as exc:
                # The notification is lost; pollers and leases recover from that, the process goes on.
                log.warning("could not send a notification on %s: %s", channel, exc)
            finally:
                self._outbox.task_done()

    def _on_work(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload != self._origin:
            self._work.set()

    def _on_event(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        data = json.loads(payload)
        if data["o"] == self._origin or data["t"] not in self._subscriptions:
            return
        if "c" not in data:
            self._inbox.put_nowait((data["t"], data["e"]))
            return
        # One sender's notifications arrive in order: its chunks of one event come one after another.
        key, n, count = data["c"]
        chunks = self._chunks.setdefault((data["o"], key), [])
        if n != len(chunks):
            log.warning("dropping an event for %s whose chunk %d came out of order", data["t"], n)
            self._chunks.pop((data["o"], key), None)
            return
        chunks.append(base64.b64decode(data["d"]))
        if len(chunks) == count:
            del self._chunks[(data["o"], key)]
            self._inbox.put_nowait((data["t"], json.loads(b"".join(chunks))["e"]))

    async def _consume(self) -> None:
        while True:
            topic, encoded = await self._inbox.get()
            try:
                event = await self._decode(encoded)
            except Exception:
                log.exception("could not decode an event for %s", topic)
                continue
            if event is not None:
                await LocalBus.publish(self, topic, event)

    async def _decode(self, encoded: dict[str, Any]) -> Event | None:
        if "ref" not in encoded:
            return codec.decode(encoded)
        obj = await self._loader(encoded["k"], encoded["ref"])
        return None if obj is None else ObjectEvent(encoded["name"], obj)
