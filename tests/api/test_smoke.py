from __future__ import annotations

import openai

from threadline.testing import Reply, ScriptedModel, ToolCall


def test_simple_run_completes(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o", instructions="Be brief.")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hello there"}])
    model.script(Reply(text="Hi! How can I help?"))
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed", run
    messages = client.beta.threads.messages.list(thread_id=thread.id)
    assert messages.data[0].role == "assistant"
    assert messages.data[0].content[0].text.value == "Hi! How can I help?"
    assert run.usage is not None and run.usage.total_tokens > 0
    sent = model.requests[0]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["messages"][-1] == {"role": "user", "content": "hello there"}


def test_function_call_round_trip(client: openai.OpenAI, model: ScriptedModel) -> None:
    tool = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
    assistant = client.beta.assistants.create(model="gpt-4o", tools=[tool])  # type: ignore[list-item]
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "1+2?"}])
    model.script(Reply(tool_calls=[ToolCall("add", {"a": 1, "b": 2})]), Reply(text="3"))
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "requires_action"
    assert run.required_action is not None
    call = run.required_action.submit_tool_outputs.tool_calls[0]
    assert call.function.name == "add" and call.id.startswith("call_")
    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        thread_id=thread.id, run_id=run.id, tool_outputs=[{"tool_call_id": call.id, "output": "3"}]
    )
    assert run.status == "completed"
    second = model.requests[1]["messages"]
    assert second[-2]["tool_calls"][0]["id"] == call.id
    assert second[-1] == {"role": "tool", "tool_call_id": call.id, "content": "3"}
