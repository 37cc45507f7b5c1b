"""File search: ingestion rate, search latency at 10k and 100k chunks, memory per 100k chunks.

``python -m bench.retrieval`` runs in one process on a fresh SQLite database, through the real
engine (``RetrievalEngine`` over ``SqlChunkIndex``):

1. **Ingestion.** Text files of mixed English and Chinese are ingested with the ``auto`` strategy
   (800/400 tokens) and the embedded multilingual-e5-small at ``--threads`` threads; the time is
   split into parsing and chunking, embedding, and writing.
2. **Search.** A store of N chunks is filled directly (embedding 100,000 real chunks would take
   hours on two cores): random unit vectors, and keyword terms drawn from a Zipf distribution over a
   50,000-word vocabulary, 800 per chunk, as in real text. Each query is a few of those words: it is
   embedded for real by e5 and its terms hit real posting lists. Timed: the first search (loading the
   store into memory), then ``--queries`` searches end to end (query embedding, cosine, BM25,
   fusion, reading the results' texts), and the query embedding alone.
3. **Memory.** The in-memory index's arrays, and the process's resident memory before and after
   loading, at each size.

It prints markdown tables and replaces its own section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bench.common import log, machine, markdown_table, pct, publish, today
from threadline.domain.ports.retrieval import IndexedChunk, RankingOptions, Vector
from threadline.providers.embeddings import E5Embedder
from threadline.providers.tokenizers import tiktoken_encoding
from threadline.retrieval.engine import RetrievalEngine
from threadline.retrieval.terms import query_term_ids, term_id
from threadline.store.chunks import SqlChunkIndex
from threadline.store.database import Database, migrate

SECTION = "## File search: ingestion, search latency, memory"
VOCABULARY = 50_000
TOKENS_PER_CHUNK = 800
DIM = 384
CHUNKS_PER_FILE = 1_000
GOAL_P50_MS = 50.0

_SENTENCES = (
    "The warehouse in the northern district ships orders every morning before eight.",
    "Refunds are issued within thirty days when the item is unused and in its box.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen.",
    "仓库每天早上八点之前发货，周末和节假日除外。",
    "商品未使用且包装完好的情况下，三十天内可以申请退款。",
    "光合作用利用阳光、水和二氧化碳制造糖分并释放氧气。",
)


def rss_bytes() -> int:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * 4096


def document(rng: random.Random, sentences: int) -> bytes:
    return "\n".join(rng.choice(_SENTENCES) + f" ({i})" for i in range(sentences)).encode()


async def ready(vector: Vector) -> Vector:
    """An embedding already made, as the index's search takes it (to time the ranking alone)."""
    return vector


async def ingestion(url: str, embedder: E5Embedder, files: int) -> tuple[str, dict[str, float]]:
    db = Database(url)
    engine = RetrievalEngine(SqlChunkIndex(db), embedder, tiktoken_encoding("cl100k_base"))
    rng = random.Random(1)
    texts = [document(rng, 120) for _ in range(files)]
    # The stages timed apart: parse + chunk, embed, write (what ingest does, step by step).
    from threadline.retrieval.chunking import AUTO, chunk_text
    from threadline.retrieval.engine import prepare_file
    from threadline.retrieval.parsing import ParseLimits, parse

    t0 = time.perf_counter()
    chunked = [chunk_text(parse("doc.txt", data), AUTO, engine.codec) for data in texts]
    t1 = time.perf_counter()
    # As an ingestion process does: a copy of the model per core.
    embedders = [embedder, *(E5Embedder(1) for _ in range(len(os.sched_getaffinity(0)) - 1))]
    prepared = [
        prepare_file("doc.txt", data, AUTO, engine.codec, embedders, ParseLimits()).chunks for data in texts
    ]
    t2 = time.perf_counter()
    for i, indexed in enumerate(prepared):
        await engine.index.add("vs_ingest", f"file-{i}", indexed)
    t3 = time.perf_counter()
    await db.dispose()
    chunks = sum(len(c) for c in chunked)
    tokens = sum(c.token_count for cs in chunked for c in cs)
    figures = {
        "files": files,
        "chunks": chunks,
        "tokens": tokens,
        "parse_chunk_s": t1 - t0,
        "embed_s": t2 - t1,
        "write_s": t3 - t2,
    }
    total = t3 - t0
    rows = [
        ("parse + chunk", f"{t1 - t0:.2f}", f"{chunks / (t1 - t0):,.0f}"),
        (
            "parse, chunk, embed (e5, a copy of the model per core)",
            f"{t2 - t1:.1f}",
            f"{chunks / (t2 - t1):.2f}",
        ),
        ("write (chunk table)", f"{t3 - t2:.2f}", f"{chunks / (t3 - t2):,.0f}"),
        ("**all**", f"{total:.1f}", f"**{chunks / total:.2f}**"),
    ]
    table = markdown_table(("stage", "seconds", "chunks/s"), rows)
    return table, figures


