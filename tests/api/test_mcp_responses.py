"""The ``mcp`` tool of the Responses API, end to end: the official SDK against Threadline, the scripted
model, and a real MCP server (the ``mcp`` SDK's MCPServer) on a local port that the remote guard is
told to allow.

What a broken server would get wrong: the items (``mcp_list_tools``, ``mcp_call``,
``mcp_approval_request``) and their stream events, listing again on a follow-up, a call run
without the approval it needs or not run with one, the headers kept or shown, a failing tool or
server taken for a failed response, a worker's death during a call left hanging.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import database_url, server_settings
from tests.integration.test_recovery import ServerProcess
from tests.support import ThreadlineServer, agents_sdk_on, wait_for
from threadline.domain.records import response_record
from threadline.store import Database, sql_stores
from threadline.testing import Reply, ScriptedModel, ToolCall
from threadline.testing.mcp_server import McpTestServer

TOKEN = "mcp-secret-5f1b2c"
SECRET_KEY = "test-secret-key"


@pytest.fixture(scope="module")
def mcp_server() -> Iterator[McpTestServer]:
    with McpTestServer(token=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def shared_server(
    model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ThreadlineServer]:
    settings = server_settings(model, tmp_path_factory).replace(
        remote_allow="127.0.0.1", secret_key=SECRET_KEY
    )
    server = ThreadlineServer(settings)
    yield server
    server.stop()


def mcp(url: str, approval: Any = "never", **extra: Any) -> dict[str, Any]:
    return {
        "type": "mcp",
        "server_label": "calc",
        "server_url": url,
        "headers": {"Authorization": f"Bearer {TOKEN}"},
        "require_approval": approval,
        **extra,
    }


def function_names(request: dict[str, Any]) -> list[str]:
    return [t["function"]["name"] for t in request.get("tools") or []]


def tool_answer(messages: list[dict[str, Any]]) -> str:
    return str(next(m for m in messages if m.get("role") == "tool")["content"])


def stored_response(server: ThreadlineServer, response_id: str) -> str:
    """The response's run as stored, as JSON (read through the store, as the server would)."""

    async def read() -> str:
        db = Database(server.settings.effective_database_url)
        try:
            run = await sql_stores(db).runs.get_by_id(response_id)
            assert run is not None
            return json.dumps({"tools": run.tools, "response": response_record(run.response)})
        finally:
            await db.dispose()

    return asyncio.run(read())


def test_a_call_without_approval_lists_calls_and_answers(
    client: openai.OpenAI, model: ScriptedModel, mcp_server: McpTestServer, server: ThreadlineServer
) -> None:
    model.script(Reply(tool_calls=[ToolCall("add", {"a": 2, "b": 3})]), Reply(text="It is 5."))
    response = client.responses.create(model="gpt-4o", input="2+3?", tools=[mcp(mcp_server.url)])  # type: ignore[list-item]
    assert response.status == "completed"
    assert [item.type for item in response.output] == ["mcp_list_tools", "mcp_call", "message"]
    listed, call, _ = response.output
    assert listed.type == "mcp_list_tools" and listed.server_label == "calc" and listed.error is None
    assert {t.name for t in listed.tools} >= {"add", "delete_file", "fail"}
    add = next(t for t in listed.tools if t.name == "add")
    assert add.input_schema["required"] == ["a", "b"] and add.annotations == {"readOnlyHint": True}
    assert call.type == "mcp_call" and (call.name, call.server_label, call.status) == (
        "add",
        "calc",
        "completed",
    )
    assert json.loads(call.arguments) == {"a": 2, "b": 3} and call.output == "5" and call.error is None
    assert response.output_text == "It is 5."
    assert ("add", {"a": 2, "b": 3}) in mcp_server.calls
    first, second = model.wait_for_requests(2)
    assert "add" in function_names(first)
    assert tool_answer(second["messages"]) == "5"
    again = client.responses.retrieve(response.id)
    assert [item.model_dump() for item in again.output] == [item.model_dump() for item in response.output]
    # The headers went to the MCP server, and are nowhere to be seen or read back.
    raw = client.responses.with_raw_response.retrieve(response.id).text
    assert TOKEN not in raw and TOKEN not in stored_response(server, response.id)
    assert again.tools[0].type == "mcp" and not getattr(again.tools[0], "headers", None)


