"""SQLite's one database thread: reads and writes in order on one connection, a started write
finishes whatever its caller does, a job given up before it started is skipped, errors reach the
caller and the thread goes on."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import Connection, text

from threadline.store.database import Database

WAIT = 10.0


@contextlib.asynccontextmanager
async def _opened(tmp_path: Path) -> AsyncIterator[Database]:
    """A SQLite database with one table ``t (v)``, disposed of afterwards."""
    db = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        await db.write(lambda conn: conn.exec_driver_sql("CREATE TABLE t (v INTEGER)"))
        yield db
    finally:
        await db.dispose()


def _insert(value: int, gate: threading.Event | None = None) -> Callable[[Connection], None]:
    def write(conn: Connection) -> None:
        if gate is not None:
            assert gate.wait(WAIT), "the test never opened the gate"
        conn.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": value})

    return write


async def _values(db: Database) -> list[int]:
    return await db.read(lambda conn: [row[0] for row in conn.exec_driver_sql("SELECT v FROM t ORDER BY v")])


def test_reads_and_writes_share_one_thread_and_one_connection(tmp_path: Path) -> None:
    async def main() -> set[tuple[int, int]]:
        async with _opened(tmp_path) as db:

            def where(conn: Connection) -> tuple[int, int]:
                return threading.get_ident(), id(conn.connection.driver_connection)

            seen = await asyncio.gather(
                *(db.read(where) for _ in range(5)), *(db.write(where) for _ in range(5))
            )
            return set(seen)

    seen = asyncio.run(main())
    assert len(seen) == 1
    ((thread, _connection),) = seen
    assert thread != threading.get_ident()


def test_a_started_write_finishes_when_its_caller_is_cancelled(tmp_path: Path) -> None:
    async def main() -> list[int]:
        async with _opened(tmp_path) as db:
            gate = threading.Event()
            started = asyncio.Event()
            loop = asyncio.get_running_loop()

            def write(conn: Connection) -> None:
                loop.call_soon_threadsafe(started.set)
                _insert(1, gate)(conn)

            task = asyncio.create_task(db.write(write))
            await asyncio.wait_for(started.wait(), WAIT)
            task.cancel()
            gate.set()
            with pytest.raises(asyncio.CancelledError):
                await task
            return await _values(db)  # queued behind the write: it sees it committed

    assert asyncio.run(main()) == [1]


def test_a_write_given_up_before_it_started_is_skipped(tmp_path: Path) -> None:
    async def main() -> list[int]:
        async with _opened(tmp_path) as db:
            gate = threading.Event()
            first = asyncio.create_task(db.write(_insert(1, gate)))
            second = asyncio.create_task(db.write(_insert(2)))
            await asyncio.sleep(0)  # both queued; the first holds the thread at the gate
            second.cancel()
            gate.set()
            await first
            with pytest.raises(asyncio.CancelledError):
                await second
            return await _values(db)

    assert asyncio.run(main()) == [1]


def test_an_error_reaches_its_caller_and_the_thread_goes_on(tmp_path: Path) -> None:
    async def main() -> list[int]:
        async with _opened(tmp_path) as db:

            def failing(conn: Connection) -> None:
                _insert(7)(conn)
                raise ValueError("no")

            with pytest.raises(ValueError, match="no"):
                await db.write(failing)
            with pytest.raises(ValueError, match="read"):
                await db.read(lambda conn: (_ for _ in ()).throw(ValueError("read")))
            await db.write(_insert(3))
            return await _values(db)  # the failed write was rolled back

    assert asyncio.run(main()) == [3]
