"""``SqlResponseStore``: what the Responses API keeps beyond the run a response is: reading and
deleting a response (with its own thread once no response is left on it), and a background
response's recorded stream events.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from threadline.domain.entities import Run
from threadline.store import tables as t
from threadline.store.rows import Rows, _delete_threads


class SqlResponseStore(Rows):
    """The domain's ``ResponseRepository``."""

    async def get(self, response_id: str, project_id: str) -> Run | None:
        r, th = t.runs, t.threads
        mine = select(th.c.id).where(th.c.id == r.c.thread_id, th.c.project_id == project_id).exists()
        return await self._one(Run, r, r.c.id == response_id, r.c.response.is_not(None), mine)

    async def delete(self, response_id: str) -> None:
        r, th = t.runs, t.threads

        def write(conn: Connection) -> None:
            thread_id = conn.execute(select(r.c.thread_id).where(r.c.id == response_id)).scalar()
            conn.execute(delete(t.run_transitions).where(t.run_transitions.c.run_id == response_id))
            conn.execute(delete(t.response_events).where(t.response_events.c.response_id == response_id))
            conn.execute(delete(t.run_steps).where(t.run_steps.c.run_id == response_id))
            conn.execute(delete(r).where(r.c.id == response_id))
            # A response's own thread goes with its last response.
            own = select(th.c.id).where(th.c.id == thread_id, th.c.kind == "response")
            if conn.execute(select(r.c.id).where(r.c.thread_id == thread_id).limit(1)).first() is None:
                _delete_threads(conn, list(conn.execute(own).scalars()))

        await self.db.write(write)

    async def record_events(self, response_id: str, events: Sequence[dict[str, Any]]) -> None:
        rows = [
            {"response_id": response_id, "sequence_number": e["sequence_number"], "event": e} for e in events
        ]
        if rows:
            await self.db.write(lambda conn: conn.execute(insert(t.response_events), rows))

    async def events(self, response_id: str, after: int, limit: int) -> list[dict[str, Any]]:
        e = t.response_events
        stmt = (
            select(e.c.event)
            .where(e.c.response_id == response_id, e.c.sequence_number > after)
            .order_by(e.c.sequence_number)
            .limit(limit)
        )
        return await self.db.read(lambda conn: list(conn.execute(stmt).scalars()))
