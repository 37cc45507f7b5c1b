"""Engine set-up and transactions: each store operation is one sync function run in one transaction.

Store operations are plain functions over a SQLAlchemy ``Connection``. ``Database.read(fn)`` and
``Database.write(fn)`` run one in a transaction, off the event loop:

- SQLite: on one database thread, with the standard ``sqlite3`` driver — one thread hand-off per
  transaction instead of one per statement. Reads and writes share that thread and its one
  connection: SQLite has one writer at a time anyway, and a connection of its own per reader thread
  costs more than the concurrency gives back (each read transaction on another connection than the
  writer's starts with an empty page cache, and the threads hand the GIL to each other at every
  statement): a third more server CPU per run, measured. Writes start with ``BEGIN IMMEDIATE``; the
  database runs in WAL mode with a busy timeout for other processes.
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
import queue
import sqlite3
import threading
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
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
                # Only the database thread connects (``Database.read``/``write``): one connection.
                pool_size=1,
                max_overflow=0,
                # Reads open no transaction and writes end theirs explicitly: nothing to roll back.
                pool_reset_on_return=None,
            )
            _configure_sqlite(self.sync_engine, busy_timeout)
            self._thread = _SqliteThread(self.sync_engine)
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
                return await self._thread.run(_sqlite_read, fn)
            assert self.engine is not None
            async with self.engine.connect() as conn:
                return await conn.run_sync(fn)

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one transaction: committed when it returns, rolled back if it raises."""
        with _unavailable():
            if self.sync_engine is not None:
                return await self._thread.run(_sqlite_write, fn)
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
            self._thread.close()
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


def _sqlite_read(conn: Connection, fn: Callable[[Connection], T]) -> T:
    try:
        return fn(conn)
    finally:
        conn.rollback()  # ends SQLAlchemy's own transaction; the driver opened none


def _sqlite_write(conn: Connection, fn: Callable[[Connection], T]) -> T:
    # BEGIN and COMMIT go to the driver itself (SQLAlchemy's own execution costs more than them);
    # SQLAlchemy's transaction, begun if ``fn`` ran a statement through it, is then ended too.
    driver: Any = conn.connection.driver_connection
    _on_driver(conn, "BEGIN IMMEDIATE", lambda: driver.execute("BEGIN IMMEDIATE"))
    try:
        result = fn(conn)
    except BaseException:
        _on_driver(conn, "ROLLBACK", driver.rollback)
        if conn.in_transaction():
            conn.rollback()
        raise
    _on_driver(conn, "COMMIT", driver.commit)
    if conn.in_transaction():
        conn.commit()
    return result


def _on_driver(conn: Connection, what: str, call: Callable[[], object]) -> None:
    """``call`` on the driver, its errors raised as SQLAlchemy's (a locked database: a 503)."""
    try:
        call()
    except sqlite3.Error as error:
        raise sa_exc.DBAPIError.instance(what, (), error, sqlite3.Error, dialect=conn.dialect) from error


_Job = tuple[
    asyncio.AbstractEventLoop,
    "asyncio.Future[Any]",
    Callable[[Connection, Callable[[Connection], Any]], Any],
    Callable[[Connection], Any],
]


class _SqliteThread:
    """The thread every SQLite transaction runs on, one after the other, on the one connection it
    keeps open. A job whose caller was cancelled before it started is skipped; one that has started
    finishes (its caller reads back when unsure)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Connection | None = None
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="threadline-db", daemon=True)
        self._thread.start()

    async def run(
        self, how: Callable[[Connection, Callable[[Connection], T]], T], fn: Callable[[Connection], T]
    ) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, how, fn))
        return await future

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join()

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, how, fn = job
            if future.cancelled():
                continue
            try:
                if self._conn is None:
                    self._conn = self._engine.connect()
                result, error = how(self._conn, fn), None
            except BaseException as exc:  # handed to the caller, as an executor would
                result, error = None, exc
                if self._conn is not None and self._conn.invalidated:
                    self._conn.close()
                    self._conn = None
            with contextlib.suppress(RuntimeError):  # the loop is already closed: no one waits
                loop.call_soon_threadsafe(_settle, future, result, error)
        if self._conn is not None:
            self._conn.close()


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


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
