"""``/v1/models``: the model names clients can ask for (chat routes and the embedding model), and
``/healthz``. A name is retrievable when a request naming it would be served: with a catch-all route,
any name."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from threadline.api.routing import CheckedRoute
from threadline.config import Settings
from threadline.errors import NotFoundError, ServiceUnavailableError

router = APIRouter(route_class=CheckedRoute)
health = APIRouter(route_class=CheckedRoute)


def embedding_model(settings: Settings) -> str:
    """The name of the model ``/v1/embeddings`` and file search embed with."""
    return settings.embeddings_model if settings.embeddings_base_url else "multilingual-e5-small"


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "threadline"}


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    names: list[str] = request.app.state.router.names()
    names = list(dict.fromkeys([*names, embedding_model(request.app.state.settings)]))
    return {"object": "list", "data": [_model(name) for name in names]}


@router.get("/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request) -> dict[str, Any]:
    if model_id == embedding_model(request.app.state.settings) or request.app.state.router.routes(model_id):
        return _model(model_id)
    raise NotFoundError(
        f"The model '{model_id}' does not exist or is not served here.", param="model", code="model_not_found"
    )


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
        await runtime.db.ping()
    except Exception as exc:
        raise ServiceUnavailableError(f"The database is not reachable: {type(exc).__name__}") from exc
    if not getattr(runtime.bus, "connected", True):
        raise ServiceUnavailableError("Not receiving events from PostgreSQL; reconnecting.")
    for model in runtime.router.local_models():
        if (problem := model.problem()) is not None:
            raise ServiceUnavailableError(problem)
    return {"status": "ready"}
