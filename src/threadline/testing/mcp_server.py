"""A real MCP server for tests: the ``mcp`` SDK's MCPServer (FastMCP) under uvicorn, on a free local port.

Tests point ``mcp`` tools (and :class:`~threadline.tools.remote.mcp.McpClient`) at it::

    with McpTestServer(token="s3cret") as server:
        ...  # server.url (streamable HTTP) or server.sse_url (the older HTTP+SSE transport)
        assert server.calls == [("add", {"a": 2, "b": 3})]

Its tools: ``add`` and ``weather`` (read-only, as tests leave them without approval),
``delete_file`` (destructive, as tests make it need approval), ``fail`` (raises: the call reports an
error), ``slow`` (waits ``seconds`` or until the server stops), ``big`` (returns ``chars`` letters).
With ``token``, every request must carry ``Authorization: Bearer <token>`` (else 401); the
``Authorization`` values it was sent are kept in :attr:`McpTestServer.authorizations`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from types import TracebackType
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

__all__ = ["McpTestServer"]

_HOST = "127.0.0.1"


class McpTestServer:
    def __init__(self, *, token: str | None = None) -> None:
        self.token = token
        self.calls: list[tuple[str, dict[str, Any]]] = []
        """The tool calls the server received, in order: (name, arguments)."""
        self.authorizations: list[str | None] = []
        """The ``Authorization`` header of every HTTP request it received (``None`` when absent)."""
        self._stopping = threading.Event()
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((_HOST, 0))
        self.port: int = sock.getsockname()[1]
        self._sock = sock
        self.app = self._app()
        config = uvicorn.Config(
            self.app, log_config=None, access_log=False, log_level="warning", timeout_graceful_shutdown=2
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The streamable HTTP endpoint."""
        return f"http://{_HOST}:{self.port}/mcp"

    @property
    def sse_url(self) -> str:
        """The HTTP+SSE endpoint."""
        return f"http://{_HOST}:{self.port}/sse"

    def _mcp_server(self) -> MCPServer:
        # MCPServer sets up the root logger when made (logging.basicConfig); a test double must not.
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        mcp = MCPServer("threadline-test", log_level="WARNING")
        root.handlers[:], root.level = handlers, level
        calls = self.calls
        stopping = self._stopping
        read_only = ToolAnnotations(read_only_hint=True)

        @mcp.tool(annotations=read_only)
        def add(a: int, b: int) -> int:
            """Add two integers."""
            calls.append(("add", {"a": a, "b": b}))
            return a + b

        @mcp.tool(annotations=read_only)
        def weather(city: str) -> str:
            """The weather in a city."""
            calls.append(("weather", {"city": city}))
            return f"sunny in {city}"

        @mcp.tool(annotations=ToolAnnotations(destructive_hint=True))
        def delete_file(path: str) -> str:
            """Delete a file."""
            calls.append(("delete_file", {"path": path}))
            return f"deleted {path}"

        @mcp.tool()
        def fail(reason: str) -> str:
            """Always fails with the reason given."""
            calls.append(("fail", {"reason": reason}))
            raise ToolError(reason)

        @mcp.tool()
        async def slow(seconds: float) -> str:
            """Answers after a while."""
            calls.append(("slow", {"seconds": seconds}))
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not stopping.is_set():
                await asyncio.sleep(0.05)
            return f"waited {seconds:g} s"

        @mcp.tool()
        def big(chars: int) -> str:
            """Returns that many letters."""
            calls.append(("big", {"chars": chars}))
            return "x" * chars

        return mcp

    def _app(self) -> Any:
        mcp = self._mcp_server()
        streamable = mcp.streamable_http_app(host=_HOST)
        app = Starlette(
            routes=[*streamable.routes, *mcp.sse_app(host=_HOST).routes],
            lifespan=lambda _: mcp.session_manager.run(),
        )
        authorizations = self.authorizations
        token = self.token

        async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                headers = dict(scope["headers"])
                given = headers.get(b"authorization")
                authorizations.append(given.decode() if given is not None else None)
                if token is not None and given != f"Bearer {token}".encode():
                    await JSONResponse({"error": "unauthorized"}, status_code=401)(scope, receive, send)
                    return
            await app(scope, receive, send)

        return guarded

    def start(self) -> McpTestServer:
        self._thread = threading.Thread(target=self._serve, daemon=True, name="mcp-test-server")
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the MCP test server did not start")
            time.sleep(0.02)
        return self

    def _serve(self) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[self._sock]))
        finally:
            self._sock.close()

    def stop(self) -> None:
        self._stopping.set()
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=20)

    def __enter__(self) -> McpTestServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
