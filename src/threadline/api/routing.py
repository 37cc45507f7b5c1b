"""Every route's class (:class:`CheckedRoute`): what a request carries is checked before the route sees it,
and what the route returns is rendered by something that cannot fail.

One string must not poison a project. A lone surrogate (JSON's ``"\\udfff"``, which Python's JSON
reader turns into an unpaired surrogate) has no UTF-8 encoding: stored, it could never be sent back,
and one such row made every list of its project fail. PostgreSQL refuses NUL in text. Both are
refused with a 400 naming the parameter, anywhere in a JSON body, in query parameters and in path
ids, before any route runs: one generic check, not one per field. Bodies, and the JSON schemas
inside them (function ``parameters``, response format ``schema``), are limited in depth.

Replies are rendered with any lone surrogate replaced by U+FFFD, so a row stored by an older version
still lists, and a reply that cannot be rendered cannot leave its create half-answered.
"""

from __future__ import annotations

import email.message
import functools
import inspect
import json
import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pydantic_core
from fastapi.datastructures import DefaultPlaceholder
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute, APIRouter
from fastapi.utils import is_body_allowed_for_status_code
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from threadline.errors import InvalidRequestError, ThreadlineError

MAX_BODY_DEPTH = 64
"""Levels of arrays and objects a JSON request body may nest (the body itself is level 1)."""
MAX_SCHEMA_DEPTH = 32
"""Levels of arrays and objects a JSON schema in a request may nest (function ``parameters``, a
response format's ``schema``): OpenAI's structured outputs allow 10 levels of schema objects, which
take about 21 levels of JSON."""
SCHEMA_KEYS = frozenset({"parameters", "schema"})
"""Keys whose object value is a JSON schema, wherever they appear in a request body."""

