"""The Responses API through the official SDK: text, streaming, function round trips, chains,
background mode, cancellation, and the errors a client can make."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import openai
import pytest

from tests.support import ThreadlineServer
from threadline.testing import Reply, ScriptedModel, ToolCall

ADD = {
    "type": "function",
    "name": "add",
    "description": "Add two numbers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}},
}


def test_text_response(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(text="Hello from the engine."))
    response = client.responses.create(model="gpt-4o", input="Say hello", instructions="Be brief.")
    assert response.status == "completed"
    assert response.id.startswith("resp_")
    assert response.output_text == "Hello from the engine."
    assert response.output[0].type == "message" and response.output[0].role == "assistant"
    assert response.usage is not None and response.usage.output_tokens > 0
    sent = model.requests[0]["messages"]
    assert sent[0] == {"role": "system", "content": "Be brief."}
    assert sent[-1] == {"role": "user", "content": "Say hello"}
    again = client.responses.retrieve(response.id)
    assert again.output_text == "Hello from the engine." and again.status == "completed"
    items = client.responses.input_items.list(response.id)
    assert [i.type for i in items.data] == ["message"]
    assert items.data[0].content[0].text == "Say hello"  # type: ignore[union-attr]


def test_previous_response_chain_and_branch(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(text="Blue."), Reply(text="It is blue."), Reply(text="Green, then."))
    first = client.responses.create(model="gpt-4o", input="My favourite colour is blue. One word?")
    second = client.responses.create(model="gpt-4o", input="What did I say?", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    texts = [m.get("content") for m in model.requests[1]["messages"]]
    assert texts == ["My favourite colour is blue. One word?", "Blue.", "What did I say?"]
    # A second continuation of the first response branches: it does not see the other branch.
    branch = client.responses.create(model="gpt-4o", input="Other branch?", previous_response_id=first.id)
    assert branch.output_text == "Green, then."
    texts = [m.get("content") for m in model.requests[2]["messages"]]
    assert texts == ["My favourite colour is blue. One word?", "Blue.", "Other branch?"]


def test_function_call_round_trip(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(tool_calls=[ToolCall("add", {"a": 1, "b": 2})]), Reply(text="1 + 2 = 3"))
    first = client.responses.create(model="gpt-4o", input="What is 1+2?", tools=[ADD])  # type: ignore[list-item]
    assert first.status == "completed"
    call = first.output[0]
    assert call.type == "function_call" and call.name == "add"
    assert json.loads(call.arguments) == {"a": 1, "b": 2}
    assert call.id.startswith("fc_") and call.call_id.startswith("call_")
    second = client.responses.create(
        model="gpt-4o",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "3"}],
        tools=[ADD],  # type: ignore[list-item]
    )
    assert second.output_text == "1 + 2 = 3"
    sent = model.requests[1]["messages"]
    assert sent[-2]["tool_calls"][0]["id"] == call.call_id
    assert sent[-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "3"}


def test_unknown_call_output_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model="gpt-4o", input=[{"type": "function_call_output", "call_id": "call_nope", "output": "1"}]
        )
    assert "call_nope" in caught.value.message


def test_streaming_events(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(text="one two three", chunks=3))
    with client.responses.stream(model="gpt-4o", input="count") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert final.output_text == "one two three"
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") == 3
    for expected in (
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ):
        assert expected in kinds


def test_stream_sequence_numbers_and_function_call(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(tool_calls=[ToolCall("add", {"a": 2, "b": 2})]))
    events = list(
        client.responses.create(model="gpt-4o", input="2+2", tools=[ADD], stream=True)  # type: ignore[list-item]
    )
    assert [e.sequence_number for e in events] == list(range(len(events)))
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    done = next(e for e in events if e.type == "response.output_item.done")
    assert done.item.type == "function_call" and json.loads(done.item.arguments) == {"a": 2, "b": 2}
    assert events[-1].type == "response.completed"


def test_background_poll_and_cancel(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(text="slow answer", delay=30))
    response = client.responses.create(model="gpt-4o", input="take your time", background=True)
    assert response.status in ("queued", "in_progress") and response.background
    deadline = time.monotonic() + 10
    while client.responses.retrieve(response.id).status != "in_progress":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancelled = client.responses.cancel(response.id)
    assert cancelled.status == "cancelled"
    deadline = time.monotonic() + 10
    while (status := client.responses.retrieve(response.id).status) != "cancelled":
        assert time.monotonic() < deadline, status
        time.sleep(0.05)


def test_background_response_finishes(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(text="done in the background"))
    response = client.responses.create(model="gpt-4o", input="go", background=True)
    deadline = time.monotonic() + 10
    while (current := client.responses.retrieve(response.id)).status in ("queued", "in_progress"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert current.status == "completed" and current.output_text == "done in the background"


def test_cancel_needs_background(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(text="x"))
    response = client.responses.create(model="gpt-4o", input="x")
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(response.id)


def test_delete_response(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(text="bye"))
    response = client.responses.create(model="gpt-4o", input="x")
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_json_schema_format(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(text='{"city": "Paris"}'))
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    response = client.responses.create(
        model="gpt-4o",
        input="capital of France",
        text={"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}},
    )
    assert json.loads(response.output_text) == {"city": "Paris"}
    sent = model.requests[0]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["name"] == "answer"


def test_bad_requests(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="gpt-4o", input="x", previous_response_id="resp_missing")
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="gpt-4o", input=[{"role": "robot", "content": "x"}])  # type: ignore[list-item]
    assert caught.value.body["param"] == "input[0].role"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="gpt-4o", input="x", tools=[{"type": "computer_use_preview"}])  # type: ignore[list-item]
    with pytest.raises(openai.BadRequestError):
        client.responses.create(
            model="gpt-4o", input="x", conversation="conv_x", previous_response_id="resp_y"
        )
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_missing")


def test_background_stream_resumes_after_any_event(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(text="alpha beta gamma delta", chunks=4, delay=0.05))
    with client.responses.create(model="gpt-4o", input="go", background=True, stream=True) as live:
        first = [event for _, event in zip(range(4), live, strict=False)]
    response_id = first[0].response.id  # type: ignore[union-attr]
    assert [e.sequence_number for e in first] == [0, 1, 2, 3]
    # Picked up again after the third event: the rest, numbered on, to the end.
    with client.responses.retrieve(response_id, stream=True, starting_after=2) as again:
        rest = list(again)
    assert rest[0].sequence_number == 3
    assert [e.sequence_number for e in rest] == list(range(3, 3 + len(rest)))
    assert rest[-1].type == "response.completed"
    assert rest[-1].response.output_text == "alpha beta gamma delta"  # type: ignore[union-attr]
    text = "".join(e.delta for e in rest if e.type == "response.output_text.delta")  # type: ignore[union-attr]
    assert text == "alpha beta gamma delta"
    # The whole stream, replayed from the start once the response has finished.
    with client.responses.retrieve(response_id, stream=True) as replay:
        assert [e.type for e in replay][:2] == ["response.created", "response.queued"]


def test_resume_needs_background(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(text="x"))
    response = client.responses.create(model="gpt-4o", input="x")
    with pytest.raises(openai.BadRequestError):
        client.responses.retrieve(response.id, stream=True)


def test_store_false_is_not_kept(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(text="forgotten"), Reply(text="streamed and forgotten"))
    response = client.responses.create(model="gpt-4o", input="x", store=False)
    assert response.output_text == "forgotten" and response.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with client.responses.stream(model="gpt-4o", input="y", store=False) as stream:
        final = stream.get_final_response()
    assert final.output_text == "streamed and forgotten"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(final.id)


def test_truncation_and_summaries_apply_as_to_runs(
    make_server: Callable[..., ThreadlineServer], model: ScriptedModel
) -> None:
    server = make_server(default_context_window=2048)
    words = " ".join(["the cat sat on a mat and saw one red bird"] * 9)
    with openai.OpenAI(base_url=server.url, api_key="x", max_retries=0) as client:
        thread = client.beta.threads.create(
            messages=[{"role": "user", "content": f"message-{i:02d} {words}"} for i in range(30)]
        )
        # OpenAI's default, truncation "disabled": a conversation over the window fails the response.
        too_long = client.responses.create(model="gpt-4o", conversation=thread.id, input="and now?")
        assert too_long.status == "failed" and too_long.error is not None
        assert too_long.error.code == "invalid_prompt"
        assert model.requests == []
        # "auto": the oldest part is summarised and the newest messages are sent, as for runs.
        model.script(Reply(text="A summary of words."), Reply(text="fits now"))
        fits = client.responses.create(
            model="gpt-4o", conversation=thread.id, input="and now?", truncation="auto"
        )
        assert fits.status == "completed" and fits.output_text == "fits now"
        summary_call, answer_call = model.requests
        assert "running summary" in str(summary_call["messages"][0]["content"])
        sent = [str(m.get("content")) for m in answer_call["messages"]]
        assert "A summary of words." in sent[0]
        assert sent[-1] == "and now?" and any(s.startswith("message-29") for s in sent)
        assert not any(s.startswith("message-00") for s in sent)


def test_a_branch_answers_the_calls_of_the_response_it_continues(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    model.script(Reply(tool_calls=[ToolCall("add", {"a": 1, "b": 1})]), Reply(text="2"), Reply(text="two"))
    first = client.responses.create(model="gpt-4o", input="1+1?", tools=[ADD])  # type: ignore[list-item]
    call_id = first.output[0].call_id  # type: ignore[union-attr]
    output = [{"type": "function_call_output", "call_id": call_id, "output": "2"}]
    client.responses.create(model="gpt-4o", previous_response_id=first.id, input=output)  # type: ignore[arg-type]
    # The first response is no longer the newest on its thread: this one branches, on a copy.
    branch = client.responses.create(model="gpt-4o", previous_response_id=first.id, input=output)  # type: ignore[arg-type]
    assert branch.output_text == "two"
    sent = model.requests[2]["messages"]
    assert sent[-2]["tool_calls"][0]["id"] == call_id
    assert sent[-1] == {"role": "tool", "tool_call_id": call_id, "content": "2"}
