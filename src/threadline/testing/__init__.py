"""Test doubles for the model boundary, shipped for Threadline's tests and for yours.

- ``script.py``: the reply language (:class:`Reply`, :class:`ToolCall`, responders), one meaning
  for both transports;
- ``server.py``: :class:`ScriptedModel`, a real HTTP server speaking chat completions, for tests
  that run everything above the model (HTTP client, SSE parsing, retries) for real;
- ``provider.py``: :class:`ScriptedProvider`, the same scripts in process, as a model provider,
  for unit tests of the domain with no HTTP at all;
- ``tools.py``: :class:`ScriptedTool`, a code_interpreter or file_search double;
- ``mcp_server.py``: :class:`~threadline.testing.mcp_server.McpTestServer`, a real MCP server (the
  ``mcp`` SDK's MCPServer) on a local port, for the ``mcp`` tool (imported from its module);
- ``web.py``: ``FakeWeb``, a SearxNG and a Brave Search endpoint with result pages (and pages that
  misbehave), for web search and the remote guard (import ``threadline.testing.web``);
- ``__main__.py``: ``python -m threadline.testing`` serves a scripted model in its own process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from threadline.testing.provider import ScriptedProvider, ScriptedRouter
from threadline.testing.script import Reply, Responder, ToolCall, echo_responder
from threadline.testing.server import ScriptedModel
from threadline.testing.tools import ScriptedTool

if TYPE_CHECKING:
    from threadline.testing.__main__ import main

__all__ = [
    "Reply",
    "Responder",
    "ScriptedModel",
    "ScriptedProvider",
    "ScriptedRouter",
    "ScriptedTool",
    "ToolCall",
    "echo_responder",
    "main",
]


def __getattr__(name: str) -> Any:
    # Imported on first use: importing ``__main__`` here would make ``python -m threadline.testing``
    # warn that the module it runs was imported before.
    if name == "main":
        from threadline.testing.__main__ import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
