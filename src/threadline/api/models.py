"""``/v1/models``: the model names clients can ask for, and ``/healthz``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

router = APIRouter()
health = APIRouter()


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    names: list[str] = request.app.state.router.names()
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "threadline"} for name in names]
    return {"object": "list", "data": data}


@health.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
