"""Files attached to messages for ``file_search`` go into the thread's own vector store, as OpenAI's did.

The quickstart pattern end to end through the official SDK (upload, attach to a message, run an
assistant with ``file_search``), the store's reuse and expiry, and runs that search while a file is
still being indexed. Ingestion is the real job (the embedded e5 model); tests that need a file to
stay in progress hold its job back at a gate they open themselves.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from tests.conftest import server_settings
from tests.support import ThreadlineServer, wait_for
from threadline.domain.entities import Job
from threadline.domain.vector_stores import INGEST_JOB
from threadline.testing import Reply, ScriptedModel
from threadline.testing import ToolCall as Call

WEEK = 7 * 86_400
PENSION = ("pension.md", "# 养老金\n\n每月缴纳工资的百分之八，公司再补充百分之四。".encode())
HOLIDAYS = ("holidays.md", b"# Holidays\n\nEmployees get 25 days of paid holiday a year.")
BIKES = ("bikes.txt", b"The office bike shed opens at seven and closes at nine in the evening.")
APPLE = (
    "aapl-10k.txt",
    b"Apple Inc. Form 10-K for the fiscal year ended September 30, 2023. As of October 20, 2023, "
    b"15,550,061,000 shares of Apple's common stock were issued and outstanding.",
)
GOOGLE = (
    "goog-10k.txt",
    b"Alphabet Inc. Form 10-K for the fiscal year ended December 31, 2023. Google Services revenues "
    b"grew on the strength of Search and YouTube advertising; Google Cloud turned an operating profit.",
)


class Gates:
    """Ingestion jobs held back, file by file, until the test opens the file's gate."""

    def __init__(self) -> None:
        self.server: ThreadlineServer | None = None
        self.closed: dict[str, threading.Event] = {}

    def hold(self, file_id: str) -> None:
        self.closed[file_id] = threading.Event()

    def open(self, file_id: str) -> None:
        self.closed[file_id].set()

    def open_all(self) -> None:
        for gate in self.closed.values():
            gate.set()

    async def ingest(self, job: Job) -> None:
        gate = self.closed.get(job.payload["file_id"])
        if gate is not None:
            await asyncio.to_thread(gate.wait)
        assert self.server is not None
        await self.server.app.state.vector_stores.ingest(job)


def gated_server(
    model: ScriptedModel, tmp: pytest.TempPathFactory, **settings: Any
) -> tuple[ThreadlineServer, Gates]:
    gates = Gates()
    config = server_settings(model, tmp).replace(**settings)
    gates.server = ThreadlineServer(config, job_handlers={INGEST_JOB: gates.ingest})
    return gates.server, gates


@pytest.fixture(scope="module")
def gated(
    model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ThreadlineServer, Gates]]:
    server, gates = gated_server(model, tmp_path_factory)
    yield server, gates
    gates.open_all()
    server.stop()


@pytest.fixture
def gates(gated: tuple[ThreadlineServer, Gates]) -> Gates:
    return gated[1]


@pytest.fixture
def client(gated: tuple[ThreadlineServer, Gates]) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gated[0].url, api_key="k", max_retries=0, timeout=120) as sdk:
        yield sdk


def upload(client: openai.OpenAI, file: tuple[str, bytes]) -> str:
    return client.files.create(file=file, purpose="assistants").id


def attaching(file_id: str, text: str = "See the attached file.", tool: str = "file_search") -> Any:
    return {"role": "user", "content": text, "attachments": [{"file_id": file_id, "tools": [{"type": tool}]}]}


def store_of(thread: Any) -> str | None:
    search = thread.tool_resources.file_search if thread.tool_resources else None
    ids = (search.vector_store_ids or []) if search else []
    assert len(ids) <= 1
    return ids[0] if ids else None


def searcher(client: openai.OpenAI) -> str:
    return client.beta.assistants.create(model="gpt-4o", tools=[{"type": "file_search"}]).id


def told(model: ScriptedModel) -> str:
    """What the model was told the last tool call returned."""
    message = model.requests[-1]["messages"][-1]
    assert message["role"] == "tool"
    return str(message["content"])


