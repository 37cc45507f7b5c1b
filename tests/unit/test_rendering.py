"""A route's ``dict`` reply is rendered once, by the route itself (``CheckedRoute``): the same bytes,
status and headers FastAPI's own path gave, a route's ``Response`` parameter included."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Response
from fastapi.encoders import jsonable_encoder
from fastapi.testclient import TestClient

from threadline.api.routing import CheckedRoute, RenderedJSON

REPLY = {
    "id": "run_1",
    "object": "thread.run",
    "tools": [{"type": "x"}],
    "n": 1.5,
    "text": "é 😀",
    "none": None,
}


def app() -> FastAPI:
    router = APIRouter(route_class=CheckedRoute)

    @router.get("/plain")
    async def plain() -> dict[str, Any]:
        return REPLY

    @router.post("/created", status_code=201, response_model=None)
    async def created(response: Response) -> dict[str, Any]:
        response.headers["openai-poll-after-ms"] = "0"
        return REPLY

    @router.get("/moved")
    async def moved(response: Response) -> dict[str, Any]:
        response.status_code = 202
        return REPLY

    @router.get("/other", response_model=None)
    async def other() -> Response:
        return Response(b"as is", media_type="text/plain")

    application = FastAPI()
    application.include_router(router)
    return application


def test_a_dict_reply_is_rendered_once_with_the_same_bytes() -> None:
    with TestClient(app()) as client:
        plain = client.get("/plain")
        assert plain.status_code == 200
        assert plain.content == RenderedJSON(jsonable_encoder(REPLY)).body
        assert plain.headers["content-type"] == "application/json"
        created = client.post("/created")
        assert created.status_code == 201
        assert created.headers["openai-poll-after-ms"] == "0"
        assert created.content == plain.content
        assert client.get("/moved").status_code == 202
        other = client.get("/other")
        assert other.content == b"as is" and other.headers["content-type"].startswith("text/plain")


def test_fastapi_still_reads_the_route_through_the_wrapper() -> None:
    schema = app().openapi()
    # The return type is still the route's (FastAPI reads it through ``__wrapped__``).
    assert "application/json" in schema["paths"]["/plain"]["get"]["responses"]["200"]["content"]
