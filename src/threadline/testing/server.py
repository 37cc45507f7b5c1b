"""The scripted model over HTTP: a real server speaking the OpenAI chat-completions protocol.

Tests and benchmarks point Threadline's OpenAI-compatible provider at :class:`ScriptedModel` instead of a
real model, so everything above the model boundary (HTTP client, SSE parsing, retries, cancellation) runs
for real while the model's answers stay deterministic::

    with ScriptedModel() as model:
        model.script(Reply(text="Hello there"), Reply(tool_calls=[ToolCall("lookup", {"q": "x"})]))
        ...  # point the code under test at model.base_url
        assert model.wait_for_requests(2)[1]["messages"][-1]["role"] == "tool"

Each request consumes one scripted :class:`Reply` (the language is ``script.py``); once the script is
used up, ``model.responder`` decides (by default it echoes the last user message). Replies can stream
slowly, fail with an HTTP error, hang until the client goes away, or stop early because of
``max_tokens``; or misbehave as a model server should not: stream for ever, trickle comments, answer
a page that is not the protocol (``exchange.py`` answers each request). It serves from a uvicorn
thread, so sync and async tests alike can use it; ``python -m threadline.testing`` runs one in its
own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from threadline.testing.exchange import Exchange, encode, error_body, send_json
from threadline.testing.script import Reply, Responder, echo_responder

_HOST = "127.0.0.1"


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
            await send_json(
                send,
                400,
                error_body(Reply(status=400, error_message="Expected a JSON object with 'messages'")),
            )
            return
        reply = self.model._take(body)
        model = self.model
        exchange = Exchange(
            body,
            reply,
            receive,
            send,
            model_name=model.model_ids[0],
            on_disconnect=model._note_disconnect,
            on_sent=model._note_sent,
        )
        model._live.add(exchange)
        if model._stopping:
            exchange.gone.set()
        try:
            await exchange.run()
        finally:
            model._live.discard(exchange)


class _Models:
    """``GET /v1/models``."""

    def __init__(self, model: ScriptedModel):
        self.model = model

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        data = [
            {"id": model_id, "object": "model", "created": 0, "owned_by": "threadline-testing"}
            for model_id in self.model.model_ids
        ]
        await send_json(send, 200, encode({"object": "list", "data": data}))


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
        self._live: set[Exchange] = set()
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

    def _note_sent(self, count: int) -> None:
        self.bytes_sent += count

    def _note_disconnect(self) -> None:
        with self._cond:
            self.disconnects += 1
            self._cond.notify_all()
