"""The MCP client adapter against a real FastMCP server on a local port, over both transports.

What a broken adapter would get wrong: the tools' schemas and hints, a call's output, the client's
``Authorization`` reaching the server (and no log), a tool's error or an unreachable, refusing or
slow server taken for success or left hanging, an output too long for the model, a connection
made without the client factory (which is where the address guard sits).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import socket
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from threadline.testing.mcp_server import McpTestServer
from threadline.tools.remote.addresses import RemotePolicy, parse_allow
from threadline.tools.remote.guard import RemoteGuard
from threadline.tools.remote.mcp import (
    McpClient,
    McpFailure,
    McpGateway,
    McpServer,
    McpToolInfo,
    plain_client,
)

TOKEN = "tok-7c1e5d0a9b"


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[McpTestServer]:
    with McpTestServer(token=TOKEN) as server:
        yield server


@pytest.fixture(params=["streamable", "sse"])
def url(request: pytest.FixtureRequest, mcp_server: McpTestServer) -> str:
    return mcp_server.url if request.param == "streamable" else mcp_server.sse_url


def authorized(url: str) -> McpServer:
    return McpServer(url, {"Authorization": f"Bearer {TOKEN}"})


def failure(client: McpClient, server: McpServer, name: str, arguments: dict[str, Any]) -> McpFailure:
    with pytest.raises(McpFailure) as raised:
        asyncio.run(client.call_tool(server, name, arguments))
    return raised.value


def test_lists_the_tools_with_their_schemas_and_hints(url: str) -> None:
    tools = {tool.name: tool for tool in asyncio.run(McpClient().list_tools(authorized(url)))}
    assert set(tools) == {"add", "weather", "delete_file", "fail", "slow", "big"}
    add = tools["add"]
    assert isinstance(add, McpToolInfo)
    assert add.description == "Add two integers."
    assert add.input_schema["required"] == ["a", "b"]
    assert add.input_schema["properties"]["a"]["type"] == "integer"
    assert add.read_only and add.annotations == {"readOnlyHint": True}
    assert not tools["delete_file"].read_only


def test_a_call_returns_the_tools_output_and_the_server_got_the_arguments_and_header(
    url: str, mcp_server: McpTestServer
) -> None:
    mcp_server.calls.clear()
    mcp_server.authorizations.clear()
    assert asyncio.run(McpClient().call_tool(authorized(url), "weather", {"city": "Oslo"})) == "sunny in Oslo"
    assert mcp_server.calls == [("weather", {"city": "Oslo"})]
    assert mcp_server.authorizations and set(mcp_server.authorizations) == {f"Bearer {TOKEN}"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}], ids=["none", "wrong"])
def test_a_server_that_refuses_the_credentials_is_an_http_error(url: str, headers: dict[str, str]) -> None:
    with pytest.raises(McpFailure) as raised:
        asyncio.run(McpClient().list_tools(McpServer(url, headers)))
    assert (raised.value.kind, raised.value.code) == ("http_error", 401)
    assert "401" in raised.value.message


def test_a_tool_that_raises_is_an_execution_error_with_its_reason(url: str) -> None:
    failed = failure(McpClient(), authorized(url), "fail", {"reason": "disk on fire"})
    assert failed.kind == "mcp_tool_execution_error"
    assert "disk on fire" in failed.message
    assert failed.content and "disk on fire" in failed.content[0]["text"]


def test_an_unknown_tool_fails_clearly(url: str) -> None:
    failed = failure(McpClient(), authorized(url), "no_such_tool", {})
    assert "no_such_tool" in failed.message


def test_a_slow_tool_is_cut_off_at_the_timeout(url: str, mcp_server: McpTestServer) -> None:
    failed = failure(McpClient(timeout=1), authorized(url), "slow", {"seconds": 30})
    assert (failed.kind, failed.code) == ("http_error", 504)
    assert ("slow", {"seconds": 30.0}) in mcp_server.calls


@pytest.mark.parametrize("path", ["/mcp", "/sse"])
def test_an_unreachable_server_fails_at_once(path: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        url = f"http://127.0.0.1:{sock.getsockname()[1]}{path}"
        with pytest.raises(McpFailure) as raised:
            asyncio.run(McpClient(timeout=30).list_tools(McpServer(url)))
    assert (raised.value.kind, raised.value.code) == ("http_error", 502)


def test_output_is_cut_to_the_limit(url: str) -> None:
    text = asyncio.run(McpClient(output_chars=1_000).call_tool(authorized(url), "big", {"chars": 50_000}))
    assert 1_000 <= len(text) < 1_100
    assert "output cut" in text


def test_every_connection_is_made_by_the_client_factory(url: str) -> None:
    made: list[dict[str, str] | None] = []

    def factory(
        headers: dict[str, str] | None = None,
        timeout: httpx2.Timeout | None = None,
        auth: httpx2.Auth | None = None,
    ) -> httpx2.AsyncClient:
        made.append(headers)
        return plain_client(headers, timeout, auth)

    client = McpClient(factory)
    asyncio.run(client.list_tools(authorized(url)))
    asyncio.run(client.call_tool(authorized(url), "add", {"a": 1, "b": 2}))
    assert made == [{"Authorization": f"Bearer {TOKEN}"}] * 2


def test_the_headers_are_never_logged_nor_shown(
    url: str, caplog: pytest.LogCaptureFixture, mcp_server: McpTestServer
) -> None:
    server = authorized(url)
    client = McpClient(timeout=5)
    with caplog.at_level(logging.DEBUG):
        asyncio.run(client.list_tools(server))
        asyncio.run(client.call_tool(server, "add", {"a": 1, "b": 2}))
        failed = failure(client, server, "fail", {"reason": "no"})
        refused = McpServer(url, {"Authorization": f"Bearer {TOKEN}-expired"})
        with pytest.raises(McpFailure) as raised:
            asyncio.run(client.list_tools(refused))
    assert any(record.name.startswith("mcp.client") for record in caplog.records)
    logged = "\n".join(record.getMessage() for record in caplog.records) + caplog.text
    assert TOKEN not in logged
    for shown in (repr(server), repr(refused), failed.message, str(failed.content), raised.value.message):
        assert TOKEN not in shown


def test_through_the_guard_a_local_server_is_refused_unless_allowed(
    url: str, mcp_server: McpTestServer
) -> None:
    refused = McpClient(RemoteGuard(RemotePolicy()).httpx_client_factory)
    with pytest.raises(McpFailure) as raised:
        asyncio.run(refused.list_tools(authorized(url)))
    assert (raised.value.kind, raised.value.code) == ("http_error", 403)
    assert "THREADLINE_REMOTE_ALLOW" in raised.value.message
    allowed = McpClient(RemoteGuard(RemotePolicy(*parse_allow("127.0.0.1"))).httpx_client_factory)
    assert asyncio.run(allowed.call_tool(authorized(url), "add", {"a": 2, "b": 40})) == "42"


def test_the_gateway_seals_the_headers_and_only_its_key_opens_them(url: str) -> None:
    gateway = McpGateway(McpClient(), secret="one key")
    sealed = gateway.seal({"Authorization": f"Bearer {TOKEN}"})
    assert TOKEN not in sealed and TOKEN.encode() not in base64.urlsafe_b64decode(sealed)
    assert asyncio.run(gateway.call_tool(url, sealed, "add", {"a": 1, "b": 1})) == ("2", None)
    same = McpGateway(McpClient(), secret="one key")
    assert asyncio.run(same.call_tool(url, sealed, "add", {"a": 2, "b": 2})) == ("4", None)
    other = McpGateway(McpClient(), secret="another key")
    output, error = asyncio.run(other.call_tool(url, sealed, "add", {"a": 1, "b": 1}))
    assert output is None and error is not None and "THREADLINE_SECRET_KEY" in error["message"]
    tools, why = asyncio.run(gateway.list_tools(url, gateway.seal({})))
    assert tools == [] and why is not None and "401" in why
    output, error = asyncio.run(gateway.call_tool(url, sealed, "fail", {"reason": "nope"}))
    assert output is None and error == {
        "type": "mcp_tool_execution_error",
        "content": [{"type": "text", "text": "Error executing tool fail: nope"}],
    }
