"""A client for remote MCP servers, on the official ``mcp`` SDK: list a server's tools, call one.

Transport, by the URL's path: a path ending in ``/sse`` is spoken to with the older HTTP+SSE
transport, any other with streamable HTTP (the current one). No fallback from one to the other: it
would double the wait on a server that is down and send a call, headers included, twice.

Each operation opens its own session (connect, ``initialize``, the request, close), so nothing
ties a call to the worker or process that listed the tools: a run resumed elsewhere calls the same
way. Every connection is made by the ``client_factory`` given (the guarded client in production:
only public addresses, bounded time, no cookies). An operation as a whole is bounded by
``timeout`` seconds.

The headers a client supplies (``Authorization`` …) go to the server and nowhere else: not into
logs, reprs or error messages. What a call returns is cut to ``output_chars`` before anyone sees
it. A failure of any kind, the server's or the network's, is an :class:`McpFailure` naming the
reason in the shapes of OpenAI's ``mcp_call.error`` (``http_error``, ``mcp_protocol_error``,
``mcp_tool_execution_error``).

:class:`McpGateway` is what the run loop is given (the domain's ``McpServers`` port): the client,
with each response's headers sealed under the server's key until the call that sends them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import urlsplit

import httpx2
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from mcp import ClientSession
from mcp import types as mcp_types
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from threadline.errors import RemoteFetchError, RemoteRefusedError

__all__ = [
    "HttpClientFactory",
    "McpClient",
    "McpFailure",
    "McpGateway",
    "McpServer",
    "McpToolInfo",
    "plain_client",
]

T = TypeVar("T")

DEFAULT_TIMEOUT = 60.0
DEFAULT_CONNECT_TIMEOUT = 10.0
OUTPUT_CHARS = 20_000
"""What the model and the client are shown of one call's output, at most."""
MAX_TOOLS = 128
"""Tools kept from one server's list (pages are read until this many)."""
DESCRIPTION_CHARS = 2_000
"""Of each tool's description."""
SCHEMA_CHARS = 20_000
"""Of each tool's input schema, as JSON: a larger one is replaced by an open object schema."""
_CUT = "\n…(output cut)…\n"


class HttpClientFactory(Protocol):
    """Makes the HTTP client of one MCP connection (the ``mcp`` SDK's client-factory signature)."""

    def __call__(
        self,
        headers: dict[str, str] | None = None,
        timeout: httpx2.Timeout | None = None,
        auth: httpx2.Auth | None = None,
    ) -> httpx2.AsyncClient: ...


def plain_client(
    headers: dict[str, str] | None = None,
    timeout: httpx2.Timeout | None = None,
    auth: httpx2.Auth | None = None,
) -> httpx2.AsyncClient:
    """An unguarded client: for tests and embedders that reach only servers they trust."""
    return httpx2.AsyncClient(headers=headers, timeout=timeout, auth=auth, follow_redirects=False)


@dataclass(frozen=True, slots=True)
class McpServer:
    """Where a server is, and the headers to send it (kept out of the repr)."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True)
class McpToolInfo:
    """One tool a server lists."""

    name: str
    input_schema: dict[str, Any]
    description: str | None = None
    annotations: dict[str, Any] | None = None
    """The server's hints (``readOnlyHint`` …), as it sent them."""

    @property
    def read_only(self) -> bool:
        return bool((self.annotations or {}).get("readOnlyHint"))


FailureKind = Literal["http_error", "mcp_protocol_error", "mcp_tool_execution_error"]