_BAD = re.compile("[\x00\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _problem(text: str) -> str | None:
    """What is wrong with ``text``, if it holds a character no reply or database could carry."""
    found = _BAD.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "must not contain NUL characters (\\u0000)"
    return "must be valid Unicode: it holds a lone surrogate (an unpaired \\ud800-\\udfff escape)"


def printable(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD, so it can be encoded as UTF-8."""
    return _SURROGATE.sub("\ufffd", text)


_MAYBE_BAD = re.compile(rb"\\u0000|\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
"""What a raw JSON body must hold for its parsed strings to hold NUL or a lone surrogate: an escape
(``\\u0000``, ``\\udfff``) or a surrogate encoded as UTF-8 (which Python's JSON reader lets through).
A raw NUL byte is not JSON."""


class _Found(Exception):
    """A problem deep in a body; ``steps`` gathers its path (innermost first) on the way out."""

    def __init__(self, kind: str, problem: str = "") -> None:
        super().__init__(kind)
        self.kind = kind
        self.problem = problem
        self.steps: list[str | int] = []
        self.inside_schema = 0
        """For ``schema``: how many of the innermost steps lie inside the schema that is too deep."""


def _param(steps: list[str | int]) -> str:
    """OpenAI's spelling of a path: ``tools[0].function.description``."""
    out = ""
    for step in steps:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return printable(out)


def _walk(value: Any, depth: int, schema_at: int, strings: bool) -> None:
    """Check one array or object at ``depth`` (and what it holds); ``schema_at`` is the depth of the
    schema it is in (0: none). Recursion is bounded: nothing deeper than the limit is entered."""
    if depth > MAX_BODY_DEPTH:
        raise _Found("deep")
    if schema_at and depth - schema_at >= MAX_SCHEMA_DEPTH:
        raise _Found("schema")
    # Whether an empty array or object inside this one is within every limit (then it is skipped).
    room = depth < MAX_BODY_DEPTH and (not schema_at or depth + 1 - schema_at < MAX_SCHEMA_DEPTH)
    if type(value) is list:
        for index, item in enumerate(value):
            kind = type(item)
            if kind is str:
                if strings and (problem := _problem(item)) is not None:
                    error = _Found("text", problem)
                    error.steps.append(index)
                    raise error
            elif (kind is list or kind is dict) and (item or not room):
                try:
                    _walk(item, depth + 1, schema_at, strings)
                except _Found as found:
                    found.steps.append(index)
                    raise
        return
    for key, item in value.items():
        if strings and (problem := _problem(key)) is not None:
            raise _Found("key", problem)
        kind = type(item)
        if kind is str:
            if strings and (problem := _problem(item)) is not None:
                error = _Found("text", problem)
                error.steps.append(key)
                raise error
        elif (kind is list or kind is dict) and (item or not room):
            inner = schema_at or (depth + 1 if key in SCHEMA_KEYS and kind is dict else 0)
            try:
                _walk(item, depth + 1, inner, strings)
            except _Found as found:
                found.steps.append(key)
                if found.kind == "schema" and not schema_at and inner:
                    found.inside_schema = len(found.steps) - 1
                raise


def check_body(body: Any, raw: bytes | None = None) -> None:
    """Refuse (400) a parsed JSON body holding a lone surrogate or NUL in any string or key, nested
    deeper than :data:`MAX_BODY_DEPTH`, or holding a schema deeper than :data:`MAX_SCHEMA_DEPTH`.

    ``raw``, the body as sent, lets the strings go unread when it cannot hold such characters."""
    strings = raw is None or _MAYBE_BAD.search(raw) is not None
    if not strings and raw is not None and raw.count(b"[") + raw.count(b"{") <= MAX_SCHEMA_DEPTH:
        return  # nothing to look for, and too few arrays and objects to pass a limit: the common case
    if isinstance(body, str):
        problem = _problem(body) if strings else None
        if problem is not None:
            raise InvalidRequestError(f"Invalid value for the request body: the text {problem}.")
        return
    if not isinstance(body, dict | list):
        return
    try:
        _walk(body, 1, 0, strings)
    except _Found as found:
        steps = found.steps[::-1]
        param = _param(steps)
        if found.kind == "deep":
            raise InvalidRequestError(
                f"The request body is nested too deeply: at most {MAX_BODY_DEPTH} levels of arrays and "
                "objects are allowed.",
                param=param or None,
            ) from None
        if found.kind == "schema":
            param = _param(steps[: len(steps) - found.inside_schema])
            raise InvalidRequestError(
                f"Invalid value for '{param}': the schema is nested too deeply: at most "
                f"{MAX_SCHEMA_DEPTH} levels of arrays and objects are allowed.",
                param=param,
            ) from None
        if found.kind == "key":
            where = f"in '{param}'" if param else "in the request body"
            raise InvalidRequestError(
                f"Invalid key {where}: a key {found.problem}.", param=param or None
            ) from None
        raise InvalidRequestError(
            f"Invalid value for '{param}': the text {found.problem}.", param=param
        ) from None


def check_parameters(request: Request) -> None:
    """Refuse (400) query parameters and path ids holding a lone surrogate or NUL."""
    for name, value in (*request.query_params.multi_items(), *request.path_params.items()):
        for text in (name, value):
            problem = _problem(str(text)) if isinstance(text, str) else None
            if problem is not None:
                param = printable(name.replace("\x00", ""))[:64]
                raise InvalidRequestError(f"Invalid value for '{param}': the text {problem}.", param=param)


def is_json(request: Request) -> bool:
    """Whether FastAPI reads this request's body as JSON (no content type, or ``application/*json``)."""
    content_type = request.headers.get("content-type")
    return not content_type or _is_json_type(content_type)


@functools.lru_cache(maxsize=64)
def _is_json_type(content_type: str) -> bool:
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


class RenderedJSON(JSONResponse):
    """A JSON reply that always renders: lone surrogates (in rows an older version stored) become
    U+FFFD instead of failing the whole reply."""

    def render(self, content: Any) -> bytes:
        try:
            return pydantic_core.to_json(content, fallback=jsonable_encoder)
        except pydantic_core.PydanticSerializationError:
            text = json.dumps(
                content, ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=jsonable_encoder
            )
            return printable(text).encode()


def _rendering(endpoint: Callable[..., Any], status_code: int | None) -> Callable[..., Any]:
    """``endpoint``, answering the ``dict`` it returns as a :class:`RenderedJSON` itself.

    FastAPI would first walk the reply to make it JSON-ready (validating and serializing it against
    its ``dict[str, Any]`` return type, or through ``jsonable_encoder`` when it has none), and then
    :class:`RenderedJSON` would walk it again to write it: the same bytes, rendered once here. The
    status code and the headers a route sets on its ``Response`` parameter are carried over as
    FastAPI would. FastAPI reads the parameters and the return type through ``__wrapped__``."""

    @functools.wraps(endpoint)
    async def rendered(*args: Any, **kwargs: Any) -> Any:
        reply = await endpoint(*args, **kwargs)
        if type(reply) is not dict:
            return reply
        response = RenderedJSON(reply, status_code=status_code or 200)
        for value in kwargs.values():
            if isinstance(value, Response):  # the route's own ``Response`` parameter
                if value.status_code:
                    response.status_code = value.status_code
                response.headers.raw.extend(value.headers.raw)
        if not is_body_allowed_for_status_code(response.status_code):
            response.body = b""
        return response

    return rendered


Guard = Callable[[Request], Awaitable[None]]
"""A check of the request alone (the key, a header): 401 or 400 when it fails."""


class CheckedRoute(APIRoute):
    """An API route that checks query parameters, path ids and JSON bodies (see the module's
    docstring) before anything else, then its guards (:func:`guarded`), and renders its reply with
    :class:`RenderedJSON`."""

    guards: tuple[Guard, ...] = ()

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if isinstance(kwargs.get("response_class", DefaultPlaceholder(None)), DefaultPlaceholder):
            # A real class, not FastAPI's default: FastAPI would otherwise render with pydantic's
            # strict encoder, which fails on a lone surrogate.
            kwargs["response_class"] = RenderedJSON
            if inspect.iscoroutinefunction(endpoint):
                endpoint = _rendering(endpoint, kwargs.get("status_code"))
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        reads_json = self.body_field is not None

        async def checked(request: Request) -> Response:
            check_parameters(request)
            if reads_json and is_json(request):
                await check_json_body(request)
            for check in self.guards:
                await check(request)
            return await handler(request)

        return checked


def guarded(router: APIRouter, *checks: Guard) -> APIRouter:
    """``router``, each of whose routes runs ``checks`` itself, after the checks above. Given to
    ``include_router`` as dependencies, FastAPI would resolve them for every request, at a tenth of
    a route's CPU time."""
    for route in router.routes:
        if not isinstance(route, CheckedRoute):
            raise TypeError(f"{route}: only a CheckedRoute runs guards")
        route.guards = checks  # set, not added: an app is made more than once (tests)
    return router


async def check_json_body(request: Request) -> None:
    try:
        body = await request.json()  # kept on the request: FastAPI reads it from there, not again
    except ThreadlineError:
        raise
    except RecursionError:
        raise InvalidRequestError(
            f"The request body is nested too deeply: at most {MAX_BODY_DEPTH} levels of arrays and "
            "objects are allowed."
        ) from None
    except ValueError:
        return  # not JSON: the route's own validation says so
    except Exception as exc:
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from exc
    check_body(body, await request.body())
