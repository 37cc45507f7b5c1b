"""The Conversations API through the official SDK, and "a thread is a conversation": a thread made
by the Assistants API continued by the Responses API and the reverse, read back through both."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import openai
import pytest

from threadline.testing import Reply, ScriptedModel, ToolCall

ADD = {
    "type": "function",
    "name": "add",
    "description": "Add two numbers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}},
}


def _text(item: object) -> str:
    """The text of a conversation item that is a message."""
    assert getattr(item, "type", None) == "message", item
    return "".join(getattr(part, "text", "") for part in item.content)


def _wait(check: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _error(caught: pytest.ExceptionInfo[openai.APIStatusError]) -> dict[str, object]:
    body = caught.value.response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert isinstance(error, dict)
    return error


# --- conversations and items ---------------------------------------------------------------


def test_conversation_lifecycle(client: openai.OpenAI) -> None:
    conv = client.conversations.create(
        items=[
            {"type": "message", "role": "user", "content": "Hello!"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi."}]},
        ],
        metadata={"topic": "demo"},
    )
    assert conv.id.startswith("conv_") and conv.object == "conversation"
    assert conv.metadata == {"topic": "demo"} and conv.created_at > 0
    got = client.conversations.retrieve(conv.id)
    assert (got.id, got.metadata, got.created_at) == (conv.id, {"topic": "demo"}, conv.created_at)

    items = client.conversations.items.list(conv.id, order="asc")
    assert [(i.role, _text(i)) for i in items.data] == [("user", "Hello!"), ("assistant", "Hi.")]
    assert items.data[0].content[0].type == "input_text"
    assert items.data[1].content[0].type == "output_text"

    updated = client.conversations.update(conv.id, metadata={"topic": "changed", "n": "2"})
    assert updated.metadata == {"topic": "changed", "n": "2"}
    assert client.conversations.retrieve(conv.id).metadata == {"topic": "changed", "n": "2"}

    deleted = client.conversations.delete(conv.id)
    assert deleted.id == conv.id and deleted.deleted and deleted.object == "conversation.deleted"
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conv.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.list(conv.id)


def test_items_order_limit_and_pagination(client: openai.OpenAI) -> None:
    words = ["one", "two", "three", "four", "five"]
    conv = client.conversations.create(
        items=[{"type": "message", "role": "user", "content": w} for w in words]
    )
    # The default order is newest first.
    newest = client.conversations.items.list(conv.id)
    assert [_text(i) for i in newest.data] == list(reversed(words))
    assert newest.first_id == newest.data[0].id and newest.last_id == newest.data[-1].id
    assert newest.has_more is False

    first = client.conversations.items.list(conv.id, order="asc", limit=2)
    assert [_text(i) for i in first.data] == ["one", "two"] and first.has_more
    second = client.conversations.items.list(conv.id, order="asc", limit=2, after=first.last_id)
    assert [_text(i) for i in second.data] == ["three", "four"] and second.has_more
    third = client.conversations.items.list(conv.id, order="asc", limit=2, after=second.last_id)
    assert [_text(i) for i in third.data] == ["five"] and not third.has_more
    # The SDK's auto-pagination walks the same cursors.
    assert [_text(i) for i in client.conversations.items.list(conv.id, order="asc", limit=2)] == words
    backwards = client.conversations.items.list(conv.id, order="desc", limit=2, after=newest.data[1].id)
    assert [_text(i) for i in backwards.data] == ["three", "two"]


def test_item_create_retrieve_delete(client: openai.OpenAI) -> None:
    conv = client.conversations.create()
    assert client.conversations.items.list(conv.id).data == []
    added = client.conversations.items.create(
        conv.id,
        items=[
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello!"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "How are you?"}]},
        ],
    )
    assert [_text(i) for i in added.data] == ["Hello!", "How are you?"]
    assert added.first_id == added.data[0].id and added.last_id == added.data[1].id
    assert not added.has_more
    first_id = added.data[0].id
    assert first_id is not None

    got = client.conversations.items.retrieve(first_id, conversation_id=conv.id)
    assert got.id == first_id and got.type == "message" and got.status == "completed"
    assert _text(got) == "Hello!"

    after = client.conversations.items.delete(first_id, conversation_id=conv.id)
    assert after.id == conv.id and after.object == "conversation"
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(first_id, conversation_id=conv.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.delete(first_id, conversation_id=conv.id)
    assert [_text(i) for i in client.conversations.items.list(conv.id).data] == ["How are you?"]


def test_function_items_in_a_conversation(client: openai.OpenAI) -> None:
    conv = client.conversations.create(
        items=[
            {"type": "message", "role": "user", "content": "1+2?"},
            {"type": "function_call", "call_id": "call_1", "name": "add", "arguments": '{"a":1,"b":2}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "3"},
        ]
    )
    items = client.conversations.items.list(conv.id, order="asc").data
    assert [i.type for i in items] == ["message", "function_call", "function_call_output"]
    call, output = items[1], items[2]
    assert call.type == "function_call" and call.call_id == "call_1" and call.name == "add"
    assert call.id is not None and call.id.startswith("fc_")
    assert output.type == "function_call_output" and output.output == "3" and output.call_id == "call_1"
    got = client.conversations.items.retrieve(output.id, conversation_id=conv.id)
    assert got.type == "function_call_output" and got.call_id == "call_1"
    # An output needs a call in the conversation.
    with pytest.raises(openai.BadRequestError) as caught:
        client.conversations.items.create(
            conv.id, items=[{"type": "function_call_output", "call_id": "call_nope", "output": "x"}]
        )
    assert "call_nope" in caught.value.message


def test_unknown_ids_are_404_in_the_error_envelope(client: openai.OpenAI) -> None:
    conv = client.conversations.create()
    calls: list[Callable[[], object]] = [
        lambda: client.conversations.retrieve("conv_missing"),
        lambda: client.conversations.update("conv_missing", metadata={"a": "b"}),
        lambda: client.conversations.delete("conv_missing"),
        lambda: client.conversations.items.list("conv_missing"),
        lambda: client.conversations.items.create(
            "conv_missing", items=[{"type": "message", "role": "user", "content": "x"}]
        ),
        lambda: client.conversations.items.retrieve("msg_missing", conversation_id="conv_missing"),
        lambda: client.conversations.items.retrieve("msg_missing", conversation_id=conv.id),
        lambda: client.conversations.items.delete("msg_missing", conversation_id=conv.id),
        lambda: client.responses.create(model="gpt-4o", input="x", conversation="conv_missing"),
    ]
    for call in calls:
        with pytest.raises(openai.NotFoundError) as caught:
            call()
        error = _error(caught)
        assert error["type"] == "invalid_request_error"
        assert "missing" in str(error["message"])


def test_bad_item_payloads_name_the_param(client: openai.OpenAI) -> None:
    conv = client.conversations.create()
    cases: list[tuple[Callable[[], object], str]] = [
        (
            lambda: client.conversations.items.create(
                conv.id,
                items=[{"type": "message", "role": "robot", "content": "x"}],
            ),
            "items[0].role",
        ),
        (
            lambda: client.conversations.items.create(
                conv.id,
                items=[
                    {"type": "message", "role": "user", "content": "fine"},
                    {"type": "message", "role": "user", "content": [{"type": "video", "text": "x"}]},
                ],
            ),
            "items[1].content[0].type",
        ),
        (
            lambda: client.conversations.items.create(conv.id, items=[{"type": "teleport"}]),
            "items[0].type",
        ),
        (
            lambda: client.conversations.items.create(
                conv.id,
                items=[{"type": "function_call", "call_id": "c", "name": "f"}],
            ),
            "items[0].arguments",
        ),
        (
            lambda: client.conversations.create(items=[{"type": "message", "role": "user", "content": 7}]),
            "items[0].content",
        ),
    ]
    for call, param in cases:
        with pytest.raises(openai.BadRequestError) as caught:
            call()
        error = _error(caught)
        assert error["type"] == "invalid_request_error"
        assert error["param"] == param, (param, error)
    # None of the refused items was written, not even the good one before a bad one.
    assert client.conversations.items.list(conv.id).data == []


# --- responses in a conversation -----------------------------------------------------------


def test_response_joins_the_conversation(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(text="Blue."), Reply(text="You said blue."))
    conv = client.conversations.create(metadata={"who": "me"})
    first = client.responses.create(
        model="gpt-4o", input="My favourite colour is blue.", conversation=conv.id
    )
    assert first.conversation is not None and first.conversation.id == conv.id
    items = client.conversations.items.list(conv.id, order="asc").data
    assert [(i.role, _text(i)) for i in items] == [
        ("user", "My favourite colour is blue."),
        ("assistant", "Blue."),
    ]
    assert items[1].id == first.output[0].id

    second = client.responses.create(
        model="gpt-4o", input="What did I say?", conversation={"id": conv.id}, instructions="Be brief."
    )
    assert second.output_text == "You said blue."
    sent = [(m["role"], m.get("content")) for m in model.requests[1]["messages"]]
    assert sent == [
        ("system", "Be brief."),
        ("user", "My favourite colour is blue."),
        ("assistant", "Blue."),
        ("user", "What did I say?"),
    ]
    texts = [_text(i) for i in client.conversations.items.list(conv.id, order="asc").data]
    assert texts == ["My favourite colour is blue.", "Blue.", "What did I say?", "You said blue."]
    # The response's input items are its own input only, not the conversation's history.
    inputs = client.responses.input_items.list(second.id)
    assert [_text(i) for i in inputs.data] == ["What did I say?"]

    # Deleting the conversation keeps its responses (as OpenAI's does), but not the conversation.
    client.conversations.delete(conv.id)
    for gone in (
        lambda: client.conversations.retrieve(conv.id),
        lambda: client.beta.threads.retrieve(conv.id),
        lambda: client.beta.threads.messages.list(conv.id),
        lambda: client.responses.create(model="gpt-4o", input="more?", conversation=conv.id),
    ):
        with pytest.raises(openai.NotFoundError):
            gone()
    assert client.responses.retrieve(second.id).output_text == "You said blue."
    assert [_text(i) for i in client.responses.input_items.list(first.id).data] == [
        "My favourite colour is blue."
    ]
    listed = client.get(
        "/threads?limit=100", cast_to=object, options={"headers": {"OpenAI-Beta": "assistants=v2"}}
    )
    assert isinstance(listed, dict) and conv.id not in [t["id"] for t in listed["data"]]


def test_streamed_response_joins_the_conversation(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(text="streamed words here", chunks=3))
    conv = client.conversations.create()
    with client.responses.stream(model="gpt-4o", input="stream please", conversation=conv.id) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[-1] == "response.completed" and final.output_text == "streamed words here"
    assert final.conversation is not None and final.conversation.id == conv.id
    items = client.conversations.items.list(conv.id, order="asc").data
    assert [_text(i) for i in items] == ["stream please", "streamed words here"]
    assert items[1].id == final.output[0].id


def test_function_call_round_trip_in_a_conversation(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(tool_calls=[ToolCall("add", {"a": 1, "b": 2})]), Reply(text="1 + 2 = 3"))
    conv = client.conversations.create()
    first = client.responses.create(model="gpt-4o", input="What is 1+2?", tools=[ADD], conversation=conv.id)
    assert first.status == "completed"
    call = first.output[-1]
    assert call.type == "function_call" and json.loads(call.arguments) == {"a": 1, "b": 2}
    second = client.responses.create(
        model="gpt-4o",
        conversation=conv.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "3"}],
        tools=[ADD],
    )
    assert second.output_text == "1 + 2 = 3"
    sent = model.requests[1]["messages"]
    assert sent[-3] == {"role": "user", "content": "What is 1+2?"}
    assert sent[-2]["role"] == "assistant"
    assert [(c["id"], c["function"]["name"]) for c in sent[-2]["tool_calls"]] == [(call.call_id, "add")]
    assert sent[-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "3"}
    items = client.conversations.items.list(conv.id, order="asc").data
    assert [i.type for i in items] == ["message", "function_call", "function_call_output", "message"]
    assert items[1].id == call.id and items[1].call_id == call.call_id
    assert items[2].output == "3" and _text(items[3]) == "1 + 2 = 3"


# --- a thread is a conversation ------------------------------------------------------------


def test_assistants_thread_continued_by_responses(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(text="Nice to meet you, Ada."), Reply(text="Your name is Ada."))
    assistant = client.beta.assistants.create(model="gpt-4o", instructions="You are friendly.")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Hi, I am Ada."}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed"

    # The thread is a conversation: same id, same entries.
    conv = client.conversations.retrieve(thread.id)
    assert conv.id == thread.id and conv.created_at == thread.created_at
    response = client.responses.create(model="gpt-4o", input="What is my name?", conversation=thread.id)
    assert response.output_text == "Your name is Ada."
    sent = [(m["role"], m.get("content")) for m in model.requests[1]["messages"]]
    assert sent == [
        ("user", "Hi, I am Ada."),
        ("assistant", "Nice to meet you, Ada."),
        ("user", "What is my name?"),
    ]

    # Read back through the Assistants API: the new user and assistant messages are there.
    messages = client.beta.threads.messages.list(thread.id, order="asc").data
    assert [(m.role, m.content[0].text.value) for m in messages] == [
        ("user", "Hi, I am Ada."),
        ("assistant", "Nice to meet you, Ada."),
        ("user", "What is my name?"),
        ("assistant", "Your name is Ada."),
    ]
    assert messages[1].assistant_id == assistant.id and messages[1].run_id == run.id
    assert messages[3].id == response.output[0].id
    assert messages[3].run_id == response.id and messages[3].assistant_id is None
    # ... and through the Conversations API.
    items = client.conversations.items.list(thread.id, order="asc").data
    assert [i.id for i in items] == [m.id for m in messages]
    assert [_text(i) for i in items] == [m.content[0].text.value for m in messages]
    # The thread is still an Assistants thread: another run sees the whole exchange.
    model.script(Reply(text="Still Ada."))
    again = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert again.status == "completed"
    assert [m.get("content") for m in model.requests[2]["messages"]][1:] == [
        "Hi, I am Ada.",
        "Nice to meet you, Ada.",
        "What is my name?",
        "Your name is Ada.",
    ]


def test_conversation_used_as_an_assistants_thread(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(text="Paris."))
    conv = client.conversations.create(
        items=[
            {"type": "message", "role": "user", "content": "I am planning a trip to France."},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Lovely!"}]},
            {"type": "message", "role": "user", "content": "What is its capital?"},
        ],
        metadata={"trip": "fr"},
    )
    thread = client.beta.threads.retrieve(conv.id)
    assert thread.id == conv.id and thread.metadata == {"trip": "fr"}
    assistant = client.beta.assistants.create(model="gpt-4o", instructions="Answer in one word.")
    run = client.beta.threads.runs.create_and_poll(thread_id=conv.id, assistant_id=assistant.id)
    assert run.status == "completed" and run.thread_id == conv.id
    sent = [(m["role"], m.get("content")) for m in model.requests[0]["messages"]]
    assert sent == [
        ("system", "Answer in one word."),
        ("user", "I am planning a trip to France."),
        ("assistant", "Lovely!"),
        ("user", "What is its capital?"),
    ]
    messages = client.beta.threads.messages.list(thread_id=conv.id, order="asc").data
    assert [(m.role, m.content[0].text.value) for m in messages] == [
        ("user", "I am planning a trip to France."),
        ("assistant", "Lovely!"),
        ("user", "What is its capital?"),
        ("assistant", "Paris."),
    ]
    assert all(m.thread_id == conv.id for m in messages)
    assert messages[3].run_id == run.id
    items = client.conversations.items.list(conv.id, order="asc").data
    assert [i.id for i in items] == [m.id for m in messages]


def test_function_calls_stay_out_of_assistants_messages(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(tool_calls=[ToolCall("add", {"a": 2, "b": 3})]), Reply(text="5"))
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "2+3?"}])
    first = client.responses.create(
        model="gpt-4o", input="Use the tool.", tools=[ADD], conversation=thread.id
    )
    call = first.output[-1]
    assert call.type == "function_call"
    client.responses.create(
        model="gpt-4o",
        conversation=thread.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "5"}],
        tools=[ADD],
    )
    items = client.conversations.items.list(thread.id, order="asc").data
    assert [i.type for i in items] == [
        "message",
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]
    messages = client.beta.threads.messages.list(thread.id, order="asc")
    assert [(m.role, m.content[0].text.value) for m in messages.data] == [
        ("user", "2+3?"),
        ("user", "Use the tool."),
        ("assistant", "5"),
    ]
    assert not messages.has_more
    # A function item is not a message of the thread, by id either.
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.retrieve(call.id, thread_id=thread.id)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.delete(call.id, thread_id=thread.id)
    assert client.conversations.items.retrieve(call.id, conversation_id=thread.id).type == "function_call"
    # Paging the messages never lands on an item cursor's neighbours wrongly.
    page = client.beta.threads.messages.list(thread.id, order="asc", limit=2)
    assert [m.content[0].text.value for m in page.data] == ["2+3?", "Use the tool."] and page.has_more
    rest = client.beta.threads.messages.list(thread.id, order="asc", after=page.data[-1].id)
    assert [m.content[0].text.value for m in rest.data] == ["5"]


# --- one response at a time ----------------------------------------------------------------


def test_second_response_while_one_is_in_progress(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(Reply(text="slow answer", delay=30))
    conv = client.conversations.create(items=[{"type": "message", "role": "user", "content": "Hello"}])
    slow = client.responses.create(
        model="gpt-4o", input="take your time", conversation=conv.id, background=True
    )
    assert slow.status in ("queued", "in_progress")
    try:
        # The slow reply is taken by this response, not left for the one after the cancel.
        model.wait_for_requests(1, timeout=30)
        with pytest.raises(openai.BadRequestError) as caught:
            client.responses.create(model="gpt-4o", input="me too", conversation=conv.id)
        error = _error(caught)
        assert error["param"] == "conversation" and error["code"] == "conversation_locked"
        assert slow.id in str(error["message"])
        with pytest.raises(openai.BadRequestError) as refused:
            client.conversations.items.create(
                conv.id, items=[{"type": "message", "role": "user", "content": "x"}]
            )
        assert slow.id in refused.value.message
        with pytest.raises(openai.BadRequestError):
            client.beta.threads.messages.create(conv.id, role="user", content="x")
        # Nothing of the refused requests was written.
        texts = [_text(i) for i in client.conversations.items.list(conv.id, order="asc").data]
        assert texts == ["Hello", "take your time"]
    finally:
        client.responses.cancel(slow.id)
    _wait(lambda: client.responses.retrieve(slow.id).status == "cancelled")
    # Once it has ended, the conversation takes a response again.
    model.script(Reply(text="Now it is my turn."))
    after = client.responses.create(model="gpt-4o", input="me too", conversation=conv.id)
    assert after.output_text == "Now it is my turn."
    texts = [_text(i) for i in client.conversations.items.list(conv.id, order="asc").data]
    assert texts == ["Hello", "take your time", "me too", "Now it is my turn."]


def test_thread_waiting_for_tool_outputs_refuses_a_response(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    model.script(
        Reply(tool_calls=[ToolCall("add", {"a": 1, "b": 1})]), Reply(text="2"), Reply(text="Yes, 2.")
    )
    assistant = client.beta.assistants.create(
        model="gpt-4o",
        tools=[{"type": "function", "function": {k: v for k, v in ADD.items() if k != "type"}}],
    )
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "1+1?"}])
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "requires_action" and run.required_action is not None
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="gpt-4o", input="hurry up", conversation=thread.id)
    assert run.id in caught.value.message
    call = run.required_action.submit_tool_outputs.tool_calls[0]
    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        thread_id=thread.id, run_id=run.id, tool_outputs=[{"tool_call_id": call.id, "output": "2"}]
    )
    assert run.status == "completed"
    response = client.responses.create(model="gpt-4o", input="Sure?", conversation=thread.id)
    assert response.output_text == "Yes, 2."
    # The Assistants run's call stays in its steps: the conversation holds messages only.
    items = client.conversations.items.list(thread.id, order="asc").data
    assert [(i.type, _text(i)) for i in items] == [
        ("message", "1+1?"),
        ("message", "2"),
        ("message", "Sure?"),
        ("message", "Yes, 2."),
    ]
