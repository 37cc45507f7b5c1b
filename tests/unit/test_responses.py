"""The same engine behind the Responses API: a response is a run, and ends differently in two
places: a client function call ends it ``completed`` with the call as an output item (its output
comes as the next response's input), and the model's thinking is kept as a ``reasoning`` item,
which a run of the Assistants API never shows."""

from __future__ import annotations

import pytest

from tests.unit.conftest import MODEL, Domain
from threadline.domain.commands import NewResponse
from threadline.domain.content import ItemFields, text_content
from threadline.domain.entities import ListQuery, Message, Run
from threadline.domain.events import ReasoningDelta
from threadline.domain.ports.models import ReplyLimits
from threadline.domain.response_items import NewItem
from threadline.domain.run_states import RunStatus
from threadline.testing import Reply, ToolCall

pytestmark = pytest.mark.anyio

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def _said(text: str) -> NewItem:
    return NewItem("message", "user", text_content(text))


async def _items(domain: Domain, run: Run) -> list[Message]:
    page = await domain.stores.threads.list_messages(
        run.thread_id, ListQuery(limit=100, order="asc"), run.id, items=True
    )
    return page.items


async def test_a_function_call_ends_a_response_completed_and_its_output_comes_next(domain: Domain) -> None:
    responses = domain.services.responses
    first = await responses.create_response(NewResponse(MODEL, [_said("weather?")], tools=[WEATHER]))
    domain.model.script(Reply(tool_calls=[ToolCall("get_weather", {"city": "Paris"})]), "Sunny.")
    done = await domain.drive(first)
    assert done.status is RunStatus.COMPLETED and done.required_action is None
    (call,) = [m for m in await _items(domain, first) if m.type == "function_call"]
    fields = call.fields
    assert fields["name"] == "get_weather" and fields["arguments"] == '{"city": "Paris"}'

    output = NewItem(
        "function_call_output", "tool", [ItemFields({"call_id": fields["call_id"], "output": "18C"})]
    )
    second = await responses.create_response(
        NewResponse(MODEL, [output], tools=[WEATHER], previous_response_id=first.id)
    )
    answered = await domain.drive(second)
    assert answered.status is RunStatus.COMPLETED
    request = domain.model.requests[1]
    assert request.messages[-2]["tool_calls"][0]["id"] == fields["call_id"]
    assert request.messages[-1] == {"role": "tool", "tool_call_id": fields["call_id"], "content": "18C"}
    (answer,) = [m for m in await _items(domain, second) if m.type == "message" and m.role == "assistant"]
    assert answer.text == "Sunny."


async def test_a_response_keeps_the_models_thinking_and_a_run_does_not(domain: Domain) -> None:
    reply = Reply(reasoning="Paris is in France.", text="It is sunny.")
    responses = domain.services.responses
    response = await responses.create_response(NewResponse(MODEL, [_said("weather?")]))
    events = domain.follow(response)
    domain.model.script(reply)
    done = await domain.drive(response)
    assert done.status is RunStatus.COMPLETED
    thought, answer = [m for m in await _items(domain, response) if m.role == "assistant"]
    assert thought.type == "reasoning" and answer.type == "message"
    assert thought.fields["summary"] == [{"type": "summary_text", "text": "Paris is in France."}]
    assert thought.fields["status"] == "completed" and answer.text == "It is sunny."
    assert done.usage is not None and done.usage["reasoning_tokens"] == 4
    streamed = [e for e in events.pull() if isinstance(e, ReasoningDelta)]
    assert "".join(e.text for e in streamed if not e.done) == "Paris is in France." and streamed[-1].done
    # The next turn's model is not shown the thinking.
    assert all("Paris is in France." not in str(m.get("content")) for m in domain.model.requests[0].messages)

    run = await domain.start()
    events = domain.follow(run)
    domain.model.script(reply)
    await domain.drive(run)
    assert [(m.type, m.text) for m in await _items(domain, run)] == [("message", "It is sunny.")]
    assert not any(isinstance(e, ReasoningDelta) for e in events.pull())


async def test_thinking_cut_off_by_a_failure_is_kept_incomplete(domain: Domain) -> None:
    domain.model.limits = ReplyLimits(max_bytes=8)
    responses = domain.services.responses
    response = await responses.create_response(NewResponse(MODEL, [_said("weather?")]))
    domain.model.script(Reply(reasoning="one two three four", text="never"))
    failed = await domain.drive(response)
    assert failed.status is RunStatus.FAILED
    (thought,) = [m for m in await _items(domain, response) if m.role == "assistant"]
    assert thought.type == "reasoning" and thought.fields["status"] == "incomplete"
    assert thought.fields["summary"][0]["text"] == "one two "
