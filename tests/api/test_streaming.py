"""Run event streaming (SSE), end to end: the official SDKs' stream helpers and the raw wire format.

The Python SDK's ``AssistantEventHandler`` rebuilds snapshots from the events, so wrong order, repeated
fields or a missing ``event:`` line show up as wrong text, wrong arguments or a crash in the handler.
The raw tests read the bytes with httpx to pin down what the SDK would silently tolerate.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import AssistantEventHandler
from openai.types.beta import AssistantStreamEvent
from openai.types.beta.threads import Text, TextDelta
from openai.types.beta.threads.runs import ToolCall, ToolCallDelta

from tests.support import TEXT_RUN, ThreadlineServer, install_node_sdk, run_node, wait_for
from threadline.api import sse
from threadline.domain.entities import Run
from threadline.domain.events import Event, MessageDelta, ObjectEvent
from threadline.domain.run_states import RunStatus
from threadline.events.bus import LocalBus
from threadline.testing import Reply, ScriptedModel
from threadline.testing import ToolCall as ScriptedCall

TWENTY_WORDS = " ".join(f"word{n}" for n in range(20))

# The event sequences of the reference notes (§6.2), with each run of deltas collapsed to one name.
TOOL_RUN = [
    "thread.run.created",
    "thread.run.queued",
    "thread.run.in_progress",
    "thread.run.step.created",
    "thread.run.step.in_progress",
    "thread.run.step.delta",
    "thread.run.requires_action",
]
AFTER_SUBMIT = ["thread.run.step.completed", "thread.run.queued", *TEXT_RUN[2:]]

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
    },
}


def collapse(names: list[str]) -> list[str]:
    """``names`` with each run of identical delta events kept once."""
    out: list[str] = []
    for name in names:
        if not (name.endswith(".delta") and out and out[-1] == name):
            out.append(name)
    return out


class Recorder(AssistantEventHandler):
    """Records what the SDK's handler callbacks see (copies: the SDK keeps mutating its snapshots)."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[AssistantStreamEvent] = []
        self.arrivals: list[tuple[str, float]] = []
        self.texts_created: list[Text] = []
        self.deltas: list[str] = []
        self.calls_created: list[ToolCall] = []
        self.call_deltas: list[ToolCallDelta] = []
        self.calls_done: list[ToolCall] = []

    @property
    def names(self) -> list[str]:
        return [e.event for e in self.events]

    def first(self, name: str) -> Any:
        return next(e.data for e in self.events if e.event == name)

    def on_event(self, event: AssistantStreamEvent) -> None:
        self.events.append(event.model_copy(deep=True))
        self.arrivals.append((event.event, time.monotonic()))

    def on_text_created(self, text: Text) -> None:
        self.texts_created.append(text.model_copy(deep=True))

    def on_text_delta(self, delta: TextDelta, snapshot: Text) -> None:
        self.deltas.append(delta.value or "")

    def on_tool_call_created(self, tool_call: ToolCall) -> None:
        self.calls_created.append(tool_call.model_copy(deep=True))

    def on_tool_call_delta(self, delta: ToolCallDelta, snapshot: ToolCall) -> None:
        self.call_deltas.append(delta.model_copy(deep=True))

    def on_tool_call_done(self, tool_call: ToolCall) -> None:
        self.calls_done.append(tool_call.model_copy(deep=True))


class SubmitsFromInside(Recorder):
    """Answers the run's tool calls from inside the handler, while this stream is still open."""

    def __init__(self, client: openai.OpenAI, answers: dict[str, str]) -> None:
        super().__init__()
        self.client = client
        self.answers = answers
        self.after = Recorder()

    def on_event(self, event: AssistantStreamEvent) -> None:
        super().on_event(event)
        if event.event != "thread.run.requires_action":
            return
        run = event.data
        assert run.required_action is not None
        outputs = [
            {"tool_call_id": call.id, "output": self.answers[call.function.name]}
            for call in run.required_action.submit_tool_outputs.tool_calls
        ]
        with self.client.beta.threads.runs.submit_tool_outputs_stream(
            thread_id=run.thread_id, run_id=run.id, tool_outputs=outputs, event_handler=self.after
        ) as inner:
            inner.until_done()