def test_a_follow_up_uses_the_chains_listing(
    client: openai.OpenAI, model: ScriptedModel, mcp_server: McpTestServer
) -> None:
    model.script(
        Reply(text="Ready."), Reply(tool_calls=[ToolCall("weather", {"city": "Oslo"})]), Reply(text="Sunny.")
    )
    first = client.responses.create(model="gpt-4o", input="Hi", tools=[mcp(mcp_server.url)])  # type: ignore[list-item]
    assert [item.type for item in first.output] == ["mcp_list_tools", "message"]
    second = client.responses.create(
        model="gpt-4o",
        input="Oslo?",
        tools=[mcp(mcp_server.url)],
        previous_response_id=first.id,  # type: ignore[list-item]
    )
    assert [item.type for item in second.output] == ["mcp_call", "message"]
    assert second.output[0].output == "sunny in Oslo"  # type: ignore[union-attr]
    assert "weather" in function_names(model.wait_for_requests(3)[1])


def test_streamed_the_items_come_with_their_events(
    client: openai.OpenAI, model: ScriptedModel, mcp_server: McpTestServer
) -> None:
    model.script(Reply(tool_calls=[ToolCall("weather", {"city": "Rome"})]), Reply(text="Sunny in Rome."))
    with client.responses.create(
        model="gpt-4o", input="Rome?", tools=[mcp(mcp_server.url)], stream=True
    ) as stream:  # type: ignore[list-item]
        events = list(stream)
    kinds = [e.type for e in events]
    listing = [k for k in kinds if k.startswith("response.mcp_list_tools.")]
    assert listing == ["response.mcp_list_tools.in_progress", "response.mcp_list_tools.completed"]
    calling = [k for k in kinds if k.startswith(("response.mcp_call", "response.mcp_call_arguments"))]
    assert calling == [
        "response.mcp_call.in_progress",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.completed",
    ]
    added = [e.item.type for e in events if e.type == "response.output_item.added"]
    done = [e.item for e in events if e.type == "response.output_item.done"]
    assert added == ["mcp_list_tools", "mcp_call", "message"]
    assert [item.type for item in done] == added
    assert done[1].output == "sunny in Rome" and done[1].status == "completed"  # type: ignore[union-attr]
    indices = [e.output_index for e in events if e.type == "response.output_item.added"]
    assert indices == [0, 1, 2]
    final = events[-1]
    assert final.type == "response.completed"
    assert [item.type for item in final.response.output] == added
    arguments = next(e for e in events if e.type == "response.mcp_call_arguments.done")
    assert json.loads(arguments.arguments) == {"city": "Rome"}


