"""A scripted fake chat model: a real HTTP server speaking the OpenAI chat-completions protocol.

Tests and benchmarks point Threadline's OpenAI-compatible provider at :class:`ScriptedModel` instead of a
real model, so everything above the model boundary (HTTP client, SSE parsing, retries, cancellation) runs
for real while the model's answers stay deterministic::

    with ScriptedModel() as model:
        model.script(Reply(text="Hello there"), Reply(tool_calls=[ToolCall("lookup", {"q": "x"})]))
        ...  # point the code under test at model.base_url
        assert model.wait_for_requests(2)[1]["messages"][-1]["role"] == "tool"

Each request consumes one scripted :class:`Reply`; once the script is used up, ``model.responder``
decides (by default it echoes the last user message). Replies can stream slowly, fail with an HTTP
error, hang until the client goes away, or stop early because of ``max_tokens``; or misbehave as
a model server should not: stream for ever, trickle comments, answer a page that is not the protocol.

Run it as its own process for benchmarks::

    python -m threadline.testing --port 8100 --delay 0.01
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import signal
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from threadline.domain.ports import tools
from threadline.domain.ports.tools import FUNCTIONS, ToolResult
from threadline.domain.steps import (
    BuiltinDetails,
    BuiltinType,
    CodeInterpreterDetails,
    FileSearchDetails,
    FileSearchResult,
    LogsOutput,
    RankingOptions,
)

__all__ = ["Reply", "Responder", "ScriptedModel", "ScriptedTool", "ToolCall", "echo_responder", "main"]

_HOST = "127.0.0.1"
_DEFAULT_ARGUMENT_CHUNKS = 3
_WORD_PIECES = re.compile(r"^\s+|\S+\s*")
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]


def _json_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    # A content-length (not chunked encoding) for plain JSON answers, like a real API server.
    return [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]


# OpenAI's (type, code) for the statuses tests usually script; anything else gets a generic pair.
_ERROR_KINDS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


@dataclass(slots=True)
class ToolCall:
    """One function call the model asks for. ``arguments`` dicts are sent as ``json.dumps(arguments)``."""

    name: str
    arguments: str | dict[str, Any] = "{}"
    id: str | None = None
    """The ``call_…`` id to send; a fresh random one when ``None``."""

    def arguments_json(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass(slots=True)
class Reply:
    """What the fake model answers to one request."""

    text: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    chunks: int | None = None
    """Pieces to split the text and each call's arguments into. ``None``: one piece per word (with its
    trailing whitespace) for text, three pieces for arguments."""
    delay: float = 0.0
    """Seconds to wait before each streamed chunk after the role chunk (non-streamed: before answering,
    once per chunk that would have been streamed)."""
    first_delay: float = 0.0
    """Seconds to wait before the first byte of the response."""
    status: int | None = None
    """Answer with this HTTP status and an OpenAI error envelope instead of a completion."""
    error_message: str | None = None
    error_type: str | None = None
    error_code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    """Extra response headers, e.g. ``{"retry-after": "0"}`` on a 429."""
    hang: bool = False
    """Send the headers and role chunk (streamed) or nothing (non-streamed), then wait until the client
    disconnects; the disconnect is counted in :attr:`ScriptedModel.disconnects`."""
    usage: tuple[int, int] | None = None
    """Explicit ``(prompt_tokens, completion_tokens)``; computed when ``None``."""
    refusal: str | None = None
    """A refusal to stream (``delta.refusal``) after the text, split like the text."""
    reasoning: str | None = None
    """A reasoning model's thinking, streamed before the text in ``delta.<reasoning_field>`` (split
    like the text; in the message when not streamed), its pieces counted as
    ``completion_tokens_details.reasoning_tokens``."""
    reasoning_field: str = "reasoning_content"
    """Where the thinking goes: ``reasoning_content`` (vLLM, DeepSeek, llama.cpp) or ``reasoning``."""
    finish_reason: str | None = None
    """Report this ``finish_reason`` (e.g. ``"length"``, ``"content_filter"``) instead of the computed one."""
    body: bytes | None = None
    """Answer 200 (or ``status``) with exactly these bytes, as ``content_type``, instead of the protocol:
    an HTML page, broken JSON, an event stream with empty ``choices`` ..."""
    content_type: str = "application/json"
    """The ``content-type`` of a raw ``body``."""
    endless: bool = False
    """Stream the text's pieces again and again (each after ``delay``), never finishing, until the client
    goes away."""
    trickle: float = 0.0
    """After the role chunk, send an SSE comment every this many seconds, never finishing, until the
    client goes away: a model that is never silent long enough for an idle timeout."""


Responder = Callable[[dict[str, Any]], Reply]
"""Decides the reply to a request body once the script queue is empty. Runs on the server's event loop
thread, so it must be quick and must not block."""


def _encode(obj: Any) -> bytes:
    # Compact separators, like OpenAI's own responses.
    return json.dumps(obj, separators=(",", ":")).encode()


def _content_text(content: Any) -> str:
    """A message's content as plain text; content is a string or a list of ``{"type": "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def echo_responder(body: dict[str, Any]) -> Reply:
    """The default responder: ``"echo: "`` followed by the last user message's text."""
    last = ""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            last = _content_text(message.get("content"))
            break
    return Reply(text="echo: " + last)


