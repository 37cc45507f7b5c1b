"""Answering one chat-completions request with a scripted :class:`Reply` over HTTP.

:class:`ScriptedModel` (``server.py``) hands each request to an :class:`Exchange`, which renders the
reply's plan (``script.py``) as a JSON completion or an SSE stream at the raw ASGI level, so it can
pace the stream, hang, stream for ever, and notice the client going away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.types import Message, Receive, Send

from threadline.testing import script
from threadline.testing.script import Plan, Reply, error_object

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]


def _json_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    # A content-length (not chunked encoding) for plain JSON answers, like a real API server.
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]


def encode(obj: Any) -> bytes:
    # Compact separators, like OpenAI's own responses.
    return json.dumps(obj, separators=(",", ":")).encode()


def error_body(reply: Reply) -> bytes:
    return encode({"error": error_object(reply)})


class Exchange:
    """Answers one chat-completions request with a :class:`Reply`, at the raw ASGI level so it can pace
    the stream and notice the client going away."""

    def __init__(
        self,
        body: dict[str, Any],
        reply: Reply,
        receive: Receive,
        send: Send,
        *,
        model_name: str,
        on_disconnect: Callable[[], None],
        on_sent: Callable[[int], None],
    ):
        self.model_name = model_name
        """The model to name when the request names none."""
        self.on_disconnect = on_disconnect
        """Told when the client goes away before the reply ended."""
        self.on_sent = on_sent
        """Told of each body write's size."""
        self.body = body
        self.reply = reply
        self.receive = receive
        self.send = send
        # Set when the client disconnects or the server is stopping; every wait also watches it.
        self.gone = asyncio.Event()
        self.client_left = False
        self.finished = False

    async def _watch(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                break
        # After a completed response the server also reports a disconnect; only an early one counts.
        if not self.finished:
            self.client_left = True
            self.gone.set()
            self.on_disconnect()

    async def _pause(self, seconds: float) -> None:
        if seconds <= 0 or self.gone.is_set():
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.gone.wait()

    async def _start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        extra = [(k.lower().encode(), v.encode()) for k, v in self.reply.headers.items()]
        await self.send({"type": "http.response.start", "status": status, "headers": headers + extra})

    async def _json(self, status: int, data: bytes) -> None:
        await self._start(status, _json_headers(data))
        await self._body(data)

    async def _body(self, data: bytes, more: bool = False) -> None:
        if not more:
            self.finished = True
        await self.send({"type": "http.response.body", "body": data, "more_body": more})
        self.on_sent(len(data))

    async def run(self) -> None:
        reply = self.reply
        # A watcher task per request is cheap, but an instant answer does not need one.
        watched = (
            reply.hang
            or reply.endless
            or reply.trickle > 0
            or reply.delay > 0
            or reply.first_delay > 0
            or bool(self.body.get("stream"))
        )
        watcher = asyncio.create_task(self._watch()) if watched else None
        try:
            await self._pause(reply.first_delay)
            if self.client_left:
                return
            if reply.body is not None:
                headers = [(b"content-type", reply.content_type.encode())]
                await self._start(reply.status or 200, headers)
                await self._body(reply.body)
            elif reply.status is not None:
                body = error_body(reply)
                await self._json(reply.status, body)
            elif self.body.get("stream"):
                await self._stream()
            else:
                await self._complete()
        finally:
            self.finished = True
            if watcher is not None:
                watcher.cancel()

    def _usage(self, plan: Plan) -> dict[str, Any]:
        prompt, completion = plan.usage(self.reply, self.body.get("messages"))
        usage: dict[str, Any] = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        if self.reply.reasoning is not None:
            usage["completion_tokens_details"] = {"reasoning_tokens": plan.reasoning_fragments}
        return usage

    def _budget(self) -> int | None:
        budget = self.body.get("max_completion_tokens")
        if budget is None:
            budget = self.body.get("max_tokens")
        return budget if isinstance(budget, int) else None

    def _model_name(self) -> str:
        name = self.body.get("model")
        return name if isinstance(name, str) else self.model_name

    async def _complete(self) -> None:
        reply = self.reply
        if reply.hang:
            await self.gone.wait()
            if not self.client_left:  # the server is stopping
                await self._json(
                    503, error_body(Reply(status=503, error_message="Scripted model is shutting down"))
                )
            return
        plan = script.plan(reply, self._budget())
        await self._pause(reply.delay * len(plan.deltas))
        if self.client_left:
            return
        message: dict[str, Any] = {"role": "assistant", "content": plan.text, "refusal": reply.refusal}
        if plan.tool_calls:
            message["tool_calls"] = plan.tool_calls
        if plan.reasoning is not None:
            message[reply.reasoning_field] = plan.reasoning
        completion = {
            "id": "chatcmpl-" + uuid.uuid4().hex[:24],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self._model_name(),
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": plan.finish_reason}
            ],
            "usage": self._usage(plan),
        }
        await self._json(200, encode(completion))

    async def _stream(self) -> None:
        reply = self.reply
        plan = script.plan(reply, self._budget())
        options = self.body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        head = {
            "id": "chatcmpl-" + uuid.uuid4().hex[:24],
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self._model_name(),
        }

        def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
            logprobs = None
            if self.body.get("logprobs") and delta.get("content"):
                # One entry per piece, as if each were a token the model was fairly sure of.
                token = delta["content"]
                entry = {"token": token, "logprob": -0.5, "bytes": list(token.encode()), "top_logprobs": []}
                logprobs = {"content": [entry], "refusal": None}
            chunk = {
                **head,
                "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
            }
            if include_usage:
                # OpenAI sends an explicit null usage on every chunk but the last when usage is requested.
                chunk["usage"] = None
            return b"data: " + encode(chunk) + b"\n\n"

        role = event({"role": "assistant", "content": "" if reply.text is not None else None})
        tail = [event({}, plan.finish_reason)]
        if include_usage:
            tail.append(b"data: " + encode({**head, "choices": [], "usage": self._usage(plan)}) + b"\n\n")
        tail.append(b"data: [DONE]\n\n")

        await self._start(200, _SSE_HEADERS)
        if reply.endless or reply.trickle > 0:
            await self._body(role, more=True)
            await self._forever(plan)
            return
        if reply.hang:
            await self._body(role, more=True)
            await self.gone.wait()
            if not self.client_left:  # the server is stopping: end the (unfinished) stream
                await self._body(b"")
            return
        if reply.delay <= 0:
            # Nothing to pace: one write is far cheaper than one per chunk under heavy concurrency.
            await self._body(b"".join([role, *(event(d) for d in plan.deltas), *tail]))
            return
        await self._body(role, more=True)
        for delta in plan.deltas:
            await self._pause(reply.delay)
            if self.gone.is_set():
                if not self.client_left:
                    await self._body(b"")
                return
            await self._body(event(delta), more=True)
        await self._body(b"".join(tail))

    async def _forever(self, plan: Plan) -> None:
        """Stream without end (``endless``, ``trickle``) until the client leaves or the server stops."""
        reply = self.reply
        pieces = [self._chunk(d) for d in plan.deltas] or [b": nothing\n\n"]
        sent = 0
        while not self.gone.is_set():
            await self._pause(reply.trickle or reply.delay)
            if self.gone.is_set():
                break
            data = b": still here\n\n" if reply.trickle > 0 else pieces[sent % len(pieces)]
            try:
                await self._body(data, more=True)
            except OSError:  # the client went away mid-write
                break
            sent += 1
            if reply.delay <= 0 and reply.trickle <= 0 and sent % 64 == 0:
                await asyncio.sleep(0)  # let the disconnect watcher run
        if not self.client_left:
            await self._body(b"")

    def _chunk(self, delta: dict[str, Any]) -> bytes:
        chunk = {
            "id": "chatcmpl-endless",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self._model_name(),
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}],
        }
        return b"data: " + encode(chunk) + b"\n\n"


async def send_json(send: Send, status: int, body: bytes) -> None:
    start: Message = {"type": "http.response.start", "status": status, "headers": _json_headers(body)}
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})
