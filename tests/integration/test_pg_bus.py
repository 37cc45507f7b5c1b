"""The PostgreSQL event bus survives losing its connection (a database restart, an idle proxy)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import httpx
import pytest

from tests.conftest import BACKEND
from tests.support import ThreadlineServer, wait_for

pytestmark = pytest.mark.skipif(BACKEND != "postgres", reason="the PostgreSQL bus runs on PostgreSQL only")


def listener_pids(url: str) -> set[int]:
    async def query() -> set[int]:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'"
            )
        finally:
            await conn.close()
        return {row["pid"] for row in rows}

    return asyncio.run(query())


def terminate(url: str, pids: set[int]) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            for pid in pids:
                await conn.execute("SELECT pg_terminate_backend($1)", pid)
        finally:
            await conn.close()

    asyncio.run(run())


def test_bus_reconnects_after_its_connection_is_killed(make_server: Callable[..., ThreadlineServer]) -> None:
    server = make_server()
    url = server.settings.effective_database_url
    before = wait_for(lambda: listener_pids(url), what="the bus to LISTEN")
    terminate(url, before)
    after = wait_for(lambda: listener_pids(url) - before, timeout=20, what="the bus to listen again")
    assert after and not after & before
    ready = wait_for(
        lambda: httpx.get(server.url.removesuffix("/v1") + "/readyz").status_code == 200, what="readiness"
    )
    assert ready
