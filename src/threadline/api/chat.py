"""``/v1/chat/completions``: chat completions through the routing table (``domain/chat.py``), so a
program's one client serves its threads and its quick completions alike.

The reply is OpenAI's ``chat.completion`` object, or with ``stream`` its ``chat.completion.chunk``
events ending in ``data: [DONE]``. A streamed completion's first model event is awaited before the
response starts, so a request the model refuses gets an error status, not a stream holding an error.
``/v1/completions`` (the legacy API) is not served: it answers 404 naming this route.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import ConfigDict, Field, field_validator

from threadline import __version__
from threadline.api.deps import Svc
from threadline.api.response_parsing import input_file_part
from threadline.api.routing import CheckedRoute
from threadline.api.schemas import ReasoningEffort, ResponseFormat, Strict
from threadline.domain.chat import ChatService, Choice, Completion, Piece
from threadline.domain.files import UploadedImages
from threadline.domain.ports.models import ChatMessage, ModelRequest, Usage
from threadline.domain.scope import Scope
from threadline.errors import InvalidRequestError, NotFoundError, ThreadlineError

router = APIRouter(route_class=CheckedRoute)

SYSTEM_FINGERPRINT = "fp_threadline_" + __version__.replace(".", "_")

UPSTREAM_ONLY = (
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "user",
    "service_tier",
    "verbosity",
    "prediction",
    "modalities",
    "audio",
    "web_search_options",
    "prompt_cache_key",
    "safety_identifier",
)
"""Fields passed to an upstream as sent; the embedded model decodes without them."""


class ChatMessageIn(Strict):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class FunctionDef(Strict):
    name: Annotated[str, Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ChatTool(Strict):
    type: Literal["function"]
    function: FunctionDef


class StreamOptions(Strict):
    include_usage: bool | None = None
    include_obfuscation: bool | None = None


class CreateChatCompletionRequest(Strict):
    model: Annotated[str, Field(min_length=1, max_length=256)]
    messages: Annotated[list[ChatMessageIn], Field(min_length=1)]
    tools: list[ChatTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    seed: int | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    reasoning_effort: ReasoningEffort | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    logit_bias: dict[str, int] | None = None
    user: str | None = None
    service_tier: str | None = None
    verbosity: Literal["low", "medium", "high"] | None = None
    prediction: dict[str, Any] | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None

    @field_validator("tool_choice")
    @classmethod
    def _tool_choice(cls, value: Any) -> Any:
        if isinstance(value, dict) and (
            value.get("type") != "function" or not isinstance((value.get("function") or {}).get("name"), str)
        ):
            raise ValueError('tool_choice must be "none", "auto", "required" or a named function')
        return value

    def model_request(self) -> ModelRequest:
        fields = self.model_dump(exclude_unset=True, mode="json", by_alias=True)
        response_format = fields.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") == "text":
            response_format = None
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        return ModelRequest(
            model=self.model,
            messages=fields["messages"],
            tools=fields.get("tools") or [],
            tool_choice=self.tool_choice,
            parallel_tool_calls=self.parallel_tool_calls,
            temperature=self.temperature,
            top_p=self.top_p,
            max_tokens=self.max_completion_tokens or self.max_tokens,
            response_format=response_format if isinstance(response_format, dict) else None,
            reasoning_effort=self.reasoning_effort,
            stop=stop or None,
            seed=self.seed,
            logprobs=self.logprobs,
            top_logprobs=self.top_logprobs,
            extra={name: fields[name] for name in UPSTREAM_ONLY if name in fields} or None,
        )


def chat_service(request: Request) -> ChatService:
    return ChatService(request.app.state.router, request.app.state.runtime.metrics.model_called)


def usage_object(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _choice_object(choice: Choice) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": choice.text if choice.text or not (choice.tool_calls or choice.refusal) else None,
        "refusal": choice.refusal or None,
        "annotations": [],
    }
    if choice.tool_calls:
        message["tool_calls"] = choice.tool_calls
    logprobs = None if choice.logprobs is None else {"content": choice.logprobs, "refusal": None}
    return {
        "index": choice.index,
        "message": message,
        "logprobs": logprobs,
        "finish_reason": choice.finish_reason,
    }


def completion_object(completion: Completion, created: int) -> dict[str, Any]:
    return {
        "id": completion.id,
        "object": "chat.completion",
        "created": created,
        "model": completion.model,
        "choices": [_choice_object(c) for c in completion.choices],
        "usage": usage_object(completion.usage),
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


class Observed:
    """Counts one request to an OpenAI-style route in the metrics: its status, tokens and time."""

    def __init__(self, request: Request, route: str) -> None:
        self.metrics = request.app.state.runtime.metrics
        self.route = route
        self.started = time.monotonic()
        self.done = False

    def end(self, status: int, usage: Usage | None = None) -> None:
        if not self.done:
            self.done = True
            self.metrics.api_called(self.route, status, time.monotonic() - self.started, usage)

    def failed(self, exc: BaseException) -> None:
        self.end(exc.status if isinstance(exc, ThreadlineError) else 500)


async def read_files(request: ModelRequest, scope: Scope) -> ModelRequest:
    """``request`` with its ``file`` content parts (``{"type": "file", "file": {"file_id" |
    "file_data", "filename"}}``) read as a response's ``input_file`` parts are: the file's text, or
    its image, in the part's place."""
    if scope.input_files is None:
        return request
    messages: list[ChatMessage] = []
    for i, message in enumerate(request.messages):
        content = message.get("content")
        if isinstance(content, list) and any(
            isinstance(p, dict) and p.get("type") == "file" for p in content
        ):
            parts = []
            for j, part in enumerate(content):
                if isinstance(part, dict) and part.get("type") == "file":
                    at = f"messages[{i}].content[{j}].file"
                    file = part.get("file")
                    if not isinstance(file, dict) or set(file) - {"file_id", "file_data", "filename"}:
                        raise InvalidRequestError(
                            f"Invalid '{at}': an object with 'file_id' or 'file_data', and 'filename'.",
                            param=at,
                        )
                    part = input_file_part(file, at)
                parts.append(part)
            shown = await scope.input_files.for_chat(parts, scope.files, UploadedImages(scope.files))
            message = {**message, "content": shown}
        messages.append(message)
    return dataclasses.replace(request, messages=messages)


