"""Ingesting files into vector stores and searching them: parse, chunk, embed, index; embed the
query, rank by cosine and by BM25 over all the stores searched at once, fuse.

The engine implements the domain's ``Retrieval`` port. It is given its own ports (``ChunkIndex``,
``Embedder``, optionally a ``ChunkPreparer``) and a token codec. Ingestion's parse, chunk and embed (``prepare_file``) run in the preparer when there is
one (the server's bounded child processes, ``workers/ingestion.py``), else on a worker thread; the
embedder here then serves only queries, so a search never waits behind another file's ingestion.
It is meant to be called from the file ingestion job and from the ``file_search`` tool.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from threadline.domain.ports.retrieval import (
    ChunkIndex,
    ChunkingStrategy,
    ChunkPreparer,
    Embedder,
    IndexedChunk,
    IngestResult,
    PreparedFile,
    Progress,
    RankingOptions,
    SearchResult,
    Vector,
)
from threadline.retrieval.chunking import AUTO, Chunk, Pieces, TokenCodec, split_text
from threadline.retrieval.parsing import ParseLimits, parse
from threadline.retrieval.ranking import fuse
from threadline.retrieval.terms import is_cjk, query_term_ids, term_counts

EMBED_BATCH = 4
"""Chunks embedded per call: small, so that progress is reported often and parallel embedders
share a file's last batches evenly."""
MIN_DEPTH = 100
"""Candidates taken from each ranking before fusion: enough that a chunk ranked well by one method
and moderately by the other is still seen by both."""


PASSAGES = ("pieces", "chunks")
"""How a file's chunks are embedded (``THREADLINE_INGEST_PASSAGES``), see :func:`embedding_plan`."""


@dataclass(frozen=True, slots=True)
class EmbeddingPlan:
    """What to embed for a file's chunks: ``texts``, and for each chunk the texts (by index) its
    vector is the normalised weighted mean of, with their weights."""

    texts: list[str]
    parts: list[list[tuple[int, float]]]


def pools_windows(embedder: Embedder) -> bool:
    """Whether ``embedder`` reads a long passage as separate windows whose vectors it averages by
    their tokens (e5's engine), so that a chunk embedded as separate pieces is the same kind of
    vector as the chunk embedded whole."""
    return bool(getattr(embedder, "pools_windows", False))


def embedding_plan(
    chunks: Sequence[Chunk],
    pieces: Pieces,
    passages: str,
    embedder: Embedder,
) -> EmbeddingPlan:
    """``pieces``: each piece of the file (between two consecutive chunk edges) embedded once, and
    each chunk the token-weighted mean of its pieces (with 800/400 every token is in two chunks:
    half the work of embedding whole chunks), where the embedder averages windows anyway
    (:func:`pools_windows`) and there is more than one chunk; else (or ``chunks``) each chunk whole."""
    if passages != "pieces" or len(chunks) < 2 or not pools_windows(embedder):
        return EmbeddingPlan([c.text for c in chunks], [[(i, 1.0)] for i in range(len(chunks))])
    texts: list[str] = []
    index: dict[int, int] = {}  # piece -> its text's index; whitespace-only pieces are skipped
    for i, piece in enumerate(pieces.texts):
        if piece.strip():
            index[i] = len(texts)
            texts.append(piece.strip())
    parts: list[list[tuple[int, float]]] = []
    for chunk, span in zip(chunks, pieces.spans, strict=True):
        mine = [(index[i], float(pieces.tokens[i])) for i in span if i in index]
        if not mine:  # only whitespace and split characters: the chunk's own text
            mine = [(len(texts), 1.0)]
            texts.append(chunk.text)
        parts.append(mine)
    return EmbeddingPlan(texts, parts)


def combine(vectors: Vector, parts: Sequence[tuple[int, float]]) -> Vector:
    """The normalised weighted mean of ``vectors``' rows ``parts`` names (one part: that row)."""
    if len(parts) == 1:
        row: Vector = vectors[parts[0][0]]
        return row
    rows = vectors[[i for i, _ in parts]]
    weights = np.asarray([w for _, w in parts], dtype=np.float32)
    mean = weights @ rows
    norm = float(np.linalg.norm(mean))
    return (mean / (norm if norm > 0 else 1.0)).astype(np.float32)