def test_approval_ends_the_response_and_the_next_request_runs_the_call(
    client: openai.OpenAI, model: ScriptedModel, mcp_server: McpTestServer
) -> None:
    model.script(Reply(tool_calls=[ToolCall("delete_file", {"path": "/srv/a.txt"})]), Reply(text="Deleted."))
    tools = [mcp(mcp_server.url, {"never": {"read_only": True}})]
    first = client.responses.create(model="gpt-4o", input="Delete a.txt", tools=tools)  # type: ignore[arg-type]
    assert first.status == "completed"
    assert [item.type for item in first.output] == ["mcp_list_tools", "mcp_approval_request"]
    request = first.output[1]
    assert request.type == "mcp_approval_request" and request.name == "delete_file"
    assert json.loads(request.arguments) == {"path": "/srv/a.txt"}
    assert not any(name == "delete_file" for name, _ in mcp_server.calls)
    second = client.responses.create(
        model="gpt-4o",
        previous_response_id=first.id,
        input=[{"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}],
        tools=tools,  # type: ignore[arg-type]
    )
    assert [item.type for item in second.output] == ["mcp_call", "message"]
    call = second.output[0]
    assert call.approval_request_id == request.id and call.output == "deleted /srv/a.txt"  # type: ignore[union-attr]
    assert ("delete_file", {"path": "/srv/a.txt"}) in mcp_server.calls
    assert tool_answer(model.wait_for_requests(2)[1]["messages"]) == "deleted /srv/a.txt"
    # The same answer again, on the chain or with the whole history given back: the call ran once.
    model.script(Reply(text="Already done."), Reply(text="Still done."))
    again = client.responses.create(
        model="gpt-4o",
        previous_response_id=second.id,
        input=[{"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}],
        tools=tools,  # type: ignore[arg-type]
    )
    assert [item.type for item in again.output] == ["message"]
    history = [
        {"role": "user", "content": "Delete a.txt"},
        *(item.model_dump(exclude_none=True) for item in [*first.output, *second.output]),
        {"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True},
    ]
    resent = client.responses.create(model="gpt-4o", input=history, tools=tools)  # type: ignore[arg-type]
    assert resent.output_text == "Still done."
    assert [name for name, _ in mcp_server.calls].count("delete_file") == 1


def test_a_refused_call_is_not_run_and_the_model_hears_so(
    client: openai.OpenAI, model: ScriptedModel, mcp_server: McpTestServer
) -> None:
    model.script(Reply(tool_calls=[ToolCall("delete_file", {"path": "/srv/b.txt"})]), Reply(text="Kept it."))
    tools = [mcp(mcp_server.url, "always")]
    first = client.responses.create(model="gpt-4o", input="Delete b.txt", tools=tools)  # type: ignore[arg-type]
    request = first.output[-1]
    assert request.type == "mcp_approval_request"
    second = client.responses.create(
        model="gpt-4o",
        previous_response_id=first.id,
        input=[
            {
                "type": "mcp_approval_response",
                "approval_request_id": request.id,
                "approve": False,
                "reason": "keep it",
            }
        ],
        tools=tools,  # type: ignore[arg-type]
    )
    assert [item.type for item in second.output] == ["message"]
    assert not any(args == {"path": "/srv/b.txt"} for _, args in mcp_server.calls)
    told = tool_answer(model.wait_for_requests(2)[1]["messages"])
    assert "did not approve" in told and "keep it" in told


def test_an_approval_needs_its_request_and_the_tool_again(
    client: openai.OpenAI, model: ScriptedModel, mcp_server: McpTestServer
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(
            model="gpt-4o",
            input=[{"type": "mcp_approval_response", "approval_request_id": "mcpr_nope", "approve": True}],
            tools=[mcp(mcp_server.url)],  # type: ignore[list-item]
        )
    assert "mcpr_nope" in raised.value.message
    model.script(Reply(tool_calls=[ToolCall("delete_file", {"path": "/x"})]))
    first = client.responses.create(model="gpt-4o", input="Delete x", tools=[mcp(mcp_server.url, "always")])  # type: ignore[list-item]
    answer = [{"type": "mcp_approval_response", "approval_request_id": first.output[-1].id, "approve": True}]
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model="gpt-4o", previous_response_id=first.id, input=answer)  # type: ignore[arg-type]
    assert "calc" in raised.value.message and "headers" in raised.value.message


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"server_url": None}, "tools[0].server_url"),
        ({"require_approval": "maybe"}, "tools[0].require_approval"),
    ],
)
def test_a_bad_mcp_tool_is_a_400(
    client: openai.OpenAI, change: dict[str, Any], param: str, mcp_server: McpTestServer
) -> None:
    tool = {k: v for k, v in {**mcp(mcp_server.url), **change}.items() if v is not None}
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model="gpt-4o", input="x", tools=[tool])  # type: ignore[list-item]
    assert raised.value.body["param"] == param  # type: ignore[index]


def test_a_failing_tool_fails_its_call_and_the_model_goes_on(
    client: openai.OpenAI, model: ScriptedModel, mcp_server: McpTestServer
) -> None:
    model.script(Reply(tool_calls=[ToolCall("fail", {"reason": "disk on fire"})]), Reply(text="That failed."))
    response = client.responses.create(model="gpt-4o", input="Try", tools=[mcp(mcp_server.url)])  # type: ignore[list-item]
    assert response.status == "completed" and response.output_text == "That failed."
    call = response.output[1]
    assert call.type == "mcp_call" and call.status == "failed" and call.output is None
    assert call.error is not None and call.error.type == "mcp_tool_execution_error"
    assert "disk on fire" in tool_answer(model.wait_for_requests(2)[1]["messages"])