def _count_prompt_tokens(messages: Any) -> int:
    # Deterministic stand-in for a tokenizer: words in every message's content, plus one per message.
    if not isinstance(messages, list):
        return 0
    return sum(1 + len(_content_text(m.get("content")).split()) for m in messages if isinstance(m, dict))


def _split_even(text: str, pieces: int) -> list[str]:
    """``text`` in ``pieces`` nearly equal parts (fewer if it is shorter); never an empty part."""
    if not text:
        return []
    pieces = max(1, min(pieces, len(text)))
    size, extra = divmod(len(text), pieces)
    parts: list[str] = []
    start = 0
    for i in range(pieces):
        end = start + size + (1 if i < extra else 0)
        parts.append(text[start:end])
        start = end
    return parts


def _split_text(text: str, chunks: int | None) -> list[str]:
    if chunks is None:
        return _WORD_PIECES.findall(text)
    return _split_even(text, chunks)


def _error_body(status: int, message: str | None, kind: str | None, code: str | None) -> bytes:
    default_kind, default_code = _ERROR_KINDS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    error = {
        "message": message or f"Scripted error {status}",
        "type": kind or default_kind,
        "param": None,
        "code": code or default_code,
    }
    return _encode({"error": error})


@dataclass(slots=True)
class _Plan:
    """A reply laid out as the deltas it streams, after applying the ``max_tokens`` budget."""

    deltas: list[dict[str, Any]]
    text: str | None
    tool_calls: list[dict[str, Any]]
    finish_reason: str
    fragments: int
    reasoning: str | None = None
    reasoning_fragments: int = 0


