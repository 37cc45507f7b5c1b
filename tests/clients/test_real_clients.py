"""The programs people write on the Responses API, run unchanged against Threadline: the OpenAI Agents
SDK (Python and JavaScript), the Vercel AI SDK and LangChain's ``ChatOpenAI(use_responses_api=True)``.

Each keeps its own history and sends it back on the next turn, in its own way: the Agents SDK its
``to_input_list()`` (every output item, hosted-tool calls included) or a session, in JavaScript its
``history`` or a ``previousResponseId``; the AI SDK item references to what the server stored;
LangChain its message list. The scripted model records what it was sent, so each test checks that
the second turn's model call carried the first turn's tool call and result, not just the final
answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.api.test_builtin_tools import needs_sandbox
from tests.api.test_projects import ADMIN, new_project, sdk
from tests.api.test_streaming import node_sdk  # noqa: F401  (the fixture)
from tests.support import ThreadlineServer, agents_sdk_on, run_node
from threadline.testing import Reply, ScriptedModel, ToolCall

agents = pytest.importorskip("agents")

pytestmark = pytest.mark.filterwarnings(
    # Runner.run_sync shuts down the loop's async generators after each run and keeps the loop for
    # the next, whose HTTP requests then start new ones: Python warns, the requests work. The SDK's.
    "ignore:asynchronous generator .* was scheduled after loop.shutdown_asyncgens:ResourceWarning"
)

HANDBOOK = b"Pension plan: each month 8 percent of the salary is paid in, and the company adds 4 percent."
ANSWER = "8 percent\u30100:0\u2020retirement.md\u3011."
SHOWN = "8 percent."
"""The answer as the Responses API shows it: the model's citation marker cut out."""


def handbook(client: openai.OpenAI) -> str:
    store = client.vector_stores.create(name="handbook")
    client.vector_stores.file_batches.upload_and_poll(
        vector_store_id=store.id, files=[("retirement.md", HANDBOOK)]
    )
    return store.id


