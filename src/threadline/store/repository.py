"""``SqlStore``: the domain's ``Store`` protocol over SQLAlchemy Core, for SQLite and PostgreSQL.

Methods are named after domain operations. Every run status change is ``commit(Change)``: one
conditional UPDATE guarded on the statuses the caller observed, plus the step and message writes
that belong with it, in one transaction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import zlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import Row, Select, Table, and_, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from threadline.domain.entities import Assistant, ListQuery, Message, Page, Run, RunStep, Summary, Thread
from threadline.domain.ports import Change, ThreadLockedError
from threadline.domain.run_states import ACTIVE, RunStatus
from threadline.store import tables as t
from threadline.store.database import Database

E = TypeVar("E", Assistant, Thread, Message, Run, RunStep)

# Run columns a ``Change`` may write; metadata is the client's and changes only through its endpoint.
_RUN_STATE_FIELDS = (
    "status",
    "required_action",
    "last_error",
    "expires_at",
    "started_at",
    "cancelled_at",
    "failed_at",
    "completed_at",
    "incomplete_details",
    "usage",
    "worker_id",
    "lease_expires_at",
)


def _fields(cls: type[Any]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


_FIELDS: dict[type[Any], tuple[str, ...]] = {
    cls: _fields(cls) for cls in (Assistant, Thread, Message, Run, RunStep)
}


def _key(name: str) -> str:
    return "meta" if name == "metadata" else name


def _row(entity: Any) -> dict[str, Any]:
    """An entity as a row for ``insert``/``update`` (column keys, not column names)."""
    return {_key(name): getattr(entity, name) for name in _FIELDS[type(entity)]}


def _entity(cls: type[E], row: Row[Any]) -> E:
    mapping = row._mapping
    values = {name: mapping[_key(name)] for name in _FIELDS[cls] if _key(name) in mapping}
    if cls is Run:
        values["status"] = RunStatus(values["status"])
    return cls(**values)


class SqlStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- generic helpers -------------------------------------------------------------------

    async def _one(self, cls: type[E], table: Table, *where: Any) -> E | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(table).where(*where))).first()
        return None if row is None else _entity(cls, row)

    async def _page(self, cls: type[E], table: Table, query: ListQuery, *where: Any) -> Page[E]:
        async with self.db.read() as conn:
            stmt, flipped = await self._paged(conn, table, query, *where)
            rows = (await conn.execute(stmt)).all()
        page = rows[: query.limit]
        if flipped:
            page.reverse()
        return Page(items=[_entity(cls, row) for row in page], has_more=len(rows) > query.limit)

    @staticmethod
    async def _paged(
        conn: AsyncConnection, table: Table, query: ListQuery, *where: Any
    ) -> tuple[Select[Any], bool]:
        """The rows between the cursors, one more than the limit (to tell ``has_more``).

        With only ``before``, the page is the ``limit`` rows nearest the cursor: they are read
        walking away from it and flipped back by the caller (the second value says so).
        """
        conditions = list(where)
        descending = query.order == "desc"
        for cursor, later in ((query.after, True), (query.before, False)):
            if cursor is None:
                continue
            seq = (await conn.execute(select(table.c.seq).where(table.c.id == cursor))).scalar()
            if seq is None:
                # An unknown cursor matches nothing rather than restarting the list.
                conditions.append(table.c.seq.is_(None))
                continue
            # "after" means further along in the requested order; "before" the opposite.
            go_down = descending == later
            conditions.append(table.c.seq < seq if go_down else table.c.seq > seq)
        flipped = query.before is not None and query.after is None
        ascending = descending == flipped
        order = table.c.seq.asc() if ascending else table.c.seq.desc()
        return select(table).where(*conditions).order_by(order).limit(query.limit + 1), flipped

    # --- assistants ------------------------------------------------------------------------

    async def insert_assistant(self, assistant: Assistant) -> None:
        async with self.db.write() as conn:
            await conn.execute(insert(t.assistants).values(_row(assistant)))

    async def upsert_assistant(self, assistant: Assistant) -> None:
        values = _row(assistant)
        async with self.db.write() as conn:
            if self.db.is_sqlite:
                from sqlalchemy.dialects.sqlite import insert as dialect_insert
            else:
                from sqlalchemy.dialects.postgresql import insert as dialect_insert  # type: ignore[assignment]
            stmt = dialect_insert(t.assistants).values(values)
            changed = {k: v for k, v in values.items() if k not in ("id", "created_at")}
            await conn.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=changed))

    async def get_assistant(self, assistant_id: str) -> Assistant | None:
        return await self._one(Assistant, t.assistants, t.assistants.c.id == assistant_id)

    async def list_assistants(self, query: ListQuery) -> Page[Assistant]:
        return await self._page(Assistant, t.assistants, query)

    async def update_assistant(self, assistant: Assistant) -> None:
        values = _row(assistant)
        async with self.db.write() as conn:
            await conn.execute(update(t.assistants).where(t.assistants.c.id == assistant.id).values(values))

    async def delete_assistant(self, assistant_id: str) -> bool:
        async with self.db.write() as conn:
            result = await conn.execute(delete(t.assistants).where(t.assistants.c.id == assistant_id))
        return result.rowcount > 0

    # --- threads and messages --------------------------------------------------------------

    async def insert_thread(self, thread: Thread, messages: Sequence[Message]) -> None:
        async with self.db.write() as conn:
            await conn.execute(insert(t.threads).values({**_row(thread), "active_run_id": None}))
            if messages:
                await conn.execute(insert(t.messages), [_row(m) for m in messages])

    async def get_thread(self, thread_id: str) -> Thread | None:
        return await self._one(Thread, t.threads, t.threads.c.id == thread_id)

    async def list_threads(self, query: ListQuery, metadata: dict[str, str]) -> Page[Thread]:
        where = [t.threads.c.meta[key].as_string() == value for key, value in metadata.items()]
        return await self._page(Thread, t.threads, query, *where)

    async def update_thread(self, thread: Thread) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                update(t.threads)
                .where(t.threads.c.id == thread.id)
                .values(meta=thread.metadata, tool_resources=thread.tool_resources)
            )

    async def delete_thread(self, thread_id: str) -> bool:
        async with self.db.write() as conn:
            run_ids = select(t.runs.c.id).where(t.runs.c.thread_id == thread_id).scalar_subquery()
            await conn.execute(delete(t.run_steps).where(t.run_steps.c.run_id.in_(run_ids)))
            await conn.execute(delete(t.runs).where(t.runs.c.thread_id == thread_id))
            await conn.execute(delete(t.messages).where(t.messages.c.thread_id == thread_id))
            await conn.execute(delete(t.thread_summaries).where(t.thread_summaries.c.thread_id == thread_id))
            result = await conn.execute(delete(t.threads).where(t.threads.c.id == thread_id))
        return result.rowcount > 0

    async def active_run_id(self, thread_id: str) -> str | None:
        async with self.db.read() as conn:
            value = await conn.execute(select(t.threads.c.active_run_id).where(t.threads.c.id == thread_id))
        return value.scalar()

    async def _lock_thread(self, conn: AsyncConnection, thread_id: str, run_id: str | None) -> None:
        """Take the thread's lock for ``run_id`` (or, with ``None``, check it is free), or raise.

        The conditional UPDATE also serialises writers on the thread row (PostgreSQL row lock,
        SQLite's single writer), so two clients racing for one thread cannot both get through.
        """
        values = {"active_run_id": run_id} if run_id else {"active_run_id": None}
        result = await conn.execute(
            update(t.threads)
            .where(t.threads.c.id == thread_id, t.threads.c.active_run_id.is_(None))
            .values(values)
        )
        if result.rowcount == 0:
            holder = (
                await conn.execute(select(t.threads.c.active_run_id).where(t.threads.c.id == thread_id))
            ).scalar()
            raise ThreadLockedError(holder or "")

    async def insert_message(self, message: Message) -> None:
        async with self.db.write() as conn:
            await self._lock_thread(conn, message.thread_id, None)
            await conn.execute(insert(t.messages).values(_row(message)))

    async def get_message(self, thread_id: str, message_id: str) -> Message | None:
        return await self._one(
            Message, t.messages, t.messages.c.id == message_id, t.messages.c.thread_id == thread_id
        )

    async def list_messages(self, thread_id: str, query: ListQuery, run_id: str | None) -> Page[Message]:
        where = [t.messages.c.thread_id == thread_id]
        if run_id is not None:
            where.append(t.messages.c.run_id == run_id)
        return await self._page(Message, t.messages, query, *where)

    async def newest_messages(
        self, thread_id: str, limit: int, *, before: str | None = None, after: str | None = None
    ) -> list[Message]:
        m = t.messages
        where = [m.c.thread_id == thread_id]
        async with self.db.read() as conn:
            for cursor, older in ((before, True), (after, False)):
                if cursor is not None:
                    seq = select(m.c.seq).where(m.c.id == cursor).scalar_subquery()
                    where.append(m.c.seq < seq if older else m.c.seq > seq)
            rows = (await conn.execute(select(m).where(*where).order_by(m.c.seq.desc()).limit(limit))).all()
        return [_entity(Message, row) for row in rows]

    async def get_summary(self, thread_id: str) -> Summary | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(t.thread_summaries).where(t.thread_summaries.c.thread_id == thread_id)
                )
            ).first()
        return None if row is None else Summary(**row._mapping)

    async def save_summary(self, summary: Summary) -> None:
        values = dataclasses.asdict(summary)
        async with self.db.write() as conn:
            result = await conn.execute(
                update(t.thread_summaries)
                .where(t.thread_summaries.c.thread_id == summary.thread_id)
                .values(values)
            )
            if result.rowcount == 0:
                await conn.execute(insert(t.thread_summaries).values(values))

    async def update_message_metadata(self, message: Message) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                update(t.messages).where(t.messages.c.id == message.id).values(meta=message.metadata)
            )

    async def delete_message(self, thread_id: str, message_id: str) -> bool:
        async with self.db.write() as conn:
            result = await conn.execute(
                delete(t.messages).where(t.messages.c.id == message_id, t.messages.c.thread_id == thread_id)
            )
        return result.rowcount > 0

    async def messages_by_id(self, message_ids: Sequence[str]) -> list[Message]:
        if not message_ids:
            return []
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    select(t.messages).where(t.messages.c.id.in_(message_ids)).order_by(t.messages.c.seq)
                )
            ).all()
        return [_entity(Message, row) for row in rows]

    # --- runs and steps --------------------------------------------------------------------

    async def insert_run(self, run: Run, messages: Sequence[Message]) -> None:
        async with self.db.write() as conn:
            await self._lock_thread(conn, run.thread_id, run.id)
            if messages:
                await conn.execute(insert(t.messages), [_row(m) for m in messages])
            await conn.execute(insert(t.runs).values(_row(run)))

    async def get_run(self, thread_id: str, run_id: str) -> Run | None:
        return await self._one(Run, t.runs, t.runs.c.id == run_id, t.runs.c.thread_id == thread_id)

    async def get_run_by_id(self, run_id: str) -> Run | None:
        return await self._one(Run, t.runs, t.runs.c.id == run_id)

    async def list_runs(self, thread_id: str, query: ListQuery) -> Page[Run]:
        return await self._page(Run, t.runs, query, t.runs.c.thread_id == thread_id)

    async def update_run_metadata(self, run: Run) -> None:
        async with self.db.write() as conn:
            await conn.execute(update(t.runs).where(t.runs.c.id == run.id).values(meta=run.metadata))

    async def commit(self, change: Change) -> bool:
        run = change.run
        guard = [t.runs.c.id == run.id, t.runs.c.status.in_([s.value for s in change.expect])]
        if change.owner is not None:
            guard.append(t.runs.c.worker_id == change.owner)
        values = {name: getattr(run, name) for name in _RUN_STATE_FIELDS}
        async with self.db.write() as conn:
            result = await conn.execute(update(t.runs).where(*guard).values(values))
            if result.rowcount == 0:
                return False
            if change.discard_steps:
                await conn.execute(delete(t.run_steps).where(t.run_steps.c.id.in_(change.discard_steps)))
            if change.discard_messages:
                await conn.execute(delete(t.messages).where(t.messages.c.id.in_(change.discard_messages)))
            if change.new_steps:
                await conn.execute(insert(t.run_steps), [_row(s) for s in change.new_steps])
            for step in change.steps:
                await conn.execute(update(t.run_steps).where(t.run_steps.c.id == step.id).values(_row(step)))
            if change.new_messages:
                await conn.execute(insert(t.messages), [_row(m) for m in change.new_messages])
            for message in change.messages:
                await conn.execute(
                    update(t.messages).where(t.messages.c.id == message.id).values(_row(message))
                )
            if change.release_thread:
                await conn.execute(
                    update(t.threads)
                    .where(t.threads.c.id == run.thread_id, t.threads.c.active_run_id == run.id)
                    .values(active_run_id=None)
                )
        return True

    async def claim_next(self, worker_id: str, now: float, lease_seconds: float) -> Run | None:
        claimable = or_(
            t.runs.c.status == RunStatus.QUEUED.value,
            and_(t.runs.c.status == RunStatus.IN_PROGRESS.value, t.runs.c.lease_expires_at < now),
        )
        pick = select(t.runs.c.id).where(claimable).order_by(t.runs.c.seq).limit(1)
        if not self.db.is_sqlite:
            pick = pick.with_for_update(skip_locked=True)
        started = func.coalesce(t.runs.c.started_at, int(now))
        async with self.db.write() as conn:
            row = (
                await conn.execute(
                    update(t.runs)
                    .where(t.runs.c.id == pick.scalar_subquery(), claimable)
                    .values(
                        status=RunStatus.IN_PROGRESS.value,
                        worker_id=worker_id,
                        lease_expires_at=now + lease_seconds,
                        started_at=started,
                    )
                    .returning(*t.runs.c)
                )
            ).first()
        return None if row is None else _entity(Run, row)

    async def renew_leases(self, worker_id: str, run_ids: Sequence[str], until: float) -> list[str]:
        if not run_ids:
            return []
        async with self.db.write() as conn:
            rows = await conn.execute(
                update(t.runs)
                .where(
                    t.runs.c.id.in_(run_ids),
                    t.runs.c.worker_id == worker_id,
                    t.runs.c.status == RunStatus.IN_PROGRESS.value,
                )
                .values(lease_expires_at=until)
                .returning(t.runs.c.id)
            )
            return list(rows.scalars())

    async def expired_runs(self, now: int, limit: int) -> list[Run]:
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    select(t.runs)
                    .where(t.runs.c.status.in_([s.value for s in ACTIVE]), t.runs.c.expires_at < now)
                    .order_by(t.runs.c.seq)
                    .limit(limit)
                )
            ).all()
        return [_entity(Run, row) for row in rows]

    async def stalled_cancellations(self, now: float, limit: int) -> list[Run]:
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    select(t.runs)
                    .where(
                        t.runs.c.status == RunStatus.CANCELLING.value,
                        or_(t.runs.c.worker_id.is_(None), t.runs.c.lease_expires_at < now),
                    )
                    .order_by(t.runs.c.seq)
                    .limit(limit)
                )
            ).all()
        return [_entity(Run, row) for row in rows]

    async def get_step_by_id(self, step_id: str) -> RunStep | None:
        return await self._one(RunStep, t.run_steps, t.run_steps.c.id == step_id)

    @contextlib.asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        if self.db.is_sqlite:
            # One SQLite file means one host; guarded transitions already make concurrent runs safe.
            yield True
            return
        key = zlib.crc32(name.encode())
        async with self.db.read() as conn:
            got = bool((await conn.execute(select(func.pg_try_advisory_lock(key)))).scalar())
            try:
                yield got
            finally:
                if got:
                    await conn.execute(select(func.pg_advisory_unlock(key)))

    async def ping(self) -> None:
        async with self.db.read() as conn:
            await conn.execute(select(1))

    async def get_step(self, thread_id: str, run_id: str, step_id: str) -> RunStep | None:
        return await self._one(
            RunStep,
            t.run_steps,
            t.run_steps.c.id == step_id,
            t.run_steps.c.run_id == run_id,
            t.run_steps.c.thread_id == thread_id,
        )

    async def list_steps(self, thread_id: str, run_id: str, query: ListQuery) -> Page[RunStep]:
        return await self._page(
            RunStep, t.run_steps, query, t.run_steps.c.run_id == run_id, t.run_steps.c.thread_id == thread_id
        )

    async def run_steps(self, run_id: str) -> list[RunStep]:
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    select(t.run_steps).where(t.run_steps.c.run_id == run_id).order_by(t.run_steps.c.seq)
                )
            ).all()
        return [_entity(RunStep, row) for row in rows]
