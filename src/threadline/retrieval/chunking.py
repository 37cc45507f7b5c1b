"""Cutting text into overlapping windows of tokens, as OpenAI's chunking strategies describe.

``static`` takes ``max_chunk_size_tokens`` (100..4096) and ``chunk_overlap_tokens`` (at most half
of the maximum); ``auto`` is static with 800 and 400. Tokens are counted with cl100k_base, the
tokenizer OpenAI's limits are stated in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from threadline.errors import InvalidRequestError

MIN_CHUNK_TOKENS = 100
MAX_CHUNK_TOKENS = 4096


class TokenCodec(Protocol):
    """What chunking needs of a tokenizer (tiktoken's ``Encoding`` has it)."""

    def encode(self, text: str, *, disallowed_special: Any = ...) -> list[int]: ...

    def decode_bytes(self, tokens: Any) -> bytes: ...


@dataclass(frozen=True, slots=True)
class ChunkingStrategy:
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


AUTO = ChunkingStrategy()


@dataclass(frozen=True, slots=True)
class Chunk:
    ordinal: int
    text: str
    token_count: int


def chunk_text(text: str, strategy: ChunkingStrategy, codec: TokenCodec) -> list[Chunk]:
    """``text`` in windows of at most ``max_chunk_size_tokens`` tokens, each starting
    ``max - overlap`` tokens after the one before; the last window ends at the text's end."""
    tokens = codec.encode(text, disallowed_special=())
    size = strategy.max_chunk_size_tokens
    step = size - strategy.chunk_overlap_tokens
    chunks: list[Chunk] = []
    start = 0
    while start < len(tokens):
        window = tokens[start : start + size]
        # A window edge can split a multi-byte character; its halves are dropped (the overlap
        # keeps the neighbouring window whole).
        piece = codec.decode_bytes(window).decode("utf-8", errors="ignore").strip()
        if piece:
            chunks.append(Chunk(len(chunks), piece, len(window)))
        if start + size >= len(tokens):
            break
        start += step
    return chunks
