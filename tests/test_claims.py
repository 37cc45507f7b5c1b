"""Claiming: a worker takes at most what it asks for, oldest first, and never a run another holds."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.conftest import database_url
from threadline.domain.entities import Run, Thread
from threadline.ids import new_id
from threadline.store import Database, SqlStore
from threadline.store.database import migrate


async def _claims(url: str) -> tuple[list[str], list[int], list[str]]:
    db = Database(url)
    store = SqlStore(db)
    made = []
    try:
        for n in range(10):
            thread = Thread(id=new_id("thread"), created_at=n)
            run = Run(
                id=new_id("run"),
                thread_id=thread.id,
                assistant_id="asst_x",
                created_at=n,
                model="m",
                instructions="",
            )
            await store.insert_thread(thread, [], run)
            made.append(run.id)
        now = time.time()
        first = await store.claim("worker-a", now, 30, 3)
        # Two workers asking at once get disjoint runs and no more than they asked for.
        second, third = await asyncio.gather(
            store.claim("worker-b", now, 30, 4), store.claim("worker-c", now, 30, 4)
        )
        taken = [r.id for r in first + second + third]
        return made, [len(first), len(second), len(third)], taken
    finally:
        await db.dispose()


def test_claims_take_at_most_the_limit_oldest_first(tmp_path: Path) -> None:
    url = database_url(tmp_path)
    migrate(url)
    made, sizes, taken = asyncio.run(_claims(url))
    assert sizes[0] == 3 and sorted(sizes[1:]) == [3, 4]
    assert taken[:3] == made[:3]
    assert sorted(taken) == sorted(made) and len(set(taken)) == 10
