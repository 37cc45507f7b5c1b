"""What the engine needs from the outside: an embedding model, a place to keep chunks, and
(optionally) somewhere else to turn a file into embedded chunks.

``Embedder`` is implemented in ``providers/embeddings.py`` (the embedded e5 model, or an
OpenAI-compatible ``/embeddings`` server); ``ChunkIndex`` in ``store/chunks.py`` (the project's
database, with each store's vectors cached in memory as one matrix); ``ChunkPreparer`` in
``workers/ingestion.py`` (bounded child processes, so a hostile file cannot hurt the server).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from threadline.retrieval.chunking import ChunkingStrategy

Vector = npt.NDArray[np.float32]


class Embedder(Protocol):
    name: str

    def embed_passages(self, texts: Sequence[str]) -> Vector:
        """One L2-normalised row per text, shape ``(len(texts), dim)``."""
        ...

    def embed_query(self, text: str) -> Vector:
        """An L2-normalised vector of shape ``(dim,)``."""
        ...


@dataclass(frozen=True, slots=True)
class IndexedChunk:
    """A chunk ready to store: its text, its embedding and its keyword terms (``terms.term_counts``)."""

    ordinal: int
    text: str
    token_count: int
    vector: Vector
    terms: npt.NDArray[np.int32]


@dataclass(frozen=True, slots=True)
class StoredChunk:
    vector_store_id: str
    file_id: str
    ordinal: int
    text: str


@dataclass(frozen=True, slots=True)
class Rankings:
    """Chunk keys (unique across stores), best first, by each method; and those chunks."""

    dense: list[int]
    keyword: list[int]
    chunks: dict[int, StoredChunk]


class ChunkIndex(Protocol):
    async def add(self, vector_store_id: str, file_id: str, chunks: Sequence[IndexedChunk]) -> None:
        """Store a file's chunks, replacing any the file had in that store (ingestion may be retried)."""
        ...

    async def delete(self, vector_store_id: str, file_id: str | None = None) -> int:
        """Remove a file's chunks from a store (every chunk of the store when ``file_id`` is None)."""
        ...

    async def search(
        self,
        vector_store_ids: Sequence[str],
        query_vector: Awaitable[Vector],
        query_terms: Sequence[int],
        depth: int,
        query_cjk: bool = False,
    ) -> Rankings:
        """The ``depth`` best chunks of all the stores together by cosine similarity (chunks in the
        other script than the query's, ``query_cjk``, raised by ``index.CROSS_SCRIPT_BONUS``) and by
        BM25. The query's vector is awaited only for the cosine ranking: the keyword ranking goes on
        while it is computed."""
        ...


@dataclass(frozen=True, slots=True)
class PreparedFile:
    """A file turned into chunks ready to index, with its tokens (overlaps counted) and characters."""

    chunks: list[IndexedChunk]
    tokens: int
    characters: int


class PreparationFailed(Exception):
    """Preparing a file failed in a way retrying will not mend (its process crashed, say): the file
    ends ``failed`` with ``code`` and ``message``. Limits the file broke raise ``FileContentError``."""

    def __init__(self, message: str, code: str = "server_error") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class ChunkPreparer(Protocol):
    async def prepare(self, key: str, filename: str, data: bytes, strategy: ChunkingStrategy) -> PreparedFile:
        """Parse, chunk and embed a file. ``key`` (the project) is what fairness is counted by;
        cancelling the call stops the work."""
        ...