def test_the_quickstart_attachment_is_searched_and_cited(client: openai.OpenAI, model: ScriptedModel) -> None:
    file_id = upload(client, PENSION)
    assistant = client.beta.assistants.create(
        model="gpt-4o", instructions="Answer from the files.", tools=[{"type": "file_search"}]
    )
    thread = client.beta.threads.create(messages=[attaching(file_id, "每月缴纳多少养老金？")])
    store_id = store_of(thread)
    assert store_id is not None and store_id.startswith("vs_")
    assert store_of(client.beta.threads.retrieve(thread.id)) == store_id

    store = client.vector_stores.retrieve(store_id)
    assert store.name == thread.id
    assert store.expires_after is not None
    assert (store.expires_after.anchor, store.expires_after.days) == ("last_active_at", 7)
    assert store.expires_at == store.last_active_at + WEEK  # type: ignore[operator]
    assert [f.id for f in client.vector_stores.files.list(store_id).data] == [file_id]

    # The run is made at once, while the file may still be being indexed: the search waits for it.
    model.script(
        Reply(tool_calls=[Call("file_search", {"query": "每月缴纳养老金"})]),
        Reply(text="工资的百分之八【0:0†pension.md】。"),
    )
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed", run.last_error
    output = told(model)
    assert output.startswith("【0:0†pension.md】") and "百分之八" in output
    assert "still being indexed" not in output

    step = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc").data[0]
    (call,) = step.step_details.tool_calls  # type: ignore[union-attr]
    assert call.type == "file_search"
    assert [r.file_id for r in call.file_search.results or []] == [file_id]  # type: ignore[union-attr]
    answer = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    text = answer.content[0].text  # type: ignore[union-attr]
    (citation,) = text.annotations
    assert citation.type == "file_citation" and citation.text == "【0:0†pension.md】"
    assert citation.file_citation.file_id == file_id  # type: ignore[union-attr]

    # Searching was activity: the store's expiry moved with it.
    searched = client.vector_stores.retrieve(store_id)
    assert searched.last_active_at >= store.last_active_at  # type: ignore[operator]
    assert searched.expires_at == searched.last_active_at + WEEK  # type: ignore[operator]
    assert searched.status == "completed" and searched.file_counts.completed == 1


def test_later_attachments_go_into_the_same_store(client: openai.OpenAI, model: ScriptedModel) -> None:
    pension, holidays, bikes = upload(client, PENSION), upload(client, HOLIDAYS), upload(client, BIKES)
    thread = client.beta.threads.create(messages=[attaching(pension)])
    store_id = store_of(thread)
    assert store_id is not None

    client.beta.threads.messages.create(thread_id=thread.id, **attaching(holidays))
    # Attaching a file the store holds already adds nothing.
    client.beta.threads.messages.create(thread_id=thread.id, **attaching(pension))
    assert store_of(client.beta.threads.retrieve(thread.id)) == store_id

    # A run's additional messages attach into it too, and the run searches them.
    model.script(
        Reply(tool_calls=[Call("file_search", {"query": "bike shed opening hours"})]), Reply(text="7")
    )
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=searcher(client),
        additional_messages=[attaching(bikes, "When does the bike shed open?")],
    )
    assert run.status == "completed", run.last_error
    assert told(model).startswith("【0:0†bikes.txt】")
    assert store_of(client.beta.threads.retrieve(thread.id)) == store_id
    held = client.vector_stores.files.list(store_id).data
    assert sorted(f.id for f in held) == sorted([pension, holidays, bikes])
    assert [s.id for s in client.vector_stores.list(limit=100).data if s.name == thread.id] == [store_id]


def test_create_and_run_gives_the_new_thread_its_store(client: openai.OpenAI, model: ScriptedModel) -> None:
    file_id = upload(client, HOLIDAYS)
    model.script(Reply(tool_calls=[Call("file_search", {"query": "paid holiday days"})]), Reply(text="25"))
    run = client.beta.threads.create_and_run_poll(
        assistant_id=searcher(client), thread={"messages": [attaching(file_id, "How many holidays?")]}
    )
    assert run.status == "completed", run.last_error
    assert told(model).startswith("【0:0†holidays.md】") and "25 days" in told(model)
    store_id = store_of(client.beta.threads.retrieve(run.thread_id))
    assert store_id is not None
    assert client.vector_stores.retrieve(store_id).name == run.thread_id


