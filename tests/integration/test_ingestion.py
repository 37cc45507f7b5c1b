"""Ingestion in bounded, stoppable, fair child processes, against a real server on SQLite and
PostgreSQL: hostile files end ``failed`` with ``invalid_file`` naming the limit they broke while the
server's memory stays flat; deleting a file, or stopping the server, kills the process indexing it;
another project's search stays fast while a project ingests; jobs are claimed fairly by project.
"""

from __future__ import annotations

import asyncio
import io
import os
import statistics
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.api.test_projects import ADMIN, new_project, sdk
from tests.conftest import database_url, server_settings
from tests.support import ThreadlineServer, wait_for
from threadline.config import Settings
from threadline.domain.entities import Job
from threadline.domain.ports.retrieval import ChunkingStrategy
from threadline.errors import FileContentError
from threadline.store.database import Database, migrate
from threadline.store.jobs import SqlJobQueue
from threadline.testing import ScriptedModel
from threadline.workers.ingestion import FairGate, IngestionProcesses

W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
BIG_TEXT = " ".join(f"Paragraph {i} tells of tides, moons and the sea floor {i % 13}." for i in range(6000))
"""About 350 KB: minutes of embedding, so its process is still busy while a test acts."""


def docx_bomb(paragraphs: int = 10_500_000) -> bytes:
    """An ~90 KB DOCX of millions of empty paragraphs (its XML inflates to 63 MB)."""
    xml = f'<?xml version="1.0"?><w:document xmlns:w="{W}"><w:body>{"<w:p/>" * paragraphs}</w:body></w:document>'
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("word/document.xml", xml)
    return out.getvalue()


def hostile_html() -> bytes:
    """1 MB of what makes parsers slow: deep nesting, huge attribute lists, entities, unclosed tags."""
    attrs = " ".join(f'a{i}="v>{i}"' for i in range(20_000))
    page = (
        "<div>" * 50_000
        + f"<p {attrs}>Harbour tides &amp; moons &#x263A; &notanentity</p>"
        + "&amp;&lt;&#65;" * 200
        + "<a " * 150_000
    )
    return page.encode()