def _plan(reply: Reply, budget: int | None) -> _Plan:
    deltas: list[dict[str, Any]] = []
    fragments = 0
    truncated = False

    def spend() -> bool:
        nonlocal fragments, truncated
        if budget is not None and fragments >= budget:
            truncated = True
            return False
        fragments += 1
        return True

    thoughts: list[str] = []
    for piece in _split_text(reply.reasoning or "", reply.chunks):
        if not spend():
            break
        thoughts.append(piece)
        deltas.append({reply.reasoning_field: piece})
    text_parts: list[str] = []
    for piece in _split_text(reply.text or "", reply.chunks):
        if not spend():
            break
        text_parts.append(piece)
        deltas.append({"content": piece})
    for piece in _split_text(reply.refusal or "", reply.chunks):
        if not spend():
            break
        deltas.append({"refusal": piece})

    calls: list[dict[str, Any]] = []
    for index, call in enumerate(reply.tool_calls):
        if truncated:
            break
        call_id = call.id or "call_" + uuid.uuid4().hex[:24]
        pieces = _split_even(call.arguments_json(), reply.chunks or _DEFAULT_ARGUMENT_CHUNKS)
        if pieces and not spend():
            break
        deltas.append(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": ""},
                    }
                ]
            }
        )
        sent: list[str] = []
        for n, piece in enumerate(pieces):
            # The first piece's budget was spent above, so the call header is never sent on its own.
            if n and not spend():
                break
            sent.append(piece)
            deltas.append({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
        calls.append(
            {"id": call_id, "type": "function", "function": {"name": call.name, "arguments": "".join(sent)}}
        )

    if reply.finish_reason is not None:
        finish = reply.finish_reason
    elif truncated:
        finish = "length"
    elif calls:
        finish = "tool_calls"
    else:
        finish = "stop"
    text = "".join(text_parts) if reply.text is not None else None
    reasoning = "".join(thoughts) if reply.reasoning is not None else None
    return _Plan(deltas, text, calls, finish, fragments, reasoning, len(thoughts))


class _Exchange:
    """Answers one chat-completions request with a :class:`Reply`, at the raw ASGI level so it can pace
    the stream and notice the client going away."""

    def __init__(
        self, model: ScriptedModel, body: dict[str, Any], reply: Reply, receive: Receive, send: Send
    ):
        self.model = model
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
            self.model._note_disconnect()

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
        self.model.bytes_sent += len(data)

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
        self.model._live.add(self)
        if self.model._stopping:
            self.gone.set()
        try:
            await self._pause(reply.first_delay)
            if self.client_left:
                return
            if reply.body is not None:
                headers = [(b"content-type", reply.content_type.encode())]
                await self._start(reply.status or 200, headers)
                await self._body(reply.body)
            elif reply.status is not None:
                body = _error_body(reply.status, reply.error_message, reply.error_type, reply.error_code)
                await self._json(reply.status, body)
            elif self.body.get("stream"):
                await self._stream()
            else:
                await self._complete()
        finally:
            self.finished = True
            self.model._live.discard(self)
            if watcher is not None:
                watcher.cancel()

    def _usage(self, plan: _Plan) -> dict[str, Any]:
        if self.reply.usage is not None:
            prompt, completion = self.reply.usage
        else:
            prompt, completion = _count_prompt_tokens(self.body.get("messages")), plan.fragments
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
        return name if isinstance(name, str) else self.model.model_ids[0]

    async def _complete(self) -> None:
        reply = self.reply
        if reply.hang:
            await self.gone.wait()
            if not self.client_left:  # the server is stopping
                await self._json(503, _error_body(503, "Scripted model is shutting down", None, None))
            return
        plan = _plan(reply, self._budget())
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
        await self._json(200, _encode(completion))

    async def _stream(self) -> None:
        reply = self.reply
        plan = _plan(reply, self._budget())
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
            return b"data: " + _encode(chunk) + b"\n\n"

        role = event({"role": "assistant", "content": "" if reply.text is not None else None})
        tail = [event({}, plan.finish_reason)]
        if include_usage:
            tail.append(b"data: " + _encode({**head, "choices": [], "usage": self._usage(plan)}) + b"\n\n")
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

    async def _forever(self, plan: _Plan) -> None:
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
        return b"data: " + _encode(chunk) + b"\n\n"


class _ChatCompletions:
    """``POST /v1/chat/completions`` as a plain ASGI app (Starlette treats non-function endpoints so)."""

    def __init__(self, model: ScriptedModel):
        self.model = model

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = await Request(scope, receive).body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            await _send_json(
                send, 400, _error_body(400, "Expected a JSON object with 'messages'", None, None)
            )
            return
        reply = self.model._take(body)
        await _Exchange(self.model, body, reply, receive, send).run()


class _Models:
    """``GET /v1/models``."""

    def __init__(self, model: ScriptedModel):
        self.model = model

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        data = [
            {"id": model_id, "object": "model", "created": 0, "owned_by": "threadline-testing"}
            for model_id in self.model.model_ids
        ]
        await _send_json(send, 200, _encode({"object": "list", "data": data}))


async def _send_json(send: Send, status: int, body: bytes) -> None:
    start: Message = {"type": "http.response.start", "status": status, "headers": _json_headers(body)}
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})


