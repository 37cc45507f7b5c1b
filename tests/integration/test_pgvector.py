"""File search on PostgreSQL with pgvector: the HNSW path gives the in-memory path's rankings.

The machine's PostgreSQL may not have the extension, so these tests start their own server from
the ``pgserver`` package (PostgreSQL with pgvector, on a Unix socket in a temporary directory).
They run in the PostgreSQL pass of the suite.
"""

from __future__ import annotations

import asyncio
import io
import zlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
from sqlalchemy import text

from tests.conftest import BACKEND
from tests.retrieval_corpus import TOPICS
from tests.support import ThreadlineServer
from threadline.config import Settings
from threadline.domain.ports.retrieval import IndexedChunk, Vector
from threadline.errors import ServiceUnavailableError
from threadline.providers.embeddings import E5Embedder
from threadline.providers.tokenizers import tiktoken_encoding
from threadline.retrieval.engine import RetrievalEngine
from threadline.retrieval.terms import query_term_ids, term_counts
from threadline.runtime import Runtime
from threadline.store import pgvector
from threadline.store.chunks import SqlChunkIndex
from threadline.store.database import Database, migrate

pytestmark = pytest.mark.skipif(BACKEND != "postgres", reason="runs in the PostgreSQL pass")

DIMS = 384


@pytest.fixture(scope="module")
def pg_with_vector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    pgserver = pytest.importorskip("pgserver", reason="pgserver has no wheel for this platform")
    server = pgserver.get_server(tmp_path_factory.mktemp("pgvector"), cleanup_mode="stop")
    yield server
    server.cleanup()


_databases = iter(range(1, 1_000_000))


@pytest.fixture
def url(pg_with_vector: Any) -> str:
    """A new, migrated database on the pgvector server."""
    name = f"threadline_pgvector_{next(_databases)}"
    pg_with_vector.psql(f"CREATE DATABASE {name};")
    url = f"postgresql+asyncpg://postgres@/{name}?host={pg_with_vector.pgdata}"
    migrate(url)
    return url


@pytest.fixture(scope="module")
def e5() -> E5Embedder:
    return E5Embedder(threads=1)


def with_db(url: str, body: Callable[[Database], Awaitable[None]]) -> None:
    async def main() -> None:
        db = Database(url)
        try:
            await body(db)
        finally:
            await db.dispose()

    asyncio.run(main())


def seeded(label: str, dims: int = DIMS) -> Vector:
    """A unit vector fixed by ``label`` (the embedding model is not what these tests are about)."""
    v = np.random.default_rng(zlib.crc32(label.encode())).standard_normal(dims).astype(np.float32)
    return v / np.linalg.norm(v)


def chunks(labels: Sequence[str], dims: int = DIMS) -> list[IndexedChunk]:
    return [
        IndexedChunk(i, label, 1, seeded(label, dims), term_counts(label)) for i, label in enumerate(labels)
    ]


async def dense(index: SqlChunkIndex, stores: Sequence[str], query: Vector, depth: int = 100) -> list[int]:
    async def ready() -> Vector:
        return query

    return (await index.search(stores, ready(), query_term_ids("x"), depth)).dense


async def count(db: Database, sql: str) -> int:
    return int(await db.read(lambda conn: conn.execute(text(sql)).scalar_one()))


def test_the_bilingual_corpus_ranks_the_same_with_and_without_pgvector(url: str, e5: E5Embedder) -> None:
    codec = tiktoken_encoding("cl100k_base")

    async def body(db: Database) -> None:
        assert await pgvector.enable(db) is None
        in_db = RetrievalEngine(SqlChunkIndex(db, dense_in_database=True), e5, codec)
        in_memory = RetrievalEngine(SqlChunkIndex(db), e5, codec)
        for topic, (english, chinese, _, _) in TOPICS.items():
            await in_db.ingest("vs_corpus", f"file-{topic}-en", f"{topic}.txt", english.encode())
            await in_db.ingest("vs_corpus", f"file-{topic}-zh", f"{topic}-zh.txt", chinese.encode())
        assert await count(db, "SELECT count(*) FROM file_chunk_vectors") == 2 * len(TOPICS)

        for topic, (_, _, question_en, question_zh) in TOPICS.items():
            for question in (question_en, question_zh):
                got = await in_db.search(["vs_corpus"], question)
                expected = await in_memory.search(["vs_corpus"], question)
                assert [(r.file_id, r.ordinal) for r in got] == [(r.file_id, r.ordinal) for r in expected]
                assert [r.score for r in got] == pytest.approx([r.score for r in expected])
                assert got[0].file_id.startswith(f"file-{topic}-"), question

    with_db(url, body)


def test_the_hnsw_index_serves_the_ranking(url: str) -> None:
    async def body(db: Database) -> None:
        assert await pgvector.enable(db) is None
        index = SqlChunkIndex(db, dense_in_database=True)
        await index.add("vs_a", "file-a", chunks([f"a{i}" for i in range(300)]))
        query = pgvector.literal(seeded("q"))

        def plan(conn: Any) -> str:
            conn.execute(text("ANALYZE file_chunk_vectors"))
            rows = conn.execute(
                text(
                    f"EXPLAIN SELECT seq FROM file_chunk_vectors WHERE dims = {DIMS} AND vector_store_id IN ('vs_a') "
                    f"ORDER BY embedding::vector({DIMS}) <=> CAST(:q AS vector({DIMS})) LIMIT 10"
                ),
                {"q": query},
            )
            return "\n".join(r[0] for r in rows)

        assert f"ix_file_chunk_vectors_hnsw_{DIMS}" in await db.read(plan)
        indexes = await db.read(
            lambda conn: conn.execute(
                text("SELECT indexdef FROM pg_indexes WHERE indexname = :n"),
                {"n": f"ix_file_chunk_vectors_hnsw_{DIMS}"},
            ).scalar_one()
        )
        assert "hnsw" in indexes and "vector_cosine_ops" in indexes

    with_db(url, body)


