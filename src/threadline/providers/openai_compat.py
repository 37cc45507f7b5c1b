"""The adapter for any OpenAI-compatible chat-completions server (vLLM, Ollama, llama.cpp, OpenAI ...).

Always streams (``stream: true`` with ``include_usage``), so deltas reach clients as the model
writes them. HTTP and protocol errors become :class:`ProviderError` here: 429 is
``rate_limit_exceeded``, 5xx and connection failures ``server_error``; both are retryable.

A model server is not trusted to behave: the whole call has a deadline (a server that sends a byte
now and then never trips the idle timeout), the reply's size is capped while it is read (one line at
a time, each line capped too), and a 200 that is not the protocol (an HTML page, a stream without
data, a completion with no choices) fails with what was sent instead of passing as an empty answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp

from threadline.domain.ports.models import (
    Finish,
    ModelEvent,
    ModelRequest,
    ProviderError,
    ReasoningDelta,
    RefusalDelta,
    ReplyBudget,
    ReplyLimits,
    TextDelta,
    ToolCallDelta,
    Usage,
)

log = logging.getLogger(__name__)

_FINISH = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def request_body(request: ModelRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": request.model,
        "messages": request.messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.tools:
        body["tools"] = request.tools
        if request.tool_choice is not None:
            body["tool_choice"] = request.tool_choice
        if request.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = request.parallel_tool_calls
    for name in (
        "temperature",
        "top_p",
        "response_format",
        "reasoning_effort",
        "stop",
        "seed",
        "logprobs",
        "top_logprobs",
    ):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    for name, value in (request.extra or {}).items():
        body.setdefault(name, value)
    return body


LINE_SLACK = 64 * 1024
"""Bytes one SSE line may hold besides the reply's own cap (the JSON around a delta)."""

