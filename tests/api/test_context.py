"""The thread manages its context window: budgets, truncation, summaries, limits that end runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai

from tests.support import ThreadlineServer
from threadline.providers.tokenizers import for_model
from threadline.testing import Reply, ScriptedModel

TOKENS = for_model("gpt-4o")


WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "and",
    "saw",
    "one",
    "red",
    "bird",
    "fly",
    "over",
    "the",
    "old",
    "green",
    "house",
    "near",
    "our",
    "small",
    "town",
]


def long_message(i: int) -> str:
    # About 100 tokens, with a marker to find it in what the model was sent.
    return f"message-{i:02d} " + " ".join(WORDS[j % len(WORDS)] for j in range(95))


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return sum(TOKENS.count(str(m.get("content") or "")) + 4 for m in messages)


def markers(messages: list[dict[str, Any]]) -> list[str]:
    return [
        m["content"].split(" ", 1)[0] for m in messages if str(m.get("content", "")).startswith("message-")
    ]


def thread_with(client: openai.OpenAI, count: int) -> tuple[str, str]:
    assistant = client.beta.assistants.create(model="gpt-4o", instructions="Answer briefly.")
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": long_message(i)} for i in range(count)]
    )
    return assistant.id, thread.id


def is_summary_request(body: dict[str, Any]) -> bool:
    return "running summary" in str(body["messages"][0]["content"])


def test_newest_messages_fit_the_budget_and_older_ones_are_summarised(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    assistant_id, thread_id = thread_with(client, 30)
    model.script(Reply(text="They talked about words.", usage=(500, 7)), Reply(text="ok", usage=(900, 1)))
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread_id, assistant_id=assistant_id, max_prompt_tokens=1000
    )
    assert run.status == "completed"
    summary_call, answer_call = model.requests
    assert is_summary_request(summary_call) and not is_summary_request(answer_call)
    sent = answer_call["messages"]
    kept = markers(sent)
    # The newest messages, contiguous and in order, and not the oldest.
    assert kept and kept[-1] == "message-29"
    assert kept == [f"message-{i:02d}" for i in range(30 - len(kept), 30)]
    assert "message-00" not in kept and len(kept) < 30
    assert prompt_tokens(sent) <= 1000
    # The summary sits in front of the kept messages, after the instructions.
    assert sent[0] == {"role": "system", "content": "Answer briefly."}
    assert sent[1]["role"] == "system" and "They talked about words." in sent[1]["content"]
    # The summariser was shown the dropped part, oldest first, ending right before the kept part.
    transcript = summary_call["messages"][-1]["content"]
    dropped = [f"message-{i:02d}" for i in range(30 - len(kept))]
    assert dropped[-1] in transcript and transcript.index(dropped[0]) < transcript.index(dropped[-1])
    assert kept[0] not in transcript
    # Its model call counts in the run's usage.
    assert run.usage is not None
    assert (run.usage.prompt_tokens, run.usage.completion_tokens) == (1400, 8)


def test_summary_is_reused_and_extended(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant_id, thread_id = thread_with(client, 30)
    model.script(Reply(text="SUMMARY-ONE"), Reply(text="first answer"))
    client.beta.threads.runs.create_and_poll(
        thread_id=thread_id, assistant_id=assistant_id, max_prompt_tokens=1000
    )
    first_kept = markers(model.requests[1]["messages"])
    model.reset()

    client.beta.threads.messages.create(thread_id=thread_id, role="user", content=long_message(30))
    model.script(Reply(text="SUMMARY-TWO"), Reply(text="second answer"))
    client.beta.threads.runs.create_and_poll(
        thread_id=thread_id, assistant_id=assistant_id, max_prompt_tokens=1000
    )
    extend, answer = model.requests
    transcript = extend["messages"][-1]["content"]
    # Only what the stored summary did not cover is read again, with the old summary as the base.
    assert "SUMMARY-ONE" in transcript
    assert "message-00" not in transcript
    assert first_kept[0] in transcript
    assert "SUMMARY-TWO" in answer["messages"][1]["content"]


def test_no_new_summary_call_when_nothing_more_was_dropped(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    assistant_id, thread_id = thread_with(client, 30)
    model.script(Reply(text="SUMMARY"), Reply(text="one"))
    client.beta.threads.runs.create_and_poll(
        thread_id=thread_id, assistant_id=assistant_id, max_prompt_tokens=1000
    )
    model.reset()
    model.script(Reply(text="two"))
    # A larger budget than before: everything dropped last time is still covered by the summary.
    client.beta.threads.runs.create_and_poll(
        thread_id=thread_id, assistant_id=assistant_id, max_prompt_tokens=2000
    )
    assert len(model.requests) == 1 and not is_summary_request(model.requests[0])
    assert "SUMMARY" in model.requests[0]["messages"][1]["content"]


def test_last_messages_sends_exactly_n(client: openai.OpenAI, model: ScriptedModel) -> None:
    assistant_id, thread_id = thread_with(client, 10)
    model.script(Reply(text="ok"))
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread_id,
        assistant_id=assistant_id,
        truncation_strategy={"type": "last_messages", "last_messages": 2},
    )
    assert run.status == "completed"
    assert len(model.requests) == 1
    assert markers(model.requests[0]["messages"]) == ["message-08", "message-09"]


def test_incomplete_when_the_newest_message_exceeds_max_prompt_tokens(
    client: openai.OpenAI, model: ScriptedModel
) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": long_message(1) * 4}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, max_prompt_tokens=256
    )
    assert run.status == "incomplete"
    assert run.incomplete_details is not None and run.incomplete_details.reason == "max_prompt_tokens"
    assert model.requests == []
    # The thread is usable again.
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content="shorter")


def test_tool_call_and_output_stay_together(client: openai.OpenAI, model: ScriptedModel) -> None:
    from threadline.testing import ToolCall

    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    assistant = client.beta.assistants.create(model="gpt-4o", tools=[tool])  # type: ignore[list-item]
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": long_message(i)} for i in range(20)]
    )
    model.script(
        Reply(text="S", usage=(100, 5)),
        Reply(tool_calls=[ToolCall("lookup", {"q": "x" * 300})], usage=(300, 5)),
    )
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, max_prompt_tokens=900
    )
    assert run.status == "requires_action" and run.required_action is not None
    call = run.required_action.submit_tool_outputs.tool_calls[0]
    model.script(Reply(text="done"))
    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        thread_id=thread.id, run_id=run.id, tool_outputs=[{"tool_call_id": call.id, "output": "y " * 150}]
    )
    assert run.status == "completed"
    sent = model.requests[-1]["messages"]
    assert sent[-2]["tool_calls"][0]["id"] == call.id
    assert sent[-1] == {"role": "tool", "tool_call_id": call.id, "content": "y " * 150}
    # max_prompt_tokens spans the run: what the first turn used (400) is not available again.
    assert prompt_tokens(sent) <= 900 - 400


def test_summaries_can_be_turned_off(
    make_server: Callable[..., ThreadlineServer], model: ScriptedModel
) -> None:
    server = make_server(summaries=False)
    with openai.OpenAI(base_url=server.url, api_key="x", max_retries=0) as client:
        assistant_id, thread_id = thread_with(client, 30)
        model.script(Reply(text="ok"))
        run = client.beta.threads.runs.create_and_poll(
            thread_id=thread_id, assistant_id=assistant_id, max_prompt_tokens=1000
        )
        assert run.status == "completed"
        assert len(model.requests) == 1 and not is_summary_request(model.requests[0])
        assert markers(model.requests[0]["messages"])[-1] == "message-29"
