"""One Agents SDK program with both remote tools, a ``WebSearchTool`` and a ``HostedMCPTool``, run
unchanged against Threadline: the SDK's default client pointed at the server by base URL, the
scripted model searching, then calling the MCP server's tool, then answering with a citation; with
the MCP tool's approval ``never`` and ``always`` (through ``on_approval_request``), through
``Runner.run`` and ``Runner.run_streamed``.

What a broken server would get wrong: the items of the two tools in one response (their order and
types, the approval's round trip with the search before it sent back as input), the MCP tool's
output reaching the model, the answer's ``url_citation``, the streamed events of both tools.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.test_mcp_responses import TOKEN
from tests.api.test_web_search import QUESTION, answer_citing
from tests.conftest import server_settings
from tests.support import ThreadlineServer, agents_sdk_on
from threadline.testing import Reply, ScriptedModel, ToolCall
from threadline.testing.mcp_server import McpTestServer
from threadline.testing.web import FakeWeb

agents = pytest.importorskip("agents")


@pytest.fixture(scope="module")
def fake_web() -> Iterator[FakeWeb]:
    with FakeWeb() as fake:
        yield fake


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[McpTestServer]:
    with McpTestServer(token=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def remote_server(
    model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory, fake_web: FakeWeb
) -> Iterator[ThreadlineServer]:
    settings = server_settings(model, tmp_path_factory).replace(
        web_search_url=fake_web.base_url, remote_allow="127.0.0.1/32", secret_key="test-secret-key"
    )
    server = ThreadlineServer(settings)
    yield server
    server.stop()


@pytest.fixture
def agents_loop(remote_server: ThreadlineServer) -> Iterator[asyncio.AbstractEventLoop]:
    """The SDK set up as its documentation shows for another OpenAI-compatible server."""
    with agents_sdk_on(remote_server.url) as loop:
        yield loop


def kind(item: Any) -> str:
    """An item's type as the server sent it (``mcp_call``, not the SDK's ``tool_call_item``)."""
    raw = item.raw_item
    return str(raw.get("type") if isinstance(raw, dict) else raw.type)


@pytest.mark.filterwarnings(
    "ignore:asynchronous generator .* was scheduled after loop.shutdown_asyncgens:ResourceWarning"
)
@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
@pytest.mark.parametrize("approval", ["never", "always"])
def test_an_agent_searches_the_web_then_calls_an_mcp_tool(
    agents_loop: asyncio.AbstractEventLoop,
    model: ScriptedModel,
    fake_web: FakeWeb,
    mcp_server: McpTestServer,
    approval: str,
    streamed: bool,
) -> None:
    city = f"Arbroath-{approval}-{int(streamed)}"
    text = answer_citing(fake_web)
    model.script(
        Reply(tool_calls=[ToolCall("web_search", {"query": "bell rock lighthouse"})]),
        Reply(tool_calls=[ToolCall("weather", {"city": city})]),
        Reply(text=text),
    )
    asked: list[str] = []

    def on_approval_request(request: Any) -> dict[str, Any]:
        asked.append(request.data.name)
        return {"approve": True}

    agent = agents.Agent(
        name="keeper",
        instructions="Search the web, then check the weather, then answer citing your source.",
        model="gpt-4o",
        tools=[
            agents.WebSearchTool(),
            agents.HostedMCPTool(
                tool_config={
                    "type": "mcp",
                    "server_label": "calc",
                    "server_url": mcp_server.url,
                    "headers": {"Authorization": f"Bearer {TOKEN}"},
                    "require_approval": approval,
                },
                on_approval_request=on_approval_request if approval == "always" else None,
            ),
        ],
    )

    async def run() -> tuple[Any, list[Any]]:
        if not streamed:
            return await agents.Runner.run(agent, QUESTION), []
        result = agents.Runner.run_streamed(agent, QUESTION)
        return result, [event async for event in result.stream_events()]

    result, events = agents_loop.run_until_complete(run())
    assert result.final_output == text
    calls = (
        ["mcp_call"] if approval == "never" else ["mcp_approval_request", "mcp_approval_response", "mcp_call"]
    )
    assert [kind(item) for item in result.new_items] == [
        "mcp_list_tools",
        "web_search_call",
        *calls,
        "message",
    ]
    search = next(item.raw_item for item in result.new_items if kind(item) == "web_search_call")
    assert search.status == "completed" and search.action.query == "bell rock lighthouse"
    call = next(item.raw_item for item in result.new_items if kind(item) == "mcp_call")
    assert (call.name, call.status, call.output) == ("weather", "completed", f"sunny in {city}")
    assert ("weather", {"city": city}) in mcp_server.calls
    assert asked == ([] if approval == "never" else ["weather"])
    # The model was told of the search, then of the MCP tool's output, each as a tool message.
    last = model.wait_for_requests(3)[-1]["messages"]
    told = [str(m["content"]) for m in last if m["role"] == "tool"]
    assert len(told) == 2 and told[1] == f"sunny in {city}"
    message = result.new_items[-1].raw_item
    # The model read the pages, and its link to one is a citation; with "always" the answer is a
    # second response, given the search back as an item: the pages its call read are found by its id.
    assert "first lit in 1811" in told[0]
    (citation,) = message.content[0].annotations
    assert (citation.type, citation.url) == ("url_citation", fake_web.page_url("bell-rock"))
    if streamed:
        kinds = {e.type for e in events}
        assert {"raw_response_event", "run_item_stream_event"} <= kinds
        raw = {e.data.type for e in events if e.type == "raw_response_event"}
        assert {
            "response.web_search_call.completed",
            "response.mcp_list_tools.completed",
            "response.mcp_call.completed",
        } <= raw
        assert "response.output_text.annotation.added" in raw
        named = [e.name for e in events if e.type == "run_item_stream_event"]
        assert named[0] == "mcp_list_tools" and named[-1] == "message_output_created"
