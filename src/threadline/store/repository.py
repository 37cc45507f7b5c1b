"""``SqlStore``: the domain's ``Store`` protocol over SQLAlchemy Core, for SQLite and PostgreSQL.

Methods are named after domain operations; each is one transaction (``Database.read``/``write``
run a plain function over a connection). Every run status change is ``commit(Change)``: one
conditional UPDATE guarded on the statuses the caller observed, plus the step and message writes
that belong with it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import (
    Connection,
    Row,
    Select,
    Table,
    Update,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)

from threadline.domain.entities import (
    ApiKey,
    Assistant,
    ListQuery,
    Message,
    Page,
    Project,
    Run,
    RunStep,
    RunTransition,
    Summary,
    Thread,
    ThreadStoreFiles,
    ThreadStorePlan,
)
from threadline.domain.files import attached_code_files, attached_search_files, with_code_files
from threadline.domain.ports.storage import Change, ThreadLockedError
from threadline.domain.records import (
    required_action_from,
    required_action_record,
    step_details_from,
    step_details_record,
)
from threadline.domain.run_states import ACTIVE, RunStatus, cause_of
from threadline.ids import new_id
from threadline.store import tables as t
from threadline.store.claims import claim_statement, renew_statement
from threadline.store.database import Database
from threadline.store.vector_store_rows import join_thread_store

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
    "queued_at",
)
_ACTIVE = [s.value for s in ACTIVE]

_FIELDS: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in (Assistant, Thread, Message, Run, RunStep)
}


def _key(name: str) -> str:
    return "meta" if name == "metadata" else name


def _row(entity: Any) -> dict[str, Any]:
    """An entity as a row for ``insert``/``update`` (column keys, not column names)."""
    row = {_key(name): getattr(entity, name) for name in _FIELDS[type(entity)]}
    if isinstance(entity, RunStep):
        row["step_details"] = step_details_record(entity.step_details)
    elif isinstance(entity, Run):
        row["required_action"] = required_action_record(entity.required_action)
    return row


def _entity(cls: type[E], row: Row[Any]) -> E:
    mapping = row._mapping
    values = {name: mapping[_key(name)] for name in _FIELDS[cls] if _key(name) in mapping}
    if cls is Run:
        values["status"] = RunStatus(values["status"])
        values["required_action"] = required_action_from(values["required_action"])
    elif cls is RunStep:
        values["step_details"] = step_details_from(values["step_details"])
    return cls(**values)


def _entities(cls: type[E], rows: Sequence[Row[Any]]) -> list[E]:
    return [_entity(cls, row) for row in rows]


def _by_id(table: Table) -> Select[Any]:
    return select(table).where(table.c.id == bindparam("b_id"))


# The statements of a run's hot path, built once: building a statement costs more than running it.
_GET = {table.name: _by_id(table) for table in (t.assistants, t.threads, t.runs, t.run_steps)}
# A run, only if its thread is in the project: the SDK's polls read this, so it is one query.
_GET_RUN_IN_PROJECT = select(t.runs).where(
    t.runs.c.id == bindparam("b_id"),
    t.runs.c.thread_id == bindparam("b_thread"),
    select(t.threads.c.id)
    .where(t.threads.c.id == bindparam("b_thread"), t.threads.c.project_id == bindparam("b_project"))
    .exists(),
)
_RUN_STEPS = select(t.run_steps).where(t.run_steps.c.run_id == bindparam("b_run")).order_by(t.run_steps.c.seq)
_NEWEST = (
    select(t.messages)
    .where(t.messages.c.thread_id == bindparam("b_thread"))
    .order_by(t.messages.c.seq.desc())
    .limit(bindparam("b_limit"))
)


@functools.cache
def _guarded_update(expected: int, owned: bool) -> Update:
    """The guarded UPDATE of a run: its id, one of ``expected`` statuses (``b_expect0`` ...) and, when
    ``owned``, its holder. Plain parameters rather than an expanding one, which SQLAlchemy renders
    again on every execution."""
    statuses: list[Any] = [bindparam(f"b_expect{i}") for i in range(expected)]
    where = [t.runs.c.id == bindparam("b_id"), t.runs.c.status.in_(statuses)]
    if owned:
        where.append(t.runs.c.worker_id == bindparam("b_owner"))
    return update(t.runs).where(*where)


_UPDATE_STEP = update(t.run_steps).where(t.run_steps.c.id == bindparam("b_id"))
_UPDATE_MESSAGE = update(t.messages).where(t.messages.c.id == bindparam("b_id"))
_RELEASE_THREAD = (
    update(t.threads)
    .where(t.threads.c.id == bindparam("b_thread"), t.threads.c.active_run_id == bindparam("b_run"))
    .values(active_run_id=None, last_active_at=bindparam("b_now"))
)
_LOCK_THREAD = (
    update(t.threads)
    .where(t.threads.c.id == bindparam("b_thread"), t.threads.c.active_run_id.is_(None))
    .values(active_run_id=bindparam("b_run"), last_active_at=bindparam("b_now"))
)
_TOUCH_THREAD = (
    update(t.threads).where(t.threads.c.id == bindparam("b_thread")).values(last_active_at=bindparam("b_now"))
)
_KEY_PROJECT = select(t.api_keys.c.project_id).where(
    t.api_keys.c.secret_hash == bindparam("b_hash"), t.api_keys.c.revoked_at.is_(None)
)
_INSERT = {
    table.name: insert(table)
    for table in (t.assistants, t.threads, t.messages, t.runs, t.run_steps, t.run_transitions)
}


def _transition(run: Run, expect: frozenset[RunStatus], at: float) -> dict[str, Any]:
    """The history row for ``run`` having just moved to its current status."""
    detail = None
    if run.status is RunStatus.REQUIRES_ACTION and run.required_action:
        detail = ", ".join(call.name for call in run.required_action.calls) or None
    elif run.last_error:
        detail = f"{run.last_error.get('code')}: {run.last_error.get('message')}"
    elif run.incomplete_details:
        detail = str(run.incomplete_details.get("reason"))
    return {
        "run_id": run.id,
        "to_status": run.status.value,
        "at": at,
        "cause": cause_of(run.status, expect, detail),
        "worker_id": run.worker_id if run.status is RunStatus.IN_PROGRESS else None,
    }


def page_query(
    conn: Connection, table: Table, query: ListQuery, where: list[Any], scope: Sequence[Any] = ()
) -> tuple[Select[Any], bool]:
    """The rows between the cursors, one more than the limit (to tell ``has_more``).

    With only ``before``, the page is the ``limit`` rows nearest the cursor: they are read walking
    away from it and flipped back by the caller (the second value says so). ``scope`` narrows the
    cursor's lookup, for tables whose ids are unique only within a parent (a vector store's files).
    """
    conditions = list(where)
    descending = query.order == "desc"
    for cursor, later in ((query.after, True), (query.before, False)):
        if cursor is None:
            continue
        seq = conn.execute(select(table.c.seq).where(table.c.id == cursor, *scope)).scalar()
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


def _join_attachments(
    conn: Connection, thread_id: str, messages: Sequence[Message], search: ThreadStorePlan | None
) -> ThreadStoreFiles | None:
    """Add the files ``messages`` attach for ``code_interpreter`` to their thread's tool resources,
    and, with ``search``, those attached for ``file_search`` to the thread's vector store.

    Called after the thread row was written or locked in this transaction, so no concurrent writer
    can lose an id between the read and the update (or make the thread a second store).
    """
    code_ids = attached_code_files(messages)
    search_ids = attached_search_files(messages) if search is not None else []
    if not code_ids and not search_ids:
        return None
    current = conn.execute(select(t.threads.c.tool_resources).where(t.threads.c.id == thread_id)).scalar()
    resources = with_code_files(current, code_ids) or current
    joined = None
    if search is not None and search_ids:
        joined = join_thread_store(conn, resources, search_ids, search)
        resources = joined.tool_resources
    if resources != current:
        conn.execute(update(t.threads).where(t.threads.c.id == thread_id).values(tool_resources=resources))
    return joined


def _lock_thread(conn: Connection, thread_id: str, run_id: str | None) -> None:
    """Take the thread's lock for ``run_id`` (or, with ``None``, check it is free), or raise.

    The conditional UPDATE also serialises writers on the thread row (PostgreSQL's row lock,
    SQLite's single writer), so two clients racing for one thread cannot both get through.
    """
    if (
        conn.execute(
            _LOCK_THREAD, {"b_thread": thread_id, "b_run": run_id, "b_now": int(time.time())}
        ).rowcount
        == 0
    ):
        holder = conn.execute(select(t.threads.c.active_run_id).where(t.threads.c.id == thread_id)).scalar()
        raise ThreadLockedError(holder or "")


def _project(row: Row[Any]) -> Project:
    return Project(row.id, row.name, row.created_at, row.thread_ttl_days)


def _api_key(row: Row[Any]) -> ApiKey:
    return ApiKey(row.id, row.project_id, row.name, row.prefix, row.created_at, row.revoked_at)


def _in_project(project_id: str | None) -> list[tuple[str, str]]:
    """The check ``_get`` applies for a project-scoped lookup (``None``: any project, for the engine)."""
    return [] if project_id is None else [("project_id", project_id)]


def _delete_threads(conn: Connection, thread_ids: list[str]) -> dict[str, int]:
    """Delete threads with their messages, runs, steps, run history and summaries; counts of each."""
    counts = {"threads": 0, "messages": 0, "runs": 0}
    if not thread_ids:
        return counts
    run_ids = select(t.runs.c.id).where(t.runs.c.thread_id.in_(thread_ids)).scalar_subquery()
    conn.execute(delete(t.run_steps).where(t.run_steps.c.run_id.in_(run_ids)))
    conn.execute(delete(t.run_transitions).where(t.run_transitions.c.run_id.in_(run_ids)))
    conn.execute(delete(t.response_events).where(t.response_events.c.response_id.in_(run_ids)))
    counts["runs"] = conn.execute(delete(t.runs).where(t.runs.c.thread_id.in_(thread_ids))).rowcount
    counts["messages"] = conn.execute(
        delete(t.messages).where(t.messages.c.thread_id.in_(thread_ids))
    ).rowcount
    conn.execute(delete(t.thread_summaries).where(t.thread_summaries.c.thread_id.in_(thread_ids)))
    counts["threads"] = conn.execute(delete(t.threads).where(t.threads.c.id.in_(thread_ids))).rowcount
    return counts


def _claim_statement(skip_locked: bool) -> Any:
    """Take the oldest queued runs (or ones whose holder's lease lapsed), up to ``b_limit``, at once.

    A queued run whose thread's kernel another worker holds (``kernel_expires_at`` not passed) is
    left to that worker until ``b_open``: queued before it, anyone may take it.
    """
    r, th = t.runs, t.threads
    held_elsewhere = exists().where(
        th.c.id == r.c.thread_id,
        th.c.kernel_worker_id != bindparam("b_worker"),
        th.c.kernel_expires_at > bindparam("b_now"),
    )
    claimable = or_(
        and_(
            r.c.status == RunStatus.QUEUED.value,
            or_(r.c.queued_at.is_(None), r.c.queued_at <= bindparam("b_open"), ~held_elsewhere),
        ),
        and_(r.c.status == RunStatus.IN_PROGRESS.value, r.c.lease_expires_at < bindparam("b_now")),
    )
    values = {
        "status": RunStatus.IN_PROGRESS.value,
        "worker_id": bindparam("b_worker"),
        "lease_expires_at": bindparam("b_lease"),
        "started_at": func.coalesce(r.c.started_at, bindparam("b_started")),
        "claims": r.c.claims + 1,
    }
    return claim_statement(r, claimable, values, skip_locked=skip_locked)


_RENEW_RUNS = renew_statement(t.runs, RunStatus.IN_PROGRESS.value)


class SqlStore:
    def __init__(self, db: Database, on_run_moved: Callable[[Run], None] | None = None) -> None:
        self.db = db
        self._claim = _claim_statement(skip_locked=not db.is_sqlite)
        self._on_run_moved = on_run_moved
        """Told of each run whose status change committed (metrics)."""

    # --- generic helpers -------------------------------------------------------------------

    async def _get(self, cls: type[E], table: Table, object_id: str, *where: Any) -> E | None:
        """The object with this id (and, optionally, more conditions checked on it)."""
        stmt = _GET[table.name]

        def read(conn: Connection) -> E | None:
            row = conn.execute(stmt, {"b_id": object_id}).first()
            if row is None or not all(row._mapping[key] == value for key, value in where):
                return None
            return _entity(cls, row)

        return await self.db.read(read)

    async def _one(self, cls: type[E], table: Table, *where: Any) -> E | None:
        def read(conn: Connection) -> E | None:
            row = conn.execute(select(table).where(*where)).first()
            return None if row is None else _entity(cls, row)

        return await self.db.read(read)

    async def _all(self, cls: type[E], stmt: Select[Any]) -> list[E]:
        return await self.db.read(lambda conn: _entities(cls, conn.execute(stmt).all()))

    async def _page(self, cls: type[E], table: Table, query: ListQuery, *where: Any) -> Page[E]:
        def read(conn: Connection) -> Page[E]:
            stmt, flipped = page_query(conn, table, query, list(where))
            rows = conn.execute(stmt).all()
            page = list(rows[: query.limit])
            if flipped:
                page.reverse()
            return Page(items=_entities(cls, page), has_more=len(rows) > query.limit)

        return await self.db.read(read)

    async def _execute(self, stmt: Any) -> int:
        """One write statement in its own transaction; how many rows it changed."""
        return await self.db.write(lambda conn: conn.execute(stmt).rowcount)

    # --- assistants ------------------------------------------------------------------------

    async def insert_assistant(self, assistant: Assistant) -> None:
        await self.db.write(lambda conn: conn.execute(_INSERT["assistants"], _row(assistant)))

    async def upsert_assistant(self, assistant: Assistant) -> None:
        if self.db.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        else:
            from sqlalchemy.dialects.postgresql import insert as dialect_insert  # type: ignore[assignment]
        values = _row(assistant)
        changed = {k: v for k, v in values.items() if k not in ("id", "created_at")}
        stmt = dialect_insert(t.assistants).values(values)
        await self._execute(stmt.on_conflict_do_update(index_elements=["id"], set_=changed))

    async def get_assistant(self, assistant_id: str, project_id: str | None = None) -> Assistant | None:
        return await self._get(Assistant, t.assistants, assistant_id, *_in_project(project_id))

    async def list_assistants(self, query: ListQuery, project_id: str) -> Page[Assistant]:
        return await self._page(Assistant, t.assistants, query, t.assistants.c.project_id == project_id)

    async def update_assistant(self, assistant: Assistant) -> None:
        await self._execute(
            update(t.assistants).where(t.assistants.c.id == assistant.id).values(_row(assistant))
        )

    async def delete_assistant(self, assistant_id: str, project_id: str) -> bool:
        a = t.assistants
        return await self._execute(delete(a).where(a.c.id == assistant_id, a.c.project_id == project_id)) > 0

    # --- threads and messages --------------------------------------------------------------

    async def insert_thread(
        self,
        thread: Thread,
        messages: Sequence[Message],
        run: Run | None = None,
        *,
        search: ThreadStorePlan | None = None,
    ) -> ThreadStoreFiles | None:
        def write(conn: Connection) -> ThreadStoreFiles | None:
            conn.execute(_INSERT["threads"], {**_row(thread), "active_run_id": run.id if run else None})
            joined = None
            if messages:
                conn.execute(_INSERT["messages"], [_row(m) for m in messages])
                joined = _join_attachments(conn, thread.id, messages, search)
            if run is not None:
                conn.execute(_INSERT["runs"], _row(run))
                conn.execute(_INSERT["run_transitions"], _transition(run, frozenset(), time.time()))
            return joined

        return await self.db.write(write)

    async def get_thread(self, thread_id: str, project_id: str | None = None) -> Thread | None:
        return await self._get(Thread, t.threads, thread_id, *_in_project(project_id))

    async def list_threads(self, query: ListQuery, metadata: dict[str, str], project_id: str) -> Page[Thread]:
        where = [t.threads.c.meta[key].as_string() == value for key, value in metadata.items()]
        # A response's own thread is not listed: it is reached through the response.
        where.append(t.threads.c.kind != "response")
        return await self._page(Thread, t.threads, query, t.threads.c.project_id == project_id, *where)

    async def copy_thread(self, source_id: str, thread: Thread, through_message_id: str) -> None:
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
            conn.execute(_INSERT["threads"], {**_row(thread), "active_run_id": None})
            if copies:
                conn.execute(_INSERT["messages"], copies)

        await self.db.write(write)

    async def update_thread(self, thread: Thread) -> None:
        await self._execute(
            update(t.threads)
            .where(t.threads.c.id == thread.id)
            .values(meta=thread.metadata, tool_resources=thread.tool_resources)
        )

    async def delete_thread(self, thread_id: str, project_id: str) -> bool:
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

    async def delete_stale_threads(self, project_id: str, inactive_since: int, limit: int) -> dict[str, int]:
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
            conn.execute(_INSERT["messages"], _row(message))
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
            return await self.db.read(lambda conn: _entities(Message, conn.execute(_NEWEST, params).all()))
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

    # --- runs and steps --------------------------------------------------------------------

    async def insert_run(
        self, run: Run, messages: Sequence[Message], *, search: ThreadStorePlan | None = None
    ) -> ThreadStoreFiles | None:
        def write(conn: Connection) -> ThreadStoreFiles | None:
            _lock_thread(conn, run.thread_id, run.id)
            joined = None
            if messages:
                conn.execute(_INSERT["messages"], [_row(m) for m in messages])
                joined = _join_attachments(conn, run.thread_id, messages, search)
            conn.execute(_INSERT["runs"], _row(run))
            conn.execute(_INSERT["run_transitions"], _transition(run, frozenset(), time.time()))
            return joined

        return await self.db.write(write)

    async def get_run(self, thread_id: str, run_id: str, project_id: str) -> Run | None:
        params = {"b_id": run_id, "b_thread": thread_id, "b_project": project_id}

        def read(conn: Connection) -> Run | None:
            row = conn.execute(_GET_RUN_IN_PROJECT, params).first()
            return None if row is None else _entity(Run, row)

        return await self.db.read(read)

    async def get_response(self, response_id: str, project_id: str) -> Run | None:
        r, th = t.runs, t.threads
        mine = select(th.c.id).where(th.c.id == r.c.thread_id, th.c.project_id == project_id).exists()
        return await self._one(Run, r, r.c.id == response_id, r.c.response.is_not(None), mine)

    async def delete_response(self, response_id: str) -> None:
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

    async def record_response_events(self, response_id: str, events: Sequence[dict[str, Any]]) -> None:
        rows = [
            {"response_id": response_id, "sequence_number": e["sequence_number"], "event": e} for e in events
        ]
        if rows:
            await self.db.write(lambda conn: conn.execute(insert(t.response_events), rows))

    async def response_events(self, response_id: str, after: int, limit: int) -> list[dict[str, Any]]:
        e = t.response_events
        stmt = (
            select(e.c.event)
            .where(e.c.response_id == response_id, e.c.sequence_number > after)
            .order_by(e.c.sequence_number)
            .limit(limit)
        )
        return await self.db.read(lambda conn: list(conn.execute(stmt).scalars()))

    async def get_run_by_id(self, run_id: str) -> Run | None:
        return await self._get(Run, t.runs, run_id)

    async def list_runs(self, thread_id: str, query: ListQuery) -> Page[Run]:
        return await self._page(Run, t.runs, query, t.runs.c.thread_id == thread_id)

    async def update_run_metadata(self, run: Run) -> None:
        await self._execute(update(t.runs).where(t.runs.c.id == run.id).values(meta=run.metadata))

    async def commit(self, change: Change) -> bool:
        run = change.run
        params = {name: getattr(run, name) for name in _RUN_STATE_FIELDS}
        params["required_action"] = required_action_record(run.required_action)
        if change.owner is not None and run.status is RunStatus.IN_PROGRESS:
            # The holder's writes while it drives the run leave its lease alone: the lease is renewed
            # on its own schedule, and the run loop's copy of it is as old as the claim.
            del params["worker_id"], params["lease_expires_at"]
        params["b_id"] = run.id
        for number, status in enumerate(change.expect):
            params[f"b_expect{number}"] = status.value
        if change.owner is not None:
            params["b_owner"] = change.owner
        stmt = _guarded_update(len(change.expect), change.owner is not None)

        # A worker's writes within in_progress (steps, deltas saved) are not status changes.
        moved = change.expect != frozenset({run.status})

        def write(conn: Connection) -> bool:
            if not change.expect or conn.execute(stmt, params).rowcount == 0:
                return False
            if moved:
                conn.execute(_INSERT["run_transitions"], _transition(run, change.expect, time.time()))
            if change.discard_steps:
                conn.execute(delete(t.run_steps).where(t.run_steps.c.id.in_(change.discard_steps)))
            if change.discard_messages:
                conn.execute(delete(t.messages).where(t.messages.c.id.in_(change.discard_messages)))
            if change.new_steps:
                conn.execute(_INSERT["run_steps"], [_row(s) for s in change.new_steps])
            if change.steps:
                conn.execute(_UPDATE_STEP, [{**_row(s), "b_id": s.id} for s in change.steps])
            if change.new_messages:
                conn.execute(_INSERT["messages"], [_row(m) for m in change.new_messages])
            if change.messages:
                conn.execute(_UPDATE_MESSAGE, [{**_row(m), "b_id": m.id} for m in change.messages])
            if change.release_thread:
                conn.execute(
                    _RELEASE_THREAD, {"b_thread": run.thread_id, "b_run": run.id, "b_now": int(time.time())}
                )
            return True

        written = await self.db.write(write)
        if written and moved and self._on_run_moved is not None:
            self._on_run_moved(run)
        return written

    async def claim(
        self, worker_id: str, now: float, lease_seconds: float, limit: int, affinity_seconds: float = 0.0
    ) -> list[Run]:
        params = {
            "b_now": now,
            "b_worker": worker_id,
            "b_lease": now + lease_seconds,
            "b_started": int(now),
            "b_limit": limit,
            "b_open": now - affinity_seconds,
        }

        def write(conn: Connection) -> list[Run]:
            runs = _entities(Run, conn.execute(self._claim, params).all())
            if runs:
                # Stamped now, inside the transaction: `now` was read before it waited for the database,
                # and the change that queued the run may have been stamped after that.
                claimed, at = frozenset({RunStatus.QUEUED}), time.time()
                conn.execute(_INSERT["run_transitions"], [_transition(r, claimed, at) for r in runs])
            return sorted(runs, key=lambda run: run.created_at)

        return await self.db.write(write)

    async def hold_kernel(self, thread_id: str, worker_id: str, until: float) -> None:
        values = {"kernel_worker_id": worker_id, "kernel_expires_at": until}
        await self._execute(update(t.threads).where(t.threads.c.id == thread_id).values(**values))

    async def renew_leases(self, worker_id: str, run_ids: Sequence[str], until: float) -> list[str]:
        if not run_ids:
            return []
        params = {"b_ids": list(run_ids), "b_worker": worker_id, "b_until": until}
        return await self.db.write(lambda conn: list(conn.execute(_RENEW_RUNS, params).scalars()))

    async def expired_runs(self, now: int, limit: int) -> list[Run]:
        r = t.runs
        stmt = select(r).where(r.c.status.in_(_ACTIVE), r.c.expires_at < now).order_by(r.c.seq).limit(limit)
        return await self._all(Run, stmt)

    async def stalled_cancellations(self, now: float, limit: int) -> list[Run]:
        r = t.runs
        stmt = (
            select(r)
            .where(
                r.c.status == RunStatus.CANCELLING.value,
                or_(r.c.worker_id.is_(None), r.c.lease_expires_at < now),
            )
            .order_by(r.c.seq)
            .limit(limit)
        )
        return await self._all(Run, stmt)

    # --- projects and API keys ---------------------------------------------------------------

    async def insert_project(self, project: Project) -> None:
        await self._execute(insert(t.projects).values(dataclasses.asdict(project)))

    async def list_projects(self) -> list[Project]:
        rows = await self.db.read(
            lambda conn: conn.execute(select(t.projects).order_by(t.projects.c.seq)).all()
        )
        return [_project(r) for r in rows]

    async def get_project(self, project_id: str) -> Project | None:
        stmt = select(t.projects).where(t.projects.c.id == project_id)
        row = await self.db.read(lambda conn: conn.execute(stmt).first())
        return None if row is None else _project(row)

    async def insert_api_key(self, key: ApiKey, secret_hash: str) -> None:
        await self._execute(insert(t.api_keys).values(**dataclasses.asdict(key), secret_hash=secret_hash))

    async def list_api_keys(self, project_id: str) -> list[ApiKey]:
        k = t.api_keys
        stmt = select(k).where(k.c.project_id == project_id).order_by(k.c.seq)
        return [_api_key(r) for r in await self.db.read(lambda conn: conn.execute(stmt).all())]

    async def revoke_api_key(self, key_id: str, project_id: str | None, at: int) -> bool:
        k = t.api_keys
        where = [k.c.id == key_id, k.c.revoked_at.is_(None)]
        if project_id is not None:
            where.append(k.c.project_id == project_id)
        return await self._execute(update(k).where(*where).values(revoked_at=at)) > 0

    async def project_of_key(self, secret_hash: str) -> str | None:
        """The project of the live (unrevoked) key with this hash."""
        params = {"b_hash": secret_hash}
        return await self.db.read(lambda conn: conn.execute(_KEY_PROJECT, params).scalar())

    async def any_api_keys(self) -> bool:
        stmt = select(t.api_keys.c.id).limit(1)
        return await self.db.read(lambda conn: conn.execute(stmt).first() is not None)

    async def run_census(self, now: float) -> tuple[dict[str, int], int]:
        """How many runs are in each active status, and how many workers hold runs under live leases."""
        r = t.runs
        by_status = select(r.c.status, func.count()).where(r.c.status.in_(_ACTIVE)).group_by(r.c.status)
        holders = select(func.count(func.distinct(r.c.worker_id))).where(
            r.c.status == RunStatus.IN_PROGRESS.value, r.c.lease_expires_at >= now
        )

        def read(conn: Connection) -> tuple[dict[str, int], int]:
            counts = {str(status): int(n) for status, n in conn.execute(by_status).all()}
            return counts, int(conn.execute(holders).scalar() or 0)

        return await self.db.read(read)

    async def run_transitions(self, run_id: str) -> list[RunTransition]:
        rt = t.run_transitions
        stmt = select(rt).where(rt.c.run_id == run_id).order_by(rt.c.seq)
        rows = await self.db.read(lambda conn: conn.execute(stmt).all())
        return [RunTransition(r.run_id, RunStatus(r.to_status), r.at, r.cause, r.worker_id) for r in rows]

    async def get_step_by_id(self, step_id: str) -> RunStep | None:
        return await self._get(RunStep, t.run_steps, step_id)

    async def get_step(self, thread_id: str, run_id: str, step_id: str) -> RunStep | None:
        s = t.run_steps
        return await self._one(
            RunStep, s, s.c.id == step_id, s.c.run_id == run_id, s.c.thread_id == thread_id
        )

    async def list_steps(self, thread_id: str, run_id: str, query: ListQuery) -> Page[RunStep]:
        s = t.run_steps
        return await self._page(RunStep, s, query, s.c.run_id == run_id, s.c.thread_id == thread_id)

    async def run_steps(self, run_id: str) -> list[RunStep]:
        return await self.db.read(
            lambda conn: _entities(RunStep, conn.execute(_RUN_STEPS, {"b_run": run_id}).all())
        )

    # --- coordination ----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[bool]:
        if self.db.is_sqlite:
            # One SQLite file means one host; guarded transitions already make concurrent runs safe.
            yield True
            return
        key = zlib.crc32(name.encode())
        async with self.db.session_connection() as conn:
            got = bool((await conn.execute(select(func.pg_try_advisory_lock(key)))).scalar())
            try:
                yield got
            finally:
                if got:
                    await conn.execute(select(func.pg_advisory_unlock(key)))

    async def ping(self) -> None:
        await self.db.read(lambda conn: conn.execute(select(1)).scalar())
