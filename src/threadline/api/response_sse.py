"""A response's stream over HTTP: follows the run's events through a subscription, has
``ResponseEvents`` (``response_stream.py``) translate them, and writes them as server-sent events,
with keep-alive comments while idle and an ``error`` event if the translation fails."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from threadline.api.response_stream import Obj, ResponseEvents
from threadline.api.sse import KEEPALIVE_SECONDS, frame
from threadline.domain.entities import Run
from threadline.domain.events import ObjectEvent
from threadline.domain.ports.storage import Subscription
from threadline.domain.responses import ResponseService
from threadline.domain.run_states import TERMINAL

log = logging.getLogger(__name__)


async def translated(
    events: ResponseEvents, subscription: Subscription, keepalive: float = KEEPALIVE_SECONDS
) -> AsyncIterator[list[Obj]]:
    """The response's stream events, a batch per run event (an empty batch when idle for ``keepalive``),
    until the response ends."""
    while not events.finished:
        event = await subscription.get(timeout=keepalive)
        if event is None:
            # No event for a while: the response may have ended in another process.
            latest = await events.responses.stores.runs.get_by_id(events.run.id)
            if latest is not None and latest.status in TERMINAL:
                event = ObjectEvent(f"thread.run.{latest.status.value}", latest)
            else:
                yield []
                continue
        yield await events.translate(event)


async def follow(events: ResponseEvents, subscription: Subscription) -> AsyncIterator[bytes]:
    with subscription:
        try:
            async for batch in translated(events, subscription):
                if not batch:
                    yield b": keep-alive\n\n"
                for data in batch:
                    yield frame(data["type"], data)
            await events.responses.forget(events.run)
        except Exception:
            log.exception("a response's event stream failed")
            error = events.error("The server had an error while streaming.")
            yield frame("error", error)


def event_stream(body: AsyncIterator[bytes], on_close: Callable[[], None] | None = None) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        background=BackgroundTask(on_close) if on_close is not None else None,
    )


def stream(responses: ResponseService, subscription: Subscription, run: Run) -> StreamingResponse:
    return event_stream(follow(ResponseEvents(responses, run), subscription), subscription.close)
