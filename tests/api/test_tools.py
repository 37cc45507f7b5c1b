"""Server-side tools in the run loop, end to end with the official SDK as the client.

The model is the scripted chat model; the tools are ``ScriptedTool`` implementations registered in
the server's ``ToolRegistry``, standing in for the real code interpreter and file search.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import AssistantEventHandler
from openai.types.beta import AssistantStreamEvent
from openai.types.beta.threads.runs import RunStep, ToolCall, ToolCallDelta

from tests.api.test_streaming import node_sdk  # noqa: F401  (the fixture)
from tests.conftest import server_settings
from tests.support import ThreadlineServer, run_node
from threadline.api import sse
from threadline.domain.content import ItemFields
from threadline.domain.context import offered_tools, tool_choice
from threadline.domain.entities import BuiltinCall, FunctionCall, Message, Run, ToolCalls
from threadline.domain.entities import RunStep as DomainStep
from threadline.domain.events import BuiltinCallDelta
from threadline.domain.ports.tools import ToolCall as ToolCallRequest
from threadline.domain.ports.tools import ToolError, ToolResult
from threadline.domain.prompt_messages import run_messages
from threadline.domain.records import step_details_from, step_details_record
from threadline.domain.steps import (
    BuiltinDetails,
    CodeInterpreterDetails,
    FileSearchDetails,
    FileSearchResult,
    ImageOutput,
    LogsOutput,
    RankingOptions,
)
from threadline.events import codec
from threadline.events.pg import MAX_PAYLOAD, PostgresBus
from threadline.testing import Reply, ScriptedModel, ScriptedTool
from threadline.testing import ToolCall as ScriptedCall
from threadline.tools.registry import ToolRegistry

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CODE = "print(6 * 7)"


@pytest.fixture(scope="module")
def registry() -> ToolRegistry:
    return ToolRegistry()


@pytest.fixture(scope="module")
def tools_server(
    model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory, registry: ToolRegistry
) -> Iterator[ThreadlineServer]:
    server = ThreadlineServer(server_settings(model, tmp_path_factory), tools=registry)
    yield server
    server.stop()


@pytest.fixture
def tools(registry: ToolRegistry) -> dict[str, ScriptedTool]:
    """Fresh scripted code_interpreter and file_search implementations for each test."""
    fresh = {"code_interpreter": ScriptedTool("code_interpreter"), "file_search": ScriptedTool("file_search")}
    for tool in fresh.values():
        registry.register(tool)
    return fresh


@pytest.fixture
def client(tools_server: ThreadlineServer, tools: dict[str, ScriptedTool]) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=tools_server.url, api_key="test-key", max_retries=0) as sdk:
        yield sdk


class Recorder(AssistantEventHandler):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.created: list[ToolCall] = []
        self.call_deltas: list[ToolCallDelta] = []
        self.steps_done: list[RunStep] = []

    def on_event(self, event: AssistantStreamEvent) -> None:
        if not (event.event.endswith(".delta") and self.names and self.names[-1] == event.event):
            self.names.append(event.event)

    def on_tool_call_created(self, tool_call: ToolCall) -> None:
        self.created.append(tool_call.model_copy(deep=True))

    def on_tool_call_delta(self, delta: ToolCallDelta, snapshot: ToolCall) -> None:
        self.call_deltas.append(delta.model_copy(deep=True))

    def on_run_step_done(self, run_step: RunStep) -> None:
        self.steps_done.append(run_step.model_copy(deep=True))


def setup(client: openai.OpenAI, tools: list[Any], text: str = "what is 6 times 7?") -> tuple[str, str]:
    assistant = client.beta.assistants.create(model="gpt-4o", tools=tools)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": text}])
    return assistant.id, thread.id


def offered(body: dict[str, Any]) -> list[str]:
    return [t["function"]["name"] for t in body.get("tools") or []]


def dump(obj: Any) -> Any:
    return obj.model_dump(mode="json", exclude_unset=True)


BUILTIN_STEP = [
    "thread.run.step.created",
    "thread.run.step.in_progress",
    "thread.run.step.delta",
    "thread.run.step.completed",
]


def test_builtin_then_function_then_answer_streamed(
    client: openai.OpenAI, model: ScriptedModel, tools: dict[str, ScriptedTool]
) -> None:
    assistant_id, thread_id = setup(client, [{"type": "code_interpreter"}, WEATHER])
    model.script(
        Reply(tool_calls=[ScriptedCall("code_interpreter", {"code": CODE})]),
        Reply(tool_calls=[ScriptedCall("get_weather", {"city": "Paris"})]),
        Reply(text="42, and sunny in Paris."),
    )
    first = Recorder()
    with client.beta.threads.runs.stream(
        thread_id=thread_id, assistant_id=assistant_id, event_handler=first
    ) as stream:
        stream.until_done()
    assert first.names == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        *BUILTIN_STEP,
        "thread.run.step.created",
        "thread.run.step.in_progress",
        "thread.run.step.delta",
        "thread.run.requires_action",
    ]
    # The built-in call is announced empty, then its code streams in pieces, then its outputs. (The
    # SDK's handler keeps its tool-call index across steps, so the function call, again index 0 of
    # its own step, reaches on_tool_call_delta rather than on_tool_call_created.)
    assert [c.type for c in first.created] == ["code_interpreter"]
    assert dump(first.created[0].code_interpreter) == {"input": "", "outputs": []}  # type: ignore[union-attr]
    ci_deltas = [dump(d)["code_interpreter"] for d in first.call_deltas if d.type == "code_interpreter"]
    *code_pieces, outputs = ci_deltas
    assert "".join(p["input"] for p in code_pieces) == CODE
    assert outputs == {"outputs": [{"index": 0, "type": "logs", "logs": "ran 'print(6 * 7)'"}]}
    fn_deltas = [dump(d) for d in first.call_deltas if d.type == "function"]
    assert fn_deltas[0]["function"]["name"] == "get_weather" and fn_deltas[0]["index"] == 0
    builtin_step = first.steps_done[0]
    assert builtin_step.status == "completed" and builtin_step.type == "tool_calls"
    (ci,) = builtin_step.step_details.tool_calls  # type: ignore[union-attr]
    assert ci.type == "code_interpreter"
    assert dump(ci.code_interpreter) == {
        "input": CODE,
        "outputs": [{"type": "logs", "logs": "ran 'print(6 * 7)'"}],
    }
    assert builtin_step.usage is not None
    # The tool ran with what the model wrote; the second model call saw its output.
    assert [c.arguments for c in tools["code_interpreter"].calls] == [{"code": CODE}]
    second = model.requests[1]["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "tool"]
    assert second[1]["tool_calls"][0]["function"] == {
        "name": "code_interpreter",
        "arguments": json.dumps({"code": CODE}),
    }
    assert second[2] == {"role": "tool", "tool_call_id": ci.id, "content": "ran 'print(6 * 7)'"}

    run = stream.get_final_run()
    assert run.status == "requires_action" and run.required_action is not None
    (call,) = run.required_action.submit_tool_outputs.tool_calls
    assert call.function.name == "get_weather"

    after = Recorder()
    with client.beta.threads.runs.submit_tool_outputs_stream(
        thread_id=thread_id,
        run_id=run.id,
        tool_outputs=[{"tool_call_id": call.id, "output": "sunny"}],
        event_handler=after,
    ) as stream:
        stream.until_done()
    assert after.names[:3] == ["thread.run.step.completed", "thread.run.queued", "thread.run.in_progress"]
    assert after.names[-1] == "thread.run.completed"
    assert stream.get_final_run().status == "completed"
    # The answer's model call saw both rounds, each call followed by its output.
    third = model.requests[2]["messages"]
    assert [m["role"] for m in third] == ["user", "assistant", "tool", "assistant", "tool"]
    assert third[4] == {"role": "tool", "tool_call_id": call.id, "content": "sunny"}

    steps = client.beta.threads.runs.steps.list(thread_id=thread_id, run_id=run.id, order="asc").data
    assert [(s.type, s.status) for s in steps] == [
        ("tool_calls", "completed"),
        ("tool_calls", "completed"),
        ("message_creation", "completed"),
    ]
    assert [c.type for s in steps[:2] for c in s.step_details.tool_calls] == ["code_interpreter", "function"]  # type: ignore[union-attr]


def test_builtin_and_function_in_one_response(
    client: openai.OpenAI, model: ScriptedModel, tools: dict[str, ScriptedTool]
) -> None:
    assistant_id, thread_id = setup(client, [{"type": "file_search"}, WEATHER])
    model.script(
        Reply(
            tool_calls=[
                ScriptedCall("get_weather", {"city": "Oslo"}),
                ScriptedCall("file_search", {"query": "oslo trips"}),
            ]
        ),
        Reply(text="Cold, and you went there in May."),
    )
    run = client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id)
    assert run.status == "requires_action" and run.required_action is not None
    (call,) = run.required_action.submit_tool_outputs.tool_calls
    assert call.function.name == "get_weather"
    assert [c.arguments for c in tools["file_search"].calls] == [{"query": "oslo trips"}]
    steps = client.beta.threads.runs.steps.list(thread_id=thread_id, run_id=run.id, order="asc").data
    assert [s.status for s in steps] == ["in_progress", "completed"]
    fn_step, fs_step = steps
    assert [c.type for c in fn_step.step_details.tool_calls] == ["function"]  # type: ignore[union-attr]
    (fs,) = fs_step.step_details.tool_calls  # type: ignore[union-attr]
    assert fs.type == "file_search"
    assert dump(fs.file_search) == {
        "ranking_options": {"ranker": "default_2024_08_21", "score_threshold": 0.0},
        "results": [{"file_id": "file-scripted", "file_name": "notes.txt", "score": 0.9}],
    }
    included = client.beta.threads.runs.steps.retrieve(
        step_id=fs_step.id,
        thread_id=thread_id,
        run_id=run.id,
        include=["step_details.tool_calls[*].file_search.results[*].content"],
    )
    (fs,) = included.step_details.tool_calls  # type: ignore[union-attr]
    assert dump(fs.file_search)["results"][0]["content"] == [{"type": "text", "text": "about oslo trips"}]

    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        thread_id=thread_id, run_id=run.id, tool_outputs=[{"tool_call_id": call.id, "output": "-3C"}]
    )
    assert run.status == "completed"
    # Both calls went back to the model together, as the one response they came from.
    answer = model.requests[1]["messages"]
    assert [m["role"] for m in answer] == ["user", "assistant", "tool", "tool"]
    assert sorted(c["function"]["name"] for c in answer[1]["tool_calls"]) == ["file_search", "get_weather"]
    assert {m["content"] for m in answer[2:]} == {"-3C", "notes.txt: about oslo trips"}


def test_builtin_without_implementation_is_not_offered(
    client: openai.OpenAI, model: ScriptedModel, registry: ToolRegistry, tools: dict[str, ScriptedTool]
) -> None:
    registry_types = registry.types()
    registry._by_type.pop("code_interpreter")
    try:
        assistant_id, thread_id = setup(
            client, [{"type": "code_interpreter"}, {"type": "file_search"}, WEATHER]
        )
        model.script("hello")
        run = client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id)
        assert run.status == "completed"
        assert offered(model.requests[0]) == ["file_search", "get_weather"]
    finally:
        assert registry_types == ["code_interpreter", "file_search"]
        registry.register(tools["code_interpreter"])


def test_tool_choice_forces_a_builtin_on_the_first_call_only(
    client: openai.OpenAI, model: ScriptedModel, tools: dict[str, ScriptedTool]
) -> None:
    assistant_id, thread_id = setup(client, [{"type": "code_interpreter"}, WEATHER])
    model.script(Reply(tool_calls=[ScriptedCall("code_interpreter", {"code": CODE})]), Reply(text="42"))
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread_id, assistant_id=assistant_id, tool_choice={"type": "code_interpreter"}
    )
    assert run.status == "completed", run.last_error
    first, second = model.requests
    assert first["tool_choice"] == {"type": "function", "function": {"name": "code_interpreter"}}
    assert offered(first) == ["code_interpreter", "get_weather"]
    assert second["tool_choice"] == "auto"
    # Usage adds up over both model calls, each step carrying its own.
    steps = client.beta.threads.runs.steps.list(thread_id=thread_id, run_id=run.id).data
    assert run.usage is not None and all(s.usage is not None for s in steps)
    assert run.usage.total_tokens == sum(s.usage.total_tokens for s in steps if s.usage) > 0


def test_forcing_a_tool_the_server_cannot_run_fails_the_run(
    client: openai.OpenAI, model: ScriptedModel, registry: ToolRegistry, tools: dict[str, ScriptedTool]
) -> None:
    assistant_id, thread_id = setup(client, [{"type": "code_interpreter"}])
    registry._by_type.pop("code_interpreter")
    try:
        run = client.beta.threads.runs.create_and_poll(
            thread_id=thread_id, assistant_id=assistant_id, tool_choice={"type": "code_interpreter"}
        )
    finally:
        registry.register(tools["code_interpreter"])
    assert run.status == "failed" and run.last_error is not None
    assert run.last_error.code == "server_error"
    assert "no implementation" in run.last_error.message
    assert model.requests == []


def test_tool_error_goes_back_to_the_model(
    client: openai.OpenAI, model: ScriptedModel, tools: dict[str, ScriptedTool]
) -> None:
    def fails(arguments: dict[str, Any]) -> ToolResult:
        raise ToolError("NameError: name 'x' is not defined")

    tools["code_interpreter"].respond = fails
    assistant_id, thread_id = setup(client, [{"type": "code_interpreter"}])
    model.script(
        Reply(tool_calls=[ScriptedCall("code_interpreter", {"code": "x"})]),
        Reply(tool_calls=[ScriptedCall("code_interpreter", "not json")]),
        Reply(text="Sorry."),
    )
    run = client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id)
    assert run.status == "completed", run.last_error
    second, third = model.requests[1]["messages"], model.requests[2]["messages"]
    assert second[-1]["content"] == "Error: NameError: name 'x' is not defined"
    assert third[-1]["content"].startswith("Error: The arguments are not valid JSON")
    assert len(tools["code_interpreter"].calls) == 1  # bad arguments never reach the tool


@pytest.mark.timeout(120)
def test_node_sdk_follows_a_builtin_tool_run(
    node_sdk: Path,  # noqa: F811
    tools_server: ThreadlineServer,
    model: ScriptedModel,
    tools: dict[str, ScriptedTool],
) -> None:
    model.script(
        Reply(tool_calls=[ScriptedCall("code_interpreter", {"code": CODE})]), Reply(text="It is 42.")
    )
    seen = run_node(node_sdk, "builtin_run.mjs", tools_server.url)
    assert seen["status"] == "completed" and seen["final_text"] == "It is 42."
    assert [c["type"] for c in seen["created"]] == ["code_interpreter"]
    assert seen["created"][0]["code_interpreter"] == {"input": "", "outputs": []}
    pieces = [d["code_interpreter"].get("input", "") for d in seen["deltas"]]
    assert "".join(pieces) == CODE
    (finished,) = seen["done"]
    assert finished["code_interpreter"]["input"] == CODE
    assert [o["logs"] for o in finished["code_interpreter"]["outputs"]] == ["ran 'print(6 * 7)'"]
    assert seen["steps"][0]["tool_calls"][0]["code_interpreter"]["outputs"] == [
        {"type": "logs", "logs": "ran 'print(6 * 7)'"}
    ]


class Refuses(ScriptedTool):
    def start(self, call: ToolCallRequest) -> BuiltinDetails:
        raise ToolError("code must not be empty")


def test_a_call_refused_before_it_starts_never_runs(
    client: openai.OpenAI, model: ScriptedModel, registry: ToolRegistry
) -> None:
    refuses = Refuses("code_interpreter")
    registry.register(refuses)
    assistant_id, thread_id = setup(client, [{"type": "code_interpreter"}])
    model.script(Reply(tool_calls=[ScriptedCall("code_interpreter", {"code": ""})]), Reply(text="ok"))
    run = client.beta.threads.runs.create_and_poll(thread_id=thread_id, assistant_id=assistant_id)
    assert run.status == "completed"
    assert refuses.calls == []
    assert model.requests[1]["messages"][-1]["content"] == "Error: code must not be empty"
    step = client.beta.threads.runs.steps.list(thread_id=thread_id, run_id=run.id, order="asc").data[0]
    (call,) = step.step_details.tool_calls  # type: ignore[union-attr]
    assert dump(call.code_interpreter) == {"input": "", "outputs": []}  # type: ignore[union-attr]


def test_cancel_during_a_tool_call_stops_it(
    client: openai.OpenAI, model: ScriptedModel, registry: ToolRegistry
) -> None:
    slow = ScriptedTool("code_interpreter", hang=True)
    registry.register(slow)
    assistant_id, thread_id = setup(client, [{"type": "code_interpreter"}])
    model.script(Reply(tool_calls=[ScriptedCall("code_interpreter", {"code": "while True: pass"})]))
    run = client.beta.threads.runs.create(thread_id=thread_id, assistant_id=assistant_id)
    assert slow.started.wait(10)
    client.beta.threads.runs.cancel(thread_id=thread_id, run_id=run.id)
    assert slow.cancelled.wait(10)
    run = client.beta.threads.runs.poll(thread_id=thread_id, run_id=run.id)
    assert run.status == "cancelled"
    (step,) = client.beta.threads.runs.steps.list(thread_id=thread_id, run_id=run.id).data
    assert step.status == "cancelled" and step.cancelled_at is not None
    (call,) = step.step_details.tool_calls  # type: ignore[union-attr]
    assert call.type == "code_interpreter" and call.code_interpreter.input == "while True: pass"  # type: ignore[union-attr]
    assert len(model.requests) == 1


def test_expiry_during_a_tool_call_stops_it(
    model: ScriptedModel, tmp_path_factory: pytest.TempPathFactory
) -> None:
    slow = ScriptedTool("code_interpreter", hang=True)
    settings = server_settings(model, tmp_path_factory).replace(run_expiry_seconds=1)
    server = ThreadlineServer(settings, tools=ToolRegistry([slow]))
    try:
        with openai.OpenAI(base_url=server.url, api_key="k", max_retries=0) as sdk:
            assistant_id, thread_id = setup(sdk, [{"type": "code_interpreter"}])
            model.script(Reply(tool_calls=[ScriptedCall("code_interpreter", {"code": "sleep()"})]))
            run = sdk.beta.threads.runs.create(thread_id=thread_id, assistant_id=assistant_id)
            assert slow.started.wait(10)
            assert slow.cancelled.wait(10)
            run = sdk.beta.threads.runs.poll(thread_id=thread_id, run_id=run.id)
            assert run.status == "expired"
            steps = sdk.beta.threads.runs.steps.list(thread_id=thread_id, run_id=run.id).data
            assert [s.status for s in steps] == ["expired"]
    finally:
        server.stop()


class DoneRecorder(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.done: list[ToolCall] = []

    def on_tool_call_done(self, tool_call: ToolCall) -> None:
        self.done.append(tool_call.model_copy(deep=True))


def test_large_input_and_outputs_stream_whole(
    client: openai.OpenAI, model: ScriptedModel, tools: dict[str, ScriptedTool]
) -> None:
    # Larger than one PostgreSQL notification (see the test below for how they are split there).
    logs = tuple(LogsOutput(f"line {n}\n" * 2000) for n in range(3))
    code = "x = 1\n" * 600
    tools["code_interpreter"].respond = lambda args: ToolResult(
        CodeInterpreterDetails(args["code"], logs), "ok"
    )
    assistant_id, thread_id = setup(client, [{"type": "code_interpreter"}])
    model.script(Reply(tool_calls=[ScriptedCall("code_interpreter", {"code": code})]), Reply(text="done"))
    recorder = DoneRecorder()
    with client.beta.threads.runs.stream(
        thread_id=thread_id, assistant_id=assistant_id, event_handler=recorder
    ) as stream:
        stream.until_done()
    assert stream.get_final_run().status == "completed", stream.get_final_run().last_error
    # What the handler rebuilt from the deltas alone equals the completed step.
    rebuilt = recorder.done[0]
    assert rebuilt.type == "code_interpreter"
    assert rebuilt.code_interpreter.input == code
    assert [o.logs for o in rebuilt.code_interpreter.outputs] == [o.logs for o in logs]  # type: ignore[union-attr]
    completed = recorder.steps_done[0].step_details.tool_calls[0]  # type: ignore[union-attr]
    assert completed.code_interpreter.input == code  # type: ignore[union-attr]


def test_large_events_travel_in_chunks_that_the_receiver_joins_back() -> None:
    code = "x = 1\n" * 3000 + "print('\u4f60\u597d')"
    logs = (LogsOutput("a" * 20000), ImageOutput("file-1"), LogsOutput("b" * 10))
    first = BuiltinCallDelta("step_1", 2, "code_interpreter", call_id="call_1", input=code)
    later = BuiltinCallDelta("step_1", 2, "code_interpreter", outputs=logs, first_output=4)
    sender, other = (PostgresBus("postgresql://unused", _no_loader) for _ in range(2))
    receiver = PostgresBus("postgresql://unused", _no_loader)
    receiver._subscriptions["run_1"] = set()
    payloads = [*sender._payloads("run_1", first), *sender._payloads("run_1", later)]
    assert len(payloads) > 4 and all(len(p.encode()) <= MAX_PAYLOAD for p in payloads)
    # Another process's chunks slipped in between do not mix with these.
    noise = other._payloads("run_1", BuiltinCallDelta("step_2", 0, "code_interpreter", input="y" * 9000))
    for n, payload in enumerate(payloads):
        receiver._on_event(None, 0, "", payload)
        if n < len(noise):
            receiver._on_event(None, 0, "", noise[n])
    received = [codec.decode(receiver._inbox.get_nowait()[1]) for _ in range(3)]
    # Each event arrives whole, as the local bus delivers it (the call's input in one delta), and one
    # sender's events stay in their order.
    assert [e for e in received if e.step_id == "step_1"] == [first, later]
    assert [e.input for e in received if e.step_id == "step_2"] == ["y" * 9000]
    assert receiver._inbox.empty() and not receiver._chunks


async def _no_loader(kind: str, object_id: str) -> None:
    return None


def test_code_is_streamed_in_pieces_that_join_back_to_it() -> None:
    chart = "import matplotlib.pyplot as plt\nplt.plot([1, 2], [3, 4])\nplt.show()"
    for code in (chart, "x", "    y = 2  \n\n", "rows = 1\n" * 5000, "blob = '" + "x" * 60000 + "'"):
        pieces = sse.pieces(code)
        assert "".join(pieces) == code
        assert len(pieces) <= sse.MAX_PIECES + 1  # long code comes in longer pieces, not endless frames
        assert all(pieces)
    cut = sse.pieces(chart)
    assert len(cut) >= 3
    # Pieces end at words' ends, as tokens do: no name is cut in two.
    assert all(not a[-1].isalnum() or not b[0].isalnum() for a, b in itertools.pairwise(cut))


# --- the pieces, without a server ------------------------------------------------------------------


def _run(tools: list[dict[str, Any]], tool_choice: Any = "auto") -> Run:
    return Run("run_1", "thread_1", "asst_1", 0, "m", "", tools=tools, tool_choice=tool_choice)


def test_offered_tools_and_forcing() -> None:
    only_code = ToolRegistry([ScriptedTool("code_interpreter")])
    clash = {"type": "function", "function": {"name": "code_interpreter", "parameters": {}}}
    run = _run([{"type": "file_search"}, {"type": "code_interpreter"}, clash, WEATHER])
    offered = offered_tools(run, only_code)
    # file_search has no implementation; the client's function named like the built-in is dropped.
    assert [t["function"]["name"] for t in offered] == ["code_interpreter", "get_weather"]
    assert offered[0]["function"]["parameters"]["required"] == ["code"]
    forced = _run(run.tools, {"type": "code_interpreter"})
    assert tool_choice(forced, offered, only_code, first_call=True) == {
        "type": "function",
        "function": {"name": "code_interpreter"},
    }
    assert tool_choice(forced, offered, only_code, first_call=False) == "auto"
    assert tool_choice(_run(run.tools, "required"), offered, only_code, first_call=False) == "auto"
    assert tool_choice(_run(run.tools, "none"), offered, only_code, first_call=False) == "none"
    assert tool_choice(run, [], only_code, first_call=True) is None


def _step(turn: int, part: int, details: Any) -> DomainStep:
    return DomainStep(
        f"step_{turn}_{part}", "run_1", "thread_1", "asst_1", 0, "tool_calls", details, turn=turn, part=part
    )


def test_run_messages_put_one_responses_calls_together() -> None:
    code = BuiltinCall(
        "call_a", "code_interpreter", "code_interpreter", '{"code": "1"}', CodeInterpreterDetails("1"), "1"
    )
    weather = FunctionCall("call_b", "get_weather", '{"city": "Oslo"}', "cold")
    later = FunctionCall("call_c", "get_weather", '{"city": "Rome"}')
    steps = [
        _step(0, 0, ToolCalls([weather])),
        _step(0, 1, ToolCalls([code])),
        _step(1, 0, ToolCalls([later])),  # not answered yet: left out
    ]
    messages = run_messages(steps, {})
    assert [m["role"] for m in messages] == ["assistant", "tool", "tool"]
    assert [c["id"] for c in messages[0]["tool_calls"]] == ["call_b", "call_a"]
    assert [m["content"] for m in messages[1:]] == ["cold", "1"]


def test_run_messages_put_the_runs_mcp_calls_where_their_turn_was() -> None:
    def mcp_call(item_id: str, turn: int, place: str) -> Message:
        fields = {"name": "weather", "arguments": "{}", "status": "completed", "output": item_id}
        metadata = {"turn": str(turn), "place": place}
        return Message(
            item_id, "thread_1", 0, "assistant", [ItemFields(fields)], metadata=metadata, type="mcp_call"
        )

    search = FunctionCall("call_s", "web_search", "{}", "pages")
    later = FunctionCall("call_l", "lookup", "{}", "found")
    steps = [_step(0, 0, ToolCalls([search])), _step(2, 0, ToolCalls([later]))]
    entries = [mcp_call("mcp_model", 1, "end"), mcp_call("mcp_approved", 0, "start")]
    told = [m["content"] for m in run_messages(steps, {}, entries) if m["role"] == "tool"]
    assert told == ["mcp_approved", "pages", "mcp_model", "found"]


def test_step_details_records_round_trip() -> None:
    details = ToolCalls(
        [
            FunctionCall("call_b", "get_weather", "{}", None),
            BuiltinCall(
                "call_a",
                "code_interpreter",
                "code_interpreter",
                '{"code": "1"}',
                CodeInterpreterDetails("1", (LogsOutput("1\n"), ImageOutput("file-1"))),
                "1",
            ),
            BuiltinCall(
                "call_c",
                "file_search",
                "file_search",
                '{"query": "q"}',
                FileSearchDetails(
                    RankingOptions("auto", 0.5), (FileSearchResult("file-2", "a.txt", 0.7, ("x",)),)
                ),
                "a.txt: x",
            ),
        ]
    )
    record = json.loads(json.dumps(step_details_record(details)))
    assert step_details_from(record) == details
    assert record["tool_calls"][0] == {
        "id": "call_b",
        "type": "function",
        "function": {"name": "get_weather", "arguments": "{}", "output": None},
    }
