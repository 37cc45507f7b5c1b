"""The running parts of one Threadline process, built from settings in one place.

``serve`` (the API app's lifespan), ``worker`` and ``assistants apply`` all open a ``Runtime``:
the database and store, the event bus (PostgreSQL LISTEN/NOTIFY when the database is PostgreSQL,
in-process otherwise), the model routing table, the server-side tools and the services.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.engine import make_url

from threadline.config import Settings
from threadline.domain.entities import Message, Run, RunStep, Thread
from threadline.domain.services import Services
from threadline.events.bus import LocalBus
from threadline.providers.routing import RoutingTable, build_router
from threadline.store import Database, SqlStore
from threadline.tools.registry import ToolRegistry

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    store: SqlStore
    bus: LocalBus
    router: RoutingTable
    services: Services
    tools: ToolRegistry

    @classmethod
    async def open(
        cls, settings: Settings, router: RoutingTable | None = None, tools: ToolRegistry | None = None
    ) -> Runtime:
        db = Database(settings.effective_database_url, pool_size=settings.database_pool_size)
        store = SqlStore(db)
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
        services = Services(store, bus, routes, run_expiry_seconds=settings.run_expiry_seconds)
        return cls(settings, db, store, bus, routes, services, tools or build_tools(settings))

    async def aclose(self) -> None:
        await self.bus.aclose()
        await self.router.aclose()
        await self.db.dispose()


def build_tools(settings: Settings) -> ToolRegistry:
    """The server-side tools this process can run. None ships yet: built-in tools declared by
    assistants are not offered to models until an implementation is registered here."""
    return ToolRegistry()


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
