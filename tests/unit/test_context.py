"""What the model is shown for a turn: instructions first, the thread's newest messages within the
budget (``last_messages``, or ``auto`` with a summary of what was left out), attachments and
images as the model can take them, and only the tools this server can run. The scripted router
counts one token per word, so budgets here are numbers of words."""

from __future__ import annotations

import base64

import pytest

from tests.unit.conftest import Domain
from threadline.domain.commands import NewAssistant, NewMessage, NewRun, NewThread
from threadline.domain.context import ContextBuilder
from threadline.domain.files import UploadedImages
from threadline.domain.run_states import RunStatus
from threadline.testing import Reply, ScriptedTool, ToolCall
from threadline.testing.script import count_prompt_tokens

pytestmark = pytest.mark.anyio

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def _history(count: int, words: int) -> list[dict[str, str]]:
    """``count`` messages taking turns, each ``m<i>`` and then ``words - 1`` filler words."""
    return [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i} " + "word " * (words - 1)}
        for i in range(count)
    ]


async def test_instructions_come_first_then_the_thread_in_order(domain: Domain) -> None:
    run = await domain.start(
        "and now?",
        instructions="Be brief.",
        additional_instructions="Answer in French.",
        history=[{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}],
    )
    await domain.drive(run)
    (request,) = domain.model.requests
    assert request.messages == [
        {"role": "system", "content": "Be brief.\n\nAnswer in French."},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi"},
        {"role": "user", "content": "and now?"},
    ]
    assert request.temperature == 1.0 and request.max_tokens is None


async def test_last_messages_keeps_exactly_that_many(domain: Domain) -> None:
    run = await domain.start(
        "third", history=_history(4, 3), truncation_strategy={"type": "last_messages", "last_messages": 2}
    )
    await domain.drive(run)
    (request,) = domain.model.requests
    assert [m["content"].split()[0] for m in request.messages] == ["m3", "third"]


async def test_auto_truncation_summarises_what_no_longer_fits(domain: Domain) -> None:
    # A window of 2000: 1500 for the prompt (a quarter is kept for the answer), 104 per message.
    domain.router.context_window = 2000
    run = await domain.start("what now?", history=_history(20, 100))
    domain.model.script("They compared m5 with m4.", "Here is what now.")
    done = await domain.drive(run)
    assert done.status is RunStatus.COMPLETED

    summarising, answering = domain.model.requests
    transcript = summarising.messages[-1]["content"]
    # The newest of the left-out messages are summarised, newest first, as far as half the window goes.
    assert "m5 " in transcript and "m0 " not in transcript
    shown = [m["content"] for m in answering.messages]
    assert shown[0].startswith("Summary of the earlier conversation") and shown[0].endswith("m5 with m4.")
    firsts = [c.split()[0] for c in shown[1:]]
    assert firsts == [f"m{i}" for i in range(6, 20)] + ["what"]
    summary = await domain.stores.threads.get_summary(run.thread_id)
    assert summary is not None and summary.text == "They compared m5 with m4."
    # The run pays for the summary too.
    assert done.usage is not None
    paid = count_prompt_tokens(summarising.messages) + count_prompt_tokens(answering.messages)
    assert done.usage["prompt_tokens"] == paid


async def test_images_reach_a_model_that_sees_and_are_named_to_one_that_does_not(domain: Domain) -> None:
    image = await domain.files.save_output("chart.png", PNG, "image/png")
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_file", "image_file": {"file_id": image.id}},
    ]
    blind = await domain.start(content)
    await domain.drive(blind)
    (request,) = domain.model.requests
    assert request.messages[-1] == {
        "role": "user",
        "content": f"what is this?[The user attached an image, file {image.id}, which is not shown here.]",
    }

    domain.model.reset()
    domain.router.vision = True
    seeing = await domain.start(content)
    builder = ContextBuilder(domain.stores.threads, tools=domain.tools, images=UploadedImages(domain.files))
    await domain.drive(seeing, builder=builder)
    (request,) = domain.model.requests
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert request.messages[-1]["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": url, "detail": "auto"}},
    ]


async def test_files_attached_for_code_reach_the_tool(domain: Domain) -> None:
    tool = ScriptedTool("code_interpreter")
    domain.tools.register(tool)
    data = await domain.files.save_output("data.csv", b"a,b\n1,2\n", "text/csv")
    assistant = await domain.services.assistants.create_assistant(
        NewAssistant("scripted", tools=[{"type": "code_interpreter"}])
    )
    attachment = {"file_id": data.id, "tools": [{"type": "code_interpreter"}]}
    thread = await domain.services.threads.create_thread(
        NewThread([NewMessage("user", "sum it", attachments=[attachment])])
    )
    run = await domain.services.runs.create_run(thread.id, NewRun(assistant.id))
    domain.model.script(Reply(tool_calls=[ToolCall("code_interpreter", {"code": "sum()"})]), "3")
    await domain.drive(run)
    (call,) = tool.calls
    assert call.thread_resources["code_interpreter"]["file_ids"] == [data.id]


async def test_only_the_tools_this_server_runs_are_offered(domain: Domain) -> None:
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    run = await domain.start(tools=[{"type": "code_interpreter"}, {"type": "file_search"}, weather])
    domain.tools.register(ScriptedTool("file_search"))
    await domain.drive(run)
    (request,) = domain.model.requests
    assert sorted(t["function"]["name"] for t in request.tools) == ["file_search", "get_weather"]
    assert request.tool_choice == "auto"
