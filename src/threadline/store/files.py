"""``SqlFileStore``: the descriptions of uploaded files (the ``files`` table), for ``FileService``.

The bytes are in the blob store (``store/blobs.py``); deleting a file here also takes its id out of
every assistant's and thread's tool resources, in the same transaction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from typing import Any

from sqlalchemy import Connection, Row, String, Table, cast, delete, insert, select, update

from threadline.domain.entities import File, ListQuery, Page
from threadline.domain.files import without_file
from threadline.store import tables as t
from threadline.store.database import Database
from threadline.store.rows import page_query
from threadline.store.vector_stores import remove_file_everywhere

_FIELDS = tuple(f.name for f in dataclasses.fields(File))


def _file(row: Row[Any]) -> File:
    return File(**{name: row._mapping[name] for name in _FIELDS})


def _detach(conn: Connection, table: Table, file_id: str) -> None:
    """Take ``file_id`` out of the tool resources of every row of ``table`` that lists it."""
    # The JSON's text holds the id in quotes wherever it is listed: one portable scan for the few
    # rows to rewrite (deleting a file is rare; a JSON index per database is not worth it).
    mentions = cast(table.c.tool_resources, String).like(f'%"{file_id}"%')
    for row in conn.execute(select(table.c.id, table.c.tool_resources).where(mentions)).all():
        resources = without_file(row.tool_resources, file_id)
        if resources is not None:
            conn.execute(update(table).where(table.c.id == row.id).values(tool_resources=resources))


class SqlFileStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert_file(self, file: File) -> None:
        await self.db.write(lambda conn: conn.execute(insert(t.files), dataclasses.asdict(file)))

    async def get_file(self, file_id: str, project_id: str) -> File | None:
        f = t.files

        def read(conn: Connection) -> File | None:
            row = conn.execute(select(f).where(f.c.id == file_id, f.c.project_id == project_id)).first()
            return None if row is None else _file(row)

        return await self.db.read(read)

    async def list_files(self, query: ListQuery, purpose: str | None, project_id: str) -> Page[File]:
        where = [t.files.c.project_id == project_id]
        if purpose is not None:
            where.append(t.files.c.purpose == purpose)

        def read(conn: Connection) -> Page[File]:
            stmt, flipped = page_query(conn, t.files, query, where)
            rows = conn.execute(stmt).all()
            page = [_file(row) for row in rows[: query.limit]]
            if flipped:
                page.reverse()
            return Page(items=page, has_more=len(rows) > query.limit)

        return await self.db.read(read)

    async def existing_file_ids(self, file_ids: Collection[str], project_id: str) -> set[str]:
        f = t.files
        stmt = select(f.c.id).where(f.c.id.in_(list(file_ids)), f.c.project_id == project_id)
        return await self.db.read(lambda conn: set(conn.execute(stmt).scalars()))

    async def delete_file(self, file_id: str, project_id: str) -> bool:
        f = t.files

        def write(conn: Connection) -> bool:
            if conn.execute(delete(f).where(f.c.id == file_id, f.c.project_id == project_id)).rowcount == 0:
                return False
            _detach(conn, t.assistants, file_id)
            _detach(conn, t.threads, file_id)
            remove_file_everywhere(conn, file_id)
            return True

        return await self.db.write(write)
