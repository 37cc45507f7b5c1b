"""Lists: order, cursors in both directions, ties within one second, GET /v1/threads and its filters."""

from __future__ import annotations

import httpx
import openai
from openai.pagination import SyncCursorPage
from openai.types.beta import Thread

from tests.support import ThreadlineServer

BETA = {"OpenAI-Beta": "assistants=v2", "Authorization": "Bearer x"}


def list_threads(client: openai.OpenAI, **query: str | int) -> SyncCursorPage[Thread]:
    """The SDK has no ``threads.list``; its generic list helper reaches ``GET /v1/threads``."""
    return client.get_api_list(
        "/threads",
        page=SyncCursorPage[Thread],
        model=Thread,
        options={"params": query, "headers": {"OpenAI-Beta": "assistants=v2"}},
    )


def test_thread_list_newest_first_and_paginated(client: openai.OpenAI) -> None:
    tag = {"suite": "lists-paging"}
    made = [client.beta.threads.create(metadata={**tag, "n": str(i)}).id for i in range(7)]
    page = list_threads(client, limit=3, **{"metadata[suite]": "lists-paging"})
    assert [t.id for t in page.data] == made[::-1][:3]
    assert page.has_more
    # The SDK's auto-pagination follows the cursors to the end.
    everything = [t.id for t in list_threads(client, limit=3, **{"metadata[suite]": "lists-paging"})]
    assert everything == made[::-1]


def test_thread_list_metadata_filter_and_cursors(server: ThreadlineServer) -> None:
    with httpx.Client(base_url=server.url, headers=BETA) as http:
        ids = []
        for i in range(5):
            body = {"metadata": {"user": "alice" if i % 2 == 0 else "bob", "run": "cursor-test"}}
            ids.append(http.post("/threads", json=body).json()["id"])
        alice = http.get(
            "/threads", params={"metadata[user]": "alice", "metadata[run]": "cursor-test"}
        ).json()
        assert [t["id"] for t in alice["data"]] == [ids[4], ids[2], ids[0]]
        assert alice["first_id"] == ids[4] and alice["last_id"] == ids[0] and alice["has_more"] is False

        scoped = {"metadata[run]": "cursor-test"}
        asc = http.get("/threads", params={**scoped, "order": "asc", "after": ids[1], "limit": 2}).json()
        assert [t["id"] for t in asc["data"]] == [ids[2], ids[3]] and asc["has_more"] is True
        before = http.get("/threads", params={**scoped, "before": ids[1], "limit": 2}).json()
        # Newest first, the two nearest items newer than ids[1].
        assert [t["id"] for t in before["data"]] == [ids[3], ids[2]] and before["has_more"] is True
        between = http.get("/threads", params={**scoped, "after": ids[4], "before": ids[0]}).json()
        assert [t["id"] for t in between["data"]] == [ids[3], ids[2], ids[1]]
        empty = http.get("/threads", params={"metadata[user]": "nobody"}).json()
        assert empty == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}


def test_messages_keep_creation_order_within_a_second(client: openai.OpenAI) -> None:
    thread = client.beta.threads.create()
    ids = [
        client.beta.threads.messages.create(thread_id=thread.id, role="user", content=f"m{i}").id
        for i in range(12)
    ]
    desc = client.beta.threads.messages.list(thread_id=thread.id, limit=5)
    assert [m.id for m in desc.data] == ids[::-1][:5]
    walked = [m.id for m in client.beta.threads.messages.list(thread_id=thread.id, order="asc", limit=5)]
    assert walked == ids
    after = client.beta.threads.messages.list(thread_id=thread.id, order="asc", after=ids[9])
    assert [m.id for m in after.data] == ids[10:] and not after.has_more


def test_assistants_list_and_modify(client: openai.OpenAI) -> None:
    first = client.beta.assistants.create(model="gpt-4o", name="one", metadata={"a": "1"})
    second = client.beta.assistants.create(model="gpt-4o", name="two")
    listed = client.beta.assistants.list(limit=2)
    assert [a.id for a in listed.data] == [second.id, first.id]
    updated = client.beta.assistants.update(first.id, name="uno", instructions="Speak Italian.")
    assert (updated.name, updated.instructions, updated.metadata) == ("uno", "Speak Italian.", {"a": "1"})
    assert client.beta.assistants.retrieve(first.id).name == "uno"
    assert client.beta.assistants.delete(second.id).deleted
    assert second.id not in [a.id for a in client.beta.assistants.list(limit=100)]


def test_modify_thread_message_and_delete_message(client: openai.OpenAI) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hello"}])
    assert client.beta.threads.update(thread.id, metadata={"topic": "greeting"}).metadata == {
        "topic": "greeting"
    }
    message = client.beta.threads.messages.list(thread_id=thread.id).data[0]
    assert message.content[0].text.value == "hello"  # type: ignore[union-attr]
    assert message.content[0].text.annotations == []  # type: ignore[union-attr]
    assert message.attachments == [] and message.status == "completed"
    changed = client.beta.threads.messages.update(
        message_id=message.id, thread_id=thread.id, metadata={"x": "y"}
    )
    assert changed.metadata == {"x": "y"}
    gone = client.beta.threads.messages.delete(message_id=message.id, thread_id=thread.id)
    assert gone.deleted and gone.object == "thread.message.deleted"
    assert client.beta.threads.messages.list(thread_id=thread.id).data == []


def test_a_list_parameter_given_twice_is_refused(server: ThreadlineServer) -> None:
    headers = {"Authorization": "Bearer x", "OpenAI-Beta": "assistants=v2"}
    for path in (
        "/v1/files?limit=1&limit=2",
        "/v1/threads?order=asc&order=desc",
        "/v1/assistants?after=a&after=b",
    ):
        answer = httpx.get(server.url.removesuffix("/v1") + path, headers=headers)
        assert answer.status_code == 400, path
        assert answer.json()["error"]["param"] == path.split("?")[1].split("=")[0]
    # include[] is a list: repeating it is how a client asks for several values.
    step_includes = "include[]=step_details.tool_calls[*].file_search.results[*].content"
    answer = httpx.get(
        f"{server.url}/threads/thread_x/runs/run_x/steps?{step_includes}&{step_includes}", headers=headers
    )
    assert answer.status_code == 404
