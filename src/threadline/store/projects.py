"""``SqlProjectStore``: projects and their API keys (kept as hashes; a revoked key stays, marked)."""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import Row, insert, select, update

from threadline.domain.entities import ApiKey, Project
from threadline.store import tables as t
from threadline.store.rows import Rows


def _project(row: Row[Any]) -> Project:
    return Project(row.id, row.name, row.created_at, row.thread_ttl_days)


def _api_key(row: Row[Any]) -> ApiKey:
    return ApiKey(row.id, row.project_id, row.name, row.prefix, row.created_at, row.revoked_at)


class SqlProjectStore(Rows):
    """The domain's ``ProjectRepository``."""

    async def insert(self, project: Project) -> None:
        await self._execute(insert(t.projects).values(dataclasses.asdict(project)))

    async def list_projects(self) -> list[Project]:
        rows = await self.db.read(
            lambda conn: conn.execute(select(t.projects).order_by(t.projects.c.seq)).all()
        )
        return [_project(r) for r in rows]

    async def get(self, project_id: str) -> Project | None:
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
        k = t.api_keys
        stmt = select(k.c.project_id).where(k.c.secret_hash == secret_hash, k.c.revoked_at.is_(None))
        return await self.db.read(lambda conn: conn.execute(stmt).scalar())

    async def any_api_keys(self) -> bool:
        stmt = select(t.api_keys.c.id).limit(1)
        return await self.db.read(lambda conn: conn.execute(stmt).first() is not None)