def test_a_refused_address_fails_the_listing_clearly(
    make_server: Any, model: ScriptedModel, mcp_server: McpTestServer
) -> None:
    guarded = make_server()  # no THREADLINE_REMOTE_ALLOW: 127.0.0.1 is refused
    model.script(Reply(text="No tools, then."))
    with openai.OpenAI(base_url=guarded.url, api_key="k", max_retries=0) as client:
        response = client.responses.create(model="gpt-4o", input="Hi", tools=[mcp(mcp_server.url)])  # type: ignore[list-item]
    assert response.status == "completed" and response.output_text == "No tools, then."
    listed = response.output[0]
    assert listed.type == "mcp_list_tools" and listed.tools == []
    assert listed.error is not None and "THREADLINE_REMOTE_ALLOW" in listed.error
    assert function_names(model.wait_for_requests(1)[0]) == []


def test_an_approval_survives_a_restart(
    make_server: Any, model: ScriptedModel, mcp_server: McpTestServer, tmp_path: Path
) -> None:
    database = database_url(tmp_path)
    options = {"remote_allow": "127.0.0.1", "secret_key": SECRET_KEY, "database_url": database}
    first = make_server(**options)
    model.script(Reply(tool_calls=[ToolCall("delete_file", {"path": "/srv/c.txt"})]), Reply(text="Done."))
    tools = [mcp(mcp_server.url, "always")]
    with openai.OpenAI(base_url=first.url, api_key="k", max_retries=0) as client:
        asked = client.responses.create(model="gpt-4o", input="Delete c.txt", tools=tools)  # type: ignore[arg-type]
    first.stop()
    second = make_server(**options)
    with openai.OpenAI(base_url=second.url, api_key="k", max_retries=0) as client:
        answer = {
            "type": "mcp_approval_response",
            "approval_request_id": asked.output[-1].id,
            "approve": True,
        }
        done = client.responses.create(
            model="gpt-4o", previous_response_id=asked.id, input=[answer], tools=tools
        )  # type: ignore[arg-type, list-item]
    assert [item.type for item in done.output] == ["mcp_call", "message"]
    assert ("delete_file", {"path": "/srv/c.txt"}) in mcp_server.calls


@pytest.mark.timeout(180)
def test_a_worker_that_dies_during_a_call_leaves_it_failed_and_the_run_goes_on(
    tmp_path: Path, model: ScriptedModel, mcp_server: McpTestServer
) -> None:
    database = database_url(tmp_path)
    options = {"remote_allow": "127.0.0.1", "secret_key": SECRET_KEY, "mcp_timeout_seconds": 60}
    model.script(Reply(tool_calls=[ToolCall("slow", {"seconds": 30})]), Reply(text="It was interrupted."))
    first = ServerProcess(tmp_path, database, model, "first", **options)
    second: ServerProcess | None = None
    try:
        body = {"model": "gpt-4o", "input": "Wait", "background": True, "tools": [mcp(mcp_server.url)]}
        created = httpx.post(f"{first.url}/v1/responses", json=body, timeout=30)
        assert created.status_code == 200, created.text
        response_id = created.json()["id"]
        wait_for(
            lambda: any(name == "slow" for name, _ in mcp_server.calls), timeout=30, what="the slow call"
        )
        first.kill()
        second = ServerProcess(tmp_path, database, model, "second", **options)

        def finished() -> bool:
            got = httpx.get(f"{second.url}/v1/responses/{response_id}", timeout=10).json()
            return bool(got["status"] in ("completed", "failed"))

        wait_for(finished, timeout=90, what="the resumed response")
        response = httpx.get(f"{second.url}/v1/responses/{response_id}", timeout=10).json()
    finally:
        for process in (first, second):
            if process is not None and process.process.poll() is None:
                process.kill()
    assert response["status"] == "completed", response
    call = next(item for item in response["output"] if item["type"] == "mcp_call")
    assert call["status"] == "failed" and "stopped" in call["error"]["message"]
    assert [n for n, _ in mcp_server.calls].count("slow") == 1  # not called again unasked
    assert response["output"][-1]["type"] == "message"


# --- the OpenAI Agents SDK's HostedMCPTool -----------------------------------------------------------

agents = pytest.importorskip("agents")


