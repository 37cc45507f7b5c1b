"""Run history (a Threadline extension): every status change of a run, with its time and cause."""

from __future__ import annotations

from typing import Any

import httpx
import openai

from tests.api.test_run_lifecycle import ADD, setup_thread, wait_status
from tests.support import ThreadlineServer
from threadline.testing import Reply, ScriptedModel, ToolCall

BETA = {"OpenAI-Beta": "assistants=v2"}


def history(server: ThreadlineServer, thread_id: str, run_id: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{server.url}/threads/{thread_id}/runs/{run_id}/transitions", headers=BETA)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["object"] == "list"
    return list(body["data"])


def test_a_function_round_trip_is_recorded_in_order(
    client: openai.OpenAI, server: ThreadlineServer, model: ScriptedModel
) -> None:
    assistant_id, thread_id = setup_thread(client, "add", tools=[ADD])
    model.script(Reply(tool_calls=[ToolCall("add", {"a": 1, "b": 2})]), Reply(text="3"))
    run = client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id)
    assert run.required_action is not None
    call = run.required_action.submit_tool_outputs.tool_calls[0]
    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        thread_id=thread_id, run_id=run.id, tool_outputs=[{"tool_call_id": call.id, "output": "3"}]
    )
    assert run.status == "completed"

    changes = history(server, thread_id, run.id)
    assert [c["status"] for c in changes] == [
        "queued",
        "in_progress",
        "requires_action",
        "queued",
        "in_progress",
        "completed",
    ]
    assert [c["cause"] for c in changes] == [
        "created",
        "claimed by a worker",
        "waiting for tool outputs: add",
        "tool outputs submitted",
        "claimed by a worker",
        "answered",
    ]
    times = [c["at"] for c in changes]
    assert times == sorted(times) and times[0] >= run.created_at
    assert all(c["run_id"] == run.id and c["object"] == "thread.run.transition" for c in changes)
    assert changes[1]["worker_id"] and changes[0]["worker_id"] is None


def test_a_failure_and_a_cancellation_say_why(
    client: openai.OpenAI, server: ThreadlineServer, model: ScriptedModel
) -> None:
    assistant_id, thread_id = setup_thread(client)
    model.script(*[Reply(status=500, error_message="upstream exploded")] * 3)
    run = client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id)
    assert run.status == "failed"
    last = history(server, thread_id, run.id)[-1]
    assert (
        last["status"] == "failed"
        and "server_error" in last["cause"]
        and "upstream exploded" in last["cause"]
    )

    assistant_id, thread_id = setup_thread(client)
    model.script(Reply(text="never ends", hang=True))
    run = client.beta.threads.runs.create(thread_id=thread_id, assistant_id=assistant_id)
    wait_status(client, thread_id, run.id, "in_progress")
    client.beta.threads.runs.cancel(thread_id=thread_id, run_id=run.id)
    wait_status(client, thread_id, run.id, "cancelled")
    statuses = [c["status"] for c in history(server, thread_id, run.id)]
    assert statuses[-2:] == ["cancelling", "cancelled"]


def test_unknown_runs_are_404_and_history_goes_with_the_thread(
    client: openai.OpenAI, server: ThreadlineServer, model: ScriptedModel
) -> None:
    answer = httpx.get(f"{server.url}/threads/thread_nope/runs/run_nope/transitions", headers=BETA)
    assert answer.status_code == 404 and answer.json()["error"]["message"].startswith("No thread found")
    assistant_id, thread_id = setup_thread(client)
    model.script(Reply(text="hi"))
    run = client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id)
    assert history(server, thread_id, run.id)
    client.beta.threads.delete(thread_id)
    answer = httpx.get(f"{server.url}/threads/{thread_id}/runs/{run.id}/transitions", headers=BETA)
    assert answer.status_code == 404