def prepare_file(
    filename: str,
    data: bytes,
    strategy: ChunkingStrategy,
    codec: TokenCodec,
    embedders: Sequence[Embedder],
    limits: ParseLimits,
    lock: threading.Lock | None = None,
    progress: Progress | None = None,
    passages: str = "pieces",
) -> PreparedFile:
    """Parse, chunk and embed a file (blocking); raises ``FileContentError`` when it cannot be read.
    ``passages`` says what is embedded (:func:`embedding_plan`). Batches are embedded by
    ``embedders`` in parallel, one thread each (a copy of the model each: one single-threaded copy
    per core uses the cores better than one copy on several threads)."""
    text = parse(filename, data, limits)
    chunks, pieces = split_text(text, strategy, codec)
    plan = embedding_plan(chunks, pieces, passages, embedders[0])
    vectors = embed_plan(plan, embedders, lock, progress)
    out = [
        IndexedChunk(
            chunk.ordinal, chunk.text, chunk.token_count, combine(vectors, parts), term_counts(chunk.text)
        )
        for chunk, parts in zip(chunks, plan.parts, strict=True)
    ]
    return PreparedFile(out, sum(c.token_count for c in chunks), len(text))


def embed_plan(
    plan: EmbeddingPlan,
    embedders: Sequence[Embedder],
    lock: threading.Lock | None = None,
    progress: Progress | None = None,
) -> Vector:
    """``plan.texts`` embedded, one row each, in batches shared by ``embedders``; ``progress`` is
    told the chunks whose texts are all embedded, of all chunks."""
    batches = [
        range(start, min(start + EMBED_BATCH, len(plan.texts)))
        for start in range(0, len(plan.texts), EMBED_BATCH)
    ]
    rows: list[Vector | None] = [None] * len(plan.texts)
    users: list[list[int]] = [[] for _ in plan.texts]  # text -> the chunks waiting for it
    for chunk, parts in enumerate(plan.parts):
        for i, _ in parts:
            users[i].append(chunk)
    waiting = [len(parts) for parts in plan.parts]
    done = 0
    counting = threading.Lock()
    if progress is not None:
        progress(0, len(plan.parts))

    def embed(embedder: Embedder, batch: range) -> None:
        nonlocal done
        if lock is None:
            matrix = embedder.embed_passages([plan.texts[i] for i in batch])
        else:
            with lock:
                matrix = embedder.embed_passages([plan.texts[i] for i in batch])
        with counting:
            for i, row in zip(batch, matrix, strict=True):
                rows[i] = row
                for chunk in users[i]:
                    waiting[chunk] -= 1
                    done += waiting[chunk] == 0
            if progress is not None:
                progress(done, len(plan.parts))

    if len(embedders) == 1 or len(batches) <= 1:
        for batch in batches:
            embed(embedders[0], batch)
    else:
        queue = iter(batches)
        taking = threading.Lock()

        def worker(embedder: Embedder) -> None:
            while True:
                with taking:
                    batch = next(queue, None)
                if batch is None:
                    return
                embed(embedder, batch)

        with ThreadPoolExecutor(len(embedders)) as pool:
            for future in [pool.submit(worker, e) for e in embedders]:
                future.result()
    if not rows:
        return np.zeros((0, 0), np.float32)
    return np.stack([row for row in rows if row is not None])


