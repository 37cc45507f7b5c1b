"""A scripted server-side tool: a test double for code_interpreter and file_search.

The model boundary is where the fakes go; a built-in tool is behind it too (a sandbox, a search
index), so tests of the run loop's built-in calls register :class:`ScriptedTool` in the
``ToolRegistry`` instead of running code or searching files.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

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
