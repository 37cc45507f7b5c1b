"""Migrations: ``upgrade head`` gives exactly the schema the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import database_url
from threadline.domain.entities import BuiltinCall, Run, RunStep, Thread, ToolCalls
from threadline.domain.ports.storage import Change
from threadline.domain.run_states import RunStatus
from threadline.domain.steps import CodeInterpreterDetails, FileSearchDetails
from threadline.ids import new_id
from threadline.store import Database, sql_stores
from threadline.store.database import alembic_config, migrate
from threadline.store.tables import metadata


def _differences(url: str) -> list[Any]:
    async def run() -> list[Any]:
        engine = create_async_engine(url)
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), metadata)
            )
        await engine.dispose()
        return list(diff)

    return asyncio.run(run())


def test_upgrade_head_matches_the_tables(tmp_path: Path) -> None:
    url = database_url(tmp_path)
    migrate(url)
    assert _differences(url) == []
    migrate(url)  # a second upgrade is a no-op
    assert _differences(url) == []


async def _threads_with_tool_steps(url: str) -> tuple[str, str]:
    """A thread that ran code and one whose only call merely mentions code_interpreter."""
    db = Database(url)
    stores = sql_stores(db)
    made = []
    calls = [
        BuiltinCall("call_1", "code_interpreter", "code_interpreter", "{}", CodeInterpreterDetails("x = 1")),
        BuiltinCall(
            "call_2", "file_search", "file_search", "{}", FileSearchDetails(), '{"type": "code_interpreter"}'
        ),
    ]
    try:
        for call in calls:
            thread = Thread(new_id("thread"), 0)
            run = Run(new_id("run"), thread.id, "asst_x", 0, "m", "")
            await stores.threads.insert(thread, [], run)
            step = RunStep(new_id("step"), run.id, thread.id, "asst_x", 0, "tool_calls", ToolCalls([call]))
            assert await stores.runs.transition(
                Change(run=run, expect=frozenset({RunStatus.QUEUED}), new_steps=[step])
            )
            made.append(thread.id)
        return made[0], made[1]
    finally:
        await db.dispose()


async def _kernel_holders(url: str, thread_ids: list[str]) -> list[str | None]:
    db = Database(url)
    try:
        found = [await sql_stores(db).threads.get(thread_id) for thread_id in thread_ids]
        return [thread.kernel_worker_id if thread else "missing" for thread in found]
    finally:
        await db.dispose()


def test_threads_that_ran_code_before_the_upgrade_are_known_to_have(tmp_path: Path) -> None:
    url = database_url(tmp_path)
    migrate(url)
    coded, searched = asyncio.run(_threads_with_tool_steps(url))
    command.downgrade(alembic_config(url), "0009")
    migrate(url)
    # Known to have run code, held by no worker: its next kernel is fresh and the model is told.
    assert asyncio.run(_kernel_holders(url, [coded, searched])) == ["", None]