def synthetic_chunks(rng: np.random.Generator, start: int, count: int) -> list[IndexedChunk]:
    vectors = rng.standard_normal((count, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    words = np.minimum(rng.zipf(1.1, (count, TOKENS_PER_CHUNK)), VOCABULARY) - 1
    out = []
    for i in range(count):
        ids, counts = np.unique(words[i], return_counts=True)
        term_ids = TERM_IDS[ids]
        text = " ".join(f"w{w}" for w in words[i][:120])
        out.append(
            IndexedChunk(
                start + i, text, TOKENS_PER_CHUNK, vectors[i], np.array([term_ids, counts], dtype=np.int32)
            )
        )
    return out


TERM_IDS = np.array([term_id(f"w{w}") for w in range(VOCABULARY)], dtype=np.int32)


async def search(url: str, embedder: E5Embedder, size: int, queries: int) -> dict[str, float]:
    db = Database(url)
    index = SqlChunkIndex(db)
    engine = RetrievalEngine(index, embedder, tiktoken_encoding("cl100k_base"))
    rng = np.random.default_rng(size)
    t0 = time.perf_counter()
    for f in range(size // CHUNKS_PER_FILE):
        await index.add("vs_bench", f"file-{f}", synthetic_chunks(rng, 0, CHUNKS_PER_FILE))
    filled = time.perf_counter() - t0
    log(f"{size} chunks written in {filled:.0f} s")

    # Queries: a few words of the vocabulary, common and rare alike, as a question has.
    qrng = random.Random(size)
    texts = [
        " ".join(f"w{min(int(qrng.paretovariate(0.3)), VOCABULARY - 1)}" for _ in range(qrng.randint(3, 8)))
        for _ in range(queries + 3)
    ]
    before = rss_bytes()
    t0 = time.perf_counter()
    await engine.search(["vs_bench"], texts[0])
    load = time.perf_counter() - t0
    after = rss_bytes()
    store_index = index._cache["vs_bench"][1]
    for text in texts[1:3]:  # warm-up
        await engine.search(["vs_bench"], text)
    total: list[float] = []
    embed: list[float] = []
    ranking: list[float] = []
    for text in texts[3:]:
        t = time.perf_counter()
        results = await engine.search(["vs_bench"], text, RankingOptions(max_num_results=20))
        total.append((time.perf_counter() - t) * 1000)
        assert len(results) == 20
        t = time.perf_counter()
        vector = embedder.embed_query(text)
        embed.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        await index.search(["vs_bench"], ready(vector), query_term_ids(text), 100)
        ranking.append((time.perf_counter() - t) * 1000)
    await db.dispose()
    return {
        "size": size,
        "fill_s": filled,
        "load_s": load,
        "p50": statistics.median(total),
        "p95": pct(total, 0.95),
        "embed_p50": statistics.median(embed),
        "rank_p50": statistics.median(ranking),
        "index_mb": store_index.nbytes / 1e6,
        "postings": float(len(store_index.post_docs)),
        "rss_mb": (after - before) / 1e6,
    }


async def run(args: argparse.Namespace) -> str:
    began = machine()
    embedder = E5Embedder(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'ingest.db'}"
        await asyncio.to_thread(migrate, url)
        log("ingesting...")
        ingest_table, ingest = await ingestion(url, embedder, args.files)
        results = []
        for size in args.sizes:
            url = f"sqlite+aiosqlite:///{Path(tmp) / f'search-{size}.db'}"
            await asyncio.to_thread(migrate, url)
            log(f"search at {size} chunks...")
            results.append(await search(url, embedder, size, args.queries))
    rows = [
        (
            f"{r['size']:,.0f}",
            f"{r['postings'] / 1e6:.1f} M",
            f"{r['load_s']:.1f}",
            f"**{r['p50']:.1f}**",
            f"{r['p95']:.1f}",
            f"{r['embed_p50']:.1f}",
            f"{r['rank_p50']:.1f}",
            f"{r['index_mb']:.0f}",
            f"{r['rss_mb']:.0f}",
        )
        for r in results
    ]
    search_table = markdown_table(
        (
            "chunks",
            "postings",
            "first search (load), s",
            "search p50, ms",
            "p95, ms",
            "query embedding p50, ms",
            "the rest (index, texts) p50, ms",
            "index arrays, MB",
            "resident memory added, MB",
        ),
        rows,
    )
    biggest = results[-1]
    verdict = "met" if biggest["p50"] <= GOAL_P50_MS else "missed"
    return f"""Measured {today()} on {began}; `python -m bench.retrieval` (embedding threads: {args.threads}).

**Ingestion** of {ingest["files"]:.0f} text files (English and Chinese, {ingest["tokens"]:,.0f} tokens in
{ingest["chunks"]:.0f} chunks of at most 800 tokens with 400 of overlap), SQLite:

{ingest_table}

Embedding is nearly all of it (a copy of the model per core, as an ingestion process does;
`bench.retrieval_quality` compares it with the release before). A server
(`THREADLINE_EMBEDDINGS_BASE_URL`, e.g. a GPU) is the lever beyond the cores.

**Search**, end to end per query (e5 query embedding, cosine over the store's matrix, BM25, rank
fusion, reading the 20 results' texts), {args.queries} queries after two warm-ups, one at a time. The
stores are filled with random unit vectors and Zipf-distributed terms ({TOKENS_PER_CHUNK} per chunk over
{VOCABULARY:,} words), since embedding 100,000 real chunks here would take hours; the query embedding is
real. The first search of a store loads it from the database into memory (later searches reuse it
until the store changes):

{search_table}

Goal p50 ≤ {GOAL_P50_MS:.0f} ms at {biggest["size"]:,.0f} chunks, query embedding included: {verdict}. The
search proper (cosine, BM25, fusion, reading the texts: the "rest" column) is one share; the query's
embedding (e5 on {args.threads} thread) is the other, and the one that follows the machine's load (the
load average above: other work shared these two cores). Memory per 100k chunks: the index arrays (154 MB
of vectors, 384 float32 each, and the postings at 6 bytes each); resident memory grows more while a
store loads (the rows read and the sort's temporaries).
"""


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--files", type=int, default=3, help="files ingested in the ingestion part")
    parser.add_argument("--threads", type=int, default=1, help="THREADLINE_EMBEDDINGS_THREADS")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md")
    args = parser.parse_args(argv)
    began = time.monotonic()
    body = asyncio.run(run(args))
    publish([(SECTION, body)], write=not args.no_write, began=began)


if __name__ == "__main__":
    main()