def test_a_small_store_beside_a_big_one_gets_all_its_chunks_in_exact_order(url: str) -> None:
    async def body(db: Database) -> None:
        assert await pgvector.enable(db) is None
        index = SqlChunkIndex(db, dense_in_database=True)
        in_memory = SqlChunkIndex(db)
        await index.add("vs_big", "file-big", chunks([f"big{i}" for i in range(3000)]))
        await index.add("vs_small", "file-small", chunks([f"small{i}" for i in range(7)]))
        for probe in ("p1", "p2", "p3"):
            query = seeded(probe)
            small = await dense(index, ["vs_small"], query)
            assert len(small) == 7  # the HNSW scan's candidates are nearly all big ones: exact fallback
            assert small == await dense(in_memory, ["vs_small"], query)
            both = await dense(index, ["vs_big", "vs_small"], query, depth=100)
            exact = await dense(in_memory, ["vs_big", "vs_small"], query, depth=100)
            assert len(both) == 100
            assert len(set(both) & set(exact)) >= 95  # approximate, but close
            assert both[:10] == exact[:10]

    with_db(url, body)


def test_vectors_written_before_the_extension_are_copied_in(url: str) -> None:
    async def body(db: Database) -> None:
        before = SqlChunkIndex(db)
        await before.add("vs_old", "file-old", chunks([f"old{i}" for i in range(1200)]))
        await before.add("vs_old", "file-two", chunks(["two0", "two1"]))
        assert await pgvector.enable(db) is None
        assert await count(db, "SELECT count(*) FROM file_chunk_vectors") == 1202
        assert await pgvector.enable(db) is None  # a second process starting: nothing to do
        assert await count(db, "SELECT count(*) FROM file_chunk_vectors") == 1202
        after = SqlChunkIndex(db, dense_in_database=True)
        query = seeded("two1")
        ranked = await dense(after, ["vs_old"], query)
        assert ranked[:10] == (await dense(before, ["vs_old"], query))[:10]

        # Deleting a file (or a whole store) takes its vectors with it.
        await after.delete("vs_old", "file-two")
        assert await count(db, "SELECT count(*) FROM file_chunk_vectors") == 1200
        assert ranked[0] not in await dense(after, ["vs_old"], query)
        await after.delete("vs_old")
        assert await count(db, "SELECT count(*) FROM file_chunk_vectors") == 0

    with_db(url, body)


def test_a_query_from_another_embedding_model_is_refused_as_in_memory(url: str) -> None:
    async def body(db: Database) -> None:
        assert await pgvector.enable(db) is None
        index = SqlChunkIndex(db, dense_in_database=True)
        await index.add("vs_a", "file-a", chunks(["a0", "a1"]))
        for ranking in (index, SqlChunkIndex(db)):
            with pytest.raises(ValueError, match="384 dimensions and the query 8"):
                await dense(ranking, ["vs_a"], seeded("q", 8))

    with_db(url, body)


def test_pgvector_on_refuses_to_start_where_the_extension_is_missing(tmp_path: Path) -> None:
    from tests.support import create_postgres_database, drop_postgres_database

    async def opened(settings: Settings) -> None:
        runtime = await Runtime.open(settings)
        await runtime.aclose()

    machine = create_postgres_database()  # the machine's PostgreSQL, which has no pgvector here
    try:
        migrate(machine)
        has_vector = asyncio.run(_has_vector_extension(machine))
        settings = Settings(data_dir=tmp_path, database_url=machine, pgvector="on")
        if has_vector:
            asyncio.run(opened(settings))
        else:
            with pytest.raises(
                ServiceUnavailableError, match="THREADLINE_PGVECTOR=on, but the server has no"
            ):
                asyncio.run(opened(settings))
        asyncio.run(opened(settings.replace(pgvector="auto")))  # auto: in memory, no complaint
    finally:
        drop_postgres_database(machine)
    with pytest.raises(ServiceUnavailableError, match="pgvector needs PostgreSQL"):
        asyncio.run(opened(Settings(data_dir=tmp_path, pgvector="on")))


async def _has_vector_extension(url: str) -> bool:
    db = Database(url)
    try:
        found = await db.read(
            lambda conn: conn.execute(
                text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
            ).first()
        )
        return found is not None
    finally:
        await db.dispose()


def test_the_sdk_quickstart_on_pgvector(url: str, make_server: Callable[..., ThreadlineServer]) -> None:
    server = make_server(database_url=url)
    with openai.OpenAI(base_url=server.url, api_key="test-key", max_retries=0) as client:
        store = client.vector_stores.create(name="pgvector")
        for topic in ("tides", "refund", "great_wall"):
            english, chinese, _, _ = TOPICS[topic]
            for suffix, body in (("en", english), ("zh", chinese)):
                upload = (f"{topic}-{suffix}.txt", io.BytesIO(body.encode()))
                done = client.vector_stores.files.upload_and_poll(vector_store_id=store.id, file=upload)
                assert done.status == "completed", done.last_error
        page = client.vector_stores.search(store.id, query=TOPICS["refund"][3])
        assert page.data[0].filename.startswith("refund-")

    async def stored(db: Database) -> None:
        assert await count(db, "SELECT count(*) FROM file_chunk_vectors") == 6

    with_db(url, stored)
