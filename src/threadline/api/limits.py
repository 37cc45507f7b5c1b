"""Limits on what one request may hold of the server while it sends its body.

``BodyTimeout`` (ASGI middleware) bounds the reading of every request body: a client that stops
sending for ``body_idle_timeout_seconds``, or has not finished after ``body_timeout_seconds``, is
answered 408 in OpenAI's envelope and its connection closed, so a connection that sends its headers
and then nothing cannot be held for ever. Once the body is read the wait is no longer timed (a
streaming response waits on ``receive`` for the client to go away).

``UploadSlots`` caps the uploads one project has in flight in this process; one more is refused
with a 429 before its body is read.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from threadline.api.errors import cut_short, envelope, refused
from threadline.errors import RequestTimeoutError, TooManyRequestsError


class BodyTimeout:
    def __init__(self, app: ASGIApp, idle: float, total: float) -> None:
        self.app = app
        self.idle = idle if idle > 0 else None
        self.total = total if total > 0 else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.idle is None and self.total is None):
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = None if self.total is None else loop.time() + self.total
        reading = True
        started = False
        timed_out: RequestTimeoutError | None = None

        async def timed() -> Message:
            nonlocal reading, timed_out
            if not reading:
                return await receive()
            waits = [w for w in (self.idle, None if deadline is None else deadline - loop.time()) if w]
            try:
                # A timeout scope, not wait_for: no task of its own for every read.
                async with asyncio.timeout(max(min(waits), 0) if waits else None):
                    message = await receive()
            except TimeoutError:
                timed_out = RequestTimeoutError(
                    f"The request body was not received in time: nothing arrived for {self.idle:g} s, "
                    f"or it took longer than {self.total:g} s in all."
                    if self.idle and self.total
                    else "The request body was not received in time."
                )
                cut_short(scope)
                raise timed_out from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                reading = False
            return message

        async def refuse(error: RequestTimeoutError) -> None:
            refused(scope, error.status, error.message, final=True)
            refusal = envelope(error.status, error.message, error.type, None, error.code)
            refusal.headers["Connection"] = "close"
            await refusal(scope, receive, send)

        async def answer(message: Message) -> None:
            nonlocal started
            # Whatever the application made of a body cut short, the client is told what happened.
            if timed_out is None:
                started = True
                await send(message)
            elif message["type"] == "http.response.start":
                started = True
                await refuse(timed_out)

        try:
            await self.app(scope, timed, answer)
        except RequestTimeoutError:
            if timed_out is None or started:
                raise
            await refuse(timed_out)


class UploadSlots:
    """Uploads in flight, by project, in this process."""

    def __init__(self, per_project: int) -> None:
        self.per_project = per_project
        self.active: dict[str, int] = {}

    def in_progress(self) -> int:
        return sum(self.active.values())

    @contextlib.contextmanager
    def hold(self, project_id: str) -> Iterator[None]:
        count = self.active.get(project_id, 0)
        if self.per_project > 0 and count >= self.per_project:
            raise TooManyRequestsError(
                f"Too many uploads in progress for this project: at most {self.per_project} at once. "
                "Retry when one has finished."
            )
        self.active[project_id] = count + 1
        try:
            yield
        finally:
            self.active[project_id] -= 1
            if not self.active[project_id]:
                del self.active[project_id]
