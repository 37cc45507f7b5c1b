"""File search on PostgreSQL: cosine ranking in memory beside pgvector's HNSW index, in one run.

``python -m bench.pgvector`` starts its own PostgreSQL with pgvector (the ``pgserver`` package, a
Unix socket in a temporary directory) and, for each case, fills one database with a store of N chunks
(unit vectors of 384 dimensions, as e5-small's, written through ``SqlChunkIndex`` with the extension
on, so the HNSW index is built as ingestion builds it) and a second store of 100 chunks. Vectors are
*clustered* (1,000 topics, each chunk near its topic's centre, as real embeddings gather) or *random*
(no structure at all: the hardest case for HNSW's recall). Then the same queries (vectors of the same
kind, already embedded: the embedding model is not measured here) are ranked by both paths over the
same rows:

- **in memory**: ``SqlChunkIndex(db)``, the store's vectors loaded into one matrix per process;
- **pgvector**: ``SqlChunkIndex(db, dense_in_database=True)``, ``ORDER BY <=>`` on the HNSW index.

Timed per query: the chunk index's whole search (cosine ranking of the 100 best, reading their texts;
no keyword terms). Recall@100 compares pgvector's 100 with the exact 100. The small store is searched
alone too (the HNSW scan filters by store, so there the exact ranking takes over). ``ANALYZE`` runs
after filling, as autovacuum would.

It prints a markdown table and replaces its own section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import text

from bench.common import log, machine, markdown_table, pct, publish, today
from bench.retrieval import ready
from threadline.domain.ports.retrieval import IndexedChunk, Vector
from threadline.store import pgvector
from threadline.store.chunks import SqlChunkIndex
from threadline.store.database import Database, migrate

SECTION = "## File search on PostgreSQL: in memory beside pgvector (HNSW)"
DIM = 384
CHUNKS_PER_FILE = 1_000
SMALL_STORE = 100
DEPTH = 100


TOPICS = 1_000
SPREAD = 0.06
"""Noise per dimension around a topic's centre: neighbours then have cosines of 0.6 to 0.8, as
e5's passages on one subject do."""


def normalised(vectors: Vector) -> Vector:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def unit_vectors(rng: np.random.Generator, count: int, kind: str) -> Vector:
    if kind == "random":
        return normalised(rng.standard_normal((count, DIM)).astype(np.float32))
    centres = normalised(np.random.default_rng(0).standard_normal((TOPICS, DIM)).astype(np.float32))
    picked = centres[rng.integers(0, TOPICS, count)]
    return normalised(picked + SPREAD * rng.standard_normal(picked.shape).astype(np.float32))


def file_chunks(rng: np.random.Generator, count: int, kind: str) -> list[IndexedChunk]:
    terms = np.zeros((2, 0), dtype=np.int32)
    vectors = unit_vectors(rng, count, kind)
    return [IndexedChunk(i, f"chunk {i}", 1, v, terms) for i, v in enumerate(vectors)]


async def timed(
    index: SqlChunkIndex, stores: list[str], queries: Vector
) -> tuple[list[float], list[list[int]]]:
    for q in queries[:2]:  # warm-up: loads the in-memory copy, warms the database's caches
        await index.search(stores, ready(q), [], DEPTH)
    times, rankings = [], []
    for q in queries[2:]:
        t = time.perf_counter()
        rankings.append((await index.search(stores, ready(q), [], DEPTH)).dense)
        times.append((time.perf_counter() - t) * 1000)
    return times, rankings