def tool_round(messages: list[dict[str, Any]], name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The assistant call of ``name`` the model was shown, and the tool message answering it."""
    for i, message in enumerate(messages):
        for call in message.get("tool_calls") or []:
            if call["function"]["name"] == name:
                answer = next(m for m in messages[i + 1 :] if m.get("tool_call_id") == call["id"])
                return call, answer
    raise AssertionError(f"no {name} call in {messages}")


def weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


# --- the OpenAI Agents SDK -------------------------------------------------------------------------


@pytest.fixture
def loop(server: ThreadlineServer) -> Iterator[asyncio.AbstractEventLoop]:
    """The SDK set up as its documentation shows for another base URL: its default client an
    ``AsyncOpenAI`` on the server, the Responses API, no tracing. ``Runner.run_sync`` runs on the
    thread's default loop and the client's connections belong to it, so each test gets its own."""
    with agents_sdk_on(server.url) as loop:
        yield loop


def weather_agent() -> Any:
    return agents.Agent(
        name="weather", instructions="Be brief.", model="gpt-4o", tools=[agents.function_tool(weather)]
    )


def test_agents_function_tool_two_turns_from_the_input_list(
    loop: asyncio.AbstractEventLoop, model: ScriptedModel
) -> None:
    model.script(
        Reply(tool_calls=[ToolCall("weather", {"city": "Oslo"})]),
        Reply(text="Oslo is sunny."),
        Reply(text="Sunglasses."),
    )
    agent = weather_agent()
    first = agents.Runner.run_sync(agent, "Weather in Oslo?")
    assert first.final_output == "Oslo is sunny."
    second = agents.Runner.run_sync(agent, [*first.to_input_list(), {"role": "user", "content": "Wear?"}])
    assert second.final_output == "Sunglasses."
    seen = model.wait_for_requests(3)[2]["messages"]
    call, result = tool_round(seen, "weather")
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}
    assert result["content"] == "sunny in Oslo"
    assert seen[0] == {"role": "system", "content": "Be brief."}
    assert seen[-2:] == [
        {"role": "assistant", "content": "Oslo is sunny."},
        {"role": "user", "content": "Wear?"},
    ]


@pytest.mark.parametrize("with_results", [True, False], ids=["results", "no-results"])
def test_agents_file_search_second_turn_sends_the_search_back(
    loop: asyncio.AbstractEventLoop, model: ScriptedModel, client: openai.OpenAI, with_results: bool
) -> None:
    tool = agents.FileSearchTool(vector_store_ids=[handbook(client)], include_search_results=with_results)
    agent = agents.Agent(name="handbook", instructions="Use the files.", model="gpt-4o", tools=[tool])
    model.script(
        Reply(tool_calls=[ToolCall("file_search", {"query": "pension"})]),
        Reply(text=ANSWER),
        Reply(text="4 percent."),
    )
    first = agents.Runner.run_sync(agent, "How much pension?")
    assert first.final_output == SHOWN  # no raw marker
    given = first.to_input_list()
    assert [item.get("type") for item in given] == [None, "file_search_call", "message"]
    (citation,) = given[2]["content"][0]["annotations"]
    assert (citation["filename"], citation["index"]) == ("retirement.md", SHOWN.index("."))
    assert bool(given[1].get("results")) is with_results

    second = agents.Runner.run_sync(agent, [*given, {"role": "user", "content": "And the company?"}])
    assert second.final_output == "4 percent."
    seen = model.wait_for_requests(3)[2]["messages"]
    call, result = tool_round(seen, "file_search")
    assert "pension" in call["function"]["arguments"]
    # Sent back without its results (the tool's default), the call is one this server made: the
    # model is shown the results it found, as a continued response would be.
    assert "retirement.md" in result["content"] and "8 percent" in result["content"]
    assert seen[-2:] == [
        {"role": "assistant", "content": SHOWN},
        {"role": "user", "content": "And the company?"},
    ]


def test_a_search_given_back_bare_gets_only_its_own_projects_results(
    make_server: Callable[..., ThreadlineServer], model: ScriptedModel
) -> None:
    server = make_server(admin_key=ADMIN)
    ours, theirs = (sdk(server, new_project(server, name)[1]) for name in ("ours", "theirs"))
    with ours, theirs:
        tools: Any = [{"type": "file_search", "vector_store_ids": [handbook(ours)]}]
        model.script(Reply(tool_calls=[ToolCall("file_search", {"query": "pension"})]), Reply(text=ANSWER))
        search, answer = ours.responses.create(model="gpt-4o", input="How much?", tools=tools).output
        bare = [
            {"type": "file_search_call", "id": search.id, "status": "completed", "queries": ["pension"]},
            answer.model_dump(exclude_unset=True),
            {"role": "user", "content": "And the company?"},
        ]
        for client, shown in ((theirs, "not kept"), (ours, "8 percent")):
            model.script(Reply(text="4 percent."))
            client.responses.create(model="gpt-4o", input=bare)  # type: ignore[arg-type]
            _, result = tool_round(model.requests[-1]["messages"], "file_search")
            assert shown in result["content"]


@needs_sandbox
def test_agents_code_interpreter_second_turn_sends_the_code_and_its_output(
    loop: asyncio.AbstractEventLoop, model: ScriptedModel
) -> None:
    tool = agents.CodeInterpreterTool(tool_config={"type": "code_interpreter", "container": {"type": "auto"}})
    agent = agents.Agent(name="calc", model="gpt-4o", tools=[tool])
    model.script(
        Reply(tool_calls=[ToolCall("code_interpreter", {"code": "print(6 * 7)"})]),
        Reply(text="42."),
        Reply(text="Yes, 42."),
    )
    first = agents.Runner.run_sync(agent, "6 times 7?")
    assert first.final_output == "42."
    given = first.to_input_list()
    ran = given[1]
    assert ran["type"] == "code_interpreter_call" and ran["container_id"].startswith("cntr_")
    assert ran["outputs"] == [{"type": "logs", "logs": "42\n"}]
    second = agents.Runner.run_sync(agent, [*given, {"role": "user", "content": "Sure?"}])
    assert second.final_output == "Yes, 42."
    call, printed = tool_round(model.wait_for_requests(3)[2]["messages"], "code_interpreter")
    assert "print(6 * 7)" in call["function"]["arguments"]
    assert printed["content"].strip() == "42"


def test_agents_session_carries_the_first_run_into_the_second(
    loop: asyncio.AbstractEventLoop, model: ScriptedModel
) -> None:
    model.script(
        Reply(tool_calls=[ToolCall("weather", {"city": "Rome"})]),
        Reply(text="Rome is sunny."),
        Reply(text="Rome, I said."),
    )
    agent = weather_agent()
    session = agents.SQLiteSession("chat")
    try:
        assert agents.Runner.run_sync(agent, "Weather in Rome?", session=session).final_output == (
            "Rome is sunny."
        )
        assert agents.Runner.run_sync(agent, "Which city?", session=session).final_output == "Rome, I said."
        kept = loop.run_until_complete(session.get_items())
    finally:
        session.close()
    assert [item.get("type", "message") for item in kept] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
        "message",
        "message",
    ]
    seen = model.wait_for_requests(3)[2]["messages"]
    call, result = tool_round(seen, "weather")
    assert (
        json.loads(call["function"]["arguments"]) == {"city": "Rome"} and result["content"] == "sunny in Rome"
    )
    assert seen[-2:] == [
        {"role": "assistant", "content": "Rome is sunny."},
        {"role": "user", "content": "Which city?"},
    ]


def test_agents_streamed_run_with_a_tool_call_and_text_deltas(
    loop: asyncio.AbstractEventLoop, model: ScriptedModel
) -> None:
    model.script(
        Reply(tool_calls=[ToolCall("weather", {"city": "Oslo"})]), Reply(text="Oslo is sunny today.")
    )

    async def run() -> tuple[list[str], list[str], Any]:
        result = agents.Runner.run_streamed(weather_agent(), "Weather in Oslo?")
        deltas: list[str] = []
        items: list[str] = []
        async for event in result.stream_events():
            if event.type == "raw_response_event" and event.data.type == "response.output_text.delta":
                deltas.append(event.data.delta)
            elif event.type == "run_item_stream_event":
                items.append(event.name)
        return deltas, items, result

    deltas, items, result = loop.run_until_complete(run())
    assert deltas == ["Oslo ", "is ", "sunny ", "today."]
    assert items == ["tool_called", "tool_output", "message_output_created"]
    assert result.final_output == "Oslo is sunny today."
    _, answer = tool_round(model.wait_for_requests(2)[1]["messages"], "weather")
    assert answer["content"] == "sunny in Oslo"


# --- the Vercel AI SDK -----------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_ai_sdk_multi_turn_chat_plain_with_a_tool_with_file_search_and_streamed(
    node_sdk: Path,  # noqa: F811
    model: ScriptedModel,
    server: ThreadlineServer,
    client: openai.OpenAI,
) -> None:
    store = handbook(client)
    model.script(
        Reply(text="Hello."),
        Reply(text="Bonjour."),
        Reply(tool_calls=[ToolCall("get_weather", {"city": "Oslo"})]),
        Reply(text="Oslo is sunny."),
        Reply(text="Sunglasses."),
        Reply(tool_calls=[ToolCall("file_search", {"query": "pension"})]),
        Reply(text=ANSWER),
        Reply(text="4 percent."),
        Reply(tool_calls=[ToolCall("get_weather", {"city": "Rome"})]),
        Reply(text="Rome is sunny."),
        Reply(text="Sunny again."),
    )
    seen = run_node(node_sdk, "ai_chat.mjs", server.url, VECTOR_STORE_ID=store)
    assert [a["text"] for a in seen["plain"]["answers"]] == ["Hello.", "Bonjour."]
    assert [a["text"] for a in seen["tools"]["answers"]] == ["Oslo is sunny.", "Sunglasses."]
    assert seen["tools"]["answers"][0]["steps"] == 2  # the call, then the answer
    assert [a["text"] for a in seen["file_search"]["answers"]] == [SHOWN, "4 percent."]
    assert seen["file_search"]["answers"][0]["sources"] == 1  # the citation, as a source

    sent = [request["messages"] for request in model.wait_for_requests(11)]
    # Plain: the first answer, by reference, before the new question.
    assert sent[1] == [
        {"role": "user", "content": "Say hello."},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Again, in French."},
    ]
    # With a tool: the call (by reference) and the SDK's result, in both later model calls.
    for messages in (sent[3], sent[4]):
        call, result = tool_round(messages, "get_weather")
        assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}
        assert result["content"] == "sunny in Oslo"
    assert sent[4][-2:] == [
        {"role": "assistant", "content": "Oslo is sunny."},
        {"role": "user", "content": "What should I wear?"},
    ]
    # With file search: the search and its results, from the referenced call.
    call, result = tool_round(sent[7], "file_search")
    assert "pension" in call["function"]["arguments"] and "8 percent" in result["content"]
    assert sent[7][-1] == {"role": "user", "content": "And the company?"}
    # Streamed: the text in pieces, and its history carried into the next turn the same way.
    assert seen["streamed"] == {
        "deltas": ["Rome ", "is ", "sunny."],
        "text": "Rome is sunny.",
        "again": "Sunny again.",
    }
    call, result = tool_round(sent[10], "get_weather")
    assert (
        json.loads(call["function"]["arguments"]) == {"city": "Rome"} and result["content"] == "sunny in Rome"
    )
    assert sent[10][-2:] == [
        {"role": "assistant", "content": "Rome is sunny."},
        {"role": "user", "content": "And tomorrow?"},
    ]


# --- the OpenAI Agents SDK for JavaScript ----------------------------------------------------------


@pytest.mark.timeout(120)
def test_js_agents_sdk_tool_run_chained_replayed_and_streamed(
    node_sdk: Path,  # noqa: F811
    model: ScriptedModel,
    server: ThreadlineServer,
) -> None:
    model.script(
        Reply(tool_calls=[ToolCall("get_weather", {"city": "Oslo"})]),
        Reply(text="Oslo is sunny."),
        Reply(text="Sunglasses."),
        Reply(text="Oslo, I said."),
        Reply(tool_calls=[ToolCall("get_weather", {"city": "Rome"})]),
        Reply(text="Rome is sunny today."),
    )
    seen = run_node(node_sdk, "agents_run.mjs", server.url)
    assert seen["first"]["text"] == "Oslo is sunny."
    assert seen["first"]["items"] == ["tool_call_item", "tool_call_output_item", "message_output_item"]
    assert seen["first"]["responseId"].startswith("resp_")
    assert seen["chained"] == {"text": "Sunglasses.", "items": ["message_output_item"]}
    assert seen["replayed"] == {
        "text": "Oslo, I said.",
        "history": ["message", "function_call", "function_call_result", "message"],
    }
    assert seen["streamed"] == {
        "deltas": ["Rome ", "is ", "sunny ", "today."],
        "text": "Rome is sunny today.",
        "items": ["tool_call_item", "tool_call_output_item", "message_output_item"],
    }

    sent = [request["messages"] for request in model.wait_for_requests(6)]
    assert sent[0] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo?"},
    ]
    # The SDK ran the tool and sent its output back; both later turns show the model the whole first
    # turn: chained by `previousResponseId` (the server's stored chain), or its `history` sent back.
    for messages, question in ((sent[1], None), (sent[2], "What should I wear?"), (sent[3], "Which city?")):
        call, result = tool_round(messages, "get_weather")
        assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}
        assert result["content"] == "sunny in Oslo"
        if question is not None:
            assert messages[0] == {"role": "system", "content": "Be brief."}
            assert messages[-2:] == [
                {"role": "assistant", "content": "Oslo is sunny."},
                {"role": "user", "content": question},
            ]
    # Streamed: a fresh conversation, its tool output reaching the model before the streamed answer.
    assert not any("Oslo" in str(m.get("content")) for m in sent[5])
    _, result = tool_round(sent[5], "get_weather")
    assert result["content"] == "sunny in Rome"


# --- LangChain -------------------------------------------------------------------------------------


def test_langchain_responses_two_turns_with_a_tool_and_file_search(
    model: ScriptedModel, server: ThreadlineServer, client: openai.OpenAI
) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    messages = pytest.importorskip("langchain_core.messages")
    chat = langchain_openai.ChatOpenAI(
        model="gpt-4o", base_url=server.url, api_key="test-key", max_retries=0, use_responses_api=True
    )
    model.script(
        Reply(tool_calls=[ToolCall("weather", {"city": "Oslo"})]),
        Reply(text="Oslo is sunny."),
        Reply(text="Sunglasses."),
    )
    bound = chat.bind_tools([weather])
    history: list[Any] = [messages.HumanMessage("Weather in Oslo?")]
    asked = bound.invoke(history)
    assert [(c["name"], c["args"]) for c in asked.tool_calls] == [("weather", {"city": "Oslo"})]
    history += [asked, messages.ToolMessage(weather("Oslo"), tool_call_id=asked.tool_calls[0]["id"])]
    answered = bound.invoke(history)
    assert answered.text == "Oslo is sunny."
    history += [answered, messages.HumanMessage("What should I wear?")]
    assert bound.invoke(history).text == "Sunglasses."
    seen = model.wait_for_requests(3)[2]["messages"]
    call, result = tool_round(seen, "weather")
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}
    assert result["content"] == "sunny in Oslo"
    assert seen[-2:] == [
        {"role": "assistant", "content": "Oslo is sunny."},
        {"role": "user", "content": "What should I wear?"},
    ]

    searching = chat.bind_tools([{"type": "file_search", "vector_store_ids": [handbook(client)]}])
    model.script(
        Reply(tool_calls=[ToolCall("file_search", {"query": "pension"})]),
        Reply(text=ANSWER),
        Reply(text="4 percent."),
    )
    history = [messages.HumanMessage("How much pension?")]
    found = searching.invoke(history)
    assert found.text == SHOWN
    assert found.content[0]["type"] == "file_search_call"
    history += [found, messages.HumanMessage("And the company?")]
    assert searching.invoke(history).text == "4 percent."
    seen = model.wait_for_requests(6)[5]["messages"]
    call, result = tool_round(seen, "file_search")
    assert "pension" in call["function"]["arguments"] and "8 percent" in result["content"]
    assert seen[-2:] == [
        {"role": "assistant", "content": SHOWN},
        {"role": "user", "content": "And the company?"},
    ]
