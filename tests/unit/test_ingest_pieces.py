"""Embedding a file as pieces: the file's tokens cut at every chunk edge, each piece embedded once,
each chunk's vector the normalised token-weighted mean of its pieces' vectors.

The embedder here is a stand-in whose vector for a text is a fixed random direction per text, so a
chunk's vector can be checked against its pieces exactly. ``check_pieces`` is the whole property;
the last tests show it rejects implementations broken in the ways that matter (a piece embedded
twice, the pieces' weights ignored, a chunk's vector taken from its first piece only)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pytest

from threadline.domain.ports.retrieval import ChunkingStrategy, PreparedFile, Vector
from threadline.providers.tokenizers import tiktoken_encoding
from threadline.retrieval import engine
from threadline.retrieval.chunking import Pieces, chunk_text, split_text
from threadline.retrieval.engine import prepare_file
from threadline.retrieval.parsing import ParseLimits

CODEC = tiktoken_encoding("cl100k_base")
TEXT = " ".join(
    f"Paragraph {i} of the manual says how part {i} fits. 第{i}段说明零件如何安装，温度为{i}度。\n\n"
    for i in range(160)
)
STRATEGIES = [
    ChunkingStrategy(800, 400),
    ChunkingStrategy(800, 300),
    ChunkingStrategy(300, 0),
    ChunkingStrategy(100, 50),
]


class Directions:
    """An embedder whose vector for a text is a random unit direction seeded by the text."""

    name = "directions"
    pools_windows = True

    def __init__(self) -> None:
        self.asked: list[str] = []

    def vector(self, text: str) -> Vector:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        row = np.random.default_rng(seed).standard_normal(16).astype(np.float32)
        return (row / np.linalg.norm(row)).astype(np.float32)

    def embed_passages(self, texts: Sequence[str]) -> Vector:
        self.asked.extend(texts)
        return np.stack([self.vector(t) for t in texts]) if texts else np.zeros((0, 16), np.float32)

    def embed_query(self, text: str) -> Vector:
        return self.vector(text)


class WholeOnly(Directions):
    """The same, but not averaging windows (a remote model): chunks must be embedded whole."""

    pools_windows = False


def prepare(
    strategy: ChunkingStrategy, embedders: Sequence[Directions], passages: str = "pieces"
) -> PreparedFile:
    return prepare_file(
        "manual.txt", TEXT.encode(), strategy, CODEC, embedders, ParseLimits(), passages=passages
    )


def check_pieces(
    text: str, strategy: ChunkingStrategy, prepared: PreparedFile, pieces: Pieces, embedder: Directions
) -> None:
    """The file's pieces cover it once, each is embedded once and nothing else is, and each chunk's
    vector is the normalised token-weighted mean of its pieces' vectors."""
    assert "".join(pieces.texts) == text
    assert sum(pieces.tokens) == len(CODEC.encode(text, disallowed_special=()))
    assert sorted(embedder.asked) == sorted(p.strip() for p in pieces.texts if p.strip())
    for chunk, span in zip(prepared.chunks, pieces.spans, strict=True):
        assert chunk.token_count == sum(pieces.tokens[i] for i in span)
        assert chunk.text in "".join(pieces.texts[i] for i in span)
        mean = sum(pieces.tokens[i] * embedder.vector(pieces.texts[i].strip()) for i in span)
        assert np.allclose(chunk.vector, mean / np.linalg.norm(mean), atol=1e-6)


@pytest.mark.parametrize(
    "strategy", STRATEGIES, ids=lambda s: f"{s.max_chunk_size_tokens}/{s.chunk_overlap_tokens}"
)
def test_pieces_cover_the_file_once_and_each_chunk_is_the_mean_of_its_pieces(
    strategy: ChunkingStrategy,
) -> None:
    embedder = Directions()
    prepared = prepare(strategy, [embedder])
    chunks, pieces = split_text(TEXT, strategy, CODEC)
    assert len(prepared.chunks) == len(chunks) > 2
    assert [c.text for c in prepared.chunks] == [c.text for c in chunk_text(TEXT, strategy, CODEC)]
    check_pieces(TEXT, strategy, prepared, pieces, embedder)


def test_pieces_embed_each_token_once_where_whole_chunks_embed_it_twice() -> None:
    tokens = len(CODEC.encode(TEXT, disallowed_special=()))
    pieces, whole = Directions(), Directions()
    prepare(ChunkingStrategy(), [pieces])
    prepare(ChunkingStrategy(), [whole], passages="chunks")
    embedded = [sum(len(CODEC.encode(t)) for t in e.asked) for e in (pieces, whole)]
    assert abs(embedded[0] - tokens) < 0.01 * tokens
    assert embedded[1] > 1.8 * tokens  # twice but the first and last chunks' outer halves


