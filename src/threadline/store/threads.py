"""``SqlThreadStore``: threads with their messages (and a Responses conversation's items) and summaries.

A thread's lock (``active_run_id``) is taken by the run that starts on it (``runs.py``) and checked
by every message added; deleting a thread deletes everything under it in one transaction.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

from sqlalchemy import Connection, bindparam, delete, insert, select, update

from threadline.domain.entities import (
    ListQuery,
    Message,
    Page,
    Run,
    Summary,
    Thread,
    ThreadStoreFiles,
    ThreadStorePlan,
)
from threadline.ids import new_id
from threadline.store import tables as t
from threadline.store.direct import execute
from threadline.store.rows import (
    _INSERT,
    Rows,
    _delete_threads,
    _entities,
    _in_project,
    _join_attachments,
    _lock_thread,
    _row,
    _transition,
)

_NEWEST = (
    select(t.messages)
    .where(t.messages.c.thread_id == bindparam("b_thread"))
    .order_by(t.messages.c.seq.desc())
    .limit(bindparam("b_limit"))
)


class SqlThreadStore(Rows):
    """The domain's ``ThreadRepository``."""

    async def insert(
        self,
        thread: Thread,
        messages: Sequence[Message],
        run: Run | None = None,
        *,
        search: ThreadStorePlan | None = None,
    ) -> ThreadStoreFiles | None:
        def write(conn: Connection) -> ThreadStoreFiles | None:
            execute(conn, _INSERT["threads"], {**_row(thread), "active_run_id": run.id if run else None})
            joined = None
            if messages:
                execute(conn, _INSERT["messages"], [_row(m) for m in messages])
                joined = _join_attachments(conn, thread.id, messages, search)
            if run is not None:
                execute(conn, _INSERT["runs"], _row(run))
                execute(conn, _INSERT["run_transitions"], _transition(run, frozenset(), time.time()))
            return joined

        return await self.db.write(write)

    async def get(self, thread_id: str, project_id: str | None = None) -> Thread | None:
        return await self._get(Thread, t.threads, thread_id, *_in_project(project_id))

    async def list_threads(self, query: ListQuery, metadata: dict[str, str], project_id: str) -> Page[Thread]:
        where = [t.threads.c.meta[key].as_string() == value for key, value in metadata.items()]
        # A response's own thread is not listed: it is reached through the response.
        where.append(t.threads.c.kind != "response")
        return await self._page(Thread, t.threads, query, t.threads.c.project_id == project_id, *where)

    async def copy(self, source_id: str, thread: Thread, through_message_id: str) -> None:
        """Make ``thread`` holding copies (new ids) of ``source_id``'s entries up to ``through_message_id``."""
        m = t.messages
        last = select(m.c.seq).where(m.c.id == through_message_id).scalar_subquery()
        rows = select(m).where(m.c.thread_id == source_id, m.c.seq <= last).order_by(m.c.seq)

        def write(conn: Connection) -> None:
            copies = []
            for message in _entities(Message, conn.execute(rows).all()):
                message.id = new_id(message.type)
                message.thread_id = thread.id
                copies.append(_row(message))
            execute(conn, _INSERT["threads"], {**_row(thread), "active_run_id": None})
            if copies:
                execute(conn, _INSERT["messages"], copies)

        await self.db.write(write)

    async def update(self, thread: Thread) -> None:
        await self._execute(
            update(t.threads)
            .where(t.threads.c.id == thread.id)
            .values(meta=thread.metadata, tool_resources=thread.tool_resources)
        )

    async def delete(self, thread_id: str, project_id: str) -> bool:
        th = t.threads
        mine = select(th.c.id).where(th.c.id == thread_id, th.c.project_id == project_id)

        def write(conn: Connection) -> bool:
            return _delete_threads(conn, list(conn.execute(mine).scalars()))["threads"] > 0

        return await self.db.write(write)

    async def retire_conversation(self, thread_id: str) -> None:
        th, r = t.threads, t.runs
        responses = select(r.c.id).where(r.c.thread_id == thread_id, r.c.response.is_not(None)).limit(1)

        def write(conn: Connection) -> None:
            if conn.execute(responses).first() is None:
                _delete_threads(conn, [thread_id])
            else:
                conn.execute(update(th).where(th.c.id == thread_id).values(kind="response", meta={}))

        await self.db.write(write)

    async def delete_stale(self, project_id: str, inactive_since: int, limit: int) -> dict[str, int]:
        """Delete up to ``limit`` of the project's threads untouched since ``inactive_since`` and with no
        active run, with everything under them; how many threads, messages and runs went."""
        th = t.threads
        stale = (
            select(th.c.id)
            .where(
                th.c.project_id == project_id,
                th.c.last_active_at < inactive_since,
                th.c.active_run_id.is_(None),
            )
            .order_by(th.c.last_active_at)
            .limit(limit)
        )
        return await self.db.write(lambda conn: _delete_threads(conn, list(conn.execute(stale).scalars())))

    async def insert_message(
        self, message: Message, *, search: ThreadStorePlan | None = None
    ) -> ThreadStoreFiles | None:
        def write(conn: Connection) -> ThreadStoreFiles | None:
            _lock_thread(conn, message.thread_id, None)
            execute(conn, _INSERT["messages"], _row(message))
            return _join_attachments(conn, message.thread_id, [message], search)

        return await self.db.write(write)

    async def get_message(self, thread_id: str, message_id: str, *, items: bool = False) -> Message | None:
        m = t.messages
        where = [m.c.id == message_id, m.c.thread_id == thread_id]
        if not items:
            where.append(m.c.type == "message")
        return await self._one(Message, m, *where)

    async def list_messages(
        self, thread_id: str, query: ListQuery, run_id: str | None, *, items: bool = False
    ) -> Page[Message]:
        where = [t.messages.c.thread_id == thread_id]
        if not items:
            where.append(t.messages.c.type == "message")
        if run_id is not None:
            where.append(t.messages.c.run_id == run_id)
        return await self._page(Message, t.messages, query, *where)

    async def newest_messages(
        self, thread_id: str, limit: int, *, before: str | None = None, after: str | None = None
    ) -> list[Message]:
        if before is None and after is None:
            params = {"b_thread": thread_id, "b_limit": limit}
            return await self.db.read(lambda conn: _entities(Message, execute(conn, _NEWEST, params).all()))
        m = t.messages
        where = [m.c.thread_id == thread_id]
        for cursor, older in ((before, True), (after, False)):
            if cursor is not None:
                seq = select(m.c.seq).where(m.c.id == cursor).scalar_subquery()
                where.append(m.c.seq < seq if older else m.c.seq > seq)
        return await self._all(Message, select(m).where(*where).order_by(m.c.seq.desc()).limit(limit))

    async def get_summary(self, thread_id: str) -> Summary | None:
        stmt = select(t.thread_summaries).where(t.thread_summaries.c.thread_id == thread_id)

        def read(conn: Connection) -> Summary | None:
            row = conn.execute(stmt).first()
            return None if row is None else Summary(**row._mapping)

        return await self.db.read(read)

    async def save_summary(self, summary: Summary) -> None:
        values = dataclasses.asdict(summary)

        def write(conn: Connection) -> None:
            table = t.thread_summaries
            if (
                conn.execute(
                    update(table).where(table.c.thread_id == summary.thread_id).values(values)
                ).rowcount
                == 0
            ):
                conn.execute(insert(table).values(values))

        await self.db.write(write)

    async def update_message_metadata(self, message: Message) -> None:
        await self._execute(
            update(t.messages).where(t.messages.c.id == message.id).values(meta=message.metadata)
        )

    async def delete_message(self, thread_id: str, message_id: str, *, items: bool = False) -> bool:
        m = t.messages
        where = [m.c.id == message_id, m.c.thread_id == thread_id]
        if not items:
            where.append(m.c.type == "message")
        return await self._execute(delete(m).where(*where)) > 0

    async def messages_by_id(self, message_ids: Sequence[str]) -> list[Message]:
        if not message_ids:
            return []
        m = t.messages
        return await self._all(Message, select(m).where(m.c.id.in_(message_ids)).order_by(m.c.seq))
