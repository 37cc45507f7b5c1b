"""What the SQL stores share: entity ↔ row mapping, the statements several of them run, and ``Rows``,
the base class with the one-transaction helpers (``_get``, ``_one``, ``_all``, ``_page``, ``_execute``).

Each aggregate has its store (``assistants.py``, ``threads.py``, ``runs.py``, ``responses.py``,
``projects.py``); the writes that cross aggregates live here once: a run's history row (written by
the run's store and by create-and-run in the thread's), the thread lock (taken by a new message or a
new run), attaching a message's files to its thread, and deleting threads with everything under
them (threads, conversations and responses all do). The underscore names are the store package's
own, not the domain's.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, Row, Select, Table, bindparam, delete, insert, select, update

from threadline.domain.entities import (
    Assistant,
    ListQuery,
    Message,
    Page,
    Run,
    RunStep,
    Thread,
    ThreadStoreFiles,
    ThreadStorePlan,
)
from threadline.domain.files import attached_code_files, attached_search_files, with_code_files
from threadline.domain.ports.storage import ThreadLockedError
from threadline.domain.records import (
    content_from,
    content_record,
    required_action_from,
    required_action_record,
    response_from,
    response_record,
    step_details_from,
    step_details_record,
)
from threadline.domain.run_states import RunStatus, cause_of
from threadline.store import tables as t
from threadline.store.database import Database
from threadline.store.direct import execute
from threadline.store.vector_store_rows import join_thread_store

E = TypeVar("E", Assistant, Thread, Message, Run, RunStep)

_FIELDS: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in (Assistant, Thread, Message, Run, RunStep)
}


def _key(name: str) -> str:
    return "meta" if name == "metadata" else name


_KEYS: dict[type[Any], tuple[tuple[str, str], ...]] = {
    cls: tuple((name, _key(name)) for name in names) for cls, names in _FIELDS.items()
}
"""Each entity's fields with the column key each is stored under."""

_POSITIONS: dict[tuple[type[Any], tuple[str, ...]], tuple[tuple[str, int], ...]] = {}
"""For an entity and the columns a statement returns: each field read and the position of its column."""


def _positions(cls: type[Any], columns: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    plan = _POSITIONS.get((cls, columns))
    if plan is None:
        # A row names its columns (``metadata``); parameters use their keys (``meta``).
        position = {column: index for index, column in enumerate(columns)}
        plan = tuple(
            (name, position[name] if name in position else position[key])
            for name, key in _KEYS[cls]
            if name in position or key in position
        )
        _POSITIONS[(cls, columns)] = plan
    return plan


def _row(entity: Any) -> dict[str, Any]:
    """An entity as a row for ``insert``/``update`` (column keys, not column names)."""
    row = {key: getattr(entity, name) for name, key in _KEYS[type(entity)]}
    if isinstance(entity, RunStep):
        row["step_details"] = step_details_record(entity.step_details)
    elif isinstance(entity, Run):
        row["required_action"] = required_action_record(entity.required_action)
        row["response"] = response_record(entity.response)
    elif isinstance(entity, Message):
        row["content"] = content_record(entity.content)
    return row


def _entity(cls: type[E], row: Row[Any]) -> E:
    values = {name: row[index] for name, index in _positions(cls, row._fields)}
    if cls is Run:
        values["status"] = RunStatus(values["status"])
        values["required_action"] = required_action_from(values["required_action"])
        values["response"] = response_from(values["response"])
    elif cls is RunStep:
        values["step_details"] = step_details_from(values["step_details"])
    elif cls is Message:
        values["content"] = content_from(values["content"])
    return cls(**values)


def _entities(cls: type[E], rows: Sequence[Row[Any]]) -> list[E]:
    return [_entity(cls, row) for row in rows]


def _by_id(table: Table) -> Select[Any]:
    return select(table).where(table.c.id == bindparam("b_id"))


# The statements of a run's hot path, built once: building a statement costs more than running it.
_GET = {table.name: _by_id(table) for table in (t.assistants, t.threads, t.runs, t.run_steps)}
_LOCK_THREAD = (
    update(t.threads)
    .where(t.threads.c.id == bindparam("b_thread"), t.threads.c.active_run_id.is_(None))
    .values(active_run_id=bindparam("b_run"), last_active_at=bindparam("b_now"))
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
        execute(
            conn, _LOCK_THREAD, {"b_thread": thread_id, "b_run": run_id, "b_now": int(time.time())}
        ).rowcount
        == 0
    ):
        holder = conn.execute(select(t.threads.c.active_run_id).where(t.threads.c.id == thread_id)).scalar()
        raise ThreadLockedError(holder or "")


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


def _getter(cls: type[E], table: Table, object_id: str, *where: Any) -> Callable[[Connection], E | None]:
    """A read of the object with this id (and, optionally, more conditions checked on it), for
    :meth:`Rows._get` or for a store that makes several reads in one go."""
    stmt = _GET[table.name]

    def read(conn: Connection) -> E | None:
        row = execute(conn, stmt, {"b_id": object_id}).first()
        if row is None or not all(row._mapping[key] == value for key, value in where):
            return None
        return _entity(cls, row)

    return read


class Rows:
    """A store over ``db``: the helpers that run one statement, or one read, in its own transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def _get(self, cls: type[E], table: Table, object_id: str, *where: Any) -> E | None:
        """The object with this id (and, optionally, more conditions checked on it)."""
        return await self.db.read(_getter(cls, table, object_id, *where))

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
