"""The running parts of one Threadline process, built from settings in one place.

``serve`` (the API app's lifespan), ``worker`` and ``assistants apply`` all open a ``Runtime``:
the database and store, the blob store for files' bytes, the background job queue, the event bus
(PostgreSQL LISTEN/NOTIFY when the database is PostgreSQL, in-process otherwise), the model
routing table and the services.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.engine import make_url

from threadline.config import Settings
from threadline.domain.entities import Message, Run, RunStep, Thread
from threadline.domain.files import FileService
from threadline.domain.ports import BlobStore
from threadline.domain.projects import Projects
from threadline.domain.services import Services
from threadline.events.bus import LocalBus
from threadline.metrics import Metrics
from threadline.providers.routing import RoutingTable, build_router
from threadline.store import Database, SqlStore
from threadline.store.blobs import open_blob_store
from threadline.store.files import SqlFileStore
from threadline.store.jobs import SqlJobQueue

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    store: SqlStore
    bus: LocalBus
    router: RoutingTable
    services: Services
    metrics: Metrics
    projects: Projects
    files: FileService
    blobs: BlobStore
    jobs: SqlJobQueue
    model_start: asyncio.Task[list[str]] | None = None
    """Embedded models starting in the background (``/readyz`` says not ready meanwhile)."""

    @classmethod
    async def open(
        cls, settings: Settings, router: RoutingTable | None = None, *, start_models: bool = False
    ) -> Runtime:
        """Open everything; with ``start_models``, embedded models load and run their start-up check
        in the background (processes that run the model: a worker, or ``serve`` with its worker)."""
        blobs = open_blob_store(settings)  # first: a misconfigured store fails before anything opens
        db = Database(settings.effective_database_url, pool_size=settings.database_pool_size)
        metrics = Metrics()
        store = SqlStore(db, on_run_moved=metrics.run_moved)
        bus: LocalBus
        if db.is_sqlite:
            bus = LocalBus()
        else:
            from threadline.events.pg import PostgresBus

            dsn = make_url(db.url).set(drivername="postgresql").render_as_string(hide_password=False)
            pg_bus = PostgresBus(dsn, _loader(store))
            await pg_bus.start()
            bus = pg_bus
        routes = router or build_router(settings)
        log.info("models: %s", routes.describe())
        files = FileService(SqlFileStore(db), blobs, max_bytes=settings.file_max_bytes)
        services = Services(store, bus, routes, files, run_expiry_seconds=settings.run_expiry_seconds)
        projects = Projects(store, legacy_key=settings.api_key)
        runtime = cls(
            settings,
            db,
            store,
            bus,
            routes,
            services,
            metrics,
            projects,
            files,
            blobs,
            SqlJobQueue(db, max_attempts=settings.job_max_attempts),
        )
        if start_models and routes.local_models():
            runtime.model_start = asyncio.create_task(routes.start_local_models())
        return runtime

    async def aclose(self) -> None:
        if self.model_start is not None:
            self.model_start.cancel()
            await asyncio.gather(self.model_start, return_exceptions=True)
        await self.blobs.aclose()
        await self.bus.aclose()
        await self.router.aclose()
        await self.db.dispose()


def _loader(store: SqlStore) -> Callable[[str, str], Awaitable[Thread | Run | RunStep | Message | None]]:
    """How the PostgreSQL bus reads back an object whose event was too large to send."""

    async def load(kind: str, object_id: str) -> Thread | Run | RunStep | Message | None:
        if kind == "run":
            return await store.get_run_by_id(object_id)
        if kind == "step":
            return await store.get_step_by_id(object_id)
        if kind == "message":
            found = await store.messages_by_id([object_id])
            return found[0] if found else None
        return await store.get_thread(object_id)

    return load
