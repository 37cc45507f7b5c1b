"""Chat completions straight from the routing table, for programs that use the same client for
``chat.completions`` as for threads.

A completion is one model call per choice (``n`` calls) on the provider the model name routes to,
the same call a run makes: the providers' deadline and reply caps apply, tools and
``response_format`` are grammar-forced on embedded models. Nothing is stored. What a route cannot
do is refused before the call (images to a model that does not see, ``logprobs`` from an embedded
model) rather than silently dropped. Stop sequences are cut here too, where a provider's text runs
past one (the embedded model stops after the token that completes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from threadline.domain.model_calls import ModelCallObserver, Timed
from threadline.domain.ports.models import (
    Finish,
    LocalModel,
    ModelEvent,
    ModelRequest,
    ProviderError,
    RefusalDelta,
    Route,
    Router,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from threadline.errors import InvalidRequestError, ModelCallError, NotFoundError, TooManyRequestsError
from threadline.ids import new_id

MAX_CHOICES = 16
"""The largest ``n``: each choice is a whole model call."""


@dataclass(slots=True)
class Piece:
    """One streamed fragment of choice ``index``: text, refusal, a tool call's fragment, or its end."""

    index: int
    text: str = ""
    refusal: str = ""
    tool_call: dict[str, Any] | None = None
    """``{"index", "id"?, "type"?, "function": {"name"?, "arguments"}}`` as in a chunk's delta."""
    logprobs: list[dict[str, Any]] | None = None
    finish_reason: str | None = None


@dataclass(slots=True)
class Choice:
    index: int
    text: str = ""
    refusal: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    logprobs: list[dict[str, Any]] | None = None
    finish_reason: str = "stop"


@dataclass(slots=True)
class Completion:
    id: str
    model: str
    choices: list[Choice]
    usage: Usage


