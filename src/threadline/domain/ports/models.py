"""The provider interface: how the run engine talks to a model (implemented in ``threadline.providers``).

A provider turns a :class:`ModelRequest` (chat-completions shaped messages and tools) into a stream
of our own :class:`ModelEvent` values. Each adapter (OpenAI-compatible HTTP, in-process llama.cpp)
normalises its vendor's errors into :class:`ProviderError` once, here, so the run engine never sees
a vendor exception.
"""

from __future__ import annotations

import time
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
    # Sent to upstream servers as given; the embedded model stops at ``stop`` and samples from
    # ``seed``, and has no logprobs (``/v1/chat/completions`` refuses them for it).
    stop: list[str] | None = None
    seed: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    extra: dict[str, Any] | None = None
    """Further chat-completions fields (penalties, ``logit_bias``, ``user`` ...) for an upstream."""


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str
    logprobs: list[dict[str, Any]] | None = None
    """The upstream's ``logprobs.content`` entries for this piece, when they were asked for."""
    kind: Literal["text"] = "text"


@dataclass(frozen=True, slots=True)
class RefusalDelta:
    """A fragment of the model's refusal to answer (chat completions' ``delta.refusal``)."""

    text: str
    kind: Literal["refusal"] = "refusal"


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """A fragment of the model's reasoning before its answer (an upstream's ``delta.reasoning_content``
    or ``delta.reasoning``: DeepSeek-R1, Qwen3, vLLM's reasoning parsers). Never part of the answer:
    the Responses API shows it as a ``reasoning`` item, the Assistants API not at all."""

    text: str
    kind: Literal["reasoning"] = "reasoning"


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
    reasoning_tokens: int = 0
    """Of ``completion_tokens``, those spent reasoning (``completion_tokens_details.reasoning_tokens``)."""
    kind: Literal["usage"] = "usage"


@dataclass(frozen=True, slots=True)
class Finish:
    reason: Literal["stop", "length", "tool_calls", "content_filter"]
    kind: Literal["finish"] = "finish"


ModelEvent = TextDelta | RefusalDelta | ReasoningDelta | ToolCallDelta | Usage | Finish


class ProviderError(Exception):
    """A model call failed. ``code`` is the run's ``last_error.code``."""

    def __init__(
        self,
        message: str,
        *,
        code: Literal["server_error", "rate_limit_exceeded", "invalid_prompt"] = "server_error",
        retryable: bool = False,
        status: int | None = None,
        error: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.retryable = retryable
        self.status = status
        """The upstream's HTTP status, when it answered with an error."""
        self.error = error
        """The upstream's own error object (``message``, ``type``, ``param``, ``code``), if it sent one."""


@dataclass(frozen=True, slots=True)
class ReplyLimits:
    """How much one model call may take, besides the providers' own idle timeouts (which a model
    sending a byte now and then never trips): wall time, and what its reply may bring."""

    seconds: float = 300.0
    """The whole call, from the request to the reply's last byte (``THREADLINE_MODEL_CALL_SECONDS``)."""
    max_bytes: int = 4 * 1024 * 1024
    """UTF-8 bytes of text, refusal, reasoning and tool-call arguments (``THREADLINE_MODEL_MAX_REPLY_BYTES``)."""
    max_tokens: int = 65536
    """Pieces streamed, each at least a token (``THREADLINE_MODEL_MAX_REPLY_TOKENS``)."""

    def deadline(self) -> float:
        """The ``time.monotonic()`` by which a call that starts now must have ended."""
        return time.monotonic() + self.seconds

    def overdue(self) -> ProviderError:
        return ProviderError(
            f"The model call took longer than THREADLINE_MODEL_CALL_SECONDS ({self.seconds:g} s) "
            "and was stopped."
        )


class ReplyBudget:
    """Counts what one reply brings against :class:`ReplyLimits` and the request's own ``max_tokens``.

    A model that goes on past the ``max_tokens`` it was asked for is cut there, as if it had stopped
    for length (a token is at least one streamed piece, so a model that keeps to its budget is never
    cut). Past the server's own caps the call fails: the reply is not what any client asked for."""

    def __init__(self, limits: ReplyLimits, request: ModelRequest) -> None:
        self.limits = limits
        self.asked = request.max_tokens if request.max_tokens and request.max_tokens > 0 else None
        self.bytes = 0
        self.pieces = 0

    def over(self, event: ModelEvent) -> bool:
        """Count ``event``; ``True`` when the request's ``max_tokens`` is spent before it (cut here).
        Raises :class:`ProviderError` past the server's caps."""
        if isinstance(event, TextDelta | RefusalDelta | ReasoningDelta):
            piece = event.text
        elif isinstance(event, ToolCallDelta):
            piece = event.arguments
            self.bytes += len((event.name or "").encode("utf-8", "surrogatepass"))
        else:
            return False
        self.bytes += len(piece.encode("utf-8", "surrogatepass"))
        # A call's first fragment, with its name and no arguments yet, is not counted as a token.
        self.pieces += 1 if piece else 0
        if self.bytes > self.limits.max_bytes:
            raise ProviderError(
                f"The model's reply exceeded THREADLINE_MODEL_MAX_REPLY_BYTES ({self.limits.max_bytes} "
                "bytes); the rest was not read."
            )
        if self.asked is not None and self.pieces > self.asked:
            return True
        if self.pieces > self.limits.max_tokens:
            raise ProviderError(
                f"The model's reply exceeded THREADLINE_MODEL_MAX_REPLY_TOKENS ({self.limits.max_tokens} "
                "tokens); the rest was not read."
            )
        return False


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
