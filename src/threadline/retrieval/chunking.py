"""Cutting text into overlapping windows of tokens, as OpenAI's chunking strategies describe
(``threadline.domain.ports.retrieval.ChunkingStrategy``). Tokens are counted with cl100k_base, the
tokenizer OpenAI's limits are stated in.
"""

from __future__ import annotations

import itertools
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


def chunk_spans(tokens: int, strategy: ChunkingStrategy) -> list[tuple[int, int]]:
    """The token ranges ``[start, end)`` of the windows a text of ``tokens`` tokens is cut into:
    at most ``max_chunk_size_tokens`` each, each starting ``max - overlap`` tokens after the one
    before; the last ends at the text's end."""
    size = strategy.max_chunk_size_tokens
    step = size - strategy.chunk_overlap_tokens
    spans: list[tuple[int, int]] = []
    start = 0
    while start < tokens:
        spans.append((start, min(start + size, tokens)))
        if start + size >= tokens:
            break
        start += step
    return spans


def chunk_text(text: str, strategy: ChunkingStrategy, codec: TokenCodec) -> list[Chunk]:
    """``text`` in windows of at most ``max_chunk_size_tokens`` tokens, each starting
    ``max - overlap`` tokens after the one before; the last window ends at the text's end."""
    return split_text(text, strategy, codec)[0]


@dataclass(frozen=True, slots=True)
class Pieces:
    """A text cut at every start and end of its chunks (for 800/400: every 400 tokens), so that
    each part of the text is in exactly one piece and each chunk is a run of whole pieces.

    ``texts`` joined give the text from its first chunk's start to its last chunk's end (cuts are
    moved to the next character's start where a token ends inside one); ``tokens`` is each piece's
    token count; ``spans[i]`` the pieces chunk ``i`` is made of."""

    texts: list[str]
    tokens: list[int]
    spans: list[range]


def split_text(text: str, strategy: ChunkingStrategy, codec: TokenCodec) -> tuple[list[Chunk], Pieces]:
    """``text``'s chunks (``chunk_text``) and the pieces they are made of."""
    tokens = codec.encode(text, disallowed_special=())
    chunks: list[Chunk] = []
    kept: list[tuple[int, int]] = []
    for start, end in chunk_spans(len(tokens), strategy):
        # A window edge can split a multi-byte character; its halves are dropped (the overlap
        # keeps the neighbouring window whole).
        piece = codec.decode_bytes(tokens[start:end]).decode("utf-8", errors="ignore").strip()
        if piece:
            chunks.append(Chunk(len(chunks), piece, end - start))
            kept.append((start, end))
    return chunks, _pieces(tokens, kept, codec)


def _pieces(tokens: list[int], spans: list[tuple[int, int]], codec: TokenCodec) -> Pieces:
    cuts = sorted({edge for span in spans for edge in span})
    if not cuts:
        return Pieces([], [], [])
    data = codec.decode_bytes(tokens[: cuts[-1]])
    offsets = [len(codec.decode_bytes(tokens[: cuts[0]]))]
    for start, end in itertools.pairwise(cuts):
        offsets.append(offsets[-1] + len(codec.decode_bytes(tokens[start:end])))
    for i, offset in enumerate(offsets):
        while offset < len(data) and 0x80 <= data[offset] < 0xC0:  # inside a UTF-8 character
            offset += 1
        offsets[i] = offset
    texts = [data[start:end].decode("utf-8", errors="ignore") for start, end in itertools.pairwise(offsets)]
    counts = [end - start for start, end in itertools.pairwise(cuts)]
    where = {cut: i for i, cut in enumerate(cuts)}
    return Pieces(texts, counts, [range(where[start], where[end]) for start, end in spans])
