"""``SqlRunStore``: runs and their steps, the guarded transitions between their statuses, claims,
leases, expiry, the census of active runs and each run's status history.

Every run status change is ``transition(Change)``: one conditional UPDATE guarded on the statuses the
caller observed, plus the history row, step and message writes that belong with it, in one
transaction. Workers take runs with ``claim_next`` (one ``UPDATE … RETURNING``, ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL) and keep them by renewing their leases.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection, Update, and_, bindparam, delete, exists, func, or_, select, update

from threadline.domain.entities import (
    Assistant,
    ListQuery,
    Message,
    Page,
    Run,
    RunStep,
    RunTransition,
    Thread,
    ThreadStoreFiles,
    ThreadStorePlan,
)
from threadline.domain.ports.storage import Change
from threadline.domain.records import required_action_record
from threadline.domain.run_states import ACTIVE, RunStatus
from threadline.store import tables as t
from threadline.store.claims import claim_statement, renew_statement
from threadline.store.database import Database
from threadline.store.direct import execute
from threadline.store.rows import (
    _INSERT,
    Rows,
    _entities,
    _entity,
    _getter,
    _in_project,
    _join_attachments,
    _lock_thread,
    _row,
    _transition,
)

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

# A run, only if its thread is in the project: the SDK's polls read this, so it is one query.
_GET_RUN_IN_PROJECT = select(t.runs).where(
    t.runs.c.id == bindparam("b_id"),
    t.runs.c.thread_id == bindparam("b_thread"),
    select(t.threads.c.id)
    .where(t.threads.c.id == bindparam("b_thread"), t.threads.c.project_id == bindparam("b_project"))
    .exists(),
)
_RUN_STEPS = select(t.run_steps).where(t.run_steps.c.run_id == bindparam("b_run")).order_by(t.run_steps.c.seq)


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


class SqlRunStore(Rows):
    """The domain's ``RunRepository``."""

    def __init__(self, db: Database, on_run_moved: Callable[[Run], None] | None = None) -> None:
        super().__init__(db)
        self._claim = _claim_statement(skip_locked=not db.is_sqlite)
        self._on_run_moved = on_run_moved
        """Told of each run whose status change committed (metrics)."""

    async def insert(
        self, run: Run, messages: Sequence[Message], *, search: ThreadStorePlan | None = None
    ) -> ThreadStoreFiles | None:
        def write(conn: Connection) -> ThreadStoreFiles | None:
            _lock_thread(conn, run.thread_id, run.id)
            joined = None
            if messages:
                execute(conn, _INSERT["messages"], [_row(m) for m in messages])
                joined = _join_attachments(conn, run.thread_id, messages, search)
            execute(conn, _INSERT["runs"], _row(run))
            execute(conn, _INSERT["run_transitions"], _transition(run, frozenset(), time.time()))
            return joined

        return await self.db.write(write)

    async def get(self, thread_id: str, run_id: str, project_id: str) -> Run | None:
        params = {"b_id": run_id, "b_thread": thread_id, "b_project": project_id}

        def read(conn: Connection) -> Run | None:
            row = execute(conn, _GET_RUN_IN_PROJECT, params).first()
            return None if row is None else _entity(Run, row)

        return await self.db.read(read)

    async def get_by_id(self, run_id: str) -> Run | None:
        return await self._get(Run, t.runs, run_id)

    async def parents(
        self, assistant_id: str, thread_id: str, project_id: str
    ) -> tuple[Assistant | None, Thread | None]:
        where = _in_project(project_id)
        assistant = _getter(Assistant, t.assistants, assistant_id, *where)
        thread = _getter(Thread, t.threads, thread_id, *where)
        return await self.db.read(lambda conn: (assistant(conn), thread(conn)))

    async def list_runs(self, thread_id: str, query: ListQuery) -> Page[Run]:
        return await self._page(Run, t.runs, query, t.runs.c.thread_id == thread_id)

    async def update_metadata(self, run: Run) -> None:
        await self._execute(update(t.runs).where(t.runs.c.id == run.id).values(meta=run.metadata))

    async def transition(self, change: Change) -> bool:
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
            if not change.expect or execute(conn, stmt, params).rowcount == 0:
                return False
            if moved:
                execute(conn, _INSERT["run_transitions"], _transition(run, change.expect, time.time()))
            if change.discard_steps:
                conn.execute(delete(t.run_steps).where(t.run_steps.c.id.in_(change.discard_steps)))
            if change.discard_messages:
                conn.execute(delete(t.messages).where(t.messages.c.id.in_(change.discard_messages)))
            if change.new_steps:
                execute(conn, _INSERT["run_steps"], [_row(s) for s in change.new_steps])
            if change.steps:
                execute(conn, _UPDATE_STEP, [{**_row(s), "b_id": s.id} for s in change.steps])
            if change.new_messages:
                execute(conn, _INSERT["messages"], [_row(m) for m in change.new_messages])
            if change.messages:
                execute(conn, _UPDATE_MESSAGE, [{**_row(m), "b_id": m.id} for m in change.messages])
            if change.release_thread:
                execute(
                    conn,
                    _RELEASE_THREAD,
                    {"b_thread": run.thread_id, "b_run": run.id, "b_now": int(time.time())},
                )
            return True

        written = await self.db.write(write)
        if written and moved and self._on_run_moved is not None:
            self._on_run_moved(run)
        return written

    async def claim_next(
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
            runs = _entities(Run, execute(conn, self._claim, params).all())
            if runs:
                # Stamped now, inside the transaction: `now` was read before it waited for the database,
                # and the change that queued the run may have been stamped after that.
                claimed, at = frozenset({RunStatus.QUEUED}), time.time()
                execute(conn, _INSERT["run_transitions"], [_transition(r, claimed, at) for r in runs])
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

    async def find_expired(self, now: int, limit: int) -> list[Run]:
        r = t.runs
        stmt = select(r).where(r.c.status.in_(_ACTIVE), r.c.expires_at < now).order_by(r.c.seq).limit(limit)
        return await self._all(Run, stmt)

    async def find_stalled(self, now: float, limit: int) -> list[Run]:
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

    async def census(self, now: float) -> tuple[dict[str, int], int]:
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

    async def history(self, run_id: str) -> list[RunTransition]:
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

    async def steps(self, run_id: str) -> list[RunStep]:
        return await self.db.read(
            lambda conn: _entities(RunStep, conn.execute(_RUN_STEPS, {"b_run": run_id}).all())
        )
