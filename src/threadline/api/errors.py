"""Rendering every error as OpenAI's envelope: ``{"error": {"message", "type", "param", "code"}}``.

Our own errors, request validation failures, unknown routes and unexpected exceptions all come out
in this one shape, so the SDK raises the right exception class with the right message. An unexpected
exception is answered by :class:`Unexpected`, which keeps the connection open (Starlette's own handler
answers and then re-raises, and uvicorn drops the connection of any request that raised).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from threadline.api.routing import RenderedJSON
from threadline.errors import PayloadTooLargeError, ThreadlineError, describe_size

log = logging.getLogger(__name__)


def envelope(
    status: int, message: str, type_: str, param: str | None = None, code: str | None = None
) -> RenderedJSON:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return RenderedJSON(body, status_code=status)


_CUT_SHORT = "threadline.body_cut_short"
"""Set in a request's scope when a middleware cut its body short (too large, too slow): the 413 or
408 the middleware sends is the refusal logged, not what the application made of the rest."""


def cut_short(scope: Scope) -> None:
    scope[_CUT_SHORT] = True


def refused(
    scope: Scope, status: int, message: str, param: str | None = None, *, final: bool = False
) -> None:
    """One log line per refused request (4xx), so a refusal can be told from the server's log: what
    was asked, the status, the parameter and message sent back; never the body or a key. (``final``:
    the refusal of a body cut short, which replaces whatever the application made of it.)"""
    if 400 <= status < 500 and (final or not scope.get(_CUT_SHORT)):
        log.info("%s %s -> %d (param: %s): %s", scope["method"], scope["path"], status, param, message[:300])


_NOT_AN_OBJECT = {"model_attributes_type", "dict_type", "model_type"}
_PRIMITIVE_LABELS = {"str", "int", "float", "bool", "none", "list", "dict", "bytes"}


def _is_branch(step: str) -> bool:
    """Whether a ``loc`` step names a pydantic union branch (``str``, ``list[...]``, a model class)."""
    return step in _PRIMITIVE_LABELS or "[" in step or step[:1].isupper() or step.startswith("constrained-")


def _walk(value: Any, loc: tuple[Any, ...]) -> list[str | int] | None:
    """``loc`` as a path through the request body, branch labels left out; ``None`` if it does not fit."""
    if not loc:
        return []
    step, rest = loc[0], loc[1:]
    if isinstance(step, int):
        if isinstance(value, list) and 0 <= step < len(value):
            tail = _walk(value[step], rest)
            return None if tail is None else [step, *tail]
        return [step] if not rest else None
    if isinstance(value, dict) and step in value:
        tail = _walk(value[step], rest)
        if tail is not None:
            return [step, *tail]
    if not rest:
        # The last step is the value's own branch, or a key the client left out ("missing").
        return [] if _is_branch(step) else [step]
    # A discriminated union's tag (ours are all on ``type``) or another branch label: skip it.
    if _is_branch(step) or (isinstance(value, dict) and value.get("type") == step):
        return _walk(value, rest)
    return None


def _param(path: list[str | int]) -> str:
    """OpenAI's spelling of a parameter path: ``tools[0].function.name``."""
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out


def _located(error: dict[str, Any], body: Any) -> tuple[str, int]:
    """The parameter an error is about, and how deep into the request it points."""
    loc = tuple(error.get("loc", ()))
    where, rest = (loc[0], loc[1:]) if loc else ("body", ())
    if where == "body":
        path = _walk(body, rest)
        if path is None:  # no body to follow (unparsable JSON): just drop the branch labels
            path = [p for p in rest if isinstance(p, int) or not _is_branch(p)]
    else:
        path = list(rest[:1])  # a query or path parameter: its name
    return _param(path), len(path)


