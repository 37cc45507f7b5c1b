"""``SqlVectorStoreRepository``: vector stores, their files and file batches, for ``VectorStoreService``.

A store's and a batch's ``file_counts`` (and the store's ``usage_bytes``) are one grouped read of
the files' rows; every change of a file's status is a conditional update from ``in_progress``.
The chunks themselves are in ``file_chunks`` (``store/chunks.py``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import Connection, Row, and_, delete, func, insert, select, update

from threadline.domain.entities import (
    FileBatch,
    FileCounts,
    Job,
    ListQuery,
    Page,
    VectorStore,
    VectorStoreFile,
)
from threadline.store import tables as t
from threadline.store.chunks import drop_file_chunks
from threadline.store.database import Database
from threadline.store.jobs import insert_jobs
from threadline.store.rows import page_query
from threadline.store.vector_store_rows import file_values, store_values

_S, _F, _B = t.vector_stores, t.vector_store_files, t.vector_store_file_batches


def _counts(conn: Connection, *where: Any) -> tuple[FileCounts, int]:
    """The files' counts by status, and the bytes of those indexed."""
    rows = conn.execute(
        select(_F.c.status, func.count(), func.coalesce(func.sum(_F.c.usage_bytes), 0))
        .where(*where)
        .group_by(_F.c.status)
    ).all()
    by_status = {row[0]: int(row[1]) for row in rows}
    usage = sum(int(row[2]) for row in rows if row[0] == "completed")
    return FileCounts(
        by_status.get("in_progress", 0),
        by_status.get("completed", 0),
        by_status.get("failed", 0),
        by_status.get("cancelled", 0),
    ), usage


def _store(conn: Connection, row: Row[Any]) -> VectorStore:
    counts, usage = _counts(conn, _F.c.vector_store_id == row.id)
    return VectorStore(
        id=row.id,
        project_id=row.project_id,
        created_at=row.created_at,
        name=row.name,
        metadata=row.meta,
        expires_after=row.expires_after,
        expires_at=row.expires_at,
        last_active_at=row.last_active_at,
        file_counts=counts,
        usage_bytes=usage,
    )


PROGRESS = "progress"
"""The key of ``chunking_strategy``'s JSON that holds an indexing file's progress, ``[done, total]``
(kept there rather than in a column of its own; it never leaves this module)."""


def _file(row: Row[Any]) -> VectorStoreFile:
    strategy = dict(row.chunking_strategy)
    progress = strategy.pop(PROGRESS, None)
    return VectorStoreFile(
        id=row.id,
        vector_store_id=row.vector_store_id,
        project_id=row.project_id,
        created_at=row.created_at,
        status=row.status,
        chunking_strategy=strategy,
        progress=(int(progress[0]), int(progress[1])) if progress and row.status == "in_progress" else None,
        attributes=row.attributes,
        batch_id=row.batch_id,
        usage_bytes=row.usage_bytes,
        last_error=row.last_error,
    )


def _in_store(store_id: str, file_id: str) -> list[Any]:
    return [_F.c.vector_store_id == store_id, _F.c.id == file_id]


class SqlVectorStoreRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert_store(self, store: VectorStore) -> None:
        values = store_values(store)
        await self.db.write(lambda conn: conn.execute(insert(_S).values(**values)))

    async def get_store(self, store_id: str, project_id: str) -> VectorStore | None:
        def read(conn: Connection) -> VectorStore | None:
            row = conn.execute(select(_S).where(_S.c.id == store_id, _S.c.project_id == project_id)).first()
            return None if row is None else _store(conn, row)

        return await self.db.read(read)

    async def list_stores(self, query: ListQuery, project_id: str) -> Page[VectorStore]:
        def read(conn: Connection) -> Page[VectorStore]:
            stmt, flipped = page_query(conn, _S, query, [_S.c.project_id == project_id])
            rows = conn.execute(stmt).all()
            page = [_store(conn, row) for row in rows[: query.limit]]
            if flipped:
                page.reverse()
            return Page(items=page, has_more=len(rows) > query.limit)

        return await self.db.read(read)

    async def update_store(self, store: VectorStore) -> None:
        stmt = (
            update(_S)
            .where(_S.c.id == store.id)
            .values(
                name=store.name,
                meta=store.metadata,
                expires_after=store.expires_after,
                expires_at=store.expires_at,
                last_active_at=store.last_active_at,
            )
        )
        await self.db.write(lambda conn: conn.execute(stmt))

    async def delete_store(self, store_id: str, project_id: str) -> bool:
        def write(conn: Connection) -> bool:
            gone = conn.execute(delete(_S).where(_S.c.id == store_id, _S.c.project_id == project_id))
            if gone.rowcount == 0:
                return False
            conn.execute(delete(_F).where(_F.c.vector_store_id == store_id))
            conn.execute(delete(_B).where(_B.c.vector_store_id == store_id))
            return True

        return await self.db.write(write)

    async def existing_store_ids(self, store_ids: Collection[str], project_id: str) -> set[str]:
        stmt = select(_S.c.id).where(_S.c.id.in_(list(store_ids)), _S.c.project_id == project_id)
        return await self.db.read(lambda conn: set(conn.execute(stmt).scalars()))

    async def add_files(
        self, files: Sequence[VectorStoreFile], batch: FileBatch | None, jobs: Sequence[Job]
    ) -> None:
        rows = [file_values(f) for f in files]

        def write(conn: Connection) -> None:
            if batch is not None:
                conn.execute(
                    insert(_B).values(
                        id=batch.id,
                        vector_store_id=batch.vector_store_id,
                        project_id=batch.project_id,
                        created_at=batch.created_at,
                        cancelled=False,
                    )
                )
            for f in files:
                # Adding a file again re-indexes it (its old row and status are replaced).
                conn.execute(delete(_F).where(*_in_store(f.vector_store_id, f.id)))
            if rows:
                conn.execute(insert(_F), rows)
            insert_jobs(conn, jobs)

        await self.db.write(write)

    async def get_file(self, store_id: str, file_id: str, project_id: str) -> VectorStoreFile | None:
        stmt = select(_F).where(*_in_store(store_id, file_id), _F.c.project_id == project_id)

        def read(conn: Connection) -> VectorStoreFile | None:
            row = conn.execute(stmt).first()
            return None if row is None else _file(row)

        return await self.db.read(read)

    async def list_files(
        self, store_id: str, query: ListQuery, status: str | None, batch_id: str | None
    ) -> Page[VectorStoreFile]:
        where = [_F.c.vector_store_id == store_id]
        if status is not None:
            where.append(_F.c.status == status)
        if batch_id is not None:
            where.append(_F.c.batch_id == batch_id)

        def read(conn: Connection) -> Page[VectorStoreFile]:
            stmt, flipped = page_query(conn, _F, query, where, scope=[_F.c.vector_store_id == store_id])
            rows = conn.execute(stmt).all()
            page = [_file(row) for row in rows[: query.limit]]
            if flipped:
                page.reverse()
            return Page(items=page, has_more=len(rows) > query.limit)

        return await self.db.read(read)

    async def files_by_id(self, store_id: str, file_ids: Collection[str]) -> list[VectorStoreFile]:
        stmt = select(_F).where(_F.c.vector_store_id == store_id, _F.c.id.in_(list(file_ids)))
        return await self.db.read(lambda conn: [_file(row) for row in conn.execute(stmt).all()])

    async def delete_file(self, store_id: str, file_id: str, project_id: str) -> bool:
        stmt = delete(_F).where(*_in_store(store_id, file_id), _F.c.project_id == project_id)
        return await self.db.write(lambda conn: conn.execute(stmt).rowcount > 0)

    async def update_attributes(
        self, store_id: str, file_id: str, project_id: str, attributes: dict[str, Any] | None
    ) -> bool:
        stmt = (
            update(_F)
            .where(*_in_store(store_id, file_id), _F.c.project_id == project_id)
            .values(attributes=attributes)
        )
        return await self.db.write(lambda conn: conn.execute(stmt).rowcount > 0)

    async def chunk_texts(self, store_id: str, file_id: str) -> list[str]:
        c = t.file_chunks.c
        stmt = select(c.text).where(c.vector_store_id == store_id, c.file_id == file_id).order_by(c.ordinal)
        return await self.db.read(lambda conn: [str(text) for text in conn.execute(stmt).scalars()])

    async def finish_file(
        self, store_id: str, file_id: str, status: str, usage_bytes: int, last_error: dict[str, str] | None
    ) -> bool:
        stmt = (
            update(_F)
            .where(*_in_store(store_id, file_id), _F.c.status == "in_progress")
            .values(status=status, usage_bytes=usage_bytes, last_error=last_error)
        )
        return await self.db.write(lambda conn: conn.execute(stmt).rowcount > 0)

    async def file_progress(
        self, store_id: str, file_id: str, chunking_strategy: dict[str, Any], done: int, total: int
    ) -> None:
        stmt = (
            update(_F)
            .where(*_in_store(store_id, file_id), _F.c.status == "in_progress")
            .values(chunking_strategy={**chunking_strategy, PROGRESS: [done, total]})
        )
        await self.db.write(lambda conn: conn.execute(stmt))

    async def get_batch(self, store_id: str, batch_id: str, project_id: str) -> FileBatch | None:
        def read(conn: Connection) -> FileBatch | None:
            row = conn.execute(
                select(_B).where(
                    _B.c.id == batch_id, _B.c.vector_store_id == store_id, _B.c.project_id == project_id
                )
            ).first()
            if row is None:
                return None
            counts, _ = _counts(conn, and_(_F.c.vector_store_id == store_id, _F.c.batch_id == batch_id))
            return FileBatch(
                row.id, row.vector_store_id, row.project_id, row.created_at, row.cancelled, counts
            )

        return await self.db.read(read)

    async def cancel_batch(self, store_id: str, batch_id: str) -> None:
        def write(conn: Connection) -> None:
            conn.execute(update(_B).where(_B.c.id == batch_id).values(cancelled=True))
            conn.execute(
                update(_F)
                .where(
                    _F.c.vector_store_id == store_id, _F.c.batch_id == batch_id, _F.c.status == "in_progress"
                )
                .values(status="cancelled")
            )

        await self.db.write(write)


def remove_file_everywhere(conn: Connection, file_id: str) -> list[str]:
    """Take a deleted file out of every vector store holding it; returns those stores' ids.

    Called by ``SqlFileStore.delete_file`` in its transaction: rows and chunks go together.
    """
    store_ids = list(conn.execute(select(_F.c.vector_store_id).where(_F.c.id == file_id)).scalars())
    if store_ids:
        conn.execute(delete(_F).where(_F.c.id == file_id))
    for store_id in store_ids:
        drop_file_chunks(conn, store_id, file_id)
    return store_ids
