"""The interface of a server-side tool: the call it serves, what it returns, how it fails.

A tool declares the function a model sees (``name``, ``description``, ``parameters``), says what
its run step shows before it runs (``start``: e.g. the code about to execute) and runs one call
(``run``), returning the step details to show (``threadline.domain.steps``) and the text the model
is given back. The implementations live in ``threadline.tools``; the runtime registers them in a
``ToolRegistry``, which the domain sees only as a :class:`ToolSet`.

Implementations are async and must stop promptly when their task is cancelled: a run cancelled or
expired during a tool call cancels the call. :class:`ToolError` is a failure the model should hear
about (its message becomes the call's output); any other exception fails the run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from threadline.domain.steps import BuiltinDetails, BuiltinType


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call the model made to a server-side tool, with what the tool needs to serve it."""

    id: str
    arguments: dict[str, Any]
    """The model's arguments, decoded (an object; ``{}`` when the model sent none)."""
    run_id: str
    thread_id: str
    assistant_id: str
    options: dict[str, Any] = field(default_factory=dict)
    """The run's settings for this tool (e.g. file_search's ``max_num_results``, ``ranking_options``)."""
    assistant_resources: dict[str, Any] = field(default_factory=dict)
    """The assistant's ``tool_resources`` (file ids, vector store ids)."""
    thread_resources: dict[str, Any] = field(default_factory=dict)
    """The thread's ``tool_resources``."""
    project_id: str = ""
    """The thread's project: the only one whose files and vector stores the call may use."""
    ran_code_before: bool = False
    """The thread has run code before (in this process or another): a kernel that has to start
    afresh lost earlier variables and files, and the model must be told."""


@dataclass(frozen=True, slots=True)
class ToolResult:
    details: BuiltinDetails
    """The finished step details (e.g. the code and its outputs)."""
    output: str
    """What the model is told the call returned."""
    kernel_until: float | None = None
    """code_interpreter: the thread's kernel lives in this process until then (its idle expiry,
    epoch seconds). The run loop records it on the thread, so its next runs come to this worker."""


class ToolError(Exception):
    """The call failed in a way the model should be told about (bad arguments, code that raised)."""


class Tool(Protocol):
    type: BuiltinType
    """Which OpenAI tool this implements; the run's ``tools`` entry of this type enables it."""
    name: str
    """The function name offered to the model."""
    description: str
    parameters: dict[str, Any]
    """JSON schema of the function's arguments."""

    def start(self, call: ToolCall) -> BuiltinDetails:
        """The step details shown while the call runs (raises :class:`ToolError` on bad arguments)."""

    async def run(self, call: ToolCall) -> ToolResult: ...


class ToolSet(Protocol):
    """The tools this process serves, by OpenAI tool type (``threadline.tools.registry.ToolRegistry``)."""

    def get(self, tool_type: BuiltinType | str) -> Tool | None: ...


class NoTools:
    """A :class:`ToolSet` serving nothing: built-in tools are not offered."""

    def get(self, tool_type: BuiltinType | str) -> Tool | None:
        return None


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """How a built-in tool is offered to a chat model: a function's name, description and schema."""

    name: str
    description: str
    parameters: dict[str, Any]


CODE_INTERPRETER = FunctionSpec(
    name="code_interpreter",
    description=(
        "Run Python code in a sandbox and get back what it prints. Files the user attached are "
        "in /mnt/data; files saved there are returned to the user."
    ),
    parameters={
        "type": "object",
        "properties": {"code": {"type": "string", "description": "The Python code to run."}},
        "required": ["code"],
    },
)
"""What chat models are offered for ``code_interpreter``; implementations should keep it."""

FILE_SEARCH = FunctionSpec(
    name="file_search",
    description="Search the files the user provided and get back the passages that best match a query.",
    parameters={
        "type": "object",
        "properties": {"query": {"type": "string", "description": "What to look for, in a few words."}},
        "required": ["query"],
    },
)
"""What chat models are offered for ``file_search``; implementations should keep it."""

WEB_SEARCH = FunctionSpec(
    name="web_search",
    description=(
        "Search the web and get back the text of the best pages: for anything recent or anything "
        "you are unsure of. Cite the pages you use."
    ),
    parameters={
        "type": "object",
        "properties": {"query": {"type": "string", "description": "What to search the web for."}},
        "required": ["query"],
    },
)
"""What chat models are offered for ``web_search``; implementations should keep it."""

FUNCTIONS: dict[str, FunctionSpec] = {
    "code_interpreter": CODE_INTERPRETER,
    "file_search": FILE_SEARCH,
    "web_search": WEB_SEARCH,
}
