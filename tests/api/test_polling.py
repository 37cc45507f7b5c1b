"""Held polls: the SDK's ``*_and_poll`` helpers learn a run's outcome as soon as it happens.

The helpers send ``X-Stainless-Poll-Helper: true`` and otherwise sleep a full second between polls.
Threadline holds such a poll until the run's status changes and answers ``openai-poll-after-ms: 0``,
so a run that takes 0.3 s is seen finished after about 0.3 s, with a handful of requests.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest

from tests.support import ThreadlineServer
from threadline.testing import Reply, ScriptedModel, ToolCall

MODEL_SECONDS = 0.3
SLACK = 0.25  # the SDK's default 1 s poll interval could not come in under this


@dataclass
class Seen:
    """The GET requests an SDK client made, with the headers of their answers."""

    gets: list[dict[str, str]] = field(default_factory=list)
    answers: list[dict[str, str]] = field(default_factory=list)

    def hook(self, response: Any) -> None:  # the SDK's own HTTP client's response
        if response.request.method == "GET":
            self.gets.append(dict(response.request.headers))
            self.answers.append(dict(response.headers))


@pytest.fixture
def counted(server: ThreadlineServer) -> Iterator[tuple[openai.OpenAI, Seen]]:
    seen = Seen()
    http = openai.DefaultHttpxClient(event_hooks={"response": [seen.hook]})
    with openai.OpenAI(base_url=server.url, api_key="test-key", max_retries=0, http_client=http) as sdk:
        yield sdk, seen


def best_of(attempts: int, measure: Callable[[], float], bound: float) -> float:
    """The first of ``attempts`` timings under ``bound``, else the fastest (one slow CI hiccup is not a bug)."""
    timings: list[float] = []
    for _ in range(attempts):
        timings.append(measure())
        if timings[-1] < bound:
            break
    return min(timings)


def test_create_and_poll_returns_as_soon_as_the_run_ends(
    counted: tuple[openai.OpenAI, Seen], model: ScriptedModel
) -> None:
    client, seen = counted
    assistant = client.beta.assistants.create(model="gpt-4o")

    def measure() -> float:
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
        model.script(Reply(text="took a while", first_delay=MODEL_SECONDS))
        seen.gets.clear()
        seen.answers.clear()
        started = time.monotonic()
        run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
        elapsed = time.monotonic() - started
        assert run.status == "completed"
        # queued -> in_progress -> completed: at most one held poll per status change, plus one.
        assert 1 <= len(seen.gets) <= 3, len(seen.gets)
        assert all(h.get("x-stainless-poll-helper") == "true" for h in seen.gets)
        return elapsed

    elapsed = best_of(3, measure, MODEL_SECONDS + SLACK)
    assert MODEL_SECONDS <= elapsed < MODEL_SECONDS + SLACK, elapsed


def test_submit_tool_outputs_and_poll_returns_as_soon_as_the_run_ends(
    counted: tuple[openai.OpenAI, Seen], model: ScriptedModel
) -> None:
    client, seen = counted
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    assistant = client.beta.assistants.create(model="gpt-4o", tools=[tool])  # type: ignore[list-item]

    def measure() -> float:
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "look it up"}])
        model.script(
            Reply(tool_calls=[ToolCall("lookup", {"q": "x"})]),
            Reply(text="found it", first_delay=MODEL_SECONDS),
        )
        run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
        assert run.status == "requires_action" and run.required_action is not None
        assert run == client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)  # as stored
        call = run.required_action.submit_tool_outputs.tool_calls[0]
        seen.gets.clear()
        started = time.monotonic()
        run = client.beta.threads.runs.submit_tool_outputs_and_poll(
            thread_id=thread.id, run_id=run.id, tool_outputs=[{"tool_call_id": call.id, "output": "x"}]
        )
        elapsed = time.monotonic() - started
        assert run.status == "completed"
        assert 1 <= len(seen.gets) <= 3, len(seen.gets)
        return elapsed

    elapsed = best_of(3, measure, MODEL_SECONDS + SLACK)
    assert MODEL_SECONDS <= elapsed < MODEL_SECONDS + SLACK, elapsed


def test_held_polls_answer_with_poll_after_zero(
    counted: tuple[openai.OpenAI, Seen], model: ScriptedModel, server: ThreadlineServer
) -> None:
    client, _ = counted
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    # Slow enough that the plain retrieve below cannot outlast it on a busy machine.
    model.script(Reply(text="slow", first_delay=1.5))
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    model.wait_for_requests(1)  # in progress, waiting on the model

    # A plain retrieve is answered at once, without the hint.
    plain = client.beta.threads.runs.with_raw_response.retrieve(run.id, thread_id=thread.id)
    assert plain.parse().status == "in_progress"
    assert "openai-poll-after-ms" not in plain.headers

    # A helper's poll waits for the change and says to ask again right away.
    started = time.monotonic()
    held = client.beta.threads.runs.with_raw_response.retrieve(
        run.id, thread_id=thread.id, extra_headers={"X-Stainless-Poll-Helper": "true"}
    )
    waited = time.monotonic() - started
    assert held.parse().status == "completed"
    assert int(held.headers["openai-poll-after-ms"]) == 0
    assert 0.2 < waited < 3.0, waited

    # Once the run has stopped, a helper's poll is not held at all.
    started = time.monotonic()
    again = client.beta.threads.runs.with_raw_response.retrieve(
        run.id, thread_id=thread.id, extra_headers={"X-Stainless-Poll-Helper": "true"}
    )
    assert again.parse().status == "completed" and time.monotonic() - started < 0.5
    # The held poll answered with the run its event carried: the same object as the one stored.
    assert held.http_response.json() == again.http_response.json()


def test_held_poll_gives_up_after_the_hold_time(
    make_server: Callable[..., ThreadlineServer], model: ScriptedModel
) -> None:
    server = make_server(poll_hold_seconds=0.4)
    with openai.OpenAI(base_url=server.url, api_key="test-key", max_retries=0) as client:
        assistant = client.beta.assistants.create(model="gpt-4o")
        thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
        model.script(Reply(hang=True))
        run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
        model.wait_for_requests(1)
        started = time.monotonic()
        held = client.beta.threads.runs.with_raw_response.retrieve(
            run.id, thread_id=thread.id, extra_headers={"X-Stainless-Poll-Helper": "true"}
        )
        waited = time.monotonic() - started
        assert held.parse().status == "in_progress"
        assert held.headers["openai-poll-after-ms"] == "0"
        assert 0.35 < waited < 2.0, waited
        # Cancelling ends the hanging model call; the helper sees the cancel through.
        client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
        assert client.beta.threads.runs.poll(run.id, thread_id=thread.id).status == "cancelled"
        model.wait_for_disconnect()
