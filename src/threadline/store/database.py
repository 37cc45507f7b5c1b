"""Engine set-up and transactions: each store operation is one sync function run in one transaction.

Store operations are plain functions over a SQLAlchemy ``Connection``. ``Database.read(fn)`` and
``Database.write(fn)`` run one in a transaction, off the event loop:

- SQLite: on a thread, with the standard ``sqlite3`` driver — one thread hand-off per transaction
  instead of one per statement. Writes go through a single writer thread (SQLite has one writer at
  a time anyway; queueing them costs less than spinning on ``SQLITE_BUSY``) and start with
  ``BEGIN IMMEDIATE``; the database runs in WAL mode with a busy timeout for other processes.
- PostgreSQL: on the event loop, through asyncpg (``AsyncConnection.run_sync``).

A write that has started finishes even if the task that asked for it is cancelled (on SQLite);
callers treat "written" as the truth and read back when unsure.

A database that cannot be reached (refused, shut down, connection lost, SQLite locked past its busy
timeout, no pool connection free in time) raises ``DatabaseUnavailableError``: a 503 with
``Retry-After`` for the client, not a 500.

The database's own operations live here too, not in an aggregate's store: ``exclusive`` (a
cluster-wide named lock, the domain's ``Locks``: a PostgreSQL advisory lock; a no-op on SQLite) and
``ping``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, func, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from threadline.errors import DatabaseUnavailableError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
T = TypeVar("T")


class Database:
    def __init__(self, url: str, *, pool_size: int = 5, busy_timeout: float = 30.0) -> None:
        """``busy_timeout``: SQLite, how long a statement waits on another process's lock."""
        self.url = url
        parsed = make_url(url)
        self.dialect = parsed.get_backend_name()
        self.is_sqlite = self.dialect == "sqlite"
        self.sync_engine: Engine | None = None
        self.engine: AsyncEngine | None = None
        if self.is_sqlite:
            database = parsed.database or ""
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            self.sync_engine = create_engine(
                parsed.set(drivername="sqlite"),
                connect_args={"timeout": busy_timeout, "check_same_thread": False},
                pool_size=8,
                max_overflow=8,
                # Reads open no transaction and writes end theirs explicitly: nothing to roll back.
                pool_reset_on_return=None,
            )
            _configure_sqlite(self.sync_engine, busy_timeout)
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="threadline-db-write")
            self._readers = ThreadPoolExecutor(4, thread_name_prefix="threadline-db-read")
        else:
            # A full pool makes requests wait for a connection; PostgreSQL's own limit (100 by
            # default) is shared by every process, so the default stays small.
            self.engine = create_async_engine(
                url, pool_size=pool_size, max_overflow=pool_size, pool_timeout=60
            )

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` on a connection; nothing it does is committed."""
        with _unavailable():
            if self.sync_engine is not None:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._readers, _sqlite_read, self.sync_engine, fn)
            assert self.engine is not None
            async with self.engine.connect() as conn:
                return await conn.run_sync(fn)

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one transaction: committed when it returns, rolled back if it raises."""
        with _unavailable():
            if self.sync_engine is not None:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self._writer, _sqlite_write, self.sync_engine, fn)
            assert self.engine is not None
            async with self.engine.begin() as conn:
                return await conn.run_sync(fn)

    @contextlib.asynccontextmanager
    async def session_connection(self) -> AsyncIterator[AsyncConnection]:
        """A PostgreSQL connection held across awaits (for session-level advisory locks)."""
        assert self.engine is not None, "only for PostgreSQL"
        async with self.engine.connect() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        """Hold a cluster-wide lock named ``name`` if no one else does; yields whether we got it
        (a PostgreSQL session advisory lock; the domain's ``Locks``)."""
        if self.is_sqlite:
            # One SQLite file means one host; guarded transitions already make concurrent runs safe.
            yield True
            return
        key = zlib.crc32(name.encode())
        async with self.session_connection() as conn:
            got = bool((await conn.execute(select(func.pg_try_advisory_lock(key)))).scalar())
            try:
                yield got
            finally:
                if got:
                    await conn.execute(select(func.pg_advisory_unlock(key)))

    async def ping(self) -> None:
        """One round trip to the database (readiness)."""
        await self.read(lambda conn: conn.execute(select(1)).scalar())

    async def dispose(self) -> None:
        if self.sync_engine is not None:
            self._writer.shutdown(wait=True)
            self._readers.shutdown(wait=True)
            self.sync_engine.dispose()
        if self.engine is not None:
            await self.engine.dispose()


@contextlib.contextmanager
def _unavailable() -> Iterator[None]:
    """Errors that say the database is out of reach, as ``DatabaseUnavailableError``."""
    try:
        yield
    except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError, OSError) as exc:
        raise _outage(exc) from exc
    except sa_exc.DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        raise _outage(exc) from exc


def _outage(exc: Exception) -> DatabaseUnavailableError:
    detail = (str(getattr(exc, "orig", None) or exc).strip() or type(exc).__name__).splitlines()[0][:200]
    log.warning("database unavailable: %s: %s", type(exc).__name__, detail)
    return DatabaseUnavailableError("The database is unavailable at the moment; retry the request shortly.")


def _sqlite_read(engine: Engine, fn: Callable[[Connection], T]) -> T:
    with engine.connect() as conn:
        return fn(conn)


def _sqlite_write(engine: Engine, fn: Callable[[Connection], T]) -> T:
    with engine.connect() as conn:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
        return result


def _configure_sqlite(engine: Engine, busy_timeout: float) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Autocommit at the driver level: we issue BEGIN ourselves (IMMEDIATE for writes).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cursor.close()


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        # Migrations run on the async engine; plain sqlite:/// URLs are accepted too.
        url = parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the newest schema (``alembic upgrade head``).

    Safe when several processes start at once: on PostgreSQL the migration holds an advisory lock
    (see ``migrations/env.py``); on SQLite, whose DDL is not transactional, an exclusive lock on the
    database's directory makes later migrators wait and then find the schema up to date.
    """
    from alembic import command

    with _sqlite_file_lock(url):
        command.upgrade(alembic_config(url), "head")


@contextlib.contextmanager
def _sqlite_file_lock(url: str) -> Iterator[None]:
    parsed = make_url(url)
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
        yield
        return
    import fcntl

    directory = Path(database).resolve().parent
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
