"""``/v1/models``: the model names clients can ask for, and ``/healthz``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from threadline.api.routing import CheckedRoute
from threadline.errors import ServiceUnavailableError

router = APIRouter(route_class=CheckedRoute)
health = APIRouter(route_class=CheckedRoute)


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    names: list[str] = request.app.state.router.names()
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "threadline"} for name in names]
    return {"object": "list", "data": data}


@health.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process is up and its start-up finished."""
    return {"status": "ok"}


@health.get("/readyz")
async def readyz(request: Request) -> dict[str, str]:
    """Readiness: the database answers, on PostgreSQL events from other processes arrive, and the
    embedded models have loaded and passed their start-up check."""
    runtime = request.app.state.runtime
    try:
        await runtime.store.ping()
    except Exception as exc:
        raise ServiceUnavailableError(f"The database is not reachable: {type(exc).__name__}") from exc
    if not getattr(runtime.bus, "connected", True):
        raise ServiceUnavailableError("Not receiving events from PostgreSQL; reconnecting.")
    for model in runtime.router.local_models():
        if (problem := model.problem()) is not None:
            raise ServiceUnavailableError(problem)
    return {"status": "ready"}
