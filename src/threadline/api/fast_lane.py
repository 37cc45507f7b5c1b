"""The fast lane: the run path's three routes served without FastAPI's router and request handler.

An SDK client's run is a thread create, a run create and a held poll, and FastAPI's per-request
machinery (the router trying its routes in turn, the route's scope bookkeeping, resolving the
endpoint's parameters) cost the server more CPU than everything those routes do. :class:`FastLane`
sits where the router is, inside the exception handlers, and serves a request for one of these
routes itself when it is the plain case: the route's own checks (:class:`CheckedRoute`'s parameter
and body checks, its guards), its path parameters and JSON body validated by the route's own
fields, and its endpoint called with them, so its reply is the same bytes.

Anything else is not decided here: a body that is not JSON or does not validate, a route given
something this does not read. The request then goes to FastAPI as it came (its body replayed), and
FastAPI answers it, errors and all, exactly as it would have.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRouter
from starlette.convertors import Convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from threadline.api.routing import CheckedRoute, check_json_body, check_parameters, is_json

_JSON_TYPES = ("application/json",)


class _NotHere(Exception):
    """This request is not the plain case: FastAPI serves it."""


@dataclass(frozen=True)
class _Lane:
    route: CheckedRoute
    path: str
    path_regex: re.Pattern[str]
    convertors: dict[str, Convertor[Any]]
    method: str
    call: Callable[..., Any]
    path_fields: tuple[Any, ...]
    body: Any | None  # the body's field
    request_name: str | None
    response_name: str | None

    @classmethod
    def of(cls, route: CheckedRoute, prefix: str) -> _Lane:
        dependant = route.dependant
        unread = (
            dependant.query_params,
            dependant.header_params,
            dependant.cookie_params,
            dependant.dependencies,
            dependant.background_tasks_param_name,
            dependant.security_scopes_param_name,
            dependant.websocket_param_name,
            dependant.http_connection_param_name,
        )
        if any(unread) or len(dependant.body_params) > 1 or route.dependencies:
            raise ValueError(f"{route.path}: the fast lane reads path parameters, one JSON body, the request")
        methods = sorted((route.methods or set()) - {"HEAD"})
        if len(methods) != 1 or dependant.call is None:
            raise ValueError(f"{route.path}: the fast lane serves a route of one method")
        path_regex, _format, convertors = compile_path(prefix + route.path)
        return cls(
            route=route,
            path=prefix + route.path,
            path_regex=path_regex,
            convertors=convertors,
            method=methods[0],
            call=dependant.call,
            path_fields=tuple(dependant.path_params),
            body=route.body_field,
            request_name=dependant.request_param_name,
            response_name=dependant.response_param_name,
        )

    async def serve(self, request: Request) -> Response:
        route = self.route
        check_parameters(request)
        if self.body is not None and is_json(request):
            await check_json_body(request)
        for check in route.guards:
            await check(request)
        values: dict[str, Any] = {}
        for field in self.path_fields:
            values[field.name] = _valid(field, request.path_params[field.alias], "path")
        if self.body is not None:
            values[self.body.name] = await self._body(request)
        if self.request_name is not None:
            values[self.request_name] = request
        if self.response_name is not None:
            sub = Response()
            del sub.headers["content-length"]
            sub.status_code = None  # type: ignore[assignment]
            values[self.response_name] = sub
        reply = await self.call(**values)
        if not isinstance(reply, Response):
            raise _NotHere  # not a reply the route renders itself: FastAPI would serialize it
        return reply

    async def _body(self, request: Request) -> Any:
        field = self.body
        assert field is not None
        if not await request.body():
            if field.field_info.is_required():
                raise _NotHere
            return field.get_default()
        kind = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if kind not in _JSON_TYPES:
            raise _NotHere
        try:
            parsed = await request.json()
        except ValueError:
            raise _NotHere from None
        if parsed is None:
            raise _NotHere
        return _valid(field, parsed, "body")


def _valid(field: Any, value: Any, where: str) -> Any:
    validated, errors = field.validate(value, {}, loc=(where,))
    if errors:
        raise _NotHere
    return validated


class FastLane:
    """Serves its lanes' requests (see the module's docstring); passes the rest to ``app``."""

    def __init__(self, app: ASGIApp, lanes: Sequence[_Lane]) -> None:
        self.app = app
        self.lanes = list(lanes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for lane in self.lanes:
                if scope["method"] != lane.method:
                    continue
                found = lane.path_regex.match(scope["path"])
                if found is None:
                    continue
                convert = lane.convertors
                scope["path_params"] = {k: convert[k].convert(v) for k, v in found.groupdict().items()}
                request = Request(scope, receive, send)
                try:
                    response = await lane.serve(request)
                except _NotHere:
                    await self.app(scope, _replayed(request, receive), send)
                    return
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _replayed(request: Request, receive: Receive) -> Receive:
    """``receive`` giving the body the lane already read first, if it read it."""
    body: bytes | None = getattr(request, "_body", None)
    if body is None:
        return receive
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def install(
    app: FastAPI, prefix: str, routers: Sequence[APIRouter], endpoints: Sequence[Callable[..., Any]]
) -> None:
    """Put a fast lane in front of the router for the routes of ``endpoints`` (route functions of
    ``routers``, included under ``prefix``)."""
    routes = {
        inspect.unwrap(route.endpoint): route
        for router in routers
        for route in router.routes
        if isinstance(route, CheckedRoute)
    }
    lanes = [_Lane.of(routes[endpoint], prefix) for endpoint in endpoints]
    app.router.middleware_stack = FastLane(app.router.middleware_stack, lanes)
