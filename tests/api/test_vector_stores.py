"""Vector stores through the official SDK: the quickstart flow in Chinese and English, ingestion by
background jobs (a file that cannot be read ends failed), expiry, cancelling a batch, deleting a
file, the ``vector_stores`` helper on assistants and threads, and project isolation.

The embedding model is the real one (multilingual-e5-small, in process): search is judged on what
it finds, not on a fake.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import openai
import pytest
from sqlalchemy import update

from tests.api.test_projects import ADMIN, new_project
from tests.conftest import server_settings
from tests.support import ThreadlineServer, wait_for
from threadline.domain.vector_stores import INGEST_JOB
from threadline.store import tables as t
from threadline.store.database import Database
from threadline.store.jobs import SqlJobQueue
from threadline.testing import ScriptedModel

PANDAS = (
    "pandas.md",
    "# 大熊猫\n\n大熊猫生活在中国四川的山林里，主要以竹子为食，每天要吃十几公斤竹子。".encode(),
)
TIDES = ("tides.txt", b"Ocean tides are caused by the gravitational pull of the Moon and the Sun.")
INVOICES = (
    "invoices.md",
    b"# Invoices\n\nInvoices are due within fifteen days; late payment costs two percent a month.",
)
POLL_MS = 100


@pytest.fixture(scope="module")
def vs_server(model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadlineServer]:
    server = ThreadlineServer(server_settings(model, tmp_path_factory).replace(job_retry_seconds=0.2))
    yield server
    server.stop()


@pytest.fixture
def client(vs_server: ThreadlineServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=vs_server.url, api_key="test-key", max_retries=0, timeout=120) as sdk:
        yield sdk


def upload(client: openai.OpenAI, name: str, data: bytes) -> str:
    return client.files.create(file=(name, data), purpose="assistants").id


def searched_files(client: openai.OpenAI, store_id: str, query: str) -> list[str]:
    return [r.filename for r in client.vector_stores.search(store_id, query=query)]


def test_quickstart_batch_upload_and_search_in_chinese_and_english(client: openai.OpenAI) -> None:
    store = client.vector_stores.create(name="Docs", metadata={"team": "support"})
    assert store.object == "vector_store" and store.id.startswith("vs_") and store.status == "completed"
    assert store.file_counts.total == 0 and store.metadata == {"team": "support"}

    batch = client.vector_stores.file_batches.upload_and_poll(
        vector_store_id=store.id, files=[PANDAS, TIDES, INVOICES], poll_interval_ms=POLL_MS
    )
    assert batch.id.startswith("vsfb_") and batch.status == "completed"
    assert (batch.file_counts.completed, batch.file_counts.failed, batch.file_counts.total) == (3, 0, 3)
    files = client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id).data
    assert {f.status for f in files} == {"completed"} and len(files) == 3
    assert files[0].chunking_strategy is not None and files[0].chunking_strategy.type == "static"

    store = client.vector_stores.retrieve(store.id)
    assert store.status == "completed" and store.file_counts.completed == 3
    assert store.usage_bytes == sum(len(data) for _, data in (PANDAS, TIDES, INVOICES))

    assert searched_files(client, store.id, "大熊猫吃什么？")[0] == "pandas.md"
    assert searched_files(client, store.id, "What causes the tides?")[0] == "tides.txt"
    page = client.vector_stores.search(
        store.id,
        query=["late payment", "invoice due"],
        max_num_results=1,
        ranking_options={"score_threshold": 0.0},
    )
    [hit] = page.data
    assert hit.filename == "invoices.md" and "fifteen days" in hit.content[0].text and 0 < hit.score <= 1

    single = client.vector_stores.files.upload_and_poll(
        vector_store_id=store.id, file=("more.txt", b"Bamboo grows fast."), poll_interval_ms=POLL_MS
    )
    assert single.status == "completed" and single.vector_store_id == store.id
    completed = client.vector_stores.files.list(store.id, filter="completed").data
    assert len(completed) == 4 and not client.vector_stores.files.list(store.id, filter="failed").data


def test_a_file_that_cannot_be_read_ends_failed_and_the_store_completes(client: openai.OpenAI) -> None:
    store = client.vector_stores.create(name="mixed")
    good = upload(client, *TIDES)
    blob = upload(client, "scan.pdf", bytes(range(256)) * 64)
    batch = client.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, file_ids=[good, blob], poll_interval_ms=POLL_MS
    )
    assert batch.status == "completed"
    assert (batch.file_counts.completed, batch.file_counts.failed) == (1, 1)
    failed = client.vector_stores.files.retrieve(blob, vector_store_id=store.id)
    assert failed.status == "failed" and failed.last_error is not None
    assert failed.last_error.code == "invalid_file" and "scan.pdf" in failed.last_error.message
    store = client.vector_stores.retrieve(store.id)
    assert store.status == "completed" and store.file_counts.failed == 1
    assert [f.id for f in client.vector_stores.files.list(store.id, filter="failed").data] == [blob]


def _expire_now(server: ThreadlineServer, store_id: str) -> None:
    async def write() -> None:
        db = Database(server.settings.effective_database_url)
        try:
            stmt = update(t.vector_stores).where(t.vector_stores.c.id == store_id).values(expires_at=1)
            await db.write(lambda conn: conn.execute(stmt))
        finally:
            await db.dispose()

    asyncio.run(write())


def test_expiry_moves_with_activity_and_an_expired_store_is_not_searched(
    client: openai.OpenAI, vs_server: ThreadlineServer
) -> None:
    store = client.vector_stores.create(expires_after={"anchor": "last_active_at", "days": 2})
    assert store.expires_after is not None and store.expires_after.days == 2
    assert store.expires_at == store.last_active_at + 2 * 86_400
    client.vector_stores.search(store.id, query="anything")
    searched = client.vector_stores.retrieve(store.id)
    assert searched.last_active_at is not None and searched.last_active_at >= store.last_active_at
    assert searched.expires_at == searched.last_active_at + 2 * 86_400
    later = client.vector_stores.update(store.id, expires_after={"anchor": "last_active_at", "days": 7})
    assert later.expires_at is not None and later.last_active_at is not None
    assert later.expires_at == later.last_active_at + 7 * 86_400

    _expire_now(vs_server, store.id)
    assert client.vector_stores.retrieve(store.id).status == "expired"
    with pytest.raises(openai.BadRequestError, match="expired"):
        client.vector_stores.search(store.id, query="anything")


def test_deleting_a_file_takes_it_out_of_the_store_and_its_search(client: openai.OpenAI) -> None:
    store = client.vector_stores.create()
    tides, pandas = upload(client, *TIDES), upload(client, *PANDAS)
    client.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, file_ids=[tides, pandas], poll_interval_ms=POLL_MS
    )
    assert "tides.txt" in searched_files(client, store.id, "tides and the Moon")

    client.files.delete(tides)
    assert [f.id for f in client.vector_stores.files.list(store.id).data] == [pandas]
    assert "tides.txt" not in searched_files(client, store.id, "tides and the Moon")
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.files.retrieve(tides, vector_store_id=store.id)

    # Detaching from the store keeps the file itself.
    deleted = client.vector_stores.files.delete(pandas, vector_store_id=store.id)
    assert deleted.deleted and deleted.object == "vector_store.file.deleted"
    assert searched_files(client, store.id, "大熊猫") == []
    assert client.files.retrieve(pandas).id == pandas
    assert client.vector_stores.retrieve(store.id).file_counts.total == 0

    assert client.vector_stores.delete(store.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.vector_stores.retrieve(store.id)


def test_the_vector_stores_helper_on_assistants_and_threads(client: openai.OpenAI) -> None:
    file_id = upload(client, *INVOICES)
    assistant = client.beta.assistants.create(
        model="gpt-4o",
        tools=[{"type": "file_search"}],
        tool_resources={"file_search": {"vector_stores": [{"file_ids": [file_id], "metadata": {"k": "v"}}]}},
    )
    assert assistant.tool_resources is not None and assistant.tool_resources.file_search is not None
    [store_id] = assistant.tool_resources.file_search.vector_store_ids or []
    store = client.vector_stores.retrieve(store_id)
    assert store.metadata == {"k": "v"} and store.file_counts.total == 1
    wait_for(
        lambda: client.vector_stores.retrieve(store_id).status == "completed", timeout=60, what="ingestion"
    )
    assert searched_files(client, store_id, "when are invoices due") == ["invoices.md"]

    thread = client.beta.threads.create(tool_resources={"file_search": {"vector_store_ids": [store_id]}})
    assert thread.tool_resources is not None and thread.tool_resources.file_search is not None
    assert thread.tool_resources.file_search.vector_store_ids == [store_id]
    made = client.beta.threads.create(
        tool_resources={
            "file_search": {
                "vector_stores": [
                    {
                        "file_ids": [file_id],
                        "chunking_strategy": {
                            "type": "static",
                            "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 100},
                        },
                    }
                ]
            }
        }
    )
    assert made.tool_resources is not None and made.tool_resources.file_search is not None
    [made_id] = made.tool_resources.file_search.vector_store_ids or []
    [row] = client.vector_stores.files.list(made_id).data
    assert row.chunking_strategy is not None and row.chunking_strategy.type == "static"
    assert row.chunking_strategy.static.max_chunk_size_tokens == 200  # type: ignore[union-attr]

    with pytest.raises(openai.BadRequestError) as refused:
        client.beta.assistants.create(
            model="gpt-4o", tool_resources={"file_search": {"vector_store_ids": ["vs_nope"]}}
        )
    assert refused.value.body["param"] == "tool_resources.file_search.vector_store_ids[0]"  # type: ignore[index]
    assert "vs_nope" in refused.value.body["message"]  # type: ignore[index]


def test_malformed_requests_get_400s(client: openai.OpenAI) -> None:
    store = client.vector_stores.create()
    bad_chunking = {"type": "static", "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 150}}
    cases: list[Callable[[], object]] = [
        lambda: client.vector_stores.create(chunking_strategy=bad_chunking),  # type: ignore[arg-type]
        lambda: client.vector_stores.create(expires_after={"anchor": "last_active_at", "days": 400}),
        lambda: client.vector_stores.create(file_ids=["file-doesnotexist"]),
        lambda: client.vector_stores.search(store.id, query="x", max_num_results=51),
        lambda: client.vector_stores.search(store.id, query=[]),
        lambda: client.vector_stores.files.create(vector_store_id=store.id, file_id="nope"),
        lambda: client.vector_stores.file_batches.create(vector_store_id=store.id),
    ]
    for case in cases:
        with pytest.raises(openai.BadRequestError):
            case()
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.create(name="a\x00b")
    for missing in ("vs_doesnotexist", "x" * 300):
        with pytest.raises(openai.NotFoundError):
            client.vector_stores.retrieve(missing)
    # A NUL is refused in a path id as in any other parameter (400 naming it), never looked up.
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.retrieve("vs_\x00")
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.files.retrieve("file-\x00", vector_store_id=store.id)
    with pytest.raises(openai.BadRequestError):
        client.vector_stores.file_batches.retrieve("vsfb_\x00", vector_store_id=store.id)
    with pytest.raises(openai.BadRequestError):
        client.beta.assistants.create(
            model="gpt-4o", tool_resources={"file_search": {"vector_store_ids": ["vs_\x00"]}}
        )


def test_cancelling_a_batch_cancels_its_unfinished_files(
    make_server: Callable[..., ThreadlineServer],
) -> None:
    # No worker: the files stay in progress until the batch is cancelled.
    server = make_server(run_worker=False)
    with openai.OpenAI(base_url=server.url, api_key="k", max_retries=0) as client:
        store = client.vector_stores.create()
        ids = [upload(client, *TIDES), upload(client, *INVOICES)]
        batch = client.vector_stores.file_batches.create(vector_store_id=store.id, file_ids=ids)
        assert batch.status == "in_progress" and batch.file_counts.in_progress == 2
        assert client.vector_stores.retrieve(store.id).status == "in_progress"

        cancelled = client.vector_stores.file_batches.cancel(batch.id, vector_store_id=store.id)
        assert cancelled.status == "cancelled" and cancelled.file_counts.cancelled == 2
        files = client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id).data
        assert {f.status for f in files} == {"cancelled"}
        store = client.vector_stores.retrieve(store.id)
        assert store.status == "completed" and store.file_counts.cancelled == 2
        with pytest.raises(openai.BadRequestError):
            client.vector_stores.file_batches.cancel(batch.id, vector_store_id=store.id)


def test_another_projects_store_is_not_found(make_server: Callable[..., ThreadlineServer]) -> None:
    server = make_server(run_worker=False, admin_key=ADMIN)
    _, key_a = new_project(server, "a")
    _, key_b = new_project(server, "b")
    with (
        openai.OpenAI(base_url=server.url, api_key=key_a, max_retries=0) as a,
        openai.OpenAI(base_url=server.url, api_key=key_b, max_retries=0) as b,
    ):
        store = a.vector_stores.create(name="A's")
        file_id = upload(a, *TIDES)
        a.vector_stores.files.create(vector_store_id=store.id, file_id=file_id)
        calls: list[Callable[[], object]] = [
            lambda: b.vector_stores.retrieve(store.id),
            lambda: b.vector_stores.update(store.id, name="mine"),
            lambda: b.vector_stores.delete(store.id),
            lambda: b.vector_stores.search(store.id, query="tides"),
            lambda: b.vector_stores.files.list(store.id),
            lambda: b.vector_stores.files.retrieve(file_id, vector_store_id=store.id),
        ]
        for call in calls:
            with pytest.raises(openai.NotFoundError):
                call()
        assert b.vector_stores.list().data == []
        with pytest.raises(openai.BadRequestError):
            b.beta.assistants.create(
                model="gpt-4o", tool_resources={"file_search": {"vector_store_ids": [store.id]}}
            )
        assert [s.id for s in a.vector_stores.list().data] == [store.id]


def test_ingestion_waits_in_the_queue_through_a_restart(make_server: Callable[..., ThreadlineServer]) -> None:
    # The first server takes the upload but has no worker (as if it stopped before ingesting);
    # a second one on the same database picks the queued jobs up.
    first = make_server(run_worker=False)
    with openai.OpenAI(base_url=first.url, api_key="k", max_retries=0) as client:
        store = client.vector_stores.create(file_ids=[upload(client, *TIDES), upload(client, *PANDAS)])
        assert store.status == "in_progress" and store.file_counts.in_progress == 2
    first.stop()
    second = make_server(database_url=first.settings.database_url, data_dir=first.settings.data_dir)
    with openai.OpenAI(base_url=second.url, api_key="k", max_retries=0, timeout=120) as client:
        done = wait_for(
            lambda: (s := client.vector_stores.retrieve(store.id)).status == "completed" and s,
            timeout=90,
            what="the second server to ingest the queued files",
        )
        assert done.file_counts.completed == 2
        assert searched_files(client, store.id, "大熊猫吃竹子")[0] == "pandas.md"


def test_a_file_whose_worker_died_on_the_last_attempt_ends_failed(
    make_server: Callable[..., ThreadlineServer],
) -> None:
    # One attempt allowed; the upload is queued by a server without a worker.
    first = make_server(run_worker=False, job_max_attempts=1)
    with openai.OpenAI(base_url=first.url, api_key="k", max_retries=0) as client:
        store = client.vector_stores.create(file_ids=[upload(client, *TIDES)])
    first.stop()
    # A worker takes the job and dies: its lease is never renewed.
    db = Database(first.settings.effective_database_url)
    queue = SqlJobQueue(db)
    loop = asyncio.new_event_loop()
    try:
        (job,) = loop.run_until_complete(queue.claim_jobs("dead-worker", [INGEST_JOB], time.time(), 0.5, 10))
        assert job.attempts == 1
    finally:
        loop.run_until_complete(db.dispose())
        loop.close()
    # The next server's reaper gives the job up, and the file does not stay in_progress.
    second = make_server(
        database_url=first.settings.database_url, data_dir=first.settings.data_dir, job_max_attempts=1
    )
    with openai.OpenAI(base_url=second.url, api_key="k", max_retries=0) as client:
        (file,) = wait_for(
            lambda: [f for f in client.vector_stores.files.list(store.id).data if f.status != "in_progress"],
            timeout=30,
            what="the reaper to give the job up",
        )
        assert file.status == "failed" and file.last_error is not None
        assert "died" in file.last_error.message
        assert client.vector_stores.retrieve(store.id).file_counts.failed == 1
