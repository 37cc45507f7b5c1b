"""Claiming queued rows and renewing leases: the statements runs and background jobs share.

A worker takes work with one atomic ``UPDATE … RETURNING`` over the rows a CTE picks (``FOR UPDATE
SKIP LOCKED`` on PostgreSQL, so workers never wait on each other or take the same row), and keeps
it by renewing a lease that only its own id can extend.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import ColumnElement, Table, bindparam, select, update


def claim_statement(
    table: Table, claimable: ColumnElement[bool], values: Mapping[str, Any], *, skip_locked: bool
) -> Any:
    """Take the oldest ``claimable`` rows, up to ``b_limit``, setting ``values``; returns them."""
    pick = select(table.c.id).where(claimable).order_by(table.c.seq).limit(bindparam("b_limit"))
    if skip_locked:
        pick = pick.with_for_update(skip_locked=True)
    # A CTE, not ``id IN (subquery)``: PostgreSQL may run an IN-subquery more than once, and with
    # SKIP LOCKED each run can pick other rows, so a worker could take more rows than it asked for.
    picked = pick.cte("picked")
    return update(table).where(table.c.id == picked.c.id, claimable).values(**values).returning(*table.c)


def renew_statement(table: Table, held_status: str) -> Any:
    """Extend to ``b_until`` the leases ``b_worker`` still holds among ``b_ids``; returns their ids."""
    return (
        update(table)
        .where(
            table.c.id.in_(bindparam("b_ids", expanding=True)),
            table.c.worker_id == bindparam("b_worker"),
            table.c.status == held_status,
        )
        .values(lease_expires_at=bindparam("b_until"))
        .returning(table.c.id)
    )