def test_threads_without_file_search_attachments_get_no_store(client: openai.OpenAI) -> None:
    before = {s.id for s in client.vector_stores.list(limit=100).data}
    data = upload(client, ("data.csv", b"a,b\n1,2\n"))
    thread = client.beta.threads.create(
        messages=[attaching(data, tool="code_interpreter"), {"role": "user", "content": "Hello."}]
    )
    client.beta.threads.messages.create(thread_id=thread.id, **attaching(data, tool="code_interpreter"))
    resources = client.beta.threads.retrieve(thread.id).tool_resources
    assert resources is not None and resources.file_search is None
    assert resources.code_interpreter is not None and resources.code_interpreter.file_ids == [data]
    assert {s.id for s in client.vector_stores.list(limit=100).data} == before


def test_a_store_the_thread_names_takes_the_files_and_a_deleted_one_is_replaced(
    client: openai.OpenAI,
) -> None:
    mine = client.vector_stores.create(name="mine")
    thread = client.beta.threads.create(tool_resources={"file_search": {"vector_store_ids": [mine.id]}})
    pension, bikes = upload(client, PENSION), upload(client, BIKES)
    client.beta.threads.messages.create(thread_id=thread.id, **attaching(pension))
    assert store_of(client.beta.threads.retrieve(thread.id)) == mine.id
    assert [f.id for f in client.vector_stores.files.list(mine.id).data] == [pension]

    client.vector_stores.delete(mine.id)
    client.beta.threads.messages.create(thread_id=thread.id, **attaching(bikes))
    fresh = store_of(client.beta.threads.retrieve(thread.id))
    assert fresh is not None and fresh != mine.id
    store = client.vector_stores.retrieve(fresh)
    assert store.name == thread.id and store.expires_after is not None and store.expires_after.days == 7
    assert [f.id for f in client.vector_stores.files.list(fresh).data] == [bikes]


def test_messages_added_at_once_share_one_store(client: openai.OpenAI) -> None:
    thread = client.beta.threads.create()
    files = [upload(client, (f"note{i}.txt", f"Note number {i}.".encode())) for i in range(6)]
    with ThreadPoolExecutor(len(files)) as pool:
        list(
            pool.map(
                lambda f: client.beta.threads.messages.create(thread_id=thread.id, **attaching(f)), files
            )
        )
    store_id = store_of(client.beta.threads.retrieve(thread.id))
    assert store_id is not None
    assert sorted(f.id for f in client.vector_stores.files.list(store_id, limit=100).data) == sorted(files)
    assert [s.id for s in client.vector_stores.list(limit=100).data if s.name == thread.id] == [store_id]


def test_deleting_the_thread_leaves_its_store_to_expire(client: openai.OpenAI) -> None:
    thread = client.beta.threads.create(messages=[attaching(upload(client, BIKES))])
    store_id = store_of(thread)
    assert store_id is not None
    assert client.beta.threads.delete(thread.id).deleted
    store = client.vector_stores.retrieve(store_id)
    assert store.status != "expired" and store.expires_at == store.last_active_at + WEEK  # type: ignore[operator]


def test_a_search_waits_for_an_attachment_still_being_indexed(
    client: openai.OpenAI, model: ScriptedModel, gates: Gates
) -> None:
    file_id = upload(client, BIKES)
    gates.hold(file_id)
    thread = client.beta.threads.create(messages=[attaching(file_id, "When does the bike shed open?")])
    store_id = store_of(thread)
    assert store_id is not None
    model.script(Reply(tool_calls=[Call("file_search", {"query": "bike shed hours"})]), Reply(text="7"))
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=searcher(client))

    def searching() -> bool:
        steps = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id).data
        return any(s.type == "tool_calls" and s.status == "in_progress" for s in steps)

    wait_for(searching, timeout=30, what="the run's file_search call to start")
    # The call is waiting for the file, which the gate keeps in progress.
    assert client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "in_progress"
    assert client.vector_stores.files.retrieve(file_id, vector_store_id=store_id).status == "in_progress"
    gates.open(file_id)
    done = client.beta.threads.runs.poll(run.id, thread_id=thread.id)
    assert done.status == "completed", done.last_error
    assert told(model).startswith("【0:0†bikes.txt】") and "seven" in told(model)


