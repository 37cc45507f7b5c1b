"""The adapter for any OpenAI-compatible chat-completions server (vLLM, Ollama, llama.cpp, OpenAI ...).

Always streams (``stream: true`` with ``include_usage``), so deltas reach clients as the model
writes them. HTTP and protocol errors become :class:`ProviderError` here: 429 is
``rate_limit_exceeded``, 5xx and connection failures ``server_error``; both are retryable.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx

from threadline.providers.base import (
    Finish,
    ModelEvent,
    ModelRequest,
    ProviderError,
    RefusalDelta,
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
    for name in ("temperature", "top_p", "response_format", "reasoning_effort"):
        value = getattr(request, name)
        if value is not None:
            body[name] = value
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    return body


class OpenAICompatProvider:
    def __init__(self, base_url: str, api_key: str = "", *, timeout: float = 600.0) -> None:
        headers = {"Authorization": f"Bearer {api_key or 'threadline'}"}
        self.base_url = base_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelEvent]:
        try:
            async with self._client.stream(
                "POST", "/chat/completions", json=request_body(request)
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise _http_error(response)
                finish: str | None = None
                done = False
                # Read to the end even after [DONE]: a response left unread cannot go back to the
                # connection pool, and every run would open a new connection to the model.
                async for line in response.aiter_lines():
                    if done or not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                        continue
                    chunk = json.loads(data)
                    if "error" in chunk:
                        raise ProviderError(_error_text(chunk), retryable=False)
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                        yield Usage(
                            int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
                        )
                    for choice in chunk.get("choices") or ():
                        delta = choice.get("delta") or {}
                        if delta.get("content"):
                            yield TextDelta(delta["content"])
                        if delta.get("refusal"):
                            yield RefusalDelta(delta["refusal"])
                        for call in delta.get("tool_calls") or ():
                            function = call.get("function") or {}
                            yield ToolCallDelta(
                                index=int(call.get("index", 0)),
                                name=function.get("name"),
                                arguments=function.get("arguments") or "",
                            )
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
                reason = _FINISH.get(finish or "stop", "stop")
                yield Finish(reason)  # type: ignore[arg-type]
        except httpx.TimeoutException as exc:
            raise ProviderError(
                f"The model did not answer in time ({type(exc).__name__}).", retryable=True
            ) from exc
        except httpx.HTTPError as exc:
            raise ProviderError(f"Could not reach the model server: {exc}", retryable=True) from exc
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ProviderError(f"The model server sent a malformed response: {exc}") from exc


def _error_text(body: Any) -> str:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    return str(body)[:500]


def _http_error(response: httpx.Response) -> ProviderError:
    try:
        detail = _error_text(response.json())
    except ValueError:
        detail = response.text[:500]
    message = f"The model server answered {response.status_code}: {detail}"
    if response.status_code == 429:
        return ProviderError(message, code="rate_limit_exceeded", retryable=True)
    return ProviderError(message, retryable=response.status_code >= 500)
