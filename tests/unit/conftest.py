"""The unit layer's world: the domain in process, with the scripted model as a provider.

Each test gets a :class:`Domain`: the real store on a database as migrations leave it (on SQLite a
copy of one migrated file; under ``THREADLINE_TEST_BACKEND=postgres`` one migrated database the
tests share, emptied after each), the in-process bus, the services, and a
:class:`ScriptedProvider` behind a :class:`ScriptedRouter`. No HTTP
server, no worker process: a test claims a run and calls ``RunLoop.execute`` itself, as a worker
would, so each ending can be reached and looked at directly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BACKEND
from tests.support import POSTGRES_ADMIN_URL, postgres_available
from threadline.domain.commands import NewAssistant, NewMessage, NewRun, NewThread
from threadline.domain.entities import ListQuery, Message, Run, RunStep
from threadline.domain.events import Event, ObjectEvent
from threadline.domain.files import FileService
from threadline.domain.run_loop import RunLoop
from threadline.domain.scope import Scope
from threadline.domain.service_set import ServiceSet
from threadline.events.bus import LocalBus, Subscription
from threadline.store import Database, sql_stores, tables
from threadline.store.blobs import LocalBlobStore
from threadline.store.database import migrate
from threadline.store.files import SqlFileStore
from threadline.testing import ScriptedProvider, ScriptedRouter
from threadline.tools.registry import ToolRegistry

WORKER = "worker-1"
MODEL = "scripted"


class Domain:
    """Everything below the API for one test, and the moves a worker makes."""

    def __init__(self, url: str, directory: Path) -> None:
        self.db = Database(url)
        self.stores = sql_stores(self.db)
        self.bus = LocalBus()
        self.model = ScriptedProvider()
        self.router = ScriptedRouter(self.model)
        self.files = FileService(
            SqlFileStore(self.db), LocalBlobStore(directory / "files"), max_bytes=1 << 20
        )
        self.services = ServiceSet.of(Scope(self.stores, self.bus, self.router, self.files))
        self.tools = ToolRegistry()

    def loop(self, worker: str = WORKER, **options: Any) -> RunLoop:
        """A run loop as a worker builds it (no pause between model call retries)."""
        options.setdefault("retry_backoff", 0.0)
        router = options.pop("router", self.router)
        return RunLoop(self.stores, self.bus, router, worker, tools=self.tools, **options)

    async def start(
        self,
        content: str | list[dict[str, Any]] = "weather in Paris?",
        *,
        tools: list[dict[str, Any]] | None = None,
        instructions: str | None = None,
        history: list[dict[str, Any]] | None = None,
        **run_fields: Any,
    ) -> Run:
        """A queued run on a new thread: ``history`` messages, then a user message of ``content``."""
        assistant = await self.services.assistants.create_assistant(
            NewAssistant(MODEL, tools=tools or [], instructions=instructions)
        )
        messages = [*(NewMessage(**m) for m in history or []), NewMessage("user", content)]
        thread = await self.services.threads.create_thread(NewThread(messages))
        return await self.services.runs.create_run(thread.id, NewRun(assistant.id, **run_fields))

    def expire_runs_after(self, seconds: int) -> None:
        """Runs started from now on expire ``seconds`` after they are made."""
        scope = dataclasses.replace(self.services.scope, run_expiry_seconds=seconds)
        self.services = ServiceSet.of(scope)

    async def claim(self, worker: str = WORKER, lease: float = 30.0) -> Run:
        """Claim the one claimable run, as a worker's claiming statement does."""
        (claimed,) = await self.stores.runs.claim_next(worker, time.time(), lease, 1)
        return claimed

    async def drive(self, run: Run, worker: str = WORKER, **options: Any) -> Run:
        """Claim ``run`` and drive it to requires_action or an end; the run as stored after."""
        claimed = await self.claim(worker)
        assert claimed.id == run.id
        await self.loop(worker, **options).execute(claimed)
        return await self.reload(run)

    async def reload(self, run: Run) -> Run:
        current = await self.stores.runs.get_by_id(run.id)
        assert current is not None
        return current

    async def steps(self, run: Run) -> list[RunStep]:
        return await self.stores.runs.steps(run.id)

    async def messages(self, run: Run, *, role: str = "assistant") -> list[Message]:
        """The thread's messages of ``role``, oldest first."""
        page = await self.stores.threads.list_messages(run.thread_id, ListQuery(limit=100, order="asc"), None)
        return [m for m in page.items if m.role == role]

    def follow(self, run: Run) -> Recorder:
        """What is published for ``run`` from now on."""
        return Recorder(self.bus.subscribe(run.id))

    async def close(self) -> None:
        await self.model.aclose()
        await self.db.dispose()


class Recorder:
    """The events of one run, in the order they were published."""

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self.seen: list[Event] = []

    def pull(self) -> list[Event]:
        """Everything published so far."""
        while not self.subscription.queue.empty():
            self.seen.append(self.subscription.queue.get_nowait())
        return self.seen

    def names(self) -> list[str]:
        """The object events' names (``thread.run.completed`` ...), deltas left out."""
        return [e.name for e in self.pull() if isinstance(e, ObjectEvent)]


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Wait for ``condition`` to hold, checking between event loop turns; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


# --- databases ----------------------------------------------------------------------------------


def _pg(statement: str, database: str = "postgres") -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + database, timeout=10)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def _pg_url(name: str) -> str:
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database migrated once: a SQLite file each test copies, or the PostgreSQL database the
    tests share, emptied after each (making one per test would take most of the layer's time)."""
    if BACKEND == "postgres":
        if not postgres_available():
            pytest.skip("PostgreSQL is not reachable")
        name = f"threadline_unit_{uuid.uuid4().hex[:12]}"
        _pg(f'CREATE DATABASE "{name}"')
        migrate(_pg_url(name))
        yield name
        _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        return
    path = tmp_path_factory.mktemp("template") / "threadline.db"
    migrate(f"sqlite+aiosqlite:///{path}")
    yield str(path)


# Emptied between PostgreSQL tests: all but the seeded default project.
_KEPT = {"projects"}


@pytest.fixture
def database(template: str, tmp_path: Path) -> Iterator[str]:
    """A database as migrations leave it, for one test."""
    if BACKEND == "postgres":
        yield _pg_url(template)
        # DELETE, children first: for a test's few rows far quicker than TRUNCATE.
        emptied = [t.name for t in reversed(tables.metadata.sorted_tables) if t.name not in _KEPT]
        _pg("; ".join(f'DELETE FROM "{name}"' for name in emptied), template)
        return
    path = tmp_path / "threadline.db"
    # The backup API copies what the write-ahead log still holds, which a file copy would miss.
    source, target = sqlite3.connect(template), sqlite3.connect(path)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    yield f"sqlite+aiosqlite:///{path}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def domain(database: str, tmp_path: Path) -> AsyncIterator[Domain]:
    world = Domain(database, tmp_path)
    try:
        yield world
    finally:
        await world.close()
