"""The provider interface: how the run engine talks to a model.

A provider turns a :class:`ModelRequest` (chat-completions shaped messages and tools) into a stream
of our own :class:`ModelEvent` values. Each adapter (OpenAI-compatible HTTP, in-process llama.cpp)
normalises its vendor's errors into :class:`ProviderError` once, here, so the run engine never sees
a vendor exception.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

ChatMessage = dict[str, Any]
"""One chat-completions message (``{"role": ..., "content": ..., "tool_calls": ...}``)."""


@dataclass(frozen=True, slots=True)
class ModelRequest:
    model: str
    messages: list[ChatMessage]
    tools: list[dict[str, Any]] = field(default_factory=list)
    """Function tools in chat-completions form: ``{"type": "function", "function": {...}}``."""
    tool_choice: str | dict[str, Any] | None = None
    """``"auto"``, ``"none"``, ``"required"`` or ``{"type": "function", "function": {"name": ...}}``."""
    parallel_tool_calls: bool | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    response_format: dict[str, Any] | None = None
    reasoning_effort: str | None = None


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str
    kind: Literal["text"] = "text"


@dataclass(frozen=True, slots=True)
class RefusalDelta:
    """A fragment of the model's refusal to answer (chat completions' ``delta.refusal``)."""

    text: str
    kind: Literal["refusal"] = "refusal"


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of one tool call. ``name`` comes once, on the call's first fragment."""

    index: int
    arguments: str = ""
    name: str | None = None
    kind: Literal["tool_call"] = "tool_call"


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    kind: Literal["usage"] = "usage"


@dataclass(frozen=True, slots=True)
class Finish:
    reason: Literal["stop", "length", "tool_calls", "content_filter"]
    kind: Literal["finish"] = "finish"


ModelEvent = TextDelta | RefusalDelta | ToolCallDelta | Usage | Finish


class ProviderError(Exception):
    """A model call failed. ``code`` is the run's ``last_error.code``."""

    def __init__(
        self,
        message: str,
        *,
        code: Literal["server_error", "rate_limit_exceeded", "invalid_prompt"] = "server_error",
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.retryable = retryable


class Provider(Protocol):
    """Streams one chat completion as :data:`ModelEvent` values.

    Implementations yield text and tool-call fragments as the model produces them, then at most one
    :class:`Usage` and exactly one :class:`Finish`. They raise :class:`ProviderError` on failure and
    must stop promptly (closing any connection) when the consuming task is cancelled.
    """

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class LocalModel(Protocol):
    """A provider that runs its model itself (an embedded GGUF): it knows the model's tokenizer and
    context size, and is started, with a start-up check, before a process reports ready."""

    @property
    def name(self) -> str:
        """The model's file name, for logs and metrics."""

    async def start(self) -> None: ...

    async def count_tokens(self, texts: list[str]) -> list[int]: ...

    async def context_window(self) -> int: ...

    def problem(self) -> str | None:
        """Why the model cannot answer right now (loading, or failed to load), or ``None``."""


class Tokenizer(Protocol):
    name: str

    def count(self, text: str) -> int: ...


@dataclass(frozen=True, slots=True)
class Route:
    """Where a model name a client asks for goes: a provider and that provider's own model name."""

    provider: Provider
    model: str
    context_window: int | None = None
    """Tokens the model can attend to; ``None`` when the provider knows it (embedded GGUF)."""
    tokenizer: Tokenizer | None = None
    """How to count this model's tokens; ``None`` when the provider counts (embedded GGUF)."""
    vision: bool = False
    """Whether the model takes images: uploaded image files are sent to it as data URLs, and
    images are described in words to one that does not."""


class Router(Protocol):
    def resolve(self, name: str) -> Route | None:
        """The route for ``name``, or ``None`` when nothing serves it."""

    def names(self) -> list[str]:
        """Model names to list in ``GET /v1/models``."""
