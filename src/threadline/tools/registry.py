"""The tools this server can run, by OpenAI tool type, built once per process by the runtime.

A built-in tool with no implementation here is not offered to models: a run that declares it still
works, it simply cannot call it. Tests and embedders register their own implementations.
"""

from __future__ import annotations

from collections.abc import Iterable

from threadline.domain.ports.tools import Tool
from threadline.domain.steps import BuiltinType


class ToolRegistry:
    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._by_type: dict[str, Tool] = {}
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool) -> None:
        """Serve ``tool.type`` with ``tool`` (replacing any implementation registered before)."""
        self._by_type[tool.type] = tool

    def get(self, tool_type: BuiltinType | str) -> Tool | None:
        return self._by_type.get(tool_type)

    def types(self) -> list[str]:
        return sorted(self._by_type)

    async def aclose(self) -> None:
        """Let tools that hold resources (sandbox kernels) release them."""
        for tool in self._by_type.values():
            close = getattr(tool, "aclose", None)
            if close is not None:
                await close()
