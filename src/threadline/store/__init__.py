"""Storage: the only package that imports SQLAlchemy. SQLite (WAL) by default, PostgreSQL for scale-out.

One store per aggregate (``assistants``, ``threads``, ``runs``, ``responses``, ``projects``,
``files``, ``vector_stores``, ``jobs``), sharing row mapping and statements in ``rows``;
``sql_stores`` gathers the run engine's into the domain's ``Stores``.
"""

from collections.abc import Callable

from threadline.domain.entities import Run
from threadline.domain.ports.storage import Stores
from threadline.store.assistants import SqlAssistantStore
from threadline.store.database import Database
from threadline.store.projects import SqlProjectStore
from threadline.store.responses import SqlResponseStore
from threadline.store.runs import SqlRunStore
from threadline.store.threads import SqlThreadStore


def sql_stores(db: Database, on_run_moved: Callable[[Run], None] | None = None) -> Stores:
    """The run engine's stores over ``db``; ``on_run_moved`` is told of each run whose status change
    committed (metrics)."""
    return Stores(
        assistants=SqlAssistantStore(db),
        threads=SqlThreadStore(db),
        runs=SqlRunStore(db, on_run_moved),
        responses=SqlResponseStore(db),
        projects=SqlProjectStore(db),
        locks=db,
    )


__all__ = ["Database", "sql_stores"]
