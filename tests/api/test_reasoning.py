"""A reasoning model's thinking end to end: ``reasoning.effort`` reaches the model, its
``reasoning_content`` becomes a ``reasoning`` item before the answer (streamed as OpenAI streams
one), never part of the answer, an Assistants message or a later turn's prompt, and its reasoning
tokens are counted.

The scripted model streams ``delta.reasoning_content`` (vLLM's reasoning parsers, DeepSeek) or
``delta.reasoning`` (other servers) before the answer, and records what it was sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai

from tests.conftest import database_url
from tests.integration.test_recovery import TEXT, ServerProcess, kill_mid_stream, read_stream
from tests.integration.test_recovery import servers as servers  # the crash test's fixture
from tests.support import ThreadlineServer
from threadline.testing import Reply, ScriptedModel
from threadline.testing import ToolCall as Call

THOUGHT = "The user asks for two plus two. Adding them gives four. "
PIECES = len(THOUGHT.split())
"""The scripted model streams it a word at a time, each piece a reasoning token."""
ANSWER = "Two plus two is four."


def thinks(reasoning_field: str = "reasoning_content") -> Reply:
    return Reply(reasoning=THOUGHT, text=ANSWER, reasoning_field=reasoning_field)


def shown_to_model(request: dict[str, Any]) -> str:
    return json.dumps(request["messages"], ensure_ascii=False)


def test_a_reasoning_item_comes_before_the_answer_and_is_kept(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    conversation = client.conversations.create()
    model.script(thinks())
    response = client.responses.create(
        model="gpt-4o",
        input="What is two plus two?",
        conversation=conversation.id,
        reasoning={"effort": "high"},
    )
    assert response.status == "completed", response.error
    assert [item.type for item in response.output] == ["reasoning", "message"]
    reasoning = response.output[0]
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_")
    assert [(s.type, s.text) for s in reasoning.summary] == [("summary_text", THOUGHT)]
    assert response.output_text == ANSWER  # the thinking is not in the answer
    assert response.reasoning is not None and response.reasoning.effort == "high"
    assert response.usage is not None
    assert response.usage.output_tokens_details.reasoning_tokens == PIECES

    sent = model.wait_for_requests(1)[0]
    assert sent["reasoning_effort"] == "high"

    again = client.responses.retrieve(response.id)
    assert again.model_dump()["output"] == response.model_dump()["output"]
    assert again.usage is not None and again.usage.output_tokens_details.reasoning_tokens == PIECES
    items = client.conversations.items.list(conversation.id, order="asc").data
    assert [item.type for item in items] == ["message", "reasoning", "message"]
    assert items[1].model_dump() == response.output[0].model_dump()


def test_a_later_turn_does_not_show_the_model_its_earlier_thinking(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    model.script(thinks(), Reply(text="Eight."), Reply(text="Sixteen."))
    first = client.responses.create(model="gpt-4o", input="What is two plus two?")
    assert [item.type for item in first.output] == ["reasoning", "message"]
    second = client.responses.create(model="gpt-4o", input="And doubled?", previous_response_id=first.id)
    assert second.output_text == "Eight."
    # The whole history sent back as input, reasoning item included (the Agents SDK's to_input_list).
    history: Any = [
        {"role": "user", "content": "What is two plus two?"},
        *[item.model_dump(exclude_unset=True) for item in first.output],
        {"role": "user", "content": "And doubled again?"},
    ]
    third = client.responses.create(model="gpt-4o", input=history)
    assert third.status == "completed", third.error
    # By reference, as the AI SDK sends stored items back.
    model.script(Reply(text="Thirty-two."))
    referenced: Any = [
        {"role": "user", "content": "What is two plus two?"},
        *[{"type": "item_reference", "id": item.id} for item in first.output],
        {"role": "user", "content": "And doubled thrice?"},
    ]
    fourth = client.responses.create(model="gpt-4o", input=referenced)
    assert fourth.status == "completed", fourth.error

    for request in model.wait_for_requests(4)[1:]:
        assert "adding them" not in shown_to_model(request).lower()
        answers = [m for m in request["messages"] if m["role"] == "assistant"]
        assert [m["content"] for m in answers] == [ANSWER]
        assert not any("reasoning_content" in m or "reasoning" in m for m in request["messages"])


def test_a_streamed_reasoning_item_comes_in_order(client: openai.OpenAI, model: ScriptedModel) -> None:
    model.script(thinks(reasoning_field="reasoning"))
    events = list(client.responses.create(model="gpt-4o", input="What is two plus two?", stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    kinds = [e.type for e in events]
    thinking = kinds.count("response.reasoning_summary_text.delta")
    answering = kinds.count("response.output_text.delta")
    assert thinking == PIECES and answering == len(ANSWER.split())
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        *["response.reasoning_summary_text.delta"] * thinking,
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * answering,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    added = events[2]
    assert added.type == "response.output_item.added" and added.item.type == "reasoning"
    assert added.output_index == 0 and added.item.summary == []
    item_id = added.item.id
    deltas = [e for e in events if e.type == "response.reasoning_summary_text.delta"]
    assert all(e.item_id == item_id and e.output_index == 0 and e.summary_index == 0 for e in deltas)
    assert "".join(e.delta for e in deltas) == THOUGHT
    text_done = next(e for e in events if e.type == "response.reasoning_summary_text.done")
    assert text_done.text == THOUGHT
    part_done = next(e for e in events if e.type == "response.reasoning_summary_part.done")
    assert part_done.part.text == THOUGHT
    item_done = next(e for e in events if e.type == "response.output_item.done")
    assert item_done.output_index == 0 and item_done.item.type == "reasoning"
    assert item_done.item.summary[0].text == THOUGHT
    message = next(e for e in events[8:] if e.type == "response.output_item.added")
    assert message.output_index == 1 and message.item.type == "message"
    answered = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert answered == ANSWER
    final = events[-1]
    assert final.type == "response.completed"
    assert [item.type for item in final.response.output] == ["reasoning", "message"]
    assert final.response.output[0].id == item_id
    assert final.response.output_text == ANSWER


def test_thinking_before_a_function_call_comes_before_the_call(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    model.script(Reply(reasoning="I should look it up. ", tool_calls=[Call("weather", {"city": "Oslo"})]))
    tool: Any = {"type": "function", "name": "weather", "parameters": {"type": "object"}}
    response = client.responses.create(model="gpt-4o", input="Weather in Oslo?", tools=[tool])
    assert [item.type for item in response.output] == ["reasoning", "function_call"]
    first = response.output[0]
    assert first.type == "reasoning" and first.summary[0].text == "I should look it up. "


def test_an_assistants_run_shows_no_reasoning(
    client: openai.OpenAI, model: ScriptedModel, server: ThreadlineServer
) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o", reasoning_effort="low")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "What is two plus two?"}])
    model.script(thinks())
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed", run.last_error
    assert model.wait_for_requests(1)[0]["reasoning_effort"] == "low"
    assert run.usage is not None and set(run.usage.model_dump()) == {
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
    }
    messages = client.beta.threads.messages.list(thread.id, order="asc").data
    assert [m.role for m in messages] == ["user", "assistant"]
    content = messages[1].content[0]
    assert content.type == "text" and content.text.value == ANSWER

    model.script(thinks())
    body = {"assistant_id": assistant.id, "stream": True}
    headers = {"Authorization": "Bearer test-key", "OpenAI-Beta": "assistants=v2"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
        streamed = http.post(f"/threads/{thread.id}/runs", json=body).text
    assert "event: thread.run.completed" in streamed and "Adding them" not in streamed
    assert "Two plus two" in streamed


def test_a_turn_redone_after_a_crash_keeps_one_reasoning_item(
    tmp_path: Path, model: ScriptedModel, servers: list[ServerProcess]
) -> None:
    """A worker killed mid-answer, after the thinking was saved: the server that takes the response
    over redoes the turn with the same reasoning item, not a second one."""
    database = database_url(tmp_path)
    model.script(
        Reply(reasoning=THOUGHT, text=TEXT, delay=0.03), Reply(reasoning=THOUGHT, text=TEXT, delay=0.002)
    )
    first = ServerProcess(tmp_path, database, model, "first")
    servers.append(first)
    response_id, _ = kill_mid_stream(first, deltas=20)

    second = ServerProcess(tmp_path, database, model, "second")
    servers.append(second)
    events = read_stream(second.url, response_id)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    added = [e["item"] for e in events if e["type"] == "response.output_item.added"]
    assert [item["type"] for item in added] == ["reasoning", "message"]
    thought = "".join(e["delta"] for e in events if e["type"] == "response.reasoning_summary_text.delta")
    assert thought == THOUGHT
    final = httpx.get(f"{second.url}/v1/responses/{response_id}").json()
    assert final["status"] == "completed"
    assert [(item["type"], item["id"]) for item in final["output"]] == [(i["type"], i["id"]) for i in added]
    assert final["output"][0]["summary"] == [{"type": "summary_text", "text": THOUGHT}]
    assert final["output"][1]["content"][0]["text"] == TEXT


def test_thinking_in_a_whole_completion_is_a_reasoning_item_too(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    """A server that ignores ``stream: true`` and answers the whole completion at once."""
    message = {"role": "assistant", "content": ANSWER, "reasoning_content": THOUGHT}
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 7,
            "completion_tokens": 30,
            "completion_tokens_details": {"reasoning_tokens": 24},
        },
    }
    model.script(Reply(body=json.dumps(completion).encode()))
    response = client.responses.create(model="gpt-4o", input="What is two plus two?")
    assert [item.type for item in response.output] == ["reasoning", "message"]
    first = response.output[0]
    assert first.type == "reasoning" and first.summary[0].text == THOUGHT
    assert response.output_text == ANSWER
    assert response.usage is not None and response.usage.output_tokens == 30
    assert response.usage.output_tokens_details.reasoning_tokens == 24


def test_thinking_cut_off_by_a_failed_model_call_is_kept_incomplete(
    make_server: Callable[..., ThreadlineServer], model: ScriptedModel
) -> None:
    """A model that thinks for ever is stopped at THREADLINE_MODEL_CALL_SECONDS: the reasoning item
    the stream began is done (``incomplete``) before ``response.failed``, which shows it too."""
    server = make_server(model_call_seconds=1)
    model.script(Reply(reasoning=THOUGHT, endless=True, delay=0.02))
    with openai.OpenAI(base_url=server.url, api_key="test-key", max_retries=0) as client:
        events = list(client.responses.create(model="gpt-4o", input="Think hard.", stream=True))
    kinds = [e.type for e in events]
    assert kinds[-4:] == [
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.failed",
    ], kinds[-6:]
    thought = "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")
    assert thought.startswith(THOUGHT)
    part_done = events[-3]
    assert part_done.type == "response.reasoning_summary_part.done" and part_done.status == "incomplete"
    item_done = events[-2]
    assert item_done.type == "response.output_item.done" and item_done.item.type == "reasoning"
    assert item_done.item.status == "incomplete" and item_done.item.summary[0].text == thought
    failed = events[-1]
    assert failed.type == "response.failed" and failed.response.error is not None
    assert "THREADLINE_MODEL_CALL_SECONDS" in failed.response.error.message
    assert [item.model_dump() for item in failed.response.output] == [item_done.item.model_dump()]
