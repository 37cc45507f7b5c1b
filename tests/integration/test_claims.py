"""Claiming: a worker takes at most what it asks for, oldest first, and never a run another holds."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.conftest import database_url
from threadline.domain.entities import Run, Thread
from threadline.ids import new_id
from threadline.store import Database, sql_stores
from threadline.store.database import migrate


async def _claims(url: str) -> tuple[list[str], list[int], list[str]]:
    db = Database(url)
    stores = sql_stores(db)
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
            await stores.threads.insert(thread, [], run)
            made.append(run.id)
        now = time.time()
        first = await stores.runs.claim_next("worker-a", now, 30, 3)
        # Two workers asking at once get disjoint runs and no more than they asked for.
        second, third = await asyncio.gather(
            stores.runs.claim_next("worker-b", now, 30, 4), stores.runs.claim_next("worker-c", now, 30, 4)
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


async def _affinity(url: str) -> dict[str, set[str]]:
    db = Database(url)
    stores = sql_stores(db)
    now = time.time()
    try:

        async def queued(holder: str | None, until: float, at: float | None = now) -> str:
            thread = Thread(id=new_id("thread"), created_at=0)
            run = Run(new_id("run"), thread.id, "asst_x", 0, "m", "", queued_at=at)
            await stores.threads.insert(thread, [], run)
            if holder is not None:
                await stores.runs.hold_kernel(thread.id, holder, until)
            return run.id

        names = {
            "held by a": await queued("worker-a", now + 3600),
            "held by a too": await queued("worker-a", now + 3600),
            "a's kernel expired": await queued("worker-a", now - 1),
            "queued long ago": await queued("worker-a", now + 3600, at=now - 5),
            "queued before affinity": await queued("worker-a", now + 3600, at=None),
            "no kernel": await queued(None, 0),
            "held by b": await queued("worker-b", now + 3600),
        }
        claims = {
            "b now": await stores.runs.claim_next("worker-b", now, 30, 10, affinity_seconds=2),
            "a now": await stores.runs.claim_next("worker-a", now, 30, 1, affinity_seconds=2),
            "b later": await stores.runs.claim_next("worker-b", now + 2.5, 30, 10, affinity_seconds=2),
        }
        by_id = {run_id: name for name, run_id in names.items()}
        return {who: {by_id[r.id] for r in runs} for who, runs in claims.items()}
    finally:
        await db.dispose()


def test_a_thread_s_queued_runs_are_left_to_the_worker_holding_its_kernel_for_a_moment(
    tmp_path: Path,
) -> None:
    url = database_url(tmp_path)
    migrate(url)
    claimed = asyncio.run(_affinity(url))
    assert claimed["b now"] == {
        "a's kernel expired",
        "queued long ago",
        "queued before affinity",
        "no kernel",
        "held by b",
    }
    assert claimed["a now"] == {"held by a"}
    # Once the moment has passed anyone may take it: a busy or dead holder starves no run.
    assert claimed["b later"] == {"held by a too"}