def setup(client: openai.OpenAI, text: str = "hello", tools: list[Any] | None = None) -> tuple[str, str]:
    assistant = client.beta.assistants.create(model="gpt-4o", tools=tools or [])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": text}])
    return assistant.id, thread.id


# --- the Python SDK's stream helpers ---------------------------------------------------------------


def test_text_run_event_order_and_handler_callbacks(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant_id, thread_id = setup(client)
    model.script(Reply(text="Hello! How can I help you today?"))
    with client.beta.threads.runs.stream(
        thread_id=thread_id, assistant_id=assistant_id, event_handler=Recorder()
    ) as stream:
        stream.until_done()
        messages = stream.get_final_messages()
        run = stream.get_final_run()

    assert collapse(stream.names) == TEXT_RUN, stream.names
    assert stream.names.count("thread.message.delta") == 7  # one per word: really streamed
    assert "".join(stream.deltas) == "Hello! How can I help you today?"
    assert len(stream.texts_created) == 1 and stream.texts_created[0].value == "Hello! "
    assert stream.texts_created[0].annotations == []

    created = stream.first("thread.run.created")
    assert created.status == "queued" and created.id == run.id
    step = stream.first("thread.run.step.created")
    message = stream.first("thread.message.created")
    assert step.type == "message_creation" and step.status == "in_progress"
    assert step.step_details.message_creation.message_id == message.id
    assert message.content == [] and message.status == "in_progress" and message.run_id == run.id

    assert run.status == "completed" and run.expires_at is None and run.usage is not None
    assert [m.id for m in messages] == [message.id]
    assert messages[0].status == "completed"
    assert messages[0].content[0].type == "text"
    assert messages[0].content[0].text.value == "Hello! How can I help you today?"
    stored = client.beta.threads.messages.retrieve(message.id, thread_id=thread_id)
    assert stored.content == messages[0].content


def test_completed_message_step_event_carries_usage(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant_id, thread_id = setup(client)
    model.script(Reply(text="counted words", usage=(12, 2)))
    with client.beta.threads.runs.stream(
        thread_id=thread_id, assistant_id=assistant_id, event_handler=Recorder()
    ) as stream:
        stream.until_done()
    streamed = stream.first("thread.run.step.completed")
    stored = client.beta.threads.runs.steps.retrieve(streamed.id, thread_id=thread_id, run_id=streamed.run_id)
    assert stored.usage is not None and stored.usage.total_tokens == 14
    assert streamed.usage == stored.usage


def test_text_deltas_iterator(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant_id, thread_id = setup(client)
    model.script(Reply(text="one two three four"))
    with client.beta.threads.runs.stream(thread_id=thread_id, assistant_id=assistant_id) as stream:
        pieces = list(stream.text_deltas)
        assert stream.get_final_run().status == "completed"
    assert pieces == ["one ", "two ", "three ", "four"]


def test_create_and_run_stream_starts_with_thread_created(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o")
    model.script(Reply(text="Fresh thread, fresh answer."))
    with client.beta.threads.create_and_run_stream(
        assistant_id=assistant.id,
        thread={"messages": [{"role": "user", "content": "hi"}]},
        event_handler=Recorder(),
    ) as stream:
        stream.until_done()
    assert collapse(stream.names) == ["thread.created", *TEXT_RUN], stream.names
    thread = stream.first("thread.created")
    run = stream.get_final_run()
    assert run.thread_id == thread.id and run.status == "completed"
    assert stream.get_final_messages()[0].content[0].text.value == "Fresh thread, fresh answer."
    assert model.requests[0]["messages"][-1] == {"role": "user", "content": "hi"}


def test_function_call_with_submit_from_inside_the_handler(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    assistant_id, thread_id = setup(client, "Weather in Paris?", [WEATHER])
    model.script(
        Reply(tool_calls=[ScriptedCall("get_weather", {"city": "Paris"})]), Reply(text="Sunny, 21 degrees.")
    )
    handler = SubmitsFromInside(client, {"get_weather": "sunny, 21C"})
    with client.beta.threads.runs.stream(
        thread_id=thread_id, assistant_id=assistant_id, event_handler=handler
    ) as stream:
        stream.until_done()
        paused = stream.get_final_run()

    # The first stream stops at requires_action: no completion, the tool step still open.
    assert collapse(stream.names) == TOOL_RUN, stream.names
    assert stream.names.count("thread.run.step.delta") == 4  # the call's header, then 3 argument pieces
    assert paused.status == "requires_action"
    step = stream.first("thread.run.step.created")
    assert step.type == "tool_calls" and step.step_details.tool_calls == []

    [created] = stream.calls_created
    [done] = stream.calls_done
    assert created.type == "function" and created.function.name == "get_weather"
    assert created.id.startswith("call_") and created.index == 0
    assert done.id == created.id and json.loads(done.function.arguments) == {"city": "Paris"}
    fragments = [
        d.function.arguments or "" for d in stream.call_deltas if d.type == "function" and d.function
    ]
    assert len(fragments) == 3 and created.function.arguments + "".join(fragments) == done.function.arguments
    assert paused.required_action is not None
    assert paused.required_action.submit_tool_outputs.tool_calls[0].id == created.id

    after = handler.after
    assert collapse(after.names) == AFTER_SUBMIT, after.names
    closed = after.first("thread.run.step.completed")
    assert closed.id == step.id and closed.step_details.tool_calls[0].function.output == "sunny, 21C"
    final = after.get_final_run()
    assert final.status == "completed" and final.id == paused.id and final.required_action is None
    assert "".join(after.deltas) == "Sunny, 21 degrees."
    assert after.get_final_messages()[0].content[0].text.value == "Sunny, 21 degrees."
    sent = model.requests[1]["messages"]
    assert sent[-1] == {"role": "tool", "tool_call_id": created.id, "content": "sunny, 21C"}


def test_parallel_tool_calls_are_reassembled(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant_id, thread_id = setup(client, "Weather and time in Paris?", [WEATHER, TIME])
    weather_args = {"city": "Paris", "unit": "celsius", "detail": "hourly forecast"}
    time_args = {"tz": "Europe/Paris"}
    model.script(
        Reply(tool_calls=[ScriptedCall("get_weather", weather_args), ScriptedCall("get_time", time_args)]),
        Reply(text="Sunny at noon."),
    )
    handler = SubmitsFromInside(client, {"get_weather": "sunny", "get_time": "12:00"})
    with client.beta.threads.runs.stream(
        thread_id=thread_id, assistant_id=assistant_id, event_handler=handler
    ) as stream:
        stream.until_done()
        [step] = stream.get_final_run_steps()
        paused = stream.get_final_run()

    assert collapse(stream.names) == TOOL_RUN, stream.names
    assert [(c.index, c.function.name) for c in stream.calls_created] == [(0, "get_weather"), (1, "get_time")]
    # The SDK's step snapshot is built only from the deltas: ids once, arguments concatenated.
    calls = step.step_details.tool_calls
    assert [c.index for c in calls] == [0, 1]
    assert json.loads(calls[0].function.arguments) == weather_args
    assert json.loads(calls[1].function.arguments) == time_args
    assert paused.required_action is not None
    required = paused.required_action.submit_tool_outputs.tool_calls
    assert [c.id for c in calls] == [c.id for c in required]
    assert len({c.id for c in calls}) == 2
    assert [c.function.arguments for c in calls] == [c.function.arguments for c in required]
    assert [c.id for c in stream.calls_done] == [c.id for c in calls]
    assert [json.loads(c.function.arguments) for c in stream.calls_done] == [weather_args, time_args]

    after = handler.after
    assert collapse(after.names) == AFTER_SUBMIT, after.names
    outputs = [c.function.output for c in after.first("thread.run.step.completed").step_details.tool_calls]
    assert outputs == ["sunny", "12:00"]
    assert after.get_final_run().status == "completed"
    tool_messages = [m for m in model.requests[1]["messages"] if m["role"] == "tool"]
    assert [(m["tool_call_id"], m["content"]) for m in tool_messages] == [
        (calls[0].id, "sunny"),
        (calls[1].id, "12:00"),
    ]


@pytest.mark.timeout(30)
def test_model_failure_after_the_stream_started(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant_id, thread_id = setup(client)
    model.script(Reply(status=400, error_message="context too long"))
    with client.beta.threads.runs.stream(
        thread_id=thread_id, assistant_id=assistant_id, event_handler=Recorder()
    ) as stream:
        stream.until_done()
        run = stream.get_final_run()
        with pytest.raises(RuntimeError, match="No messages found"):
            stream.get_final_messages()
    assert stream.names == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.run.failed",
    ]
    assert run.status == "failed" and run.failed_at is not None
    assert run.last_error is not None and run.last_error.code == "server_error"
    assert "context too long" in run.last_error.message
    assert client.beta.threads.runs.retrieve(run.id, thread_id=thread_id).status == "failed"


@pytest.mark.timeout(30)
def test_cancel_mid_stream_ends_the_message_incomplete(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant_id, thread_id = setup(client)
    model.script(Reply(text=TWENTY_WORDS, delay=0.1))

    class CancelsOnFirstDelta(Recorder):
        def on_text_delta(self, delta: TextDelta, snapshot: Text) -> None:
            super().on_text_delta(delta, snapshot)
            if len(self.deltas) == 1:
                run = self.current_run
                assert run is not None
                client.beta.threads.runs.cancel(run.id, thread_id=thread_id)

    with client.beta.threads.runs.stream(
        thread_id=thread_id, assistant_id=assistant_id, event_handler=CancelsOnFirstDelta()
    ) as stream:
        stream.until_done()
    names = collapse(stream.names)
    assert names[:8] == TEXT_RUN[:8]
    assert names[8:] == [
        "thread.run.cancelling",
        "thread.message.incomplete",
        "thread.run.step.cancelled",
        "thread.run.cancelled",
    ] or names[8:] == [
        # A delta may still be on its way when the cancel lands.
        "thread.run.cancelling",
        "thread.message.delta",
        "thread.message.incomplete",
        "thread.run.step.cancelled",
        "thread.run.cancelled",
    ], names
    assert stream.get_final_run().status == "cancelled"
    [message] = stream.get_final_messages()
    assert message.status == "incomplete"
    assert message.content[0].type == "text"
    assert message.content[0].text.value == "".join(stream.deltas) != ""
    assert len(stream.deltas) < 20


def test_deltas_arrive_as_the_model_produces_them(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant_id, thread_id = setup(client)
    model.script(Reply(text=TWENTY_WORDS, delay=0.05))
    with client.beta.threads.runs.stream(
        thread_id=thread_id, assistant_id=assistant_id, event_handler=Recorder()
    ) as stream:
        stream.until_done()
    deltas = [t for name, t in stream.arrivals if name == "thread.message.delta"]
    [completed] = [t for name, t in stream.arrivals if name == "thread.run.completed"]
    assert len(deltas) == 20
    # Twenty words 50 ms apart: a buffering server would deliver them all at once, at the end.
    assert deltas[-1] - deltas[0] >= 0.5
    assert completed - deltas[0] >= 0.5
    assert "".join(stream.deltas) == TWENTY_WORDS


# --- the raw wire format ---------------------------------------------------------------------------


def headers(**extra: str) -> dict[str, str]:
    return {"Authorization": "Bearer test-key", "OpenAI-Beta": "assistants=v2", **extra}


def sse_events(body: str) -> list[tuple[str, str]]:
    """``(event, data)`` pairs of a complete SSE body, checking every frame is ``event:`` + one ``data:``."""
    assert body.endswith("\n\n"), body[-200:]
    events: list[tuple[str, str]] = []
    for block in body[:-2].split("\n\n"):
        lines = block.split("\n")
        if all(line.startswith(":") for line in lines):
            continue  # a keep-alive comment
        assert len(lines) == 2, block
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        events.append((lines[0][len("event: ") :], lines[1][len("data: ") :]))
    return events


def post_stream(server: ThreadlineServer, path: str, body: dict[str, Any], **extra: str) -> httpx.Response:
    response = httpx.post(f"{server.url}{path}", json=body, headers=headers(**extra), timeout=30)
    return response


def nulls(value: Any, path: str = "") -> list[str]:
    """Paths of every ``null`` inside ``value``."""
    if value is None:
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in nulls(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in nulls(v, f"{path}[{i}]")]
    return []


def test_wire_format_of_a_text_run(
    client: openai.OpenAI, model: ScriptedModel, server: ThreadlineServer
) -> None:
    assistant_id, thread_id = setup(client)
    model.script(Reply(text="alpha beta gamma"))
    response = post_stream(
        server, f"/threads/{thread_id}/runs", {"assistant_id": assistant_id, "stream": True}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    body = response.text
    assert "\nid:" not in body and not body.startswith("id:")
    events = sse_events(body)
    assert events[-1] == ("done", "[DONE]")
    assert collapse([name for name, _ in events[:-1]]) == TEXT_RUN
    payloads = [json.loads(data) for _, data in events[:-1]]
    assert all(set(data) != {"error"} for data in payloads)

    deltas = [p for (name, _), p in zip(events, payloads, strict=False) if name == "thread.message.delta"]
    assert [d["delta"]["content"][0]["text"]["value"] for d in deltas] == ["alpha ", "beta ", "gamma"]
    assert deltas[0] == {
        "id": deltas[0]["id"],
        "object": "thread.message.delta",
        "delta": {"content": [{"index": 0, "type": "text", "text": {"value": "alpha ", "annotations": []}}]},
    }
    for later in deltas[1:]:
        # Annotations are sent once: the SDK would concatenate a repeated list.
        assert later["delta"]["content"][0]["text"] == {
            "value": later["delta"]["content"][0]["text"]["value"]
        }
    for delta in deltas:
        assert nulls(delta) == [], delta

    by_name = {name: p for (name, _), p in zip(events, payloads, strict=False)}
    message = by_name["thread.message.created"]
    assert message["content"] == [] and message["object"] == "thread.message"
    assert all(d["id"] == message["id"] for d in deltas)
    assert by_name["thread.run.step.created"]["step_details"] == {
        "type": "message_creation",
        "message_creation": {"message_id": message["id"]},
    }
    assert by_name["thread.message.completed"]["content"] == [
        {"type": "text", "text": {"value": "alpha beta gamma", "annotations": []}}
    ]
    completed = by_name["thread.run.completed"]
    assert completed["object"] == "thread.run" and completed["status"] == "completed"
    assert completed["expires_at"] is None and completed["usage"]["total_tokens"] > 0
    assert by_name["thread.run.created"]["status"] == "queued"


def test_wire_format_of_a_function_call_run(
    client: openai.OpenAI, model: ScriptedModel, server: ThreadlineServer
) -> None:
    assistant_id, thread_id = setup(client, "weather?", [WEATHER])
    arguments = json.dumps({"city": "Lyon"})
    model.script(Reply(tool_calls=[ScriptedCall("get_weather", arguments)]), Reply(text="Rainy."))
    response = post_stream(
        server, f"/threads/{thread_id}/runs", {"assistant_id": assistant_id, "stream": True}
    )
    events = sse_events(response.text)
    assert events[-1] == ("done", "[DONE]")
    assert collapse([name for name, _ in events[:-1]]) == TOOL_RUN
    step = json.loads(next(data for name, data in events if name == "thread.run.step.created"))
    deltas = [json.loads(data) for name, data in events if name == "thread.run.step.delta"]
    calls = [d["delta"]["step_details"]["tool_calls"][0] for d in deltas]
    assert all(d["id"] == step["id"] and d["object"] == "thread.run.step.delta" for d in deltas)
    assert all(d["delta"]["step_details"]["type"] == "tool_calls" for d in deltas)
    first, rest = calls[0], calls[1:]
    assert first["index"] == 0 and first["type"] == "function" and first["id"].startswith("call_")
    assert first["function"]["name"] == "get_weather" and first["function"]["output"] is None
    assert rest and all(call.keys() == {"index", "type", "function"} for call in rest)
    assert all(call["function"].keys() == {"arguments"} for call in rest)
    assert "".join(c["function"]["arguments"] for c in calls) == arguments
    # Only the announced ``output: null`` may be null in a step delta.
    assert [p for d in deltas for p in nulls(d)] == [".delta.step_details.tool_calls[0].function.output"]

    run = json.loads(events[-2][1])
    assert events[-2][0] == "thread.run.requires_action"
    assert run["required_action"]["submit_tool_outputs"]["tool_calls"][0]["id"] == first["id"]
    # requires_action was stored before it was announced.
    assert client.beta.threads.runs.retrieve(run["id"], thread_id=thread_id).status == "requires_action"

    response = post_stream(
        server,
        f"/threads/{thread_id}/runs/{run['id']}/submit_tool_outputs",
        {"tool_outputs": [{"tool_call_id": first["id"], "output": "rain"}], "stream": True},
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert collapse([name for name, _ in events]) == [*AFTER_SUBMIT, "done"]
    closed = json.loads(events[0][1])
    assert closed["id"] == step["id"] and closed["status"] == "completed"
    assert closed["step_details"]["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": arguments,
        "output": "rain",
    }


def test_create_thread_and_run_wire_format(
    client: openai.OpenAI, model: ScriptedModel, server: ThreadlineServer
) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o")
    model.script(Reply(text="ok"))
    body = {
        "assistant_id": assistant.id,
        "thread": {"messages": [{"role": "user", "content": "x"}]},
        "stream": True,
    }
    response = post_stream(server, "/threads/runs", body)
    events = sse_events(response.text)
    assert collapse([name for name, _ in events]) == ["thread.created", *TEXT_RUN, "done"]
    thread = json.loads(events[0][1])
    run = json.loads(events[1][1])
    assert thread["object"] == "thread" and run["thread_id"] == thread["id"]


def test_keep_alive_comments_while_the_model_thinks(
    client: openai.OpenAI, model: ScriptedModel, server: ThreadlineServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse, "KEEPALIVE_SECONDS", 0.1)
    assistant_id, thread_id = setup(client)
    model.script(Reply(text="thought hard", first_delay=0.6), Reply(text="thought again", first_delay=0.6))
    response = post_stream(
        server, f"/threads/{thread_id}/runs", {"assistant_id": assistant_id, "stream": True}
    )
    assert response.text.count(": keep-alive\n\n") >= 2
    events = sse_events(response.text)  # comments are whole frames of their own
    assert collapse([name for name, _ in events]) == [*TEXT_RUN, "done"]
    # The SDK's decoder skips them too.
    with client.beta.threads.runs.stream(thread_id=thread_id, assistant_id=assistant_id) as stream:
        assert "".join(stream.text_deltas) == "thought again"


def test_stream_decision_comes_from_the_body(
    client: openai.OpenAI, model: ScriptedModel, server: ThreadlineServer
) -> None:
    assistant_id, thread_id = setup(client)
    model.script(Reply(text="one"), Reply(text="two"))
    plain = post_stream(
        server, f"/threads/{thread_id}/runs", {"assistant_id": assistant_id}, Accept="text/event-stream"
    )
    assert plain.status_code == 200 and plain.headers["content-type"].startswith("application/json")
    run = plain.json()
    assert run["object"] == "thread.run" and run["status"] == "queued"
    wait_for(lambda: client.beta.threads.runs.retrieve(run["id"], thread_id=thread_id).status == "completed")

    streamed = post_stream(
        server,
        f"/threads/{thread_id}/runs",
        {"assistant_id": assistant_id, "stream": True},
        Accept="application/json",
    )
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert sse_events(streamed.text)[-1] == ("done", "[DONE]")


def test_errors_before_the_stream_are_plain_json(
    client: openai.OpenAI, model: ScriptedModel, server: ThreadlineServer
) -> None:
    assistant_id, thread_id = setup(client, "weather?", [WEATHER])
    missing = post_stream(server, "/threads/thread_nope/runs", {"assistant_id": assistant_id, "stream": True})
    assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/json")
    assert missing.json()["error"]["message"] == "No thread found with id 'thread_nope'."

    model.script(Reply(tool_calls=[ScriptedCall("get_weather", {"city": "Oslo"})]))
    run = client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id)
    assert run.status == "requires_action"
    locked = post_stream(server, f"/threads/{thread_id}/runs", {"assistant_id": assistant_id, "stream": True})
    assert locked.status_code == 400 and locked.headers["content-type"].startswith("application/json")
    assert run.id in locked.json()["error"]["message"]

    wrong = post_stream(
        server,
        f"/threads/{thread_id}/runs/{run.id}/submit_tool_outputs",
        {"tool_outputs": [{"tool_call_id": "call_unknown", "output": "x"}], "stream": True},
    )
    assert wrong.status_code == 400 and wrong.headers["content-type"].startswith("application/json")
    assert wrong.json()["error"]["param"] == "tool_outputs"
    # The failed attempts changed nothing: the run still waits for its outputs.
    assert client.beta.threads.runs.retrieve(run.id, thread_id=thread_id).status == "requires_action"


@pytest.mark.timeout(30)
def test_retried_model_failure_ends_with_run_failed_then_done(
    client: openai.OpenAI, model: ScriptedModel, server: ThreadlineServer
) -> None:
    assistant_id, thread_id = setup(client)
    # The server retries 5xx twice before giving up, so the third failure is the one the client sees.
    model.script(*[Reply(status=500, error_message="upstream exploded")] * 3)
    response = post_stream(
        server, f"/threads/{thread_id}/runs", {"assistant_id": assistant_id, "stream": True}
    )
    events = sse_events(response.text)
    assert [name for name, _ in events] == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.run.failed",
        "done",
    ]
    failed = json.loads(events[-2][1])
    assert failed["last_error"]["code"] == "server_error" and failed["failed_at"] is not None
    assert len(model.requests) == 3


def test_client_disconnect_does_not_cancel_the_run(
    client: openai.OpenAI, model: ScriptedModel, server: ThreadlineServer
) -> None:
    assistant_id, thread_id = setup(client)
    model.script(Reply(text=TWENTY_WORDS, delay=0.05))
    body = {"assistant_id": assistant_id, "stream": True}
    run_id = ""
    with (
        httpx.Client(timeout=30) as http,
        http.stream(
            "POST", f"{server.url}/threads/{thread_id}/runs", json=body, headers=headers()
        ) as response,
    ):
        lines = response.iter_lines()
        for line in lines:
            if line.startswith("data: ") and not run_id:
                run_id = json.loads(line[len("data: ") :])["id"]
            if line == "event: thread.message.delta":
                break  # hang up while the model is still talking
    assert run_id.startswith("run_")
    run = wait_for(
        lambda: (
            (r := client.beta.threads.runs.retrieve(run_id, thread_id=thread_id)).status != "in_progress"
            and r
        ),
        what="the run to finish",
    )
    assert run.status == "completed"
    [message] = client.beta.threads.messages.list(thread_id=thread_id, run_id=run_id).data
    assert message.content[0].type == "text" and message.content[0].text.value == TWENTY_WORDS
    assert model.disconnects == 0  # the model call itself was never cut short
    bus = server.app.state.services.scope.bus
    wait_for(lambda: bus.subscriber_count(run_id) == 0, what="the stream's subscription to close")


def test_client_gone_before_the_first_byte(
    client: openai.OpenAI, model: ScriptedModel, server: ThreadlineServer
) -> None:
    """A client that hangs up right after sending leaves no subscription behind, and the run goes on."""
    assistant_id, thread_id = setup(client)
    model.script(Reply(text="nobody listens", delay=0.05))
    body = json.dumps({"assistant_id": assistant_id, "stream": True}).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in headers().items())
    request = (
        f"POST /v1/threads/{thread_id}/runs HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
    run = wait_for(
        lambda: next(iter(client.beta.threads.runs.list(thread_id=thread_id).data), None),
        what="the run to be created",
    )
    bus = server.app.state.services.scope.bus
    wait_for(
        lambda: client.beta.threads.runs.retrieve(run.id, thread_id=thread_id).status == "completed",
        what="the run to complete",
    )
    wait_for(lambda: bus.subscriber_count(run.id) == 0, what="every subscription to close")


def test_concurrent_streams_on_two_threads(client: openai.OpenAI, model: ScriptedModel) -> None:
    """Two streams at once each get only their own run's events."""
    assistant_id, first_thread = setup(client, "first")
    second_thread = client.beta.threads.create(messages=[{"role": "user", "content": "second"}]).id
    default = model.responder
    model.responder = lambda body: Reply(text=f"echo {body['messages'][-1]['content']} " * 5, delay=0.02)
    results: dict[str, Recorder] = {}

    def follow(thread_id: str) -> None:
        with client.beta.threads.runs.stream(
            thread_id=thread_id, assistant_id=assistant_id, event_handler=Recorder()
        ) as stream:
            stream.until_done()
            results[thread_id] = stream

    workers = [threading.Thread(target=follow, args=(t,)) for t in (first_thread, second_thread)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    try:
        for thread_id, word in ((first_thread, "first"), (second_thread, "second")):
            stream = results[thread_id]
            assert collapse(stream.names) == TEXT_RUN
            assert "".join(stream.deltas) == f"echo {word} " * 5
            assert {e.data.thread_id for e in stream.events if e.event.startswith("thread.run.")} == {
                thread_id
            }
    finally:
        model.responder = default


# --- the stream writer on its own --------------------------------------------------------------------


def test_stream_ends_on_the_event_name_not_the_objects_status() -> None:
    """A run read back from the store may be further along than the event announcing it."""
    bus = LocalBus()
    run = Run(
        id="run_x", thread_id="thread_x", assistant_id="asst_x", created_at=0, model="m", instructions=""
    )
    ahead = dataclasses.replace(run, status=RunStatus.COMPLETED)
    events: list[Event] = [
        ObjectEvent("thread.run.in_progress", ahead),
        MessageDelta("msg_x", 0, "hi"),
        ObjectEvent("thread.run.completed", ahead),
        MessageDelta("msg_x", 0, "never sent"),
    ]

    async def collect() -> list[bytes]:
        subscription = bus.subscribe("run_x")
        for event in events:
            await bus.publish("run_x", event)
        frames = [chunk async for chunk in sse.follow(subscription, keepalive=5)]
        assert bus.subscriber_count("run_x") == 0
        return frames

    frames = asyncio.run(collect())
    names = [f.split(b"\n", 1)[0].decode() for f in frames]
    assert names == [
        "event: thread.run.in_progress",
        "event: thread.message.delta",
        "event: thread.run.completed",
        "event: done",
    ]


# --- the official Node SDK -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def node_sdk() -> Iterator[Path]:
    yield install_node_sdk()


@pytest.mark.timeout(120)
def test_node_sdk_streams_a_run(node_sdk: Path, model: ScriptedModel, server: ThreadlineServer) -> None:
    model.script(
        Reply(text="Hello from the Node side."),
        Reply(tool_calls=[ScriptedCall("get_weather", {"city": "Rome"})]),
        Reply(text="Rome is sunny."),
    )
    result = run_node(node_sdk, "stream_run.mjs", server.url)

    text = result["text_run"]
    assert collapse(text["events"]) == TEXT_RUN, text["events"]
    assert text["deltas"] == ["Hello ", "from ", "the ", "Node ", "side."]
    assert text["final_text"] == "Hello from the Node side."
    assert text["status"] == "completed"

    tool = result["tool_run"]
    assert collapse(tool["events"]) == TOOL_RUN, tool["events"]
    assert tool["tool_calls"] == [{"name": "get_weather", "arguments": {"city": "Rome"}}]
    assert collapse(tool["after_events"]) == AFTER_SUBMIT, tool["after_events"]
    assert tool["final_text"] == "Rome is sunny." and tool["status"] == "completed"
    assert model.requests[2]["messages"][-1]["content"] == "sunny"