EXCERPT_BYTES = 120
"""How much of an unexpected body a ``last_error`` quotes."""


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``,
    minus ``NO_PROXY``), as httpx and aiohttp read it."""
    parts = urlsplit(url)
    proxies = getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or proxy_bypass(parts.hostname or ""):
        return None
    return proxy


class OpenAICompatProvider:
    """Calls through aiohttp, whose C parser and lean connection pool cost the run a fifth of what
    httpx did per streamed call; the proxy comes from the environment as before (:func:`proxy_for`)."""

    def __init__(
        self,
        base_url: str,
        api_key: str = "",
        *,
        timeout: float = 600.0,
        limits: ReplyLimits | None = None,
    ) -> None:
        # identity: a compressed body could expand past every cap below in one read.
        self._headers = {
            "Authorization": f"Bearer {api_key or 'threadline'}",
            "Accept-Encoding": "identity",
            "Content-Type": "application/json",
        }
        self.base_url = base_url.rstrip("/")
        self.limits = limits or ReplyLimits()
        self._url = f"{self.base_url}/chat/completions"
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=timeout)
        # The environment's proxy for the model server, read once: aiohttp's trust_env reads it
        # (and ~/.netrc) again on a thread for every call.
        self._proxy = proxy_for(self._url)
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None

    def _client(self) -> aiohttp.ClientSession:
        """The session of the running loop (made on the first call: a session belongs to one loop)."""
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            self._session_loop = loop
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=1000, keepalive_timeout=5.0),
                auto_decompress=False,
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            with contextlib.suppress(RuntimeError):  # its loop is gone: nothing left to close
                await self._session.close()

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        deadline = self.limits.deadline()
        budget = ReplyBudget(self.limits, request)
        try:
            data = json.dumps(request_body(request), ensure_ascii=False, separators=(",", ":")).encode()
            try:
                # Its headers too: a server may keep them coming a byte at a time.
                async with asyncio.timeout(self.limits.seconds):
                    response = await self._client().post(self._url, data=data, proxy=self._proxy)
            except TimeoutError:
                raise self.limits.overdue() from None
            async with response:  # back to the pool when read to the end, closed otherwise
                body = _Body(response, deadline, self.limits)
                if response.status >= 400:
                    raise _http_error(response, await body.head(64 * 1024))
                kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if kind == "application/json":
                    # A server that ignored ``stream: true`` and answered the whole completion at once.
                    events = _completion(await body.head(self.limits.max_bytes + LINE_SLACK, whole=True))
                elif kind == "text/event-stream":
                    events = _chunks(body)
                else:
                    raise _unexpected(response, await body.head(EXCERPT_BYTES), "not an event stream")
                async with contextlib.aclosing(events):
                    async for event in events:
                        if budget.over(event):
                            yield Finish("length")  # the model would not stop at its max_tokens
                            return
                        yield event
        except aiohttp.ServerTimeoutError as exc:
            raise ProviderError(
                f"The model did not answer in time ({type(exc).__name__}).", retryable=True
            ) from exc
        except aiohttp.ClientError as exc:
            raise ProviderError(f"Could not reach the model server: {exc}", retryable=True) from exc
        except (ValueError, TypeError, AttributeError) as exc:
            raise ProviderError(f"The model server sent a malformed response: {exc}") from exc


class _Body:
    """The reply's bytes, read under the call's deadline: never more than one line held at a time."""

    def __init__(self, response: aiohttp.ClientResponse, deadline: float, limits: ReplyLimits) -> None:
        self.response = response
        self.deadline = deadline
        self.limits = limits
        self.reads = response.content.iter_any()
        self.first = b""
        """The reply's first bytes, quoted when it turns out not to be the protocol."""
        self.ended = False

    async def read(self) -> bytes:
        """The next piece of the body; ``b""`` at its end."""
        if self.ended:
            return b""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self.limits.overdue()
        try:
            async with asyncio.timeout(left):
                data = await anext(self.reads)
        except StopAsyncIteration:
            self.ended = True
            return b""
        except TimeoutError:
            raise self.limits.overdue() from None
        if len(self.first) < EXCERPT_BYTES:
            self.first += data[: EXCERPT_BYTES - len(self.first)]
        return data

    async def head(self, limit: int, *, whole: bool = False) -> bytes:
        """Up to ``limit`` bytes of the body; with ``whole``, a longer body is an error."""
        data = bytearray()
        while len(data) <= limit:
            piece = await self.read()
            if not piece:
                return bytes(data)
            data += piece
        if whole:
            raise _unexpected(self.response, bytes(data[:EXCERPT_BYTES]), f"longer than {limit} bytes")
        return bytes(data[:limit])

    async def lines(self) -> AsyncIterator[bytes]:
        longest = self.limits.max_bytes + LINE_SLACK
        pending = bytearray()
        while True:
            data = await self.read()
            if not data:
                if pending:
                    yield bytes(pending)
                return
            if b"\n" not in data:
                pending += data
                if len(pending) > longest:
                    raise self._long(longest)
                continue
            *complete, rest = data.split(b"\n")
            pending += complete[0]
            complete[0] = bytes(pending)
            for line in complete:
                if len(line) > longest:
                    raise self._long(longest)
                yield line.rstrip(b"\r")
            if len(rest) > longest:
                raise self._long(longest)
            pending = bytearray(rest)

    def _long(self, longest: int) -> ProviderError:
        return ProviderError(
            f"The model server sent a stream line longer than {longest} bytes "
            f"(THREADLINE_MODEL_MAX_REPLY_BYTES is {self.limits.max_bytes}); the rest was not read."
        )


async def _chunks(body: _Body) -> AsyncGenerator[ModelEvent, None]:
    """The events of a chat-completions event stream, checked to be one."""
    data_lines = 0
    answered = False
    finish: str | None = None
    done = False
    # Read to the end even after [DONE]: a response left unread cannot go back to the
    # connection pool, and every run would open a new connection to the model.
    async for raw in body.lines():
        if done or not raw.startswith(b"data:"):
            continue
        data_lines += 1
        data = raw[5:].strip()
        if data == b"[DONE]":
            done = True
            continue
        chunk = _json(body.response, data)
        if not isinstance(chunk, dict):
            raise _unexpected(body.response, data[:EXCERPT_BYTES], "a stream chunk that is not an object")
        if "error" in chunk:
            raise ProviderError(_error_text(chunk), retryable=False)
        if chunk.get("usage"):
            yield _usage(chunk["usage"])
        for choice in _list(chunk.get("choices")):
            delta = choice.get("delta") or {}
            for event in _message_events(delta, logprobs=choice.get("logprobs")):
                answered = True
                yield event
            if choice.get("finish_reason"):
                finish = choice["finish_reason"]
    if not data_lines:
        raise _unexpected(body.response, body.first, "an event stream without any data: line")
    if not answered and finish is None:
        raise _unexpected(body.response, body.first, "no content, no tool calls and no finish_reason")
    yield Finish(_FINISH.get(finish or "stop", "stop"))  # type: ignore[arg-type]


