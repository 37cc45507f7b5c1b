"""File search as the domain sees it: the retrieval engine (ingest a file into a store, search
stores, embed texts) and what that engine needs in turn: an embedding model, a place to keep chunks,
and (optionally) somewhere else to turn a file into embedded chunks.

:class:`Retrieval` is implemented by ``retrieval/engine.py``'s ``RetrievalEngine``, wired in by the
runtime. ``Embedder`` is implemented in ``providers/embeddings.py`` (the embedded e5 model, or an
OpenAI-compatible ``/embeddings`` server); ``ChunkIndex`` in ``store/chunks.py`` (the project's
database, with each store's vectors cached in memory as one matrix); ``ChunkPreparer`` in
``workers/ingestion.py`` (bounded child processes, so a hostile file cannot hurt the server).

The request values (:class:`ChunkingStrategy`, :class:`RankingOptions`) live here because the
vector store service validates them before anything reaches the engine. Vectors are numpy arrays;
numpy is named for types only, so the domain never imports it at run time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from threadline.errors import InvalidRequestError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

Vector: TypeAlias = "npt.NDArray[np.float32]"
TermCounts: TypeAlias = "npt.NDArray[np.int32]"

MIN_CHUNK_TOKENS = 100
MAX_CHUNK_TOKENS = 4096
MAX_NUM_RESULTS = 50
DEFAULT_NUM_RESULTS = 20


@dataclass(frozen=True, slots=True)
class ChunkingStrategy:
    """How a file is cut into token windows, as OpenAI's chunking strategies describe: ``static``
    takes ``max_chunk_size_tokens`` (100..4096) and ``chunk_overlap_tokens`` (at most half of the
    maximum); ``auto`` is static with 800 and 400."""

    max_chunk_size_tokens: int = 800
    chunk_overlap_tokens: int = 400

    def __post_init__(self) -> None:
        if not MIN_CHUNK_TOKENS <= self.max_chunk_size_tokens <= MAX_CHUNK_TOKENS:
            raise InvalidRequestError(
                f"max_chunk_size_tokens must be between {MIN_CHUNK_TOKENS} and {MAX_CHUNK_TOKENS}, "
                f"got {self.max_chunk_size_tokens}.",
                param="chunking_strategy.static.max_chunk_size_tokens",
            )
        if not 0 <= self.chunk_overlap_tokens <= self.max_chunk_size_tokens // 2:
            raise InvalidRequestError(
                "chunk_overlap_tokens must be non-negative and must not exceed half of "
                f"max_chunk_size_tokens ({self.max_chunk_size_tokens // 2}), got {self.chunk_overlap_tokens}.",
                param="chunking_strategy.static.chunk_overlap_tokens",
            )

    @classmethod
    def from_request(cls, body: Mapping[str, Any] | None) -> ChunkingStrategy:
        """The strategy a request's ``chunking_strategy`` asks for (absent or ``auto``: 800/400)."""
        if body is None or body.get("type") == "auto":
            return cls()
        if body.get("type") != "static" or not isinstance(body.get("static"), Mapping):
            raise InvalidRequestError(
                "chunking_strategy must be {'type': 'auto'} or {'type': 'static', 'static': {...}}.",
                param="chunking_strategy",
            )
        static = body["static"]
        size, overlap = static.get("max_chunk_size_tokens"), static.get("chunk_overlap_tokens")
        if not isinstance(size, int) or not isinstance(overlap, int) or isinstance(size | overlap, bool):
            raise InvalidRequestError(
                "chunking_strategy.static needs integer max_chunk_size_tokens and chunk_overlap_tokens.",
                param="chunking_strategy.static",
            )
        return cls(size, overlap)

    def to_object(self) -> dict[str, Any]:
        """The strategy as a vector store file reports it."""
        return {
            "type": "static",
            "static": {
                "max_chunk_size_tokens": self.max_chunk_size_tokens,
                "chunk_overlap_tokens": self.chunk_overlap_tokens,
            },
        }


@dataclass(frozen=True, slots=True)
class RankingOptions:
    max_num_results: int = DEFAULT_NUM_RESULTS
    score_threshold: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.max_num_results, bool) or not 1 <= self.max_num_results <= MAX_NUM_RESULTS:
            raise InvalidRequestError(
                f"max_num_results must be between 1 and {MAX_NUM_RESULTS}, got {self.max_num_results}.",
                param="file_search.max_num_results",
            )
        if not 0.0 <= self.score_threshold <= 1.0:
            raise InvalidRequestError(
                f"score_threshold must be between 0 and 1, got {self.score_threshold}.",
                param="file_search.ranking_options.score_threshold",
            )


@dataclass(frozen=True, slots=True)
class IngestResult:
    """How much was indexed: chunks, their tokens (overlaps counted in each), the text's characters."""

    chunks: int
    tokens: int
    characters: int


@dataclass(frozen=True, slots=True)
class SearchResult:
    vector_store_id: str
    file_id: str
    ordinal: int
    text: str
    score: float


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
    terms: TermCounts


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


Progress: TypeAlias = Callable[[int, int], None]
"""Told ``(chunks embedded, chunks in all)`` while a file is prepared, on the event loop's thread."""


class ChunkPreparer(Protocol):
    async def prepare(
        self,
        key: str,
        filename: str,
        data: bytes,
        strategy: ChunkingStrategy,
        progress: Progress | None = None,
    ) -> PreparedFile:
        """Parse, chunk and embed a file. ``key`` (the project) is what fairness is counted by;
        cancelling the call stops the work."""
        ...


class Retrieval(Protocol):
    """The retrieval engine: what vector stores, file search and ``/v1/embeddings`` use."""

    embedder: Embedder

    async def ingest(
        self,
        vector_store_id: str,
        file_id: str,
        filename: str,
        data: bytes,
        strategy: ChunkingStrategy = ...,
        key: str = "",
        progress: Progress | None = None,
    ) -> IngestResult:
        """Make a file searchable in a store; raises ``FileContentError`` when it cannot be read.
        ``key`` (the project) is what preparation is shared fairly by; ``progress`` is told the
        chunks embedded as they are."""
        ...

    async def remove(self, vector_store_id: str, file_id: str | None = None) -> int:
        """Forget a file's chunks in a store (or the whole store's); returns how many went."""
        ...

    async def search(
        self, vector_store_ids: Sequence[str], query: str, options: RankingOptions | None = None
    ) -> list[SearchResult]:
        """The stores' chunks best matching ``query``, best first."""
        ...

    async def embed_texts(self, texts: Sequence[str], *, passages: bool = False) -> tuple[Vector, int]:
        """``texts`` embedded (as queries, or as passages), one row each, and the tokens they took."""
        ...

    def shorten(self, vectors: Vector, dimensions: int) -> Vector:
        """``vectors`` cut to their first ``dimensions`` and normalised again (Matryoshka models)."""
        ...