async def measure(url: str, kind: str, size: int, queries: int) -> dict[str, Any]:
    db = Database(url)
    assert await pgvector.enable(db) is None
    rng = np.random.default_rng(size)
    writer = SqlChunkIndex(db, dense_in_database=True)
    t0 = time.perf_counter()
    for f in range(size // CHUNKS_PER_FILE):
        await writer.add("vs_big", f"file-{f}", file_chunks(rng, CHUNKS_PER_FILE, kind))
    await writer.add("vs_small", "file-small", file_chunks(rng, SMALL_STORE, kind))
    filled = time.perf_counter() - t0
    await db.write(lambda conn: conn.execute(text("ANALYZE file_chunk_vectors")))
    log(f"{size:,} {kind} chunks written in {filled:.0f} s")

    probes = unit_vectors(np.random.default_rng(7), queries + 2, kind)
    in_memory, in_db = SqlChunkIndex(db), SqlChunkIndex(db, dense_in_database=True)
    exact_ms, exact = await timed(in_memory, ["vs_big"], probes)
    hnsw_ms, approx = await timed(in_db, ["vs_big"], probes)
    small_exact_ms, small_exact = await timed(in_memory, ["vs_small"], probes)
    small_db_ms, small_db = await timed(in_db, ["vs_small"], probes)
    matrix_mb = in_memory._cache["vs_big"][1].vectors.nbytes / 1e6
    await db.dispose()
    return {
        "kind": kind,
        "size": size,
        "fill_s": filled,
        "memory_p50": statistics.median(exact_ms),
        "memory_p95": pct(exact_ms, 0.95),
        "hnsw_p50": statistics.median(hnsw_ms),
        "hnsw_p95": pct(hnsw_ms, 0.95),
        "recall": statistics.mean(len(set(a) & set(e)) / len(e) for a, e in zip(approx, exact, strict=True)),
        "top10": statistics.mean(a[:10] == e[:10] for a, e in zip(approx, exact, strict=True)),
        "small_memory_p50": statistics.median(small_exact_ms),
        "small_db_p50": statistics.median(small_db_ms),
        "small_same": all(a == e for a, e in zip(small_db, small_exact, strict=True)),
        "matrix_mb": matrix_mb,
    }


async def run(args: argparse.Namespace) -> str:
    import pgserver  # type: ignore[import-untyped]

    began = machine()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        server = pgserver.get_server(tmp, cleanup_mode="stop")
        try:
            version = server.psql(
                "SELECT default_version FROM pg_available_extensions WHERE name = 'vector';"
            )
            for kind, size in args.cases:
                name = f"bench_{kind}_{size}"
                server.psql(f"CREATE DATABASE {name};")
                url = f"postgresql+asyncpg://postgres@/{name}?host={server.pgdata}"
                await asyncio.to_thread(migrate, url)
                log(f"{size:,} {kind} chunks...")
                results.append(await measure(url, kind, size, args.queries))
        finally:
            server.cleanup()
    pgvector_version = version.split()[2] if len(version.split()) > 2 else "?"
    rows = [
        (
            r["kind"],
            f"{r['size']:,}",
            f"{r['fill_s']:.0f}",
            f"{r['memory_p50']:.1f} ({r['memory_p95']:.1f})",
            f"{r['hnsw_p50']:.1f} ({r['hnsw_p95']:.1f})",
            f"**{r['hnsw_p50'] / r['memory_p50']:.2f}×**",
            f"{r['recall']:.3f}",
            f"{r['top10']:.0%}",
            f"{r['small_memory_p50']:.1f} / {r['small_db_p50']:.1f}"
            + ("" if r["small_same"] else " (differ)"),
            f"{r['matrix_mb']:.0f} / 0",
        )
        for r in results
    ]
    table = markdown_table(
        (
            "vectors",
            "chunks",
            "fill with HNSW, s",
            "in memory p50 (p95), ms",
            "pgvector p50 (p95), ms",
            "pgvector ÷ in memory",
            "recall@100",
            "same top 10",
            f"{SMALL_STORE}-chunk store beside it, p50 ms (memory / pgvector)",
            "vectors held per process, MB (memory / pgvector)",
        ),
        rows,
    )
    return f"""Measured {today()} on {began}; `python -m bench.pgvector` (PostgreSQL with pgvector {pgvector_version}
from the `pgserver` package, on a Unix socket; {args.queries} queries after two warm-ups, one at a time).

The same rows ranked both ways: the store's vectors loaded into each process as one matrix (exact), and
`ORDER BY embedding <=> query` on pgvector's HNSW index (`ef_search` {pgvector.DEFAULT_EF_SEARCH}, the default,
for the 100 best). Times are the chunk index's search without the query's embedding, which is the same
for both (add it, from the section above, for the end-to-end figure). Clustered vectors are near real
embeddings; random ones are the hardest case for HNSW's recall:

{table}

In memory wins on latency while a store fits (one BLAS product over the matrix), and pgvector's figure
includes a round trip to the database; what pgvector buys is memory and start-up: no process holds or
loads a store's vectors (the in-memory path loads them on a store's first search and after every
change), and the index is shared by every API process and worker. The gap narrows as stores grow (the
matrix product grows with the store, the HNSW scan barely). HNSW is approximate: where the vectors
have no structure at all, the default `ef_search` misses some of the exact 100 best;
`THREADLINE_PGVECTOR_EF_SEARCH` (up to 1,000) buys recall with time. The small store's searches show
the fallback: its chunks are few among the HNSW scan's candidates, so they are ranked exactly, with the
same results as in memory.
"""


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--cases",
        type=lambda s: [(c.split(":")[0], int(c.split(":")[1])) for c in s.split(",")],
        default=[("clustered", 10_000), ("random", 10_000), ("clustered", 100_000)],
        help="kind:chunks,... (kind: clustered or random)",
    )
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md")
    args = parser.parse_args(argv)
    began = time.monotonic()
    body = asyncio.run(run(args))
    publish([(SECTION, body)], write=not args.no_write, began=began)


if __name__ == "__main__":
    main()
