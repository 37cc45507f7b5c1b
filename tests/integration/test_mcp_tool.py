"""The ``mcp`` tool's rules, without a server: what a request may say, which listed tools the model
is offered and under which names, which calls need approval, and how MCP items are shown to it."""

from __future__ import annotations

from typing import Any

import pytest

from threadline.domain.content import ItemFields
from threadline.domain.entities import Message
from threadline.domain.mcp import McpServerTool, check_labels, mcp_tool, offered
from threadline.domain.prompt_messages import entry_messages
from threadline.errors import InvalidRequestError

ADD = {"name": "add", "input_schema": {"type": "object"}, "annotations": {"readOnlyHint": True}}
DELETE = {"name": "delete_file", "input_schema": {"type": "object"}, "annotations": None}
TOOL = {"type": "mcp", "server_label": "files", "server_url": "https://mcp.example.com/mcp"}


def test_a_tool_is_kept_without_its_headers_and_approval_defaults_to_always() -> None:
    kept, headers = mcp_tool({**TOOL, "headers": {"Authorization": "Bearer x"}}, "tools[0]")
    assert headers == {"Authorization": "Bearer x"}
    assert "headers" not in kept and "Bearer x" not in str(kept)
    assert kept["require_approval"] == "always"
    _, headers = mcp_tool({**TOOL, "authorization": "tok"}, "tools[0]")
    assert headers == {"Authorization": "Bearer tok"}


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"server_label": "has space"}, "tools[0].server_label"),
        ({"server_url": "ftp://example.com/mcp"}, "tools[0].server_url"),
        ({"server_url": None, "connector_id": "connector_gmail"}, "tools[0].server_url"),
        ({"headers": {"Bad Name": "x"}}, "tools[0].headers"),
        ({"headers": {"X-A": "line\r\nbreak"}}, "tools[0].headers"),
        ({"headers": {"X-A": 3}}, "tools[0].headers"),
        ({"allowed_tools": "add"}, "tools[0].allowed_tools"),
        ({"allowed_tools": {"names": ["add"]}}, "tools[0].allowed_tools"),
        ({"require_approval": "sometimes"}, "tools[0].require_approval"),
        ({"require_approval": {"never": {"tool_names": "add"}}}, "tools[0].require_approval"),
    ],
)
def test_bad_tools_are_refused_naming_the_field(change: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        mcp_tool({**TOOL, **change}, "tools[0]")
    assert raised.value.param == param


def test_two_servers_may_not_share_a_label() -> None:
    with pytest.raises(InvalidRequestError):
        check_labels([mcp_tool(TOOL, "t")[0], mcp_tool(TOOL, "t")[0]])


@pytest.mark.parametrize(
    ("policy", "add", "delete"),
    [
        ("always", True, True),
        ("never", False, False),
        ({"never": {"tool_names": ["add"]}}, False, True),
        ({"never": {"read_only": True}}, False, True),
        ({"always": {"tool_names": ["delete_file"]}}, True, True),
    ],
)
def test_which_calls_need_approval(policy: Any, add: bool, delete: bool) -> None:
    server = McpServerTool.of(mcp_tool({**TOOL, "require_approval": policy}, "t")[0])
    assert (server.needs_approval(ADD), server.needs_approval(DELETE)) == (add, delete)


@pytest.mark.parametrize(
    ("allowed", "names"),
    [(None, {"add", "delete_file"}), (["add"], {"add"}), ({"read_only": True}, {"add"}), ([], set())],
)
def test_allowed_tools_filter_what_the_model_is_offered(allowed: Any, names: set[str]) -> None:
    server = McpServerTool.of(mcp_tool({**TOOL, "allowed_tools": allowed}, "t")[0])
    assert set(offered([(server, [ADD, DELETE])])) == names


def test_a_name_two_servers_or_a_function_share_is_prefixed_with_the_label() -> None:
    one = McpServerTool.of(mcp_tool(TOOL, "t")[0])
    two = McpServerTool.of(mcp_tool({**TOOL, "server_label": "other"}, "t")[0])
    names = offered([(one, [ADD, DELETE]), (two, [ADD])], taken=["delete_file"])
    assert set(names) == {"files__add", "other__add", "files__delete_file"}
    assert names["other__add"].server is two and names["other__add"].name == "add"
    assert names["files__add"].spec()["function"]["name"] == "files__add"


def entry(kind: Any, **fields: Any) -> Message:
    return Message(
        id="mcp_1", thread_id="t", created_at=0, role="assistant", content=[ItemFields(fields)], type=kind
    )


def test_the_model_sees_finished_calls_and_refusals_only() -> None:
    done = entry("mcp_call", name="add", arguments='{"a":1}', output="2", status="completed")
    call, output = entry_messages(done)
    assert call["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a":1}'}
    assert output == {"role": "tool", "tool_call_id": "mcp_1", "content": "2"}
    failed = entry(
        "mcp_call",
        name="add",
        arguments="{}",
        status="failed",
        error={"type": "http_error", "code": 502, "message": "down"},
    )
    assert entry_messages(failed)[1]["content"] == "Error: down"
    refused = entry("mcp_approval_response", approve=False, name="delete_file", arguments="{}", reason="no")
    assert "did not approve" in entry_messages(refused)[1]["content"]
    for hidden in (
        entry("mcp_call", name="add", arguments="{}", status="in_progress"),
        entry("mcp_list_tools", server_label="files", tools=[ADD]),
        entry("mcp_approval_request", server_label="files", name="add", arguments="{}"),
        entry("mcp_approval_response", approve=True, name="add", arguments="{}"),
    ):
        assert entry_messages(hidden) == []