@router.post("/chat/completions", response_model=None)
async def create_chat_completion(
    body: CreateChatCompletionRequest, request: Request, svc: Svc
) -> dict[str, Any] | StreamingResponse:
    observed = Observed(request, "/v1/chat/completions")
    service = chat_service(request)
    try:
        model_request = await read_files(body.model_request(), svc.scope)
        if body.stream:
            return await _stream(body, model_request, service, observed)
        if body.stream_options is not None:
            raise InvalidRequestError(
                "stream_options are only allowed when stream is true.", param="stream_options"
            )
        completion = await service.complete(model_request, body.n or 1)
    except BaseException as exc:
        observed.failed(exc)
        raise
    observed.end(200, completion.usage)
    return completion_object(completion, int(time.time()))


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


async def _stream(
    body: CreateChatCompletionRequest, model_request: ModelRequest, service: ChatService, observed: Observed
) -> StreamingResponse:
    completion_id, pieces = await service.stream(model_request, body.n or 1)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    created = int(time.time())

    def chunk(choices: list[dict[str, Any]], usage: Usage | None = None) -> bytes:
        data: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": body.model,
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
        }
        if include_usage:
            data["usage"] = None if usage is None else usage_object(usage)
        return _sse(data)

    def delta(piece: Piece) -> dict[str, Any]:
        change: dict[str, Any] = {}
        if piece.text:
            change["content"] = piece.text
        if piece.refusal:
            change["refusal"] = piece.refusal
        if piece.tool_call is not None:
            change["tool_calls"] = [piece.tool_call]
        logprobs = None if piece.logprobs is None else {"content": piece.logprobs, "refusal": None}
        return {
            "index": piece.index,
            "delta": change,
            "logprobs": logprobs,
            "finish_reason": piece.finish_reason,
        }

    # The first fragment before the response starts: a refusal by the model is an error status.
    first: Piece | Usage | None
    try:
        first = await anext(pieces)
    except StopAsyncIteration:
        first = None
    except BaseException:
        await pieces.aclose()
        raise

    async def events() -> AsyncIterator[bytes]:
        started: set[int] = set()
        usage: Usage | None = None
        status = 200
        try:
            piece = first
            while piece is not None:
                if isinstance(piece, Usage):
                    usage = piece
                else:
                    if piece.index not in started:
                        started.add(piece.index)
                        role = {"role": "assistant", "content": "", "refusal": None}
                        yield chunk(
                            [{"index": piece.index, "delta": role, "logprobs": None, "finish_reason": None}]
                        )
                    yield chunk([delta(piece)])
                try:
                    piece = await anext(pieces)
                except StopAsyncIteration:
                    piece = None
            if include_usage and usage is not None:
                yield chunk([], usage)
        except ThreadlineError as exc:
            status = exc.status
            error = {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}
            yield _sse({"error": error})
        except Exception:
            status = 500
            raise
        finally:
            with contextlib.suppress(Exception):
                await pieces.aclose()
            observed.end(status, usage)
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-cache"})


@router.post("/completions")
async def legacy_completions(request: Request) -> None:
    raise NotFoundError(
        "The legacy completions API (POST /v1/completions) is not served here; use POST /v1/chat/completions."
    )