class RetrievalEngine:
    def __init__(
        self,
        index: ChunkIndex,
        embedder: Embedder,
        codec: TokenCodec,
        limits: ParseLimits | None = None,
        preparer: ChunkPreparer | None = None,
    ) -> None:
        self.index = index
        self.embedder = embedder
        self.codec = codec
        self.limits = limits or ParseLimits()
        self.preparer = preparer
        # One embedding at a time in this process: the model's threads are the budget
        # (THREADLINE_EMBEDDINGS_THREADS). With a preparer, only queries take it.
        self._embedding = threading.Lock()

    async def ingest(
        self,
        vector_store_id: str,
        file_id: str,
        filename: str,
        data: bytes,
        strategy: ChunkingStrategy = AUTO,
        key: str = "",
        progress: Progress | None = None,
    ) -> IngestResult:
        """Make a file searchable in a store; raises ``FileContentError`` when it cannot be read.
        ``key`` (the project) is what the preparer shares its processes fairly by; ``progress`` is
        told the chunks embedded as they are (on the event loop's thread)."""
        if self.preparer is not None:
            prepared = await self.preparer.prepare(key, filename, data, strategy, progress)
        else:
            loop = asyncio.get_running_loop()
            told: Progress | None = None
            if progress is not None:
                report = progress

                def told(done: int, total: int) -> None:
                    loop.call_soon_threadsafe(report, done, total)

            prepared = await asyncio.to_thread(
                prepare_file,
                filename,
                data,
                strategy,
                self.codec,
                [self.embedder],
                self.limits,
                self._embedding,
                told,
            )
        await self.index.add(vector_store_id, file_id, prepared.chunks)
        return IngestResult(len(prepared.chunks), prepared.tokens, prepared.characters)

    async def remove(self, vector_store_id: str, file_id: str | None = None) -> int:
        """Forget a file's chunks in a store (or the whole store's); returns how many went."""
        return await self.index.delete(vector_store_id, file_id)

    async def search(
        self, vector_store_ids: Sequence[str], query: str, options: RankingOptions | None = None
    ) -> list[SearchResult]:
        """The stores' chunks best matching ``query``, best first, at most ``max_num_results``,
        none scoring below ``score_threshold``: one ranking over all the stores."""
        options = options or RankingOptions()
        if not vector_store_ids or not query.strip():
            return []
        vector = asyncio.ensure_future(asyncio.to_thread(self._embed_query, query))
        depth = max(MIN_DEPTH, options.max_num_results)
        try:
            rankings = await self.index.search(
                vector_store_ids, vector, query_term_ids(query), depth, is_cjk(query)
            )
        finally:
            if not vector.done():
                vector.cancel()  # the search failed before it needed the vector
        await asyncio.gather(vector, return_exceptions=True)
        results: list[SearchResult] = []
        for key, score in fuse([rankings.dense, rankings.keyword]):
            if score < options.score_threshold or len(results) == options.max_num_results:
                break
            chunk = rankings.chunks[key]
            results.append(
                SearchResult(chunk.vector_store_id, chunk.file_id, chunk.ordinal, chunk.text, score)
            )
        return results

    async def embed_texts(self, texts: Sequence[str], *, passages: bool = False) -> tuple[Vector, int]:
        """``texts`` embedded as search queries are (or as passages), one row each, and the tokens
        they took: for ``/v1/embeddings``, on the query path."""
        return await asyncio.to_thread(self._embed_texts, texts, passages)

    def _embed_texts(self, texts: Sequence[str], passages: bool) -> tuple[Vector, int]:
        count = getattr(self.embedder, "count_tokens", None)
        tokens = int(count(texts)) if count is not None else sum(len(t.split()) for t in texts)
        batch = self.embedder.embed_passages if passages else getattr(self.embedder, "embed_queries", None)
        if batch is not None:
            with self._embedding:
                return batch(texts), tokens
        return np.stack([self._embed_query(text) for text in texts]), tokens

    def shorten(self, vectors: Vector, dimensions: int) -> Vector:
        """``vectors`` cut to their first ``dimensions`` and normalised again (Matryoshka models)."""
        cut = vectors[:, :dimensions]
        norms = np.linalg.norm(cut, axis=1, keepdims=True)
        return (cut / np.where(norms == 0, 1, norms)).astype(np.float32)

    def _embed_query(self, query: str) -> Vector:
        with self._embedding:
            return self.embedder.embed_query(query)