class StopCut:
    """Cuts a streamed text at the first of its stop sequences, holding back only what might be the
    start of one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.held = ""
        self.hit = False

    def feed(self, text: str) -> str:
        if not self.stops:
            return text
        buffer = self.held + text
        found = [buffer.find(s) for s in self.stops if s in buffer]
        if found:
            self.hit, self.held = True, ""
            return buffer[: min(found)]
        keep = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(buffer)), keep, -1):
                if buffer.endswith(stop[:size]):
                    keep = size
                    break
        self.held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        held, self.held = self.held, ""
        return held


def _has_image(messages: list[dict[str, Any]]) -> bool:
    return any(
        isinstance(part, dict) and part.get("type") in ("image_url", "input_image")
        for message in messages
        if isinstance(message.get("content"), list)
        for part in message["content"]
    )


def model_error(exc: ProviderError) -> ModelCallError | TooManyRequestsError | InvalidRequestError:
    """A failed model call as the client sees it: an upstream's client error (4xx) with its own
    status and error object, a prompt the model cannot take as 400, anything else as 502."""
    if exc.status is not None and 400 <= exc.status < 500:
        error = exc.error or {}
        message = str(error.get("message") or exc.message)
        if exc.status == 429:
            return TooManyRequestsError(message, code=str(error.get("code") or "rate_limit_exceeded"))
        failed = ModelCallError(message, param=error.get("param"))
        failed.status, failed.code = exc.status, error.get("code")
        failed.type = str(error.get("type") or "invalid_request_error")
        return failed
    if exc.code == "invalid_prompt":
        return InvalidRequestError(exc.message, code="invalid_prompt")
    if exc.code == "rate_limit_exceeded":
        return TooManyRequestsError(exc.message)
    return ModelCallError(exc.message)


class ChatService:
    def __init__(self, router: Router, observe: ModelCallObserver | None = None) -> None:
        self.router = router
        self.observe = observe

    def prepare(self, request: ModelRequest, n: int) -> tuple[Route, ModelRequest]:
        """The route for ``request`` and the request as its provider is asked; refuses what the
        route cannot do."""
        route = self.router.resolve(request.model)
        if route is None:
            raise NotFoundError(
                f"The model '{request.model}' does not exist or is not served here: no route matches it.",
                param="model",
                code="model_not_found",
            )
        if not 1 <= n <= MAX_CHOICES:
            raise InvalidRequestError(f"n must be between 1 and {MAX_CHOICES}.", param="n")
        local = isinstance(route.provider, LocalModel)
        if not route.vision and _has_image(request.messages):
            raise InvalidRequestError(
                f"The model '{request.model}' does not take images (its route is not marked vision).",
                param="messages",
                code="image_not_supported",
            )
        if local and (request.logprobs or request.top_logprobs):
            raise InvalidRequestError(
                f"logprobs are not available from the embedded model '{request.model}'; "
                "they are passed through only to OpenAI-compatible upstreams.",
                param="logprobs",
            )
        if request.top_logprobs is not None and not request.logprobs:
            raise InvalidRequestError("top_logprobs requires logprobs to be true.", param="top_logprobs")
        return route, dataclasses.replace(request, model=route.model)

    async def _events(self, route: Route, request: ModelRequest) -> AsyncGenerator[ModelEvent, None]:
        """The call's events, timed for the metrics, failures as API errors."""
        with Timed(self.observe, route.model, "chat") as timing:
            try:
                events = route.provider.stream(request)
                async with contextlib.aclosing(events):  # type: ignore[type-var]
                    async for event in events:
                        timing.event()
                        yield event
            except ProviderError as exc:
                raise model_error(exc) from exc

    async def pieces(
        self, route: Route, request: ModelRequest, index: int
    ) -> AsyncGenerator[Piece | Usage, None]:
        """One choice's fragments, ending with its finish (and the call's usage before it)."""
        cut = StopCut(request.stop or [])
        call_ids: dict[int, str] = {}
        usage: Usage | None = None
        finish = "stop"
        events = self._events(route, request)
        async with contextlib.aclosing(events):
            async for event in events:
                if cut.hit and not isinstance(event, Usage | Finish):
                    continue  # past a stop sequence; the model stops there too (each provider is given it)
                if isinstance(event, TextDelta):
                    text = cut.feed(event.text)
                    if text or event.logprobs:
                        yield Piece(index, text=text, logprobs=event.logprobs)
                elif isinstance(event, RefusalDelta):
                    yield Piece(index, refusal=event.text)
                elif isinstance(event, ToolCallDelta):
                    call: dict[str, Any] = {"index": event.index, "function": {"arguments": event.arguments}}
                    if event.index not in call_ids:
                        call_ids[event.index] = new_id("call")
                        call.update(id=call_ids[event.index], type="function")
                    if event.name is not None:
                        call["function"]["name"] = event.name
                    yield Piece(index, tool_call=call)
                elif isinstance(event, Usage):
                    usage = event
                elif isinstance(event, Finish):
                    finish = "stop" if cut.hit else event.reason
        if rest := cut.flush():
            yield Piece(index, text=rest)
        if finish == "stop" and call_ids:
            finish = "tool_calls"
        if usage is not None:
            yield usage
        yield Piece(index, finish_reason=finish)

    async def complete(self, request: ModelRequest, n: int = 1) -> Completion:
        route, asked = self.prepare(request, n)
        calls = [asyncio.ensure_future(self._choice(route, asked, i)) for i in range(n)]
        try:
            choices = await asyncio.gather(*calls)
        except BaseException:
            for call in calls:  # one choice failed (or the request went away): the others stop too
                call.cancel()
            await asyncio.gather(*calls, return_exceptions=True)
            raise
        usage = Usage(sum(u.prompt_tokens for _, u in choices), sum(u.completion_tokens for _, u in choices))
        return Completion(new_id("chat_completion"), request.model, [c for c, _ in choices], usage)

    async def _choice(self, route: Route, request: ModelRequest, index: int) -> tuple[Choice, Usage]:
        choice = Choice(index)
        usage = Usage(0, 0)
        calls: dict[int, dict[str, Any]] = {}
        async for piece in self.pieces(route, request, index):
            if isinstance(piece, Usage):
                usage = piece
                continue
            choice.text += piece.text
            choice.refusal += piece.refusal
            if piece.logprobs:
                choice.logprobs = (choice.logprobs or []) + piece.logprobs
            if piece.tool_call is not None:
                delta = piece.tool_call
                call = calls.setdefault(
                    delta["index"], {"id": delta.get("id"), "type": "function", "function": {"name": ""}}
                )
                function = call["function"]
                function["name"] = delta["function"].get("name") or function["name"]
                function["arguments"] = function.get("arguments", "") + delta["function"]["arguments"]
            if piece.finish_reason is not None:
                choice.finish_reason = piece.finish_reason
        choice.tool_calls = [calls[i] for i in sorted(calls)]
        return choice, usage

    async def stream(
        self, request: ModelRequest, n: int = 1
    ) -> tuple[str, AsyncGenerator[Piece | Usage, None]]:
        """The completion's id and its fragments, choice after choice; usage once, summed, at the end.
        The request is checked before this returns, so a refusal is an error response, not a stream."""
        route, asked = self.prepare(request, n)

        async def run() -> AsyncGenerator[Piece | Usage, None]:
            total = Usage(0, 0)
            for index in range(n):
                # Closed as soon as this is: a client that leaves stops the model call at once.
                async with contextlib.aclosing(self.pieces(route, asked, index)) as pieces:
                    async for piece in pieces:
                        if isinstance(piece, Usage):
                            total = Usage(
                                total.prompt_tokens + piece.prompt_tokens,
                                total.completion_tokens + piece.completion_tokens,
                            )
                        else:
                            yield piece
            yield total

        return new_id("chat_completion"), run()