@pytest.fixture
def agents_loop(server: ThreadlineServer) -> Iterator[asyncio.AbstractEventLoop]:
    """The SDK on the server as its documentation shows for another base URL (as in
    ``test_real_clients.py``), on a loop of the test's own."""
    with agents_sdk_on(server.url) as loop:
        yield loop


def hosted(url: str, approval: Any, decide: Any = None) -> Any:
    return agents.HostedMCPTool(tool_config=mcp(url, approval), on_approval_request=decide)


def agent_with(tool: Any) -> Any:
    return agents.Agent(name="files", instructions="Be brief.", model="gpt-4o", tools=[tool])


@pytest.mark.filterwarnings(
    "ignore:asynchronous generator .* was scheduled after loop.shutdown_asyncgens:ResourceWarning"
)
@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
def test_agents_hosted_mcp_tool_without_approval(
    agents_loop: asyncio.AbstractEventLoop, model: ScriptedModel, mcp_server: McpTestServer, streamed: bool
) -> None:
    model.script(Reply(tool_calls=[ToolCall("add", {"a": 20, "b": 22})]), Reply(text="42."))
    agent = agent_with(hosted(mcp_server.url, "never"))

    async def run() -> tuple[Any, list[str]]:
        if not streamed:
            return await agents.Runner.run(agent, "20+22?"), []
        result = agents.Runner.run_streamed(agent, "20+22?")
        names = [e.name async for e in result.stream_events() if e.type == "run_item_stream_event"]
        return result, names

    result, names = agents_loop.run_until_complete(run())
    assert result.final_output == "42."
    kinds = [item.type for item in result.new_items]
    assert "mcp_list_tools_item" in kinds and "message_output_item" in kinds
    call = next(
        item.raw_item for item in result.new_items if getattr(item.raw_item, "type", "") == "mcp_call"
    )
    assert call.output == "42" and call.status == "completed"
    assert ("add", {"a": 20, "b": 22}) in mcp_server.calls
    if streamed:
        assert names[0] == "mcp_list_tools" and names[-1] == "message_output_created"


@pytest.mark.filterwarnings(
    "ignore:asynchronous generator .* was scheduled after loop.shutdown_asyncgens:ResourceWarning"
)
@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
@pytest.mark.parametrize("approve", [True, False], ids=["approved", "refused"])
def test_agents_hosted_mcp_tool_with_an_approval_callback(
    agents_loop: asyncio.AbstractEventLoop,
    model: ScriptedModel,
    mcp_server: McpTestServer,
    streamed: bool,
    approve: bool,
) -> None:
    path = f"/srv/{'yes' if approve else 'no'}-{int(streamed)}.txt"
    model.script(Reply(tool_calls=[ToolCall("delete_file", {"path": path})]), Reply(text="Handled."))
    asked: list[str] = []

    def decide(request: Any) -> dict[str, Any]:
        asked.append(request.data.name)
        return {"approve": True} if approve else {"approve": False, "reason": "not that one"}

    agent = agent_with(hosted(mcp_server.url, "always", decide))

    async def run() -> Any:
        if not streamed:
            return await agents.Runner.run(agent, f"Delete {path}")
        result = agents.Runner.run_streamed(agent, f"Delete {path}")
        async for _ in result.stream_events():
            pass
        return result

    result = agents_loop.run_until_complete(run())
    assert result.final_output == "Handled."
    assert asked == ["delete_file"]
    ran = ("delete_file", {"path": path}) in mcp_server.calls
    assert ran is approve
    told = tool_answer(model.wait_for_requests(2)[1]["messages"])
    assert told == f"deleted {path}" if approve else "not that one" in told


def test_a_forced_tool_choice_holds_until_an_mcp_call_answered(
    client: openai.OpenAI, model: ScriptedModel, mcp_server: McpTestServer
) -> None:
    model.script(Reply(tool_calls=[ToolCall("add", {"a": 1, "b": 1})]), Reply(text="2."))
    response = client.responses.create(
        model="gpt-4o",
        input="1+1?",
        tools=[mcp(mcp_server.url)],
        tool_choice="required",  # type: ignore[list-item]
    )
    assert response.output_text == "2."
    first, second = model.wait_for_requests(2)
    assert (first["tool_choice"], second["tool_choice"]) == ("required", "auto")
