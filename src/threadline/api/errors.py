"""Rendering every error as OpenAI's envelope: ``{"error": {"message", "type", "param", "code"}}``.

Our own errors, request validation failures, unknown routes and unexpected exceptions all come out
in this one shape, so the SDK raises the right exception class with the right message.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from threadline.errors import ThreadlineError

log = logging.getLogger(__name__)


def envelope(
    status: int, message: str, type_: str, param: str | None = None, code: str | None = None
) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


def _validation_message(error: dict[str, Any]) -> tuple[str, str | None]:
    loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "query", "path")]
    # Drop pydantic's union-branch labels ("function", "str", "list[...]") from the parameter path.
    param = ".".join(p for p in loc if not p.startswith(("list[", "function-", "literal[", "tagged-union")))
    kind = error.get("type", "")
    if kind == "json_invalid":
        return "We could not parse the JSON body of your request. Please send valid JSON.", None
    if kind == "missing":
        return f"Missing required parameter: '{param}'.", param or None
    if kind == "extra_forbidden":
        return f"Unrecognized request argument supplied: {param}", param or None
    message = error.get("msg", "Invalid value")
    return (f"Invalid value for '{param}': {message}." if param else f"{message}."), param or None


def install(app: FastAPI) -> None:
    @app.exception_handler(ThreadlineError)
    async def _ours(_request: Request, exc: ThreadlineError) -> JSONResponse:
        return envelope(exc.status, exc.message, exc.type, exc.param, exc.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        message, param = _validation_message(errors[0]) if errors else ("Invalid request.", None)
        return envelope(400, message, "invalid_request_error", param)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"Invalid URL ({request.method} {request.url.path})"
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed for {request.url.path}."
        else:
            message = str(exc.detail)
        return envelope(exc.status_code, message, "invalid_request_error")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return envelope(500, "The server had an error while processing your request.", "server_error")
