"""``create_app(settings)``: the ASGI application, with its runtime and in-process worker.

The lifespan opens the runtime (database, bus, models), applies assistant declarations, starts the
worker (unless disabled) and closes everything on shutdown, letting runs in flight finish or
handing them back. Routes find what they need on ``app.state``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI

from threadline import __version__, console, declarations
from threadline.api import (
    assistants,
    chat,
    conversations,
    embeddings,
    errors,
    fast_lane,
    files,
    messages,
    metrics,
    models,
    projects,
    responses,
    run_steps,
    runs,
    threads,
    vector_stores,
)
from threadline.api.deps import checked_beta_request, checked_request, require_admin
from threadline.api.limits import BodyTimeout, UploadSlots
from threadline.api.routing import guarded
from threadline.config import Settings
from threadline.domain.files import too_large
from threadline.providers.routing import RoutingTable
from threadline.runtime import Runtime
from threadline.tools.registry import ToolRegistry
from threadline.workers.jobs import Handler

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024 * 1024
"""Larger request bodies are refused with 413 before they are read (uploads have their own limit)."""
MULTIPART_OVERHEAD = 64 * 1024
"""Room an upload's body needs beyond the file itself: boundaries, headers, the other fields."""


def create_app(
    settings: Settings,
    *,
    run_worker: bool = True,
    router: RoutingTable | None = None,
    job_handlers: Mapping[str, Handler] | None = None,
    tools: ToolRegistry | None = None,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await Runtime.open(settings, router, tools, start_models=run_worker)
        if settings.assistants_file:
            applied = await declarations.apply(runtime.services.assistants, settings.assistants_file)
            log.info("applied %d assistant declarations from %s", len(applied), settings.assistants_file)
        worker = runtime.worker(job_handlers) if run_worker else None
        app.state.settings = settings
        app.state.runtime = runtime
        app.state.services = runtime.services
        app.state.files = runtime.files
        app.state.vector_stores = runtime.vector_stores
        app.state.vector_store_files = runtime.vector_store_files
        app.state.router = runtime.router
        app.state.worker = worker
        if worker is not None:
            worker.start()
        try:
            yield
        finally:
            if worker is not None:
                await worker.stop(grace=settings.shutdown_grace_seconds)
            await runtime.aclose()

    app = FastAPI(
        title="Threadline",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    errors.install(app)
    upload = (settings.file_max_bytes + MULTIPART_OVERHEAD, too_large(settings.file_max_bytes).message)
    app.add_middleware(errors.BodyLimit, limit=MAX_BODY_BYTES, larger={("POST", "/v1/files"): upload})
    app.add_middleware(
        BodyTimeout, idle=settings.body_idle_timeout_seconds, total=settings.body_timeout_seconds
    )
    app.state.upload_slots = UploadSlots(settings.upload_concurrency)
    app.add_middleware(errors.Unexpected)
    # The checks every route of a router runs first (guards, run by the route itself).
    # POST /threads/runs must be matched before POST /threads/{thread_id}.
    for module in (runs, assistants, threads, messages, run_steps):
        app.include_router(guarded(module.router, checked_beta_request), prefix="/v1")
    for module in (models, chat, embeddings):
        app.include_router(guarded(module.router, checked_request), prefix="/v1")
    app.include_router(guarded(projects.router, require_admin), prefix="/v1")
    for module in (files, vector_stores, responses, conversations):
        app.include_router(guarded(module.router, checked_request), prefix="/v1")
    app.include_router(models.health)
    app.include_router(metrics.router)
    app.include_router(console.router)
    fast_lane.install(
        app, "/v1", [runs.router, threads.router], [threads.create_thread, runs.create_run, runs.get_run]
    )
    return app
