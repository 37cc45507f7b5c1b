"""A database that cannot be reached: requests are answered 503 ``database_unavailable`` with
``Retry-After`` (never a 500), and the server serves again by itself once the database is back.

PostgreSQL is made unreachable through a TCP proxy this test owns (the machine's server is never
touched): stopping the proxy drops every connection and refuses new ones. SQLite is made busy by a
write lock held past the server's busy timeout.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import BACKEND
from tests.support import (
    ThreadlineServer,
    _pg_admin,
    create_postgres_database,
    drop_postgres_database,
    wait_for,
)

pytestmark = pytest.mark.timeout(90)


class Proxy:
    """A TCP forwarder from a local port to ``target``, on its own thread and event loop."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port: int = sock.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()

    def _call(self, coroutine: object) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=10)  # type: ignore[arg-type]

    def start(self) -> None:
        async def start() -> None:
            self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port, reuse_address=True)

        self._call(start())

    def stop(self) -> None:
        async def stop() -> None:
            assert self.server is not None
            self.server.close()
            for writer in list(self.writers):
                writer.transport.abort()
            await self.server.wait_closed()

        self._call(stop())

    def close(self) -> None:
        async def shutdown() -> None:
            if self.server is not None:
                self.server.close()
            for writer in list(self.writers):
                writer.transport.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(0.05)  # the aborted transports' last callbacks

        self._call(shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self.writers -= {writer, up_writer}


def unavailable(answer: httpx.Response) -> bool:
    if answer.status_code != 503:
        return False
    error = answer.json()["error"]
    assert error["type"] == "server_error"
    assert error["code"] == "database_unavailable"
    assert answer.headers["retry-after"] == "2"
    return True


def load(url: str, seconds: float) -> Counter[int]:
    """Lists and creates from four clients for ``seconds``; every answer must be a 200 or the 503."""
    statuses: Counter[int] = Counter()
    headers = {"OpenAI-Beta": "assistants=v2"}

    def client() -> None:
        import time

        end = time.monotonic() + seconds
        with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
            while time.monotonic() < end:
                for answer in (
                    http.get("/assistants"),
                    http.post("/assistants", json={"model": "scripted", "name": "under load"}),
                ):
                    assert answer.status_code == 200 or unavailable(answer), answer.text
                    statuses[answer.status_code] += 1

    with ThreadPoolExecutor(4) as pool:
        for done in [pool.submit(client) for _ in range(4)]:
            done.result()
    return statuses


@pytest.fixture
def proxied_database() -> Iterator[tuple[Proxy, str]]:
    if BACKEND != "postgres":
        pytest.skip("the PostgreSQL pass covers this")
    url = create_postgres_database()
    proxy = Proxy(("127.0.0.1", 5432))
    proxy.start()
    try:
        yield proxy, url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    finally:
        proxy.close()
        drop_postgres_database(url)


def test_a_postgresql_outage_is_answered_503_until_the_database_is_back(
    make_server: Callable[..., ThreadlineServer], proxied_database: tuple[Proxy, str]
) -> None:
    proxy, url = proxied_database
    server = make_server(database_url=url, database_pool_size=2)
    assert load(server.url, 1.0)[200] > 0

    proxy.stop()
    statuses = load(server.url, 2.0)
    assert statuses[503] > 0 and set(statuses) <= {200, 503}, statuses
    assert wait_for(lambda: unavailable(httpx.get(f"{server.url}/assistants", headers=BETA)), 10)
    assert httpx.get(f"http://127.0.0.1:{server.port}/readyz").status_code == 503

    proxy.start()
    wait_for(lambda: httpx.get(f"{server.url}/assistants", headers=BETA).status_code == 200, 20)
    assert set(load(server.url, 1.0)) == {200}

    # An administrator's shutdown of the server's connections: the same, then served again.
    name = url.rsplit("/", 1)[1]
    asyncio.run(_pg_admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"))
    statuses = load(server.url, 1.0)
    assert set(statuses) <= {200, 503} and statuses[200] > 0, statuses


def test_a_sqlite_database_locked_past_the_busy_timeout_is_answered_503(
    make_server: Callable[..., ThreadlineServer],
) -> None:
    if BACKEND != "sqlite":
        pytest.skip("the SQLite pass covers this")
    server = make_server(database_busy_timeout_seconds=0.3)
    path = Path(server.settings.effective_database_url.removeprefix("sqlite+aiosqlite:///"))
    create = {"model": "scripted", "name": "a"}
    assert httpx.post(f"{server.url}/assistants", json=create, headers=BETA).status_code == 200

    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        assert unavailable(httpx.post(f"{server.url}/assistants", json=create, headers=BETA))
        # Reads do not wait on a writer (WAL).
        assert httpx.get(f"{server.url}/assistants", headers=BETA).status_code == 200
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert httpx.post(f"{server.url}/assistants", json=create, headers=BETA).status_code == 200


BETA = {"OpenAI-Beta": "assistants=v2"}
