"""Ingesting files into vector stores and searching them: parse, chunk, embed, index; embed the
query, rank by cosine and by BM25, fuse.

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

import numpy as np

from threadline.domain.ports.retrieval import (
    ChunkIndex,
    ChunkingStrategy,
    ChunkPreparer,
    Embedder,
    IndexedChunk,
    IngestResult,
    PreparedFile,
    RankingOptions,
    SearchResult,
    Vector,
)
from threadline.retrieval.chunking import AUTO, TokenCodec, chunk_text
from threadline.retrieval.parsing import ParseLimits, parse
from threadline.retrieval.ranking import fuse
from threadline.retrieval.terms import query_term_ids, term_counts

EMBED_BATCH = 16
MIN_DEPTH = 100
"""Candidates taken from each ranking before fusion: enough that a chunk ranked well by one method
and moderately by the other is still seen by both."""


def prepare_file(
    filename: str,
    data: bytes,
    strategy: ChunkingStrategy,
    codec: TokenCodec,
    embedder: Embedder,
    limits: ParseLimits,
    lock: threading.Lock | None = None,
) -> PreparedFile:
    """Parse, chunk and embed a file (blocking); raises ``FileContentError`` when it cannot be read."""
    text = parse(filename, data, limits)
    chunks = chunk_text(text, strategy, codec)
    out: list[IndexedChunk] = []
    for start in range(0, len(chunks), EMBED_BATCH):
        batch = chunks[start : start + EMBED_BATCH]
        if lock is None:
            vectors = embedder.embed_passages([c.text for c in batch])
        else:
            with lock:
                vectors = embedder.embed_passages([c.text for c in batch])
        for chunk, vector in zip(batch, vectors, strict=True):
            out.append(
                IndexedChunk(chunk.ordinal, chunk.text, chunk.token_count, vector, term_counts(chunk.text))
            )
    return PreparedFile(out, sum(c.token_count for c in chunks), len(text))


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
    ) -> IngestResult:
        """Make a file searchable in a store; raises ``FileContentError`` when it cannot be read.
        ``key`` (the project) is what the preparer shares its processes fairly by."""
        if self.preparer is not None:
            prepared = await self.preparer.prepare(key, filename, data, strategy)
        else:
            prepared = await asyncio.to_thread(
                prepare_file,
                filename,
                data,
                strategy,
                self.codec,
                self.embedder,
                self.limits,
                self._embedding,
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
        none scoring below ``score_threshold``."""
        options = options or RankingOptions()
        if not vector_store_ids or not query.strip():
            return []
        vector = asyncio.ensure_future(asyncio.to_thread(self._embed_query, query))
        depth = max(MIN_DEPTH, options.max_num_results)
        try:
            rankings = await self.index.search(vector_store_ids, vector, query_term_ids(query), depth)
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