def ingest_children() -> set[int]:
    """The ingestion processes this (the server's) process has now."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() and b"ingest_process" in command:
            found.add(int(entry))
    return found


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def server(model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadlineServer]:
    settings = server_settings(model, tmp_path_factory).replace(
        admin_key=ADMIN,
        job_retry_seconds=0.2,
        ingest_processes=2,
        ingest_cpu_seconds=6,
        file_max_xml_elements=500_000,
    )
    started = ThreadlineServer(settings)
    yield started
    started.stop()


@pytest.fixture(scope="module")
def client(server: ThreadlineServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url, api_key="test-key", max_retries=0, timeout=120) as sdk_client:
        # Warm up: the server's own query model loads on first use, before any memory is measured.
        store = sdk_client.vector_stores.create(name="warm-up")
        sdk_client.vector_stores.files.upload_and_poll(
            vector_store_id=store.id, file=("warm.txt", b"Warm water."), poll_interval_ms=100
        )
        sdk_client.vector_stores.search(store.id, query="water")
        yield sdk_client


def add(client: openai.OpenAI, store_id: str, name: str, data: bytes) -> str:
    file_id = client.files.create(file=(name, data), purpose="assistants").id
    client.vector_stores.files.create(vector_store_id=store_id, file_id=file_id)
    return file_id


def settled(client: openai.OpenAI, store_id: str, file_id: str, timeout: float = 60) -> object:
    return wait_for(
        lambda: (
            (f := client.vector_stores.files.retrieve(file_id, vector_store_id=store_id)).status
            != "in_progress"
            and f
        ),
        timeout=timeout,
        interval=0.1,
        what=f"{file_id} to be indexed",
    )


def test_hostile_files_end_failed_naming_the_limit_they_broke(client: openai.OpenAI) -> None:
    store = client.vector_stores.create(name="hostile")
    files = {
        "bomb.docx": (docx_bomb(), "THREADLINE_FILE_MAX_XML_ELEMENTS"),
        "deep.json": (b"[" * 200_000 + b"]" * 200_000, "THREADLINE_FILE_MAX_JSON_DEPTH"),
        # One 2 MB word: thousands of chunks to embed, more CPU than a file may use.
        "line.txt": (b"x" * 2_000_000, "THREADLINE_INGEST_CPU_SECONDS"),
    }
    ids = {name: add(client, store.id, name, data) for name, (data, _) in files.items()}
    page = add(client, store.id, "page.html", hostile_html())
    for name, (_, setting) in files.items():
        done = settled(client, store.id, ids[name])
        assert done.status == "failed", name  # type: ignore[attr-defined]
        error = done.last_error  # type: ignore[attr-defined]
        assert error.code == "invalid_file" and setting in error.message and name in error.message
    html = settled(client, store.id, page)
    assert html.status == "completed", html.last_error  # type: ignore[attr-defined]
    [hit] = client.vector_stores.search(store.id, query="harbour tides", max_num_results=1).data
    assert hit.filename == "page.html" and "Harbour tides & moons ☺" in hit.content[0].text
    assert not ingest_children()


def test_six_docx_bombs_leave_the_servers_memory_flat(client: openai.OpenAI) -> None:
    store = client.vector_stores.create(name="bombs")
    bomb = docx_bomb()
    before = peak = rss_mb()
    ids = [add(client, store.id, f"bomb{i}.docx", bomb) for i in range(6)]

    def all_failed() -> bool:
        nonlocal peak
        peak = max(peak, rss_mb())
        files = client.vector_stores.files.list(store.id, limit=100).data
        return len(files) == 6 and all(f.status == "failed" for f in files)

    wait_for(all_failed, timeout=90, interval=0.2, what="the bombs to fail")
    after = rss_mb()
    assert peak - before < 100 and after - before < 100, (before, peak, after)
    errors = {client.vector_stores.files.retrieve(i, vector_store_id=store.id).last_error.code for i in ids}  # type: ignore[union-attr]
    assert errors == {"invalid_file"}


def test_removing_a_file_or_its_store_kills_the_process_indexing_it(client: openai.OpenAI) -> None:
    for remove in ("file", "store"):
        store = client.vector_stores.create(name=remove)
        file_id = add(client, store.id, "big.txt", BIG_TEXT.encode())
        [pid] = wait_for(ingest_children, timeout=20, what="an ingestion process")
        if remove == "file":
            client.vector_stores.files.delete(file_id, vector_store_id=store.id)
        else:
            client.vector_stores.delete(store.id)
        wait_for(
            lambda gone=pid: gone not in ingest_children(), timeout=5, what=f"process {pid} to be killed"
        )


def test_another_projects_search_stays_fast_while_a_project_ingests(server: ThreadlineServer) -> None:
    _, key_a = new_project(server, "ingesting")
    _, key_b = new_project(server, "searching")
    with sdk(server, key_a) as a, sdk(server, key_b) as b:
        mine = b.vector_stores.create(name="small")
        b.vector_stores.files.upload_and_poll(
            vector_store_id=mine.id, file=("tides.txt", b"Tides follow the Moon."), poll_interval_ms=100
        )
        theirs = a.vector_stores.create(name="big")
        file_id = add(a, theirs.id, "big.txt", BIG_TEXT.encode())
        wait_for(ingest_children, timeout=20, what="an ingestion process")
        seconds = []
        for _ in range(15):
            started = time.perf_counter()
            [hit] = b.vector_stores.search(mine.id, query="What do tides follow?").data
            seconds.append(time.perf_counter() - started)
            assert hit.filename == "tides.txt"
        assert ingest_children(), "the big file was still being indexed"
        # Behind the ingestion a search took 33 s; the figure itself (26 ms) is bench.ingestion's to
        # measure, a busy test machine's to blur: this only tells waiting from not waiting.
        assert statistics.median(seconds) < 1.0, seconds
        a.vector_stores.files.delete(file_id, vector_store_id=theirs.id)
    wait_for(lambda: not ingest_children(), timeout=5, what="the ingestion process to stop")


def test_stopping_the_server_mid_ingestion_is_quick(
    model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory
) -> None:
    server = ThreadlineServer(server_settings(model, tmp_path_factory))
    try:
        with openai.OpenAI(base_url=server.url, api_key="test-key", max_retries=0) as client:
            store = client.vector_stores.create(name="big")
            add(client, store.id, "big.txt", BIG_TEXT.encode())
            [pid] = wait_for(ingest_children, timeout=20, what="an ingestion process")
    finally:
        started = time.monotonic()
        server.stop()
        took = time.monotonic() - started
    assert not server._thread.is_alive() and took < 5, took
    assert pid not in ingest_children()

    async def census() -> dict[str, int]:
        db = Database(server.settings.effective_database_url)
        try:
            return await SqlJobQueue(db).job_census()
        finally:
            await db.dispose()

    # Handed back, to be indexed again by the next worker.
    assert asyncio.run(census()) == {"queued": 1}


def test_jobs_are_claimed_fairly_by_project(tmp_path: Path) -> None:
    url = database_url(tmp_path)
    migrate(url)

    async def check() -> None:
        db = Database(url)
        queue = SqlJobQueue(db)
        try:
            for i in range(5):
                await queue.enqueue("ingest", {"project_id": "proj_a", "n": i})
            await queue.enqueue("ingest", {"project_id": "proj_b", "n": 0})
            await queue.enqueue("other", {"project_id": "proj_c", "n": 0})

            async def claim(limit: int) -> list[tuple[str, int]]:
                jobs: list[Job] = await queue.claim_jobs("w", ["ingest"], time.time(), 60, limit)
                return [(job.payload["project_id"], job.payload["n"]) for job in jobs]

            assert await claim(1) == [("proj_a", 0)]
            # proj_a has a job running: proj_b's one file goes before proj_a's second.
            assert await claim(1) == [("proj_b", 0)]
            assert await claim(1) == [("proj_a", 1)]
            assert sorted(await claim(10)) == [("proj_a", 2), ("proj_a", 3), ("proj_a", 4)]
        finally:
            await db.dispose()

    asyncio.run(check())


def test_the_gate_lets_the_project_with_the_fewest_files_in_go_next() -> None:
    async def check() -> list[str]:
        gate, order = FairGate(1), []
        release = asyncio.Event()

        async def hold(key: str, label: str) -> None:
            async with gate.slot(key):
                order.append(label)
                await release.wait()

        first = asyncio.create_task(hold("a", "a0"))
        await asyncio.sleep(0)
        waiting = [asyncio.create_task(hold("a", f"a{i}")) for i in range(1, 4)]
        await asyncio.sleep(0)
        waiting.append(asyncio.create_task(hold("b", "b0")))
        cancelled = asyncio.create_task(hold("c", "c0"))
        await asyncio.sleep(0)
        cancelled.cancel()  # gives up its place without taking a slot
        release.set()
        await asyncio.gather(first, *waiting, cancelled, return_exceptions=True)
        assert gate.held == 0 and not gate.waiting
        return order

    assert asyncio.run(check()) == ["a0", "b0", "a1", "a2", "a3"]


def test_a_file_past_the_memory_or_wall_time_limit_is_refused_and_its_process_ends() -> None:
    async def prepare(settings: Settings, name: str, data: bytes) -> FileContentError:
        processes = IngestionProcesses(settings)
        with pytest.raises(FileContentError) as caught:
            await processes.prepare("proj", name, data, ChunkingStrategy())
        assert not processes.pids and not ingest_children()
        return caught.value

    # 20 million list items: far more memory than 450 MB of address space allows.
    big_list = b"[" + b"0," * 20_000_000 + b"0]"
    memory = asyncio.run(
        prepare(Settings(ingest_memory_mb=450, file_max_characters=100_000_000), "list.json", big_list)
    )
    assert memory.code == "invalid_file" and "450 MB" in memory.message
    assert "THREADLINE_INGEST_MEMORY_MB" in memory.message
    started = time.monotonic()
    slow = asyncio.run(prepare(Settings(ingest_timeout_seconds=1.0), "big.txt", BIG_TEXT.encode()))
    assert slow.code == "invalid_file" and "THREADLINE_INGEST_TIMEOUT_SECONDS" in slow.message
    assert time.monotonic() - started < 5


def test_progress_is_told_as_chunks_are_embedded_by_parallel_copies_of_the_model() -> None:
    told: list[tuple[int, int]] = []
    text = " ".join(f"Line {i} of the harbour log: the tide came in at {i % 12} o'clock." for i in range(150))

    async def prepare() -> int:
        processes = IngestionProcesses(Settings(ingest_threads=2))
        assert processes.embedders == 2
        prepared = await processes.prepare(
            "proj", "log.txt", text.encode(), ChunkingStrategy(100, 50), lambda d, t: told.append((d, t))
        )
        return len(prepared.chunks)

    chunks = asyncio.run(prepare())
    assert chunks > 8
    assert told[0] == (0, chunks) and told[-1] == (chunks, chunks), told
    done = [d for d, _ in told]
    assert done == sorted(done) and len(set(done)) > 2, told  # told along the way, not only at the end
    assert {t for _, t in told} == {chunks}


def test_a_file_being_indexed_shows_its_progress(
    server: ThreadlineServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file object reports chunks embedded of all while the file is indexed (held at its first
    count past zero until the test has seen it), and nothing once it is completed."""
    repository = server.app.state.vector_stores.stores
    original = repository.file_progress
    seen = threading.Event()

    async def held(store_id: str, file_id: str, strategy: dict[str, object], done: int, total: int) -> None:
        await original(store_id, file_id, strategy, done, total)
        if 0 < done < total:
            await asyncio.to_thread(seen.wait, 60)

    monkeypatch.setattr(repository, "file_progress", held)
    client = sdk(server, new_project(server, "progress")[1])
    store = client.vector_stores.create(name="progress")
    text = " ".join(f"Entry {i}: the lighthouse keeper logged fog at {i % 24} hours." for i in range(40))
    file_id = client.files.create(file=("log.txt", text.encode()), purpose="assistants").id
    client.vector_stores.files.create(
        vector_store_id=store.id,
        file_id=file_id,
        chunking_strategy={
            "type": "static",
            "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 50},
        },
    )

    def progress() -> dict[str, int] | None:
        raw = client.vector_stores.files.with_raw_response.retrieve(
            file_id, vector_store_id=store.id
        ).http_response
        body = raw.json()
        return (
            body.get("progress")
            if body["status"] == "in_progress" and body.get("progress", {}).get("chunks_done")
            else None
        )

    try:
        shown = wait_for(progress, timeout=120, interval=0.1, what="the file's progress")
    finally:
        seen.set()
    assert 0 < shown["chunks_done"] < shown["chunks_total"], shown
    done = settled(client, store.id, file_id, timeout=120)
    assert done.status == "completed", done.last_error  # type: ignore[attr-defined]
    raw = client.vector_stores.files.with_raw_response.retrieve(
        file_id, vector_store_id=store.id
    ).http_response
    assert "progress" not in raw.json()
    client.close()