def test_a_search_that_waited_long_enough_searches_what_is_ready(
    model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory
) -> None:
    server, gates = gated_server(model, tmp_path_factory, file_search_wait_seconds=0.5)
    try:
        with openai.OpenAI(base_url=server.url, api_key="k", max_retries=0, timeout=120) as client:
            ready, slow = upload(client, HOLIDAYS), upload(client, BIKES)
            gates.hold(slow)
            thread = client.beta.threads.create(messages=[attaching(ready)])
            store_id = store_of(thread)
            assert store_id is not None
            wait_for(
                lambda: (
                    client.vector_stores.files.retrieve(ready, vector_store_id=store_id).status == "completed"
                ),
                timeout=60,
                what="the first file to be indexed",
            )
            client.beta.threads.messages.create(thread_id=thread.id, **attaching(slow))
            assistant = searcher(client)
            output = run_search(client, model, thread.id, assistant, "holidays and the bike shed")
            assert output.startswith("【0:0†holidays.md】") and "bikes.txt" not in output
            assert output.endswith(
                "(1 file attached to this thread could not be searched: still being indexed.)"
            )

            gates.open(slow)
            wait_for(
                lambda: client.vector_stores.retrieve(store_id).status == "completed",
                timeout=60,
                what="the held file to be indexed",
            )
            output = run_search(client, model, thread.id, assistant, "bike shed opening hours")
            assert output.startswith("【0:0†bikes.txt】") and "still being indexed" not in output
    finally:
        gates.open_all()
        server.stop()


def run_search(
    client: openai.OpenAI, model: ScriptedModel, thread_id: str, assistant_id: str, query: str
) -> str:
    model.script(Reply(tool_calls=[Call("file_search", {"query": query})]), Reply(text="ok"))
    run = client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id)
    assert run.status == "completed", run.last_error
    return told(model)


def test_one_ranking_over_the_assistants_store_and_the_threads(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    """The SDK quickstart: Google's filing in the assistant's store, Apple's attached to the thread,
    a question about Apple. Each store ranked alone and its best hit scaled to 1.0 put Google's
    filing (the assistant's store comes first) ahead of the answer; one ranking must not."""
    google, apple = upload(client, GOOGLE), upload(client, APPLE)
    store = client.vector_stores.create(name="filings", file_ids=[google])
    wait_for(
        lambda: client.vector_stores.retrieve(store.id).file_counts.completed == 1,
        timeout=60,
        what="Google's filing to be indexed",
    )
    assistant = client.beta.assistants.create(
        model="gpt-4o",
        tools=[{"type": "file_search"}],
        tool_resources={"file_search": {"vector_store_ids": [store.id]}},
    )
    question = "How many shares of AAPL were outstanding at the end of October 2023?"
    thread = client.beta.threads.create(messages=[attaching(apple, question)])
    output = run_search(client, model, thread.id, assistant.id, question)
    assert output.startswith("【0:0†aapl-10k.txt】"), output
    run = client.beta.threads.runs.list(thread_id=thread.id).data[0]
    step = client.beta.threads.runs.steps.list(thread_id=thread.id, run_id=run.id, order="asc").data[0]
    (call,) = step.step_details.tool_calls  # type: ignore[union-attr]
    results = call.file_search.results or []  # type: ignore[union-attr]
    assert results[0].file_id == apple
    # Scores are of one ranking: the other store's best hit is not scaled up to the answer's.
    assert all(r.score < results[0].score for r in results[1:]), [(r.file_name, r.score) for r in results]
