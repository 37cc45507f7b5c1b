"""Stale threads: ``last_active_at`` follows the thread's use, and threads past the TTL are deleted."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import openai

from tests.api.test_run_lifecycle import sdk, setup_thread
from tests.support import ThreadlineServer, wait_for
from threadline.testing import Reply, ScriptedModel

TTL_SECONDS = 3
BETA = {"OpenAI-Beta": "assistants=v2"}


def test_last_active_at_follows_messages_and_runs(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant_id, thread_id = setup_thread(client)
    created = client.beta.threads.retrieve(thread_id)
    assert created.last_active_at == created.created_at  # type: ignore[attr-defined]
    time.sleep(1.1)  # timestamps are whole seconds: the next write must land in a later one
    client.beta.threads.messages.create(thread_id=thread_id, role="user", content="again")
    touched = client.beta.threads.retrieve(thread_id).last_active_at  # type: ignore[attr-defined]
    assert touched > created.created_at
    model.script(Reply(text="ok"))
    time.sleep(1.1)
    client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id)
    assert client.beta.threads.retrieve(thread_id).last_active_at > touched  # type: ignore[attr-defined]


def test_threads_past_the_ttl_are_deleted_with_everything_under_them(
    make_server: Callable[..., ThreadlineServer], model: ScriptedModel
) -> None:
    server = make_server(thread_ttl_days=TTL_SECONDS / 86400, janitor_interval_seconds=0.2)
    client = sdk(server)
    assistant_id, stale = setup_thread(client)
    model.script(Reply(text="old answer"))
    run = client.beta.threads.runs.create_and_poll(thread_id=stale, assistant_id=assistant_id)
    # A thread kept busy outlives the TTL; the untouched one does not.
    _, busy = setup_thread(client)
    deadline = time.monotonic() + TTL_SECONDS + 1.5
    while time.monotonic() < deadline:
        client.beta.threads.messages.create(thread_id=busy, role="user", content="still here")
        time.sleep(0.5)

    def gone() -> bool:
        try:
            client.beta.threads.retrieve(stale)
        except openai.NotFoundError:
            return True
        return False

    wait_for(gone, timeout=TTL_SECONDS + 5, what="the stale thread to be deleted")
    assert client.beta.threads.retrieve(busy).id == busy
    answer = httpx.get(f"{server.url}/threads/{stale}/runs/{run.id}/transitions", headers=BETA)
    assert answer.status_code == 404
    assert client.beta.assistants.retrieve(assistant_id).id == assistant_id  # assistants are not threads


def test_a_ttl_of_zero_keeps_threads(make_server: Callable[..., ThreadlineServer]) -> None:
    server = make_server(thread_ttl_days=0, janitor_interval_seconds=0.1)
    client = sdk(server)
    _, thread_id = setup_thread(client)
    time.sleep(1.5)  # several sweeps; nothing may go
    assert client.beta.threads.retrieve(thread_id).id == thread_id
