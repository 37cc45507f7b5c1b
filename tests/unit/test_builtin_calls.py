"""Server-side tool calls inside a run: run with the scripted tool double, in a step of their own,
their outputs shown to the model on the next turn; a tool's error is the model's to hear, a
cancel stops the call, and a model that never stops calling tools is stopped."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.unit.conftest import Domain, wait_until
from threadline.domain.entities import BuiltinCall, FunctionCall, ToolCalls
from threadline.domain.events import BuiltinCallDelta
from threadline.domain.ports.tools import ToolError, ToolResult
from threadline.domain.run_states import RunStatus
from threadline.domain.steps import CodeInterpreterDetails, LogsOutput
from threadline.testing import Reply, ScriptedTool, ToolCall

pytestmark = pytest.mark.anyio

CODE = [{"type": "code_interpreter"}]


def _builtin_calls(steps: list[Any]) -> list[BuiltinCall]:
    return [
        c
        for s in steps
        if isinstance(s.step_details, ToolCalls)
        for c in s.step_details.calls
        if isinstance(c, BuiltinCall)
    ]


async def test_a_builtin_call_runs_and_the_model_hears_its_output(domain: Domain) -> None:
    tool = ScriptedTool("code_interpreter")
    domain.tools.register(tool)
    run = await domain.start(tools=CODE)
    events = domain.follow(run)
    domain.model.script(
        Reply(tool_calls=[ToolCall("code_interpreter", {"code": "print(6 * 7)"})]), "It printed 42."
    )
    done = await domain.drive(run)

    assert done.status is RunStatus.COMPLETED
    first, second = domain.model.requests
    assert [t["function"]["name"] for t in first.tools] == ["code_interpreter"]
    (asked,) = tool.calls
    assert asked.arguments == {"code": "print(6 * 7)"}
    assert asked.run_id == run.id and asked.thread_id == run.thread_id
    steps = await domain.steps(run)
    assert [(s.type, s.status) for s in steps] == [
        ("tool_calls", "completed"),
        ("message_creation", "completed"),
    ]
    (call,) = _builtin_calls(steps)
    assert call.details == CodeInterpreterDetails("print(6 * 7)", (LogsOutput("ran 'print(6 * 7)'"),))
    assert call.output == "ran 'print(6 * 7)'"
    # The next turn shows the call and its output, under the same call id.
    assert second.messages[-2]["tool_calls"][0]["id"] == call.id
    assert second.messages[-1] == {"role": "tool", "tool_call_id": call.id, "content": "ran 'print(6 * 7)'"}
    # Streams saw the code once the call was written, then its outputs.
    deltas = [e for e in events.pull() if isinstance(e, BuiltinCallDelta)]
    assert deltas[0].input == "print(6 * 7)" and deltas[0].call_id == call.id
    assert deltas[-1].outputs == (LogsOutput("ran 'print(6 * 7)'"),)
    (answer,) = await domain.messages(run)
    assert answer.text == "It printed 42."


async def test_a_tool_error_is_told_to_the_model_and_the_run_goes_on(domain: Domain) -> None:
    def fail(arguments: dict[str, Any]) -> ToolResult:
        raise ToolError("ZeroDivisionError: division by zero")

    domain.tools.register(ScriptedTool("code_interpreter", respond=fail))
    run = await domain.start(tools=CODE)
    domain.model.script(Reply(tool_calls=[ToolCall("code_interpreter", {"code": "1 / 0"})]), "Oops.")
    done = await domain.drive(run)
    assert done.status is RunStatus.COMPLETED
    (call,) = _builtin_calls(await domain.steps(run))
    assert call.output == "Error: ZeroDivisionError: division by zero"
    assert domain.model.requests[1].messages[-1]["content"] == "Error: ZeroDivisionError: division by zero"


async def test_arguments_that_are_not_json_never_reach_the_tool(domain: Domain) -> None:
    tool = ScriptedTool("code_interpreter")
    domain.tools.register(tool)
    run = await domain.start(tools=CODE)
    domain.model.script(Reply(tool_calls=[ToolCall("code_interpreter", '{"code": "pri')]), "Sorry.")
    done = await domain.drive(run)
    assert done.status is RunStatus.COMPLETED and tool.calls == []
    (call,) = _builtin_calls(await domain.steps(run))
    assert call.output is not None and call.output.startswith("Error: The arguments are not valid JSON")


async def test_cancel_during_a_call_stops_the_tool(domain: Domain) -> None:
    tool = ScriptedTool("code_interpreter", hang=True)
    domain.tools.register(tool)
    run = await domain.start(tools=CODE)
    domain.model.script(Reply(tool_calls=[ToolCall("code_interpreter", {"code": "while True: pass"})]))
    claimed = await domain.claim()
    task = asyncio.create_task(domain.loop().execute(claimed))
    await wait_until(tool.started.is_set, what="the tool call to start")
    await domain.services.runs.cancel_run(run.thread_id, run.id)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)

    assert tool.cancelled.is_set()
    ended = await domain.reload(run)
    assert ended.status is RunStatus.CANCELLED
    (step,) = await domain.steps(run)
    assert step.status == "cancelled"
    assert len(domain.model.requests) == 1  # the model was not asked again


async def test_builtin_and_function_calls_in_one_turn(domain: Domain) -> None:
    tool = ScriptedTool("code_interpreter")
    domain.tools.register(tool)
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    run = await domain.start(tools=[*CODE, weather])
    domain.model.script(
        Reply(tool_calls=[ToolCall("code_interpreter", {"code": "2 + 2"}), ToolCall("get_weather", "{}")])
    )
    waiting = await domain.drive(run)
    # The server's call ran first; the client is asked for its function only.
    assert waiting.status is RunStatus.REQUIRES_ACTION and waiting.required_action is not None
    assert [c.name for c in waiting.required_action.calls] == ["get_weather"]
    assert len(tool.calls) == 1
    steps = await domain.steps(run)
    functions = [c for s in steps if isinstance(s.step_details, ToolCalls) for c in s.step_details.calls]
    assert [type(c) for c in functions] == [FunctionCall, BuiltinCall]
    assert {s.status for s in steps if s.part == 1} == {"completed"}


async def test_a_model_that_calls_tools_for_ever_is_stopped(domain: Domain) -> None:
    tool = ScriptedTool("code_interpreter")
    domain.tools.register(tool)
    run = await domain.start(tools=CODE)
    domain.model.responder = lambda body: Reply(tool_calls=[ToolCall("code_interpreter", {"code": "1"})])
    failed = await domain.drive(run)
    assert failed.status is RunStatus.FAILED and failed.last_error is not None
    assert "server-side tools" in failed.last_error["message"]
    # Every model call was answered by a tool call, and every tool call ran: then it stopped.
    assert 1 < len(tool.calls) == len(domain.model.requests)
    assert json.loads(domain.model.requests[-1].messages[-2]["tool_calls"][0]["function"]["arguments"]) == {
        "code": "1"
    }