class _Server(uvicorn.Server):
    """A uvicorn server that tells its owner thread when it is accepting connections."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[asyncio.AbstractEventLoop], None]):
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started(asyncio.get_running_loop())


class ScriptedModel:
    """A fake OpenAI-compatible chat model served over real HTTP from a background thread."""

    def __init__(
        self,
        *,
        port: int = 0,
        responder: Responder | None = None,
        model_ids: Sequence[str] = ("scripted",),
        startup_timeout: float = 10.0,
    ):
        if not model_ids:
            raise ValueError("model_ids must name at least one model")
        self.port = port
        self.responder: Responder = responder or echo_responder
        self.model_ids = list(model_ids)
        self.startup_timeout = startup_timeout
        self.disconnects = 0
        self.bytes_sent = 0
        """Bytes of response bodies sent so far (since the last :meth:`reset`)."""
        self._cond = threading.Condition()
        self._queue: deque[Reply] = deque()
        self._requests: list[dict[str, Any]] = []
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: _Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Touched only on the server's loop thread.
        self._live: set[_Exchange] = set()
        self._stopping = False
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", _ChatCompletions(self), methods=["POST"]),
                Route("/v1/models", _Models(self), methods=["GET"]),
            ]
        )

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, the ``base_url`` an OpenAI client should use."""
        return f"http://{_HOST}:{self.port}/v1"

    def start(self) -> ScriptedModel:
        """Start serving; returns once the server accepts connections."""
        if self._thread is not None:
            raise RuntimeError("ScriptedModel already started")
        # Binding here (not in uvicorn) makes port=0 resolve immediately and bind errors raise in the caller.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((_HOST, self.port))
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            host=_HOST,
            port=self.port,
            log_level="warning",
            lifespan="off",
            access_log=False,
            # Leave the host process's logging configuration alone; records propagate to the root logger.
            log_config=None,
            # Hanging replies are released on stop(); this only bounds a stuck shutdown.
            timeout_graceful_shutdown=2,
        )
        self._stopping = False
        self._ready.clear()
        self._server = _Server(config, self._started)
        self._thread = threading.Thread(
            target=self._serve, args=(self._server, sock), name=f"scripted-model-{self.port}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(self.startup_timeout) or not self._server.started:
            self.stop()
            raise RuntimeError(f"ScriptedModel did not start within {self.startup_timeout}s")
        return self

    def _serve(self, server: _Server, sock: socket.socket) -> None:
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
            self._ready.set()  # unblock start() if startup failed

    def _started(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ready.set()

    def stop(self) -> None:
        """Stop serving; hanging and slow replies are cut short. Safe to call twice."""
        server, thread, loop = self._server, self._thread, self._loop
        if server is None or thread is None:
            return
        server.should_exit = True
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop may close in between
                loop.call_soon_threadsafe(self._release_all)
        thread.join(timeout=10)
        self._server = self._thread = self._loop = None

    def _release_all(self) -> None:
        self._stopping = True
        for exchange in list(self._live):
            exchange.gone.set()

    def __enter__(self) -> ScriptedModel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting and records -------------------------------------------------------------------

    def script(self, *replies: Reply | str) -> None:
        """Queue replies (a string is ``Reply(text=...)``); each request consumes the oldest one."""
        with self._cond:
            self._queue.extend(Reply(text=r) if isinstance(r, str) else r for r in replies)

    @property
    def pending(self) -> int:
        """Scripted replies not yet consumed."""
        with self._cond:
            return len(self._queue)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """A snapshot of every chat-completions request body received, in order."""
        with self._cond:
            return list(self._requests)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Block until at least ``n`` requests arrived; returns them. Raises ``TimeoutError``."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._requests) >= n, timeout):
                raise TimeoutError(f"got {len(self._requests)} of {n} requests within {timeout}s")
            return list(self._requests)

    def wait_for_disconnect(self, timeout: float = 5.0, *, count: int = 1) -> int:
        """Block until at least ``count`` early client disconnects were seen; returns the total.

        Raises ``TimeoutError``."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.disconnects >= count, timeout):
                raise TimeoutError(f"saw {self.disconnects} of {count} disconnects within {timeout}s")
            return self.disconnects

    def reset(self) -> None:
        """Forget scripted replies, recorded requests and disconnects (the responder stays)."""
        with self._cond:
            self._queue.clear()
            self._requests.clear()
            self.disconnects = 0
            self.bytes_sent = 0

    def _take(self, body: dict[str, Any]) -> Reply:
        with self._cond:
            self._requests.append(body)
            self._cond.notify_all()
            reply = self._queue.popleft() if self._queue else None
            responder = self.responder
        if reply is not None:
            return reply
        try:
            return responder(body)
        except Exception as exc:
            # Surface a broken responder to the client under test rather than dropping the connection.
            logging.getLogger(__name__).exception("ScriptedModel responder failed")
            return Reply(status=500, error_message=f"Scripted responder failed: {exc!r}")

    def _note_disconnect(self) -> None:
        with self._cond:
            self.disconnects += 1
            self._cond.notify_all()


class ScriptedTool:
    """A server-side tool for tests (``code_interpreter`` or ``file_search``), offered to models under
    the built-in's own function name. It answers each call with ``respond(arguments)`` (by default,
    logs or results naming the arguments) and records the calls it got. With ``hang=True`` a call
    runs until it is cancelled; ``started`` and ``cancelled`` let a test see both.

    Register it with ``create_app(settings, tools=ToolRegistry([ScriptedTool()]))``.
    """

    def __init__(
        self,
        type: BuiltinType = "code_interpreter",
        *,
        respond: Callable[[dict[str, Any]], ToolResult] | None = None,
        hang: bool = False,
    ) -> None:
        spec = FUNCTIONS[type]
        self.type: BuiltinType = type
        self.name, self.description, self.parameters = spec.name, spec.description, spec.parameters
        self.respond = respond or self._default
        self.hang = hang
        self.calls: list[tools.ToolCall] = []
        self.started = threading.Event()
        self.cancelled = threading.Event()

    def _default(self, arguments: dict[str, Any]) -> ToolResult:
        if self.type == "code_interpreter":
            logs = f"ran {arguments.get('code', '')!r}"
            return ToolResult(
                CodeInterpreterDetails(str(arguments.get("code", "")), (LogsOutput(logs),)), logs
            )
        result = FileSearchResult("file-scripted", "notes.txt", 0.9, (f"about {arguments.get('query')}",))
        details = FileSearchDetails(RankingOptions("default_2024_08_21", 0.0), (result,))
        return ToolResult(details, f"notes.txt: about {arguments.get('query')}")

    def start(self, call: tools.ToolCall) -> BuiltinDetails:
        if self.type == "code_interpreter":
            return CodeInterpreterDetails(str(call.arguments.get("code", "")))
        return FileSearchDetails()

    async def run(self, call: tools.ToolCall) -> ToolResult:
        self.calls.append(call)
        self.started.set()
        if self.hang:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        return self.respond(call.arguments)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve a scripted model until SIGINT/SIGTERM (for benchmarks that need it in its own process)."""
    parser = argparse.ArgumentParser(prog="python -m threadline.testing", description=main.__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free port)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each streamed chunk")
    parser.add_argument("--first-delay", type=float, default=0.0, help="seconds before the first byte")
    parser.add_argument("--text", default=None, help="always answer this text instead of echoing")
    parser.add_argument("--chunks", type=int, default=None, help="split replies into this many chunks")
    parser.add_argument("--model", action="append", dest="models", help="model id to list (repeatable)")
    args = parser.parse_args(argv)

    fixed: str | None = args.text
    delay: float = args.delay
    first_delay: float = args.first_delay
    chunks: int | None = args.chunks

    def responder(body: dict[str, Any]) -> Reply:
        reply = Reply(text=fixed) if fixed is not None else echo_responder(body)
        reply.delay, reply.first_delay, reply.chunks = delay, first_delay, chunks
        return reply

    logging.basicConfig(level=logging.WARNING)
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with ScriptedModel(port=args.port, responder=responder, model_ids=args.models or ("scripted",)) as model:
        print(f"ready {model.base_url}", flush=True)
        done.wait()


if __name__ == "__main__":
    main()