async def _completion(data: bytes) -> AsyncGenerator[ModelEvent, None]:
    """The events of a whole (non-streamed) ``chat.completion`` object."""
    try:
        completion = _loads(data)
    except ValueError:
        completion = None
    choices = _list(completion.get("choices")) if isinstance(completion, dict) else []
    if not isinstance(completion, dict) or "error" in completion or not choices:
        text = _error_text(completion) if isinstance(completion, dict) and "error" in completion else None
        detail = f"an error: {text}" if text else "JSON that is not a chat completion"
        raise ProviderError(f"The model server answered 200 with {detail}: {_excerpt(data)}")
    choice = choices[0]
    events = _message_events(choice.get("message") or {}, whole=True, logprobs=choice.get("logprobs"))
    if not events and not choice.get("finish_reason"):
        raise ProviderError(
            f"The model server answered 200 with a completion carrying no content, no tool calls and "
            f"no finish_reason: {_excerpt(data)}"
        )
    for event in events:
        yield event
    if completion.get("usage"):
        yield _usage(completion["usage"])
    yield Finish(_FINISH.get(choice.get("finish_reason") or "stop", "stop"))  # type: ignore[arg-type]


def _message_events(delta: Any, *, whole: bool = False, logprobs: Any = None) -> list[ModelEvent]:
    """A streamed ``delta`` (or a whole ``message``) as events."""
    if not isinstance(delta, dict):
        return []
    events: list[ModelEvent] = []
    # A reasoning model's thinking comes before its answer, in a field of its own: vLLM's reasoning
    # parsers, DeepSeek and llama.cpp name it ``reasoning_content``, some servers ``reasoning``.
    for name in ("reasoning_content", "reasoning"):
        if isinstance(delta.get(name), str) and delta[name]:
            events.append(ReasoningDelta(delta[name]))
            break
    if isinstance(delta.get("content"), str) and delta["content"]:
        content = logprobs.get("content") if isinstance(logprobs, dict) else None
        events.append(TextDelta(delta["content"], _list(content) or None))
    if isinstance(delta.get("refusal"), str) and delta["refusal"]:
        events.append(RefusalDelta(delta["refusal"]))
    for position, call in enumerate(_list(delta.get("tool_calls"))):
        function = call.get("function") or {}
        if not isinstance(function, dict):
            continue
        events.append(
            ToolCallDelta(
                index=position if whole else int(call.get("index", 0)),
                name=function.get("name"),
                arguments=str(function.get("arguments") or ""),
            )
        )
    return events


def _list(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _usage(usage: Any) -> Usage:
    if not isinstance(usage, dict):
        return Usage(0, 0)
    details = usage.get("completion_tokens_details")
    reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else None
    return Usage(
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
        int(reasoning or 0),
    )


def _json(response: aiohttp.ClientResponse, data: bytes) -> Any:
    try:
        return _loads(data)
    except ValueError:
        raise _unexpected(response, data[:EXCERPT_BYTES], "a stream chunk that is not JSON") from None


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_ESCAPED_UNSTORABLE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def _loads(data: bytes) -> Any:
    """JSON from the model server, with what no database stores or no reply encodes (NUL, a lone
    surrogate, both legal JSON escapes) replaced by U+FFFD: model output is untrusted text."""
    value = json.loads(data)
    return _clean(value) if _ESCAPED_UNSTORABLE.search(data) else value


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return _UNSTORABLE.sub("\ufffd", value)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    return value


def _excerpt(data: bytes) -> str:
    """The first bytes of what the model server sent, escaped (quotes, controls, non-ASCII)."""
    text = data[:EXCERPT_BYTES].decode("utf-8", "replace")
    return ascii(text) + ("..." if len(data) > EXCERPT_BYTES else "")


def _unexpected(response: aiohttp.ClientResponse, first: bytes, what: str) -> ProviderError:
    kind = response.headers.get("content-type") or "no content-type"
    return ProviderError(
        f"The model server answered {response.status} ({kind}) with {what}; "
        f"it began: {_excerpt(first) if first else '(nothing)'}"
    )


def _error_text(body: Any) -> str:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return str(body)[:500]


def _http_error(response: aiohttp.ClientResponse, data: bytes) -> ProviderError:
    error: dict[str, Any] | None = None
    try:
        body = json.loads(data)
        detail = _error_text(body)
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            error = body["error"]
    except ValueError:
        detail = _excerpt(data)
    message = f"The model server answered {response.status}: {detail}"
    status = response.status
    if status == 429:
        return ProviderError(message, code="rate_limit_exceeded", retryable=True, status=status, error=error)
    return ProviderError(message, retryable=status >= 500, status=status, error=error)