def test_two_embedders_share_the_pieces_and_progress_counts_whole_chunks() -> None:
    told: list[tuple[int, int]] = []
    one = prepare(ChunkingStrategy(), [Directions()])
    two = [Directions(), Directions()]
    both = prepare_file(
        "manual.txt",
        TEXT.encode(),
        ChunkingStrategy(),
        CODEC,
        two,
        ParseLimits(),
        progress=lambda done, total: told.append((done, total)),
    )
    assert all(np.array_equal(a.vector, b.vector) for a, b in zip(one.chunks, both.chunks, strict=True))
    assert len(two[0].asked + two[1].asked) == len(set(two[0].asked + two[1].asked))
    total = len(one.chunks)
    assert told[0] == (0, total) and told[-1] == (total, total)
    assert [d for d, _ in told] == sorted(d for d, _ in told)


@pytest.mark.parametrize(
    ("text", "embedder", "passages"),
    [
        ("One short paragraph, one chunk.", Directions(), "pieces"),
        (TEXT, WholeOnly(), "pieces"),
        (TEXT, Directions(), "chunks"),
    ],
    ids=["one chunk", "embedder without windows", "chunks asked for"],
)
def test_whole_chunks_where_pieces_do_not_apply(text: str, embedder: Directions, passages: str) -> None:
    embedder.asked.clear()
    prepared = prepare_file(
        "f.txt", text.encode(), ChunkingStrategy(), CODEC, [embedder], ParseLimits(), passages=passages
    )
    assert embedder.asked == [c.text for c in prepared.chunks]
    assert all(np.array_equal(c.vector, embedder.vector(c.text)) for c in prepared.chunks)


def test_a_chunk_of_whitespace_pieces_is_embedded_whole() -> None:
    chunks, pieces = split_text(TEXT, ChunkingStrategy(), CODEC)
    blank = Pieces(
        [" " if i == 1 or i == 2 else t for i, t in enumerate(pieces.texts)], pieces.tokens, pieces.spans
    )
    plan = engine.embedding_plan(chunks, blank, "pieces", Directions())
    assert plan.texts[plan.parts[1][0][0]] == chunks[1].text  # chunk 1 is pieces 1 and 2
    assert [plan.texts[i] for i, _ in plan.parts[2]] == [pieces.texts[3].strip()]  # piece 2 is blank


# The check would catch a broken implementation.


def broken_split(text: str, strategy: ChunkingStrategy, codec: object) -> tuple[list[object], Pieces]:
    """Each chunk's whole text as its own piece: every token embedded twice."""
    chunks, _ = split_text(text, strategy, CODEC)
    return chunks, Pieces(
        [c.text for c in chunks],
        [c.token_count for c in chunks],
        [range(i, i + 1) for i in range(len(chunks))],
    )


def unweighted(vectors: Vector, parts: Sequence[tuple[int, float]]) -> Vector:
    mean = vectors[[i for i, _ in parts]].mean(axis=0)
    return (mean / np.linalg.norm(mean)).astype(np.float32)


def first_piece(vectors: Vector, parts: Sequence[tuple[int, float]]) -> Vector:
    row: Vector = vectors[parts[0][0]]
    return row


@pytest.mark.parametrize(
    ("name", "replacement"),
    [("split_text", broken_split), ("combine", unweighted), ("combine", first_piece)],
    ids=["pieces overlap", "weights ignored", "first piece only"],
)
def test_the_check_fails_a_broken_implementation(
    monkeypatch: pytest.MonkeyPatch, name: str, replacement: object
) -> None:
    strategy = ChunkingStrategy(800, 300)  # pieces of 500, 300, 200 tokens: unequal weights
    monkeypatch.setattr(engine, name, replacement)
    embedder = Directions()
    prepared = prepare(strategy, [embedder])
    _, pieces = split_text(TEXT, strategy, CODEC)
    with pytest.raises(AssertionError):
        check_pieces(TEXT, strategy, prepared, pieces, embedder)


def test_the_setting_is_checked_when_the_server_starts() -> None:
    from threadline.config import Settings
    from threadline.workers.ingestion import IngestionProcesses

    assert Settings().ingest_passages == "pieces"
    IngestionProcesses(Settings(ingest_passages="chunks"))
    with pytest.raises(ValueError, match="THREADLINE_INGEST_PASSAGES"):
        IngestionProcesses(Settings(ingest_passages="first_window"))
