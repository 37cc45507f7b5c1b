"""``SqlJobQueue``: the durable background job queue, in the ``jobs`` table of the main database.

Jobs are claimed as runs are (one statement, ``FOR UPDATE SKIP LOCKED`` on PostgreSQL), fairly
across projects (``_claim``), and held under a lease. Every later write is guarded on the holder, so a worker whose
lease lapsed and whose job was taken over cannot overwrite what the new holder does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, case, delete, func, insert, or_, select, update

from threadline.domain.entities import Job
from threadline.ids import new_id
from threadline.store import tables as t
from threadline.store.claims import renew_statement
from threadline.store.database import Database

_FIELDS = tuple(f.name for f in dataclasses.fields(Job))
_J = t.jobs


def _job(row: Row[Any]) -> Job:
    return Job(**{name: row._mapping[name] for name in _FIELDS})


def _claim(skip_locked: bool) -> Any:
    """Take due jobs fairly across projects: each job's turn is its place in its project's line
    (that project's running jobs first, then its queued ones oldest first), and the lowest turns go
    first, oldest first among equals. So a project with a hundred files queued takes one slot, then
    another project's one file is next, not its hundred-and-first."""
    due = and_(
        _J.c.status == "queued",
        _J.c.run_after <= bindparam("b_now"),
        _J.c.kind.in_(bindparam("b_kinds", expanding=True)),
    )
    project = _J.c.payload["project_id"].as_string()
    lined_up = and_(
        _J.c.kind.in_(bindparam("b_kinds", expanding=True)),
        or_(_J.c.status == "running", and_(_J.c.status == "queued", _J.c.run_after <= bindparam("b_now"))),
    )
    turns = (
        select(
            _J.c.id,
            _J.c.seq,
            _J.c.status,
            func.row_number()
            .over(
                partition_by=project,
                order_by=(case((_J.c.status == "running", 0), else_=1), _J.c.seq),
            )
            .label("turn"),
        )
        .where(lined_up)
        .subquery("turns")
    )
    fairest = (
        select(turns.c.id)
        .where(turns.c.status == "queued")
        .order_by(turns.c.turn, turns.c.seq)
        .limit(bindparam("b_limit"))
    )
    # Row locks cannot be taken in a query with a window function: lock the rows it picked.
    pick = select(_J.c.id).where(_J.c.id.in_(fairest))
    if skip_locked:
        pick = pick.with_for_update(skip_locked=True)
    picked = pick.cte("picked")
    values = {
        "status": "running",
        "worker_id": bindparam("b_worker"),
        "lease_expires_at": bindparam("b_lease"),
        "attempts": _J.c.attempts + 1,
    }
    return update(_J).where(_J.c.id == picked.c.id, due).values(**values).returning(*_J.c)


_RENEW = renew_statement(_J, "running")
_HELD = [_J.c.id == bindparam("b_id"), _J.c.worker_id == bindparam("b_worker"), _J.c.status == "running"]
_FINISH = (
    update(_J)
    .where(*_HELD)
    .values(status="succeeded", worker_id=None, lease_expires_at=None, finished_at=bindparam("b_now"))
)
_RETRY = (
    update(_J)
    .where(*_HELD)
    .values(
        status="queued",
        worker_id=None,
        lease_expires_at=None,
        run_after=bindparam("b_retry_at"),
        last_error=bindparam("b_error"),
    )
)
_FAIL = (
    update(_J)
    .where(*_HELD)
    .values(
        status="failed",
        worker_id=None,
        lease_expires_at=None,
        last_error=bindparam("b_error"),
        finished_at=bindparam("b_now"),
    )
)
_RELEASE = (
    update(_J)
    .where(*_HELD)
    .values(
        status="queued",
        worker_id=None,
        lease_expires_at=None,
        run_after=bindparam("b_now"),
        attempts=_J.c.attempts - 1,
    )
)
_out_of_attempts = _J.c.attempts >= _J.c.max_attempts
_REAP = (
    update(_J)
    .where(_J.c.status == "running", _J.c.lease_expires_at < bindparam("b_now"))
    .values(
        status=case((_out_of_attempts, "failed"), else_="queued"),
        finished_at=case((_out_of_attempts, bindparam("b_now")), else_=None),
        run_after=bindparam("b_now"),
        last_error="the worker running it stopped renewing its lease",
        worker_id=None,
        lease_expires_at=None,
    )
    .returning(*_J.c)
)


_CENSUS = select(_J.c.status, func.count()).group_by(_J.c.status)
_PURGE = delete(_J).where(_J.c.status.in_(["succeeded", "failed"]), _J.c.finished_at < bindparam("b_before"))


def insert_jobs(conn: Connection, jobs: Sequence[Job]) -> None:
    """Write jobs in the caller's transaction: the work they stand for and the jobs commit together."""
    if jobs:
        conn.execute(insert(_J), [dataclasses.asdict(job) for job in jobs])


class SqlJobQueue:
    def __init__(self, db: Database, *, max_attempts: int = 5) -> None:
        self.db = db
        self.max_attempts = max_attempts
        self._claim = _claim(skip_locked=not db.is_sqlite)
        self._enqueued: asyncio.Event | None = None

    @property
    def enqueued(self) -> asyncio.Event:
        """Set when this process enqueues a job, so its own worker need not wait for the next poll."""
        if self._enqueued is None:
            self._enqueued = asyncio.Event()
        return self._enqueued

    def new_job(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        max_attempts: int | None = None,
        run_after: float | None = None,
    ) -> Job:
        now = time.time()
        return Job(
            id=new_id("job"),
            kind=kind,
            payload=payload,
            created_at=now,
            max_attempts=self.max_attempts if max_attempts is None else max_attempts,
            run_after=now if run_after is None else run_after,
        )

    async def enqueue(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        max_attempts: int | None = None,
        run_after: float | None = None,
    ) -> Job:
        job = self.new_job(kind, payload, max_attempts=max_attempts, run_after=run_after)
        await self.db.write(lambda conn: insert_jobs(conn, [job]))
        self.enqueued.set()
        return job

    def wake(self) -> None:
        self.enqueued.set()

    async def job_census(self) -> dict[str, int]:
        """How many jobs are in each status (for metrics)."""
        return await self.db.read(
            lambda conn: {str(status): int(n) for status, n in conn.execute(_CENSUS).all()}
        )

    async def get_job(self, job_id: str) -> Job | None:
        def read(conn: Connection) -> Job | None:
            row = conn.execute(select(_J).where(_J.c.id == job_id)).first()
            return None if row is None else _job(row)

        return await self.db.read(read)

    async def claim_jobs(
        self, worker_id: str, kinds: Collection[str], now: float, lease_seconds: float, limit: int
    ) -> list[Job]:
        if not kinds or limit <= 0:
            return []
        params = {
            "b_now": now,
            "b_kinds": list(kinds),
            "b_worker": worker_id,
            "b_lease": now + lease_seconds,
            "b_limit": limit,
        }

        def write(conn: Connection) -> list[Job]:
            jobs = [_job(row) for row in conn.execute(self._claim, params).all()]
            return sorted(jobs, key=lambda job: job.created_at)

        return await self.db.write(write)

    async def renew_job_leases(self, worker_id: str, job_ids: Sequence[str], until: float) -> list[str]:
        if not job_ids:
            return []
        params = {"b_ids": list(job_ids), "b_worker": worker_id, "b_until": until}
        return await self.db.write(lambda conn: list(conn.execute(_RENEW, params).scalars()))

    async def _held(self, stmt: Any, params: dict[str, Any]) -> bool:
        return await self.db.write(lambda conn: conn.execute(stmt, params).rowcount > 0)

    async def finish_job(self, job_id: str, worker_id: str, now: float) -> bool:
        return await self._held(_FINISH, {"b_id": job_id, "b_worker": worker_id, "b_now": now})

    async def fail_job(self, job_id: str, worker_id: str, error: str, retry_at: float | None) -> bool:
        params: dict[str, Any] = {"b_id": job_id, "b_worker": worker_id, "b_error": error[:4000]}
        if retry_at is None:
            return await self._held(_FAIL, {**params, "b_now": time.time()})
        return await self._held(_RETRY, {**params, "b_retry_at": retry_at})

    async def release_job(self, job_id: str, worker_id: str, now: float) -> bool:
        return await self._held(_RELEASE, {"b_id": job_id, "b_worker": worker_id, "b_now": now})

    async def reap_jobs(self, now: float) -> list[Job]:
        return await self.db.write(lambda conn: [_job(row) for row in conn.execute(_REAP, {"b_now": now})])

    async def purge_jobs(self, finished_before: float) -> int:
        return await self.db.write(lambda conn: conn.execute(_PURGE, {"b_before": finished_before}).rowcount)
