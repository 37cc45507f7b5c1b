"""The scripted model in process: a model provider that answers from the same reply scripts as the
HTTP fake, for unit tests of the domain with no server, no HTTP and no threads.

:class:`ScriptedProvider` implements the provider port (``stream``, ``aclose``): each call takes
the next scripted :class:`Reply` (or asks the responder, which by default echoes), lays it out
with the same :func:`~threadline.testing.script.plan` as :class:`ScriptedModel` and yields the
model events the OpenAI-compatible adapter would have read from that server's stream: the same
pieces, the same usage, the same finish reason, the same :class:`ProviderError` for an HTTP
error status, and a reply cut at the request's ``max_tokens`` as the adapter cuts it.
:class:`ScriptedRouter` serves every model name from one provider, counting tokens as words, so a
context budget in a test is a number of words::

    model = ScriptedProvider()
    model.script(Reply(tool_calls=[ToolCall("get_weather", {"city": "Paris"})]), "It is sunny.")
    loop = RunLoop(stores, bus, ScriptedRouter(model), "worker-1")
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

from threadline.domain.ports.models import (
    Finish,
    ModelEvent,
    ModelRequest,
    ProviderError,
    ReasoningDelta,
    RefusalDelta,
    ReplyBudget,
    ReplyLimits,
    Route,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from threadline.providers.openai_compat import request_body
from threadline.testing import script
from threadline.testing.script import Reply, Responder, echo_responder, error_object

_FINISH: dict[str, Literal["stop", "length", "tool_calls", "content_filter"]] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


class ScriptedProvider:
    """A provider answering each model call with one scripted :class:`Reply`.

    ``delay``, ``first_delay`` and ``trickle`` pause in real seconds; ``hang``, ``endless`` and
    ``trickle`` replies never end, so only cancelling the consuming task stops them (counted in
    :attr:`stopped`). A raw ``body`` is not the protocol, so the call fails as the adapter fails it.
    """

    def __init__(self, *, responder: Responder | None = None, limits: ReplyLimits | None = None) -> None:
        self.responder: Responder = responder or echo_responder
        self.limits = limits or ReplyLimits()
        """The server's caps on one reply, as the adapter applies them."""
        self.stopped = 0
        """Calls given up before their reply ended (the consumer cancelled or closed the stream)."""
        self._queue: deque[Reply] = deque()
        self._requests: list[ModelRequest] = []

    # -- scripting and records -------------------------------------------------------------------

    def script(self, *replies: Reply | str) -> None:
        """Queue replies (a string is ``Reply(text=...)``); each model call consumes the oldest one."""
        self._queue.extend(Reply(text=r) if isinstance(r, str) else r for r in replies)

    @property
    def pending(self) -> int:
        """Scripted replies not yet consumed."""
        return len(self._queue)

    @property
    def requests(self) -> list[ModelRequest]:
        """Every request received, in order."""
        return list(self._requests)

    def reset(self) -> None:
        """Forget scripted replies, recorded requests and stopped calls (the responder stays)."""
        self._queue.clear()
        self._requests.clear()
        self.stopped = 0

    # -- the provider port -----------------------------------------------------------------------

    async def aclose(self) -> None:
        return None

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        body = request_body(request)
        self._requests.append(request)
        reply = self._queue.popleft() if self._queue else self._respond(body)
        finished = False
        try:
            await _pause(reply.first_delay)
            if reply.body is not None:
                raise ProviderError(
                    f"The model server answered {reply.status or 200} ({reply.content_type}) with a "
                    f"reply that is not the protocol; it began: {reply.body[:120].decode('utf-8', 'replace')!a}"
                )
            if reply.status is not None:
                raise _http_error(reply)
            plan = script.plan(reply, request.max_tokens)
            if reply.hang or reply.trickle > 0 or (reply.endless and not plan.deltas):
                await asyncio.Event().wait()  # until cancelled
            budget = ReplyBudget(self.limits, request)
            rounds = 0
            while True:
                for delta in plan.deltas:
                    await _pause(reply.delay)
                    for event in _events(delta, bool(request.logprobs)):
                        if budget.over(event):
                            finished = True
                            yield Finish("length")  # the adapter cuts a model that would not stop
                            return
                        yield event
                rounds += 1
                if not reply.endless:
                    break
                if reply.delay <= 0 and rounds % 64 == 0:
                    await asyncio.sleep(0)  # an endless stream still lets a cancel in
            prompt, completion = plan.usage(reply, body["messages"])
            reasoning = plan.reasoning_fragments if reply.reasoning is not None else 0
            yield Usage(prompt, completion, reasoning)
            finished = True
            yield Finish(_FINISH.get(plan.finish_reason, "stop"))
        finally:
            if not finished:
                self.stopped += 1

    def _respond(self, body: dict[str, Any]) -> Reply:
        try:
            return self.responder(body)
        except Exception as exc:
            # A broken responder surfaces as the HTTP fake surfaces it: a 500 from the model.
            return Reply(status=500, error_message=f"Scripted responder failed: {exc!r}")


class WordTokenizer:
    """Counts a text's words: a test's context budget in words, with no tokenizer tables to load."""

    name = "words"

    def count(self, text: str) -> int:
        return len(text.split())


class ScriptedRouter:
    """Routes model names to one provider (every name, or only ``models``), counting with
    :class:`WordTokenizer`. Also a model catalog (``routes``) for the services that check names."""

    def __init__(
        self,
        provider: ScriptedProvider,
        *,
        models: Sequence[str] | None = None,
        context_window: int = 8192,
        vision: bool = False,
    ) -> None:
        self.provider = provider
        self.models = list(models) if models is not None else None
        self.context_window = context_window
        self.vision = vision

    def resolve(self, name: str) -> Route | None:
        if not self.routes(name):
            return None
        return Route(self.provider, name, self.context_window, WordTokenizer(), self.vision)

    def routes(self, name: str) -> bool:
        return self.models is None or name in self.models

    def names(self) -> list[str]:
        return list(self.models) if self.models is not None else ["scripted"]


async def _pause(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


def _events(delta: dict[str, Any], logprobs: bool) -> list[ModelEvent]:
    """One planned delta as the events the adapter reads from it."""
    events: list[ModelEvent] = []
    for name in ("reasoning_content", "reasoning"):
        if delta.get(name):
            events.append(ReasoningDelta(delta[name]))
    if delta.get("content"):
        token = delta["content"]
        entry = {"token": token, "logprob": -0.5, "bytes": list(token.encode()), "top_logprobs": []}
        events.append(TextDelta(token, [entry] if logprobs else None))
    if delta.get("refusal"):
        events.append(RefusalDelta(delta["refusal"]))
    for call in delta.get("tool_calls") or []:
        function = call.get("function") or {}
        events.append(
            ToolCallDelta(
                index=call["index"], arguments=function.get("arguments") or "", name=function.get("name")
            )
        )
    return events


def _http_error(reply: Reply) -> ProviderError:
    """The error the adapter raises for this status: 429 is ``rate_limit_exceeded``; 429 and 5xx retryable."""
    status = reply.status or 500
    error = error_object(reply)
    message = f"The model server answered {status}: {error['message']}"
    if status == 429:
        return ProviderError(message, code="rate_limit_exceeded", retryable=True, status=status, error=error)
    return ProviderError(message, retryable=status >= 500, status=status, error=error)
