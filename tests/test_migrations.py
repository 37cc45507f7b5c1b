"""Migrations: ``upgrade head`` gives exactly the schema the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import database_url
from threadline.store.database import migrate
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
