"""Every run status, reached through the official SDK against a real server and a scripted model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest

from tests.support import ThreadlineServer, wait_for
from threadline.testing import Reply, ScriptedModel, ToolCall

ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two numbers",
        "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}},
    },
}


def sdk(server: ThreadlineServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key="test", max_retries=0)


def setup_thread(client: openai.OpenAI, text: str = "hi", **assistant: Any) -> tuple[str, str]:
    a = client.beta.assistants.create(model="gpt-4o", **assistant)
    t = client.beta.threads.create(messages=[{"role": "user", "content": text}])
    return a.id, t.id


def status_of(client: openai.OpenAI, thread_id: str, run_id: str) -> Callable[[], str]:
    return lambda: client.beta.threads.runs.retrieve(thread_id=thread_id, run_id=run_id).status


def wait_status(
    client: openai.OpenAI, thread_id: str, run_id: str, *statuses: str, timeout: float = 10
) -> Any:
    def check() -> Any:
        run = client.beta.threads.runs.retrieve(thread_id=thread_id, run_id=run_id)
        return run if run.status in statuses else None

    return wait_for(check, timeout=timeout, what=f"run {run_id} to reach {statuses}")


def test_completed_run_fields_and_step(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant_id, thread_id = setup_thread(client, instructions="Base.", temperature=0.5)
    model.script(Reply(text="Done here.", usage=(11, 3)))
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread_id,
        assistant_id=assistant_id,
        additional_instructions="Extra.",
        metadata={"k": "v"},
        top_p=0.9,
    )
    assert run.status == "completed"
    assert run.instructions == "Base.\n\nExtra."
    assert (run.temperature, run.top_p) == (0.5, 0.9)
    assert run.metadata == {"k": "v"}
    assert run.completed_at is not None and run.started_at is not None
    assert run.expires_at is None and run.failed_at is None and run.cancelled_at is None
    assert run.usage is not None
    assert (run.usage.prompt_tokens, run.usage.completion_tokens, run.usage.total_tokens) == (11, 3, 14)
    sent = model.requests[0]
    assert (sent["temperature"], sent["top_p"]) == (0.5, 0.9)
    assert sent["messages"][0]["content"] == "Base.\n\nExtra."

    steps = client.beta.threads.runs.steps.list(thread_id=thread_id, run_id=run.id).data
    assert [s.type for s in steps] == ["message_creation"]
    step = steps[0]
    assert step.status == "completed" and step.usage is not None and step.usage.total_tokens == 14
    assert step.step_details.type == "message_creation"
    message_id = step.step_details.message_creation.message_id
    message = client.beta.threads.messages.retrieve(thread_id=thread_id, message_id=message_id)
    assert message.run_id == run.id and message.assistant_id == assistant_id
    assert message.status == "completed" and message.content[0].text.value == "Done here."
    by_run = client.beta.threads.messages.list(thread_id=thread_id, run_id=run.id).data
    assert [m.id for m in by_run] == [message_id]
    assert (
        client.beta.threads.runs.steps.retrieve(thread_id=thread_id, run_id=run.id, step_id=step.id).id
        == step.id
    )


def test_tool_rounds_and_parallel_calls(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant_id, thread_id = setup_thread(client, "add things", tools=[ADD])
    model.script(
        Reply(
            tool_calls=[ToolCall("add", {"a": 1, "b": 2}), ToolCall("add", {"a": 3, "b": 4})], usage=(10, 5)
        ),
        Reply(tool_calls=[ToolCall("add", {"a": 3, "b": 7})], usage=(20, 5)),
        Reply(text="The sums are 3, 7 and 10.", usage=(30, 5)),
    )
    run = client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id)
    outputs_seen = []
    rounds = 0
    while run.status == "requires_action":
        rounds += 1
        assert run.required_action is not None
        calls = run.required_action.submit_tool_outputs.tool_calls
        outputs = []
        for call in calls:
            args = __import__("json").loads(call.function.arguments)
            outputs.append({"tool_call_id": call.id, "output": str(args["a"] + args["b"])})
        outputs_seen.append(outputs)
        run = client.beta.threads.runs.submit_tool_outputs_and_poll(
            thread_id=thread_id, run_id=run.id, tool_outputs=outputs
        )
    assert run.status == "completed" and rounds == 2
    assert [len(o) for o in outputs_seen] == [2, 1]
    assert run.usage is not None and run.usage.total_tokens == 75
    # The third model call saw both rounds, each call followed by its output.
    third = model.requests[2]["messages"]
    roles = [m["role"] for m in third]
    assert roles == ["user", "assistant", "tool", "tool", "assistant", "tool"]
    assert [m["content"] for m in third if m["role"] == "tool"] == ["3", "7", "10"]
    assert third[1]["tool_calls"][1]["id"] == third[3]["tool_call_id"]
    steps = client.beta.threads.runs.steps.list(thread_id=thread_id, run_id=run.id, order="asc").data
    assert [s.type for s in steps] == ["tool_calls", "tool_calls", "message_creation"]
    first_calls = steps[0].step_details.tool_calls  # type: ignore[union-attr]
    assert [c.function.output for c in first_calls] == ["3", "7"]  # type: ignore[union-attr]
    assert all(s.status == "completed" for s in steps)


def test_failed_after_retries_server_error(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant_id, thread_id = setup_thread(client)
    model.script(*[Reply(status=500, error_message="upstream exploded")] * 3)
    run = client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id)
    assert run.status == "failed"
    assert run.last_error is not None and run.last_error.code == "server_error"
    assert "upstream exploded" in run.last_error.message
    assert run.failed_at is not None
    assert len(model.requests) == 3  # the first call and two bounded retries
    # The thread is unlocked again.
    client.beta.threads.messages.create(thread_id=thread_id, role="user", content="again")


def test_failed_rate_limited(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant_id, thread_id = setup_thread(client)
    model.script(*[Reply(status=429, error_message="slow down")] * 3)
    run = client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id)
    assert run.status == "failed"
    assert run.last_error is not None and run.last_error.code == "rate_limit_exceeded"


def test_retry_then_success(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant_id, thread_id = setup_thread(client)
    model.script(Reply(status=503), Reply(text="recovered"))
    run = client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id)
    assert run.status == "completed"
    assert client.beta.threads.messages.list(thread_id=thread_id).data[0].content[0].text.value == "recovered"  # type: ignore[union-attr]


def test_incomplete_on_max_completion_tokens(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant_id, thread_id = setup_thread(client)
    model.script(Reply(text=" ".join(["word"] * 400)))
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread_id, assistant_id=assistant_id, max_completion_tokens=256
    )
    assert run.status == "incomplete"
    assert run.incomplete_details is not None and run.incomplete_details.reason == "max_completion_tokens"
    assert model.requests[0]["max_tokens"] == 256
    message = client.beta.threads.messages.list(thread_id=thread_id).data[0]
    assert message.status == "incomplete"
    assert message.incomplete_details is not None and message.incomplete_details.reason == "max_tokens"
    assert message.content[0].text.value.startswith("word word")  # type: ignore[union-attr]


def test_cancel_queued(make_server: Callable[..., ThreadlineServer]) -> None:
    server = make_server(run_worker=False)
    with sdk(server) as client:
        assistant_id, thread_id = setup_thread(client)
        run = client.beta.threads.runs.create(thread_id=thread_id, assistant_id=assistant_id)
        assert run.status == "queued"
        cancelled = client.beta.threads.runs.cancel(thread_id=thread_id, run_id=run.id)
        assert cancelled.status == "cancelling"
        run = wait_status(client, thread_id, run.id, "cancelled")
        assert run.cancelled_at is not None
        client.beta.threads.messages.create(thread_id=thread_id, role="user", content="unlocked")
        with pytest.raises(openai.BadRequestError, match="Cannot cancel run with status 'cancelled'"):
            client.beta.threads.runs.cancel(thread_id=thread_id, run_id=run.id)


def test_cancel_in_progress_stops_the_model(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant_id, thread_id = setup_thread(client)
    model.script(Reply(text="partial answer that never ends", hang=True))
    run = client.beta.threads.runs.create(thread_id=thread_id, assistant_id=assistant_id)
    model.wait_for_requests(1)
    wait_status(client, thread_id, run.id, "in_progress")
    client.beta.threads.runs.cancel(thread_id=thread_id, run_id=run.id)
    run = wait_status(client, thread_id, run.id, "cancelled")
    assert model.wait_for_disconnect(timeout=5) >= 1
    assert run.cancelled_at is not None and run.completed_at is None
    # No answer lands for a cancelled run.
    messages = client.beta.threads.messages.list(thread_id=thread_id).data
    assert all(m.status != "completed" for m in messages if m.role == "assistant")


def test_cancel_requires_action(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant_id, thread_id = setup_thread(client, tools=[ADD])
    model.script(Reply(tool_calls=[ToolCall("add", {"a": 1, "b": 1})]))
    run = client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id)
    assert run.status == "requires_action"
    client.beta.threads.runs.cancel(thread_id=thread_id, run_id=run.id)
    run = wait_status(client, thread_id, run.id, "cancelled")
    assert run.required_action is None
    step = client.beta.threads.runs.steps.list(thread_id=thread_id, run_id=run.id).data[0]
    assert step.status == "cancelled" and step.cancelled_at is not None
    with pytest.raises(openai.BadRequestError, match='Runs in status "cancelled" do not accept tool outputs'):
        client.beta.threads.runs.submit_tool_outputs(
            thread_id=thread_id, run_id=run.id, tool_outputs=[{"tool_call_id": "call_x", "output": "2"}]
        )


def test_expired_requires_action(make_server: Callable[..., ThreadlineServer], model: ScriptedModel) -> None:
    server = make_server(run_expiry_seconds=1)
    with sdk(server) as client:
        assistant_id, thread_id = setup_thread(client, tools=[ADD])
        model.script(Reply(tool_calls=[ToolCall("add", {"a": 1, "b": 1})]))
        run = client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id)
        assert run.status == "requires_action" and run.expires_at == run.created_at + 1
        # Nobody polls: the sweeper alone must expire it.
        run = wait_status(client, thread_id, run.id, "expired", timeout=10)
        step = client.beta.threads.runs.steps.list(thread_id=thread_id, run_id=run.id).data[0]
        assert step.status == "expired" and step.expired_at is not None
        client.beta.threads.messages.create(thread_id=thread_id, role="user", content="unlocked")


def test_expired_in_progress_stops_the_model(
    make_server: Callable[..., ThreadlineServer], model: ScriptedModel
) -> None:
    server = make_server(run_expiry_seconds=1)
    with sdk(server) as client:
        assistant_id, thread_id = setup_thread(client)
        model.script(Reply(text="never finishes", hang=True))
        run = client.beta.threads.runs.create(thread_id=thread_id, assistant_id=assistant_id)
        run = wait_status(client, thread_id, run.id, "expired", timeout=10)
        assert model.wait_for_disconnect(timeout=5) >= 1
        message = client.beta.threads.messages.list(thread_id=thread_id).data[0]
        if message.role == "assistant":
            assert message.status == "incomplete"
            assert message.incomplete_details is not None
            assert message.incomplete_details.reason == "run_expired"


def test_assistants_take_turns_on_one_thread(client: openai.OpenAI, model: ScriptedModel) -> None:
    weather = client.beta.assistants.create(
        model="gpt-4o", name="weather", instructions="You report weather."
    )
    travel = client.beta.assistants.create(model="gpt-4o", name="travel", instructions="You plan trips.")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Weather in Paris?"}])
    model.script(Reply(text="Sunny."), Reply(text="Visit the Louvre."))
    first = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=weather.id)
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="And what to do?")
    second = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=travel.id)
    assert first.status == second.status == "completed"
    messages = client.beta.threads.messages.list(thread_id=thread.id, order="asc").data
    assert [(m.role, m.assistant_id) for m in messages] == [
        ("user", None),
        ("assistant", weather.id),
        ("user", None),
        ("assistant", travel.id),
    ]
    sent = model.requests[1]["messages"]
    assert sent[0] == {"role": "system", "content": "You plan trips."}
    assert [m["content"] for m in sent[1:]] == ["Weather in Paris?", "Sunny.", "And what to do?"]


def test_create_thread_and_run(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o")
    model.script(Reply(text="Hello from a new thread."))
    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id,
        thread={"messages": [{"role": "user", "content": "start"}], "metadata": {"origin": "test"}},
    )
    assert run.status == "completed"
    thread = client.beta.threads.retrieve(run.thread_id)
    assert thread.metadata == {"origin": "test"}
    texts = [
        m.content[0].text.value
        for m in client.beta.threads.messages.list(thread_id=thread.id, order="asc").data
    ]  # type: ignore[union-attr]
    assert texts == ["start", "Hello from a new thread."]


def test_additional_messages_and_overrides(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant_id, thread_id = setup_thread(client, "first", instructions="Assistant's own.", tools=[ADD])
    model.script(Reply(text="ok"))
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread_id,
        assistant_id=assistant_id,
        instructions="Overridden.",
        additional_messages=[{"role": "user", "content": "second"}],
        tools=[],
        tool_choice="none",
        truncation_strategy={"type": "last_messages", "last_messages": 1},
        response_format={"type": "json_object"},
    )
    assert run.status == "completed"
    assert run.tools == [] and run.tool_choice == "none"
    assert run.truncation_strategy.type == "last_messages"
    sent = model.requests[0]
    assert sent["messages"] == [
        {"role": "system", "content": "Overridden."},
        {"role": "user", "content": "second"},
    ]
    assert "tools" not in sent
    assert sent["response_format"] == {"type": "json_object"}
    texts = [
        m.content[0].text.value
        for m in client.beta.threads.messages.list(thread_id=thread_id, order="asc").data
    ]  # type: ignore[union-attr]
    assert texts == ["first", "second", "ok"]


def test_delete_thread_cascades(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant_id, thread_id = setup_thread(client)
    model.script(Reply(text="bye"))
    run = client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id)
    message_id = client.beta.threads.messages.list(thread_id=thread_id).data[0].id
    deleted = client.beta.threads.delete(thread_id)
    assert deleted.deleted and deleted.object == "thread.deleted"
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.retrieve(thread_id)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.runs.retrieve(thread_id=thread_id, run_id=run.id)
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.messages.retrieve(thread_id=thread_id, message_id=message_id)
    # Deleting an assistant leaves its threads alone.
    other = client.beta.threads.create()
    client.beta.assistants.delete(assistant_id)
    assert client.beta.threads.retrieve(other.id).id == other.id
