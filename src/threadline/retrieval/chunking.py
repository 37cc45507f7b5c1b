"""Cutting text into overlapping windows of tokens, as OpenAI's chunking strategies describe
(``threadline.domain.ports.retrieval.ChunkingStrategy``). Tokens are counted with cl100k_base, the
tokenizer OpenAI's limits are stated in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from threadline.domain.ports.retrieval import ChunkingStrategy


class TokenCodec(Protocol):
    """What chunking needs of a tokenizer (tiktoken's ``Encoding`` has it)."""

    def encode(self, text: str, *, disallowed_special: Any = ...) -> list[int]: ...

    def decode_bytes(self, tokens: Any) -> bytes: ...


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