def _validation_message(error: dict[str, Any], param: str) -> str:
    kind = error.get("type", "")
    if kind == "json_invalid":
        return "We could not parse the JSON body of your request. Please send valid JSON."
    if not param and kind == "missing":
        return "The request body is missing. Please send a JSON object."
    if not param and kind in _NOT_AN_OBJECT:
        return "The request body must be a JSON object."
    if kind == "missing":
        return f"Missing required parameter: '{param}'."
    if kind == "extra_forbidden":
        return f"Unrecognized request argument supplied: {param}"
    message = str(error.get("msg", "Invalid value")).removeprefix("Value error, ").rstrip(".") + "."
    return f"Invalid value for '{param}': {message}" if param else message


def _is_mismatch(error: dict[str, Any]) -> bool:
    kind = str(error.get("type", ""))
    return kind.endswith("_type") or kind in ("literal_error", "union_tag_invalid")


def validation_error(errors: list[dict[str, Any]], body: Any) -> tuple[str, str | None]:
    """The message and ``param`` for a failed validation: the error that points deepest into the
    request wins, since a union reports one error per branch and only one branch was meant."""
    if not errors:
        return "Invalid request.", None
    # Between branches that reach as deep, one that only says "not this type" is the least telling.
    ranked = [(_located(error, body), _is_mismatch(error), index) for index, error in enumerate(errors)]
    (param, _depth), _mismatch, index = max(ranked, key=lambda r: (r[0][1], not r[1], -r[2]))
    error = errors[index]
    if error.get("type") == "json_invalid":
        return _validation_message(error, ""), None
    return _validation_message(error, param), param or None


class BodyLimit:
    """Refuses request bodies larger than ``limit`` bytes with a 413 in OpenAI's envelope: at once
    when the declared length says so, or as soon as a body sent without one grows past it.

    ``larger`` gives some routes a limit and message of their own (uploads)."""

    def __init__(
        self, app: ASGIApp, limit: int, larger: Mapping[tuple[str, str], tuple[int, str]] | None = None
    ) -> None:
        self.app = app
        self.default = (limit, f"The request body is larger than the {describe_size(limit)} allowed.")
        self.larger = dict(larger or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, refusal = self.larger.get((scope["method"], scope["path"]), self.default)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            refused(scope, 413, refusal)
            await envelope(413, refusal, "invalid_request_error")(scope, receive, send)
            return
        seen = 0
        too_large = False

        async def counted() -> Message:
            nonlocal seen, too_large
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                too_large = True
                cut_short(scope)
                raise PayloadTooLargeError(refusal)
            return message

        async def answer(message: Message) -> None:
            # Whatever the application made of a body cut short (FastAPI calls it unparsable), the
            # client is told what really happened.
            if not too_large:
                await send(message)
            elif message["type"] == "http.response.start":
                refused(scope, 413, refusal, final=True)
                await envelope(413, refusal, "invalid_request_error")(scope, receive, send)

        await self.app(scope, counted, answer)


def install(app: FastAPI) -> None:
    @app.exception_handler(ThreadlineError)
    async def _ours(request: Request, exc: ThreadlineError) -> RenderedJSON:
        refused(request.scope, exc.status, exc.message, exc.param)
        response = envelope(exc.status, exc.message, exc.type, exc.param, exc.code)
        if exc.retry_after is not None:
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> RenderedJSON:
        message, param = validation_error(list(exc.errors()), exc.body)
        refused(request.scope, 400, message, param)
        return envelope(400, message, "invalid_request_error", param)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> RenderedJSON:
        if exc.status_code == 404:
            message = f"Invalid URL ({request.method} {request.url.path})"
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed for {request.url.path}."
        else:
            message = str(exc.detail)
        refused(request.scope, exc.status_code, message)
        return envelope(exc.status_code, message, "invalid_request_error")


class Unexpected:
    """Answers any exception nothing else handled with a 500 in the envelope, the connection kept.

    An exception after the reply has started (a stream) is left to the server, which must then end
    the connection: the reply cannot be finished."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception:
            if started:
                raise
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            answer = envelope(500, "The server had an error while processing your request.", "server_error")
            await answer(scope, receive, send)
