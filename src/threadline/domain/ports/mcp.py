"""Remote MCP servers, as the domain reaches them (``threadline.tools.remote.mcp`` implements it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class McpServers(Protocol):
    """The port the run loop reaches MCP servers through (``tools/remote/mcp.py``)."""

    def seal(self, headers: Mapping[str, str]) -> str:
        """The headers, encrypted with the server's key: what the response keeps while it runs."""

    async def list_tools(self, url: str, sealed: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """The server's tools (``name``, ``description``, ``input_schema``, ``annotations``), or an
        empty list and why they could not be listed."""

    async def call_tool(
        self, url: str, sealed: str | None, name: str, arguments: dict[str, Any]
    ) -> tuple[str | None, dict[str, Any] | None]:
        """The call's output (bounded), or ``None`` and its error as ``mcp_call.error`` shows it."""
