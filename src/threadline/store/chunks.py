"""The chunks of files in vector stores, in the database, searched through an in-memory cache.

:class:`SqlChunkIndex` implements ``domain.ports.retrieval.ChunkIndex`` on SQLite and PostgreSQL alike.
Each store searched is loaded once into a ``retrieval.index.StoreIndex`` (its vectors as one numpy
matrix, its keyword postings as sorted arrays) and kept while the store is unchanged: before every
search one primary-key read fetches the store's revision, a counter that every write to its chunks,
by any process, raises in the same transaction. Texts are read back only for the chunks that make the results.

On PostgreSQL with pgvector (``store/pgvector.py``) the cosine ranking runs in the database on an
HNSW index instead, and the in-memory copy holds only the keyword postings.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Sequence

import numpy as np
from sqlalchemy import ColumnElement, Connection, Delete, delete, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from threadline.domain.ports.retrieval import IndexedChunk, Rankings, StoredChunk, Vector
from threadline.retrieval.index import KEYWORD_FLOOR, StoreIndex, merge, rescore
from threadline.store import pgvector
from threadline.store import tables as t
from threadline.store.database import Database

MAX_CACHED_STORES = 32
"""Stores kept in memory at once, least recently searched dropped first (100k chunks ≈ 0.33 GB)."""

Revision = int


class SqlChunkIndex:
    def __init__(
        self, db: Database, *, dense_in_database: bool = False, ef_search: int = pgvector.DEFAULT_EF_SEARCH
    ) -> None:
        """``dense_in_database``: rank by cosine with pgvector (``pgvector.enable`` must have succeeded),
        its HNSW scans visiting ``ef_search`` candidates."""
        self.db = db
        self.dense_in_database = dense_in_database
        self.ef_search = ef_search
        self._hnsw_lengths: set[int] = set()
        self._cache: OrderedDict[str, tuple[Revision, StoreIndex]] = OrderedDict()
        self._loading = asyncio.Lock()

    async def add(self, vector_store_id: str, file_id: str, chunks: Sequence[IndexedChunk]) -> None:
        rows = [
            {
                "vector_store_id": vector_store_id,
                "file_id": file_id,
                "ordinal": c.ordinal,
                "text": c.text,
                "token_count": c.token_count,
                "vector": c.vector.astype("<f4").tobytes(),
                "terms": c.terms.astype("<i4").tobytes(),
            }
            for c in chunks
        ]

        lengths = {len(c.vector) for c in chunks} - self._hnsw_lengths if self.dense_in_database else set()

        def write(conn: Connection) -> None:
            conn.execute(_delete(vector_store_id, file_id))
            if rows and self.dense_in_database:
                for dims in lengths:
                    pgvector.ensure_hnsw(conn, dims)
                inserted = insert(t.file_chunks).returning(t.file_chunks.c.seq, sort_by_parameter_order=True)
                keys = list(conn.execute(inserted, rows).scalars())
                pgvector.add_vectors(conn, vector_store_id, keys, [c.vector for c in chunks])
            elif rows:
                conn.execute(insert(t.file_chunks), rows)
            _bump(conn, vector_store_id)

        await self.db.write(write)
        self._hnsw_lengths |= lengths
        self._cache.pop(vector_store_id, None)

    async def delete(self, vector_store_id: str, file_id: str | None = None) -> int:
        def write(conn: Connection) -> int:
            count = conn.execute(_delete(vector_store_id, file_id)).rowcount
            # Raised, never reset, even for a whole store: a counter starting again could meet a
            # value some process has cached, for different chunks.
            _bump(conn, vector_store_id)
            return int(count)

        count = await self.db.write(write)
        self._cache.pop(vector_store_id, None)
        return count

    async def search(
        self,
        vector_store_ids: Sequence[str],
        query_vector: Awaitable[Vector],
        query_terms: Sequence[int],
        depth: int,
        query_cjk: bool = False,
    ) -> Rankings:
        stores = list(dict.fromkeys(vector_store_ids))
        indexes = [await self._index(store_id) for store_id in stores]
        # BM25 on one core while the query's embedding is computed on the other.
        keyword = await asyncio.to_thread(
            lambda: merge([index.keyword(query_terms, depth) for index in indexes], depth, KEYWORD_FLOOR)
        )
        vector = await query_vector
        if self.dense_in_database:
            stored = sum(index.size for index in indexes)
            hits = await self.db.read(
                lambda conn: pgvector.nearest(conn, stores, vector, depth, stored, self.ef_search)
            )
            dense = rescore(hits, np.concatenate([ix.keys[ix.cjk] for ix in indexes]), query_cjk)
        else:
            dense = await asyncio.to_thread(
                lambda: merge([index.dense(vector, depth, query_cjk) for index in indexes], depth)
            )
        keys = list(dict.fromkeys(dense + keyword))
        chunks = await self.db.read(lambda conn: _texts(conn, keys))
        # A chunk deleted since the index was loaded is dropped from the rankings.
        return Rankings([k for k in dense if k in chunks], [k for k in keyword if k in chunks], chunks)

    async def _index(self, vector_store_id: str) -> StoreIndex:
        current = await self.db.read(lambda conn: _revision(conn, vector_store_id))
        cached = self._cache.get(vector_store_id)
        if cached is not None and cached[0] == current:
            self._cache.move_to_end(vector_store_id)
            return cached[1]
        async with self._loading:
            cached = self._cache.get(vector_store_id)
            if cached is not None and cached[0] == current:
                return cached[1]  # loaded by a search that held the lock before this one
            with_vectors = not self.dense_in_database
            revision, rows = await self.db.read(
                lambda conn: (_revision(conn, vector_store_id), _rows(conn, vector_store_id, with_vectors))
            )
            index = await asyncio.to_thread(
                StoreIndex.build, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
            )
            self._cache[vector_store_id] = (revision, index)
            self._cache.move_to_end(vector_store_id)
            while len(self._cache) > MAX_CACHED_STORES:
                self._cache.popitem(last=False)
            return index


def _delete(vector_store_id: str, file_id: str | None) -> Delete:
    statement = delete(t.file_chunks).where(t.file_chunks.c.vector_store_id == vector_store_id)
    if file_id is not None:
        statement = statement.where(t.file_chunks.c.file_id == file_id)
    return statement


def _is_store(vector_store_id: str) -> ColumnElement[bool]:
    return t.file_chunk_revisions.c.vector_store_id == vector_store_id


def _revision(conn: Connection, vector_store_id: str) -> int:
    value = conn.execute(select(t.file_chunk_revisions.c.revision).where(_is_store(vector_store_id))).scalar()
    return int(value or 0)


def _bump(conn: Connection, vector_store_id: str) -> None:
    table = t.file_chunk_revisions
    upsert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = upsert(table).values(vector_store_id=vector_store_id, revision=1)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[table.c.vector_store_id], set_={"revision": table.c.revision + 1}
        )
    )


def _rows(conn: Connection, vector_store_id: str, with_vectors: bool) -> list[tuple[int, bytes, bytes]]:
    c = t.file_chunks.c
    columns = (c.seq, c.terms, c.vector) if with_vectors else (c.seq, c.terms)
    result = conn.execute(select(*columns).where(c.vector_store_id == vector_store_id).order_by(c.seq))
    return [(int(row[0]), bytes(row[2]) if with_vectors else b"", bytes(row[1])) for row in result]


def _texts(conn: Connection, keys: Sequence[int]) -> dict[int, StoredChunk]:
    if not keys:
        return {}
    c = t.file_chunks.c
    result = conn.execute(
        select(c.seq, c.vector_store_id, c.file_id, c.ordinal, c.text).where(c.seq.in_(keys))
    )
    return {
        int(seq): StoredChunk(store, file, int(ordinal), text) for seq, store, file, ordinal, text in result
    }


def drop_file_chunks(conn: Connection, vector_store_id: str, file_id: str) -> None:
    """Delete a file's chunks in a store inside the caller's transaction (a deleted file leaves
    every store with it); the raised revision makes every process reload that store."""
    if conn.execute(_delete(vector_store_id, file_id)).rowcount:
        _bump(conn, vector_store_id)
