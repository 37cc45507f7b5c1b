"""``create_app(settings)``: the ASGI application, with its store, bus, router and worker.

The lifespan opens the database, applies assistant declarations, starts the in-process worker
(unless disabled) and closes everything on shutdown. Routes find what they need on ``app.state``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from threadline import declarations
from threadline.api import assistants, errors, messages, models, run_steps, runs, threads
from threadline.api.deps import check_api_key, require_beta
from threadline.config import Settings
from threadline.domain.services import Services
from threadline.events.bus import LocalBus
from threadline.providers.openai_compat import OpenAICompatProvider
from threadline.providers.routing import RoutingTable, Rule
from threadline.store import Database, SqlStore
from threadline.workers.worker import Worker

log = logging.getLogger(__name__)


def build_router(settings: Settings) -> RoutingTable:
    rules: list[Rule] = []
    if settings.upstream_base_url:
        provider = OpenAICompatProvider(
            settings.upstream_base_url, settings.upstream_api_key, timeout=settings.upstream_timeout_seconds
        )
        rules.append(Rule("*", provider))
    return RoutingTable(rules)


def create_app(settings: Settings, *, run_worker: bool = True, router: RoutingTable | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.effective_database_url)
        store = SqlStore(db)
        bus = LocalBus()
        routes = router or build_router(settings)
        if not routes.rules:
            log.warning(
                "no model is configured: runs will fail. Set THREADLINE_UPSTREAM_BASE_URL to an "
                "OpenAI-compatible server (e.g. http://127.0.0.1:11434/v1 for Ollama)."
            )
        services = Services(store, bus, routes, run_expiry_seconds=settings.run_expiry_seconds)
        if settings.assistants_file:
            applied = await declarations.apply(services, settings.assistants_file)
            log.info("applied %d assistant declarations from %s", len(applied), settings.assistants_file)
        worker = Worker(settings, store, bus, routes) if run_worker else None
        app.state.settings = settings
        app.state.services = services
        app.state.router = routes
        app.state.worker = worker
        if worker is not None:
            worker.start()
        try:
            yield
        finally:
            if worker is not None:
                await worker.stop()
            await routes.aclose()
            await db.dispose()

    app = FastAPI(title="Threadline", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None)
    errors.install(app)
    authed = [Depends(check_api_key)]
    beta = [*authed, Depends(require_beta)]
    # POST /threads/runs must be matched before POST /threads/{thread_id}.
    app.include_router(runs.router, prefix="/v1", dependencies=beta)
    for module in (assistants, threads, messages, run_steps):
        app.include_router(module.router, prefix="/v1", dependencies=beta)
    app.include_router(models.router, prefix="/v1", dependencies=authed)
    app.include_router(models.health)
    return app