class McpFailure(Exception):
    """A list or a call that did not succeed, with the reason the item and the model are given.

    ``kind`` and ``code`` follow OpenAI's ``mcp_call.error``: ``http_error`` with the server's HTTP
    status, or a gateway's status when there was none (403 an address the remote guard refuses,
    502 unreachable or too large an answer, 504 out of time); ``mcp_protocol_error`` with the JSON-RPC error code;
    ``mcp_tool_execution_error`` for a tool that ran and reported an error (its ``content``).
    """

    def __init__(
        self, kind: FailureKind, message: str, *, code: int = 0, content: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.kind: FailureKind = kind
        self.message = message
        self.code = code
        self.content = content or []


class McpClient:
    def __init__(
        self,
        client_factory: HttpClientFactory = plain_client,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        output_chars: int = OUTPUT_CHARS,
    ) -> None:
        self.client_factory = client_factory
        self.timeout = timeout
        """Seconds one operation (connect, initialize, list or call) may take in all."""
        self.connect_timeout = connect_timeout
        self.output_chars = output_chars

    async def list_tools(self, server: McpServer) -> list[McpToolInfo]:
        async def listing(session: ClientSession) -> list[McpToolInfo]:
            tools: list[McpToolInfo] = []
            cursor: str | None = None
            while len(tools) < MAX_TOOLS:
                params = mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None
                page = await session.list_tools(params=params)
                tools += [_tool_info(tool) for tool in page.tools]
                cursor = page.next_cursor
                if not cursor:
                    break
            return tools[:MAX_TOOLS]

        return await self._run(server, listing)

    async def call_tool(self, server: McpServer, name: str, arguments: dict[str, Any]) -> str:
        """The tool's output as text (cut to ``output_chars``); :class:`McpFailure` when it fails."""

        async def calling(session: ClientSession) -> mcp_types.CallToolResult:
            return await session.call_tool(name, arguments)

        result = await self._run(server, calling)
        text = self._bounded(_text(result))
        if result.is_error:
            content = [
                block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in result.content
            ]
            raise McpFailure(
                "mcp_tool_execution_error",
                text or "The tool reported an error.",
                content=_bounded_content(content, self.output_chars),
            )
        return text

    async def _run(self, server: McpServer, operation: Callable[[ClientSession], Awaitable[T]]) -> T:
        statuses: list[int] = []
        try:
            async with asyncio.timeout(self.timeout):
                async with self._session(server, statuses) as session:
                    return await operation(session)
        except TimeoutError:
            raise McpFailure(
                "http_error", f"The MCP server did not answer within {self.timeout:g} s.", code=504
            ) from None
        except Exception as exc:
            raise _failure(exc, statuses) from None

    @contextlib.asynccontextmanager
    async def _session(self, server: McpServer, statuses: list[int]) -> AsyncIterator[ClientSession]:
        """A session on the server; the error statuses its HTTP answers had go into ``statuses``
        (the streamable HTTP transport turns them into a bare JSON-RPC error)."""
        headers = dict(server.headers)

        async def record(response: httpx2.Response) -> None:
            if response.status_code >= 400:
                statuses.append(response.status_code)

        def factory(
            headers: dict[str, str] | None = None,
            timeout: httpx2.Timeout | None = None,
            auth: httpx2.Auth | None = None,
        ) -> httpx2.AsyncClient:
            client = self.client_factory(headers=headers, timeout=timeout, auth=auth)
            client.event_hooks["response"] = [*client.event_hooks["response"], record]
            return client

        async with contextlib.AsyncExitStack() as stack:
            if urlsplit(server.url).path.rstrip("/").endswith("/sse"):
                streams = await stack.enter_async_context(
                    sse_client(
                        server.url,
                        headers=headers,
                        timeout=self.connect_timeout,
                        sse_read_timeout=self.timeout,
                        httpx_client_factory=factory,
                    )
                )
                read, write = streams[0], streams[1]
            else:
                http = await stack.enter_async_context(
                    factory(headers=headers, timeout=httpx2.Timeout(self.connect_timeout, read=self.timeout))
                )
                read, write = await stack.enter_async_context(
                    streamable_http_client(server.url, http_client=http)
                )
            session = await stack.enter_async_context(
                ClientSession(read, write, read_timeout_seconds=self.timeout)
            )
            await session.initialize()
            yield session

    def _bounded(self, text: str) -> str:
        limit = self.output_chars
        if len(text) <= limit:
            return text
        return text[: limit // 2] + _CUT + text[-limit // 2 :]


def _tool_info(tool: mcp_types.Tool) -> McpToolInfo:
    schema = tool.input_schema if len(json.dumps(tool.input_schema)) <= SCHEMA_CHARS else {"type": "object"}
    description = tool.description[:DESCRIPTION_CHARS] if tool.description else tool.description
    annotations = tool.annotations.model_dump(by_alias=True, exclude_none=True) if tool.annotations else None
    return McpToolInfo(tool.name, schema, description, annotations or None)


def _text(result: mcp_types.CallToolResult) -> str:
    """What a call returned, as text: its text parts, else its structured content as JSON."""
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        elif isinstance(block, mcp_types.EmbeddedResource):
            resource = block.resource
            if isinstance(resource, mcp_types.TextResourceContents):
                parts.append(resource.text)
            else:
                parts.append(f"[resource {resource.uri} ({resource.mime_type or 'binary'}), not shown]")
        elif isinstance(block, mcp_types.ResourceLink):
            parts.append(f"[resource {block.uri}]")
        else:
            parts.append(f"[{block.type} ({block.mime_type}), not shown]")
    if not parts and result.structured_content is not None:
        return json.dumps(result.structured_content, ensure_ascii=False)
    return "\n".join(parts)


def _bounded_content(content: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """An error's content blocks, dropped from the end once their JSON passes ``limit``."""
    kept: list[dict[str, Any]] = []
    size = 0
    for block in content:
        size += len(json.dumps(block))
        if size > limit:
            break
        kept.append(block)
    return kept


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _failure(exc: Exception, statuses: list[int]) -> McpFailure:
    """The reason behind an exception from the SDK or the HTTP client (task groups wrap them)."""
    leaves = _leaves(exc)
    leaf = next((e for e in leaves if not isinstance(e, asyncio.CancelledError)), leaves[0])
    if isinstance(leaf, McpFailure):
        return leaf
    if isinstance(leaf, RemoteRefusedError):
        return McpFailure("http_error", leaf.message, code=403)
    if isinstance(leaf, RemoteFetchError):
        return McpFailure("http_error", leaf.message, code=502)
    if statuses and isinstance(leaf, MCPError | httpx2.HTTPStatusError):
        return McpFailure("http_error", f"The MCP server answered HTTP {statuses[-1]}.", code=statuses[-1])
    if isinstance(leaf, MCPError):
        return McpFailure("mcp_protocol_error", leaf.error.message, code=leaf.error.code)
    if isinstance(leaf, httpx2.HTTPStatusError):
        status = leaf.response.status_code
        return McpFailure("http_error", f"The MCP server answered HTTP {status}.", code=status)
    if isinstance(leaf, httpx2.TimeoutException):
        return McpFailure("http_error", "The MCP server did not answer in time.", code=504)
    if isinstance(leaf, httpx2.HTTPError):
        return McpFailure("http_error", f"Could not reach the MCP server: {leaf}", code=502)
    if isinstance(leaf, ValueError | RuntimeError):
        # The SDK's own checks (an unexpected content type, output that breaks the tool's schema).
        return McpFailure("mcp_protocol_error", str(leaf) or type(leaf).__name__, code=-32603)
    return McpFailure("http_error", f"The MCP server could not be used: {type(leaf).__name__}", code=502)


class McpGateway:
    """The MCP servers as the run loop reaches them: the client, with the headers kept sealed.

    A response keeps its MCP headers sealed (AES-GCM under ``key``) while it runs, so its stored
    settings never hold them in plain text; only this class opens them, for the request they go
    with. Without a key each process makes its own: a run taken over by another process then finds
    its headers unreadable and its MCP calls fail with that reason (set ``THREADLINE_SECRET_KEY``
    on every process that runs workers).
    """

    def __init__(self, client: McpClient, secret: str = "") -> None:
        self.client = client
        key = hashlib.sha256(secret.encode()).digest() if secret else AESGCM.generate_key(bit_length=256)
        self._aead = AESGCM(key)

    def seal(self, headers: Mapping[str, str]) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, json.dumps(dict(headers)).encode(), b"mcp-headers")
        return base64.urlsafe_b64encode(nonce + sealed).decode()

    def _open(self, sealed: str | None) -> dict[str, str]:
        if not sealed:
            return {}
        try:
            raw = base64.urlsafe_b64decode(sealed.encode())
            headers = json.loads(self._aead.decrypt(raw[:12], raw[12:], b"mcp-headers"))
        except (ValueError, InvalidTag):
            raise McpFailure(
                "http_error",
                "The headers for this MCP server were sealed by another server process and cannot be "
                "read here (set THREADLINE_SECRET_KEY alike on every process); send the request again.",
                code=401,
            ) from None
        return {str(k): str(v) for k, v in headers.items()}

    async def list_tools(self, url: str, sealed: str | None) -> tuple[list[dict[str, Any]], str | None]:
        try:
            tools = await self.client.list_tools(McpServer(url, self._open(sealed)))
        except McpFailure as failed:
            return [], failed.message
        return [
            {
                "name": t.name,
                "description": t.description,
                "input_schema": t.input_schema,
                "annotations": t.annotations,
            }
            for t in tools
        ], None

    async def call_tool(
        self, url: str, sealed: str | None, name: str, arguments: dict[str, Any]
    ) -> tuple[str | None, dict[str, Any] | None]:
        try:
            return await self.client.call_tool(McpServer(url, self._open(sealed)), name, arguments), None
        except McpFailure as failed:
            return None, failure_object(failed)


def failure_object(failed: McpFailure) -> dict[str, Any]:
    """A failure as ``mcp_call.error`` shows it."""
    if failed.kind == "mcp_tool_execution_error":
        return {"type": failed.kind, "content": failed.content or [{"type": "text", "text": failed.message}]}
    return {"type": failed.kind, "code": failed.code, "message": failed.message}
