"""Conformance against OpenAI's own OpenAPI spec: schemathesis fuzzes every implemented operation.

Each ``/assistants*`` and ``/threads*`` operation gets generated requests, valid and invalid, aimed
at real objects (an assistant, a thread with a message and a completed run, a run waiting for tool
outputs) more often than at made-up ids. Every answer must be below 500, have a documented status
and content type, and match the spec's schema; bad input must come back as a 4xx in OpenAI's error
envelope. Hand-written bad requests then check that a refused create leaves nothing half-written.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.conformance.fuzzing import (
    ENVELOPE_KEYS,
    NAME_PATTERN,
    adjust,
    check_answer,
    check_refused,
    fuzz,
    json_data,
    nullable,
    plant,
    ref,
    reference_spec,
    sse_event,
)
from tests.support import ThreadlineServer
from threadline.testing import Reply, ScriptedModel, ToolCall

SPEC = "assistants-openapi.yaml"
HEADERS = {"OpenAI-Beta": "assistants=v2", "Authorization": "Bearer x"}
POSITIVE_EXAMPLES = 25
NEGATIVE_EXAMPLES = 15

# Every operation of the spec under /assistants and /threads: all of them are implemented.
OPERATIONS = [
    "GET /assistants",
    "POST /assistants",
    "GET /assistants/{assistant_id}",
    "POST /assistants/{assistant_id}",
    "DELETE /assistants/{assistant_id}",
    "POST /threads",
    "POST /threads/runs",
    "GET /threads/{thread_id}",
    "POST /threads/{thread_id}",
    "DELETE /threads/{thread_id}",
    "GET /threads/{thread_id}/messages",
    "POST /threads/{thread_id}/messages",
    "GET /threads/{thread_id}/messages/{message_id}",
    "POST /threads/{thread_id}/messages/{message_id}",
    "DELETE /threads/{thread_id}/messages/{message_id}",
    "GET /threads/{thread_id}/runs",
    "POST /threads/{thread_id}/runs",
    "GET /threads/{thread_id}/runs/{run_id}",
    "POST /threads/{thread_id}/runs/{run_id}",
    "POST /threads/{thread_id}/runs/{run_id}/cancel",
    "GET /threads/{thread_id}/runs/{run_id}/steps",
    "GET /threads/{thread_id}/runs/{run_id}/steps/{step_id}",
    "POST /threads/{thread_id}/runs/{run_id}/submit_tool_outputs",
]

# --- the spec, adjusted ---------------------------------------------------------------------------

_STREAMING = {"createRun", "createThreadAndRun", "submitToolOuputsToRun"}
_RUN_STATUSES = [
    "created",
    "queued",
    "in_progress",
    "requires_action",
    "completed",
    "incomplete",
    "failed",
    "cancelling",
    "cancelled",
    "expired",
]
_RUN_EVENTS = [f"thread.run.{s}" for s in _RUN_STATUSES]
_STEP_EVENTS = [
    f"thread.run.step.{s}" for s in ["created", "in_progress", "completed", "failed", "cancelled", "expired"]
]
_MESSAGE_EVENTS = [f"thread.message.{s}" for s in ["created", "in_progress", "completed", "incomplete"]]


def _delta(kind: str) -> dict[str, Any]:
    # The spec's copy here has no delta schemas; the SDK needs at least these keys.
    return {
        "type": "object",
        "required": ["id", "object", "delta"],
        "properties": {"id": {"type": "string"}, "object": {"const": kind}, "delta": {"type": "object"}},
    }


# One server-sent event, as schemathesis reads it: ``{"event": name, "data": text}``.
SSE_EVENT = {
    "oneOf": [
        sse_event(["thread.created"], json_data(ref("ThreadObject"))),
        sse_event(_RUN_EVENTS, json_data(ref("RunObject"))),
        sse_event(_STEP_EVENTS, json_data(ref("RunStepObject"))),
        sse_event(["thread.run.step.delta"], json_data(_delta("thread.run.step.delta"))),
        sse_event(_MESSAGE_EVENTS, json_data(ref("MessageObject"))),
        sse_event(["thread.message.delta"], json_data(_delta("thread.message.delta"))),
        sse_event(["error"], {"type": "string"}),
        sse_event(["done"], {"const": "[DONE]"}),
    ]
}


def conformance_spec(raw: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's spec, adjusted where it says less (or other) than what the live service did."""
    spec = copy.deepcopy(raw)
    schemas = spec["components"]["schemas"]
    # Deliberate deviation: the live service sent ``"first_id": null, "last_id": null`` for an empty
    # list (and so do we); the spec types both as plain strings.
    for name, schema in schemas.items():
        if name.startswith("List") and name.endswith("Response"):
            nullable(schema, "first_id", "last_id")
    # Name rules the spec states only in prose.
    schemas["FunctionObject"]["properties"]["name"]["pattern"] = NAME_PATTERN
    json_schema = schemas["ResponseFormatJsonSchema"]["properties"]["json_schema"]
    json_schema["properties"]["name"]["pattern"] = NAME_PATTERN
    # The spec puts ``required: [file_id, tools]`` on the attachments array instead of its items.
    attachments = schemas["CreateMessageRequest"]["properties"]["attachments"]["anyOf"][0]
    attachments["items"]["required"] = attachments.pop("required")
    adjust(spec)
    # ``"stream": true`` answers with server-sent events, which the spec describes only in prose.
    for path in spec["paths"].values():
        for operation in path.values():
            if isinstance(operation, dict) and operation.get("operationId") in _STREAMING:
                operation["responses"]["200"]["content"]["text/event-stream"] = {"schema": SSE_EVENT}
    return spec


def operation_streams(operation: Any) -> bool:
    return operation.definition.raw.get("operationId") in _STREAMING


@functools.cache
def load_schema() -> Any:
    spec = conformance_spec(reference_spec(SPEC))
    return schemathesis.openapi.from_dict(spec).include(path_regex=r"^/(assistants|threads)")


# --- real objects to aim at -----------------------------------------------------------------------


@dataclass
class World:
    """Real objects for generated requests to aim at, on the module's shared server."""

    server: ThreadlineServer
    sdk: openai.OpenAI
    ids: dict[str, str]
    waiting: dict[str, str]
    """thread_id and run_id of a run in ``requires_action``, and its tool call's id."""
    scratch_thread: str

    def path_parameters(self, operation_id: str, names: list[str]) -> dict[str, str]:
        if operation_id == "submitToolOuputsToRun":
            return {"thread_id": self.waiting["thread_id"], "run_id": self.waiting["run_id"]}
        return {name: self.ids[name] for name in names}

    def fresh(self, operation_id: str) -> dict[str, str]:
        """Path parameters naming objects made just now, for operations that destroy their target."""
        if operation_id == "deleteAssistant":
            return {"assistant_id": self.sdk.beta.assistants.create(model="scripted").id}
        if operation_id == "deleteThread":
            return {"thread_id": self.sdk.beta.threads.create().id}
        assert operation_id == "deleteMessage", operation_id
        message = self.sdk.beta.threads.messages.create(self.scratch_thread, role="user", content="x")
        return {"thread_id": self.scratch_thread, "message_id": message.id}


@pytest.fixture(scope="module")
def world(shared_server: ThreadlineServer, model: ScriptedModel) -> Iterator[World]:
    load_schema()  # skips at once when the spec is missing
    with openai.OpenAI(base_url=shared_server.url, api_key="x", max_retries=0) as sdk:
        tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
        assistant = sdk.beta.assistants.create(
            model="scripted",
            instructions="Be brief.",
            tools=[tool],  # type: ignore[list-item]
        )
        thread = sdk.beta.threads.create(messages=[{"role": "user", "content": "hello"}])
        model.script(Reply(text="Hi there."))
        run = sdk.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
        assert run.status == "completed", run
        message = sdk.beta.threads.messages.list(thread.id, order="asc").data[0]
        step = sdk.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data[0]

        other = sdk.beta.threads.create(messages=[{"role": "user", "content": "look it up"}])
        model.script(Reply(tool_calls=[ToolCall("lookup", {"q": "x"})]))
        waiting = sdk.beta.threads.runs.create_and_poll(thread_id=other.id, assistant_id=assistant.id)
        assert waiting.status == "requires_action" and waiting.required_action is not None, waiting
        call = waiting.required_action.submit_tool_outputs.tool_calls[0]

        yield World(
            server=shared_server,
            sdk=sdk,
            ids={
                "assistant_id": assistant.id,
                "thread_id": thread.id,
                "message_id": message.id,
                "run_id": run.id,
                "step_id": step.id,
            },
            waiting={"thread_id": other.id, "run_id": waiting.id, "tool_call_id": call.id},
            scratch_thread=sdk.beta.threads.create().id,
        )


def test_spec_lists_exactly_the_implemented_operations() -> None:
    labels = [result.ok().label for result in load_schema().get_all_operations()]
    assert sorted(labels) == sorted(OPERATIONS)


def _aim_body(case: Any, world: World, stream: bool) -> None:
    """Point ids inside a generated valid body at real objects, so creates can succeed."""
    body = case.body
    if not isinstance(body, dict):
        return
    if "assistant_id" in body:
        body["assistant_id"] = world.ids["assistant_id"]
    if stream and operation_streams(case.operation):
        body["stream"] = True
    outputs = body.get("tool_outputs")
    if isinstance(outputs, list) and outputs and isinstance(outputs[0], dict):
        outputs[0]["tool_call_id"] = world.waiting["tool_call_id"]
        del outputs[1:]


@pytest.mark.parametrize("label", OPERATIONS)
def test_operation_conforms_to_spec(label: str, world: World) -> None:
    method, path = label.split(" ", 1)
    operation = load_schema()[path][method]
    _fuzz(operation, GenerationMode.POSITIVE, POSITIVE_EXAMPLES, world)
    # Invalid data needs somewhere to go: the headers are fixed and path ids are free-form strings.
    if operation.body or operation.query:
        _fuzz(operation, GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES, world)


def _fuzz(operation: Any, mode: GenerationMode, examples: int, world: World) -> None:
    operation_id: str = operation.definition.raw["operationId"]
    real = world.path_parameters(operation_id, [p.name for p in operation.path_parameters])
    branches = [operation.as_strategy(generation_mode=mode, headers=HEADERS)]
    if real:
        aimed = operation.as_strategy(generation_mode=mode, headers=HEADERS, path_parameters=real)
        branches += [aimed, aimed]  # twice as often at real objects as at made-up ids

    @fuzz(examples, case=st.one_of(branches), aim=st.sampled_from(["no", "ids", "ids and stream"]))
    def check(case: Any, aim: str) -> None:
        if operation.method.upper() == "DELETE" and real and case.path_parameters == real:
            case.path_parameters = world.fresh(operation_id)
        # Only valid bodies: a changed invalid body might become valid, and then rightly succeed.
        if aim != "no" and mode is GenerationMode.POSITIVE:
            _aim_body(case, world, stream=aim == "ids and stream")
        planted = plant(case) if mode is GenerationMode.POSITIVE else None
        response = case.call(base_url=world.server.url, timeout=30)
        if planted is not None:
            check_refused(response, planted, case.as_curl_command())
        else:
            check_answer(case, response)

    check()


# --- refused creates leave nothing behind ---------------------------------------------------------


def _all(server: ThreadlineServer, path: str) -> list[dict[str, Any]]:
    """Every item of a list endpoint, page by page."""
    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 100}
    while True:
        response = httpx.get(f"{server.url}{path}", params=params, headers=HEADERS)
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["data"]
        if not page["has_more"]:
            return items
        params["after"] = page["last_id"]


def _refused(response: httpx.Response, status: int = 400) -> None:
    assert response.status_code == status, response.text
    assert set(response.json()["error"]) == ENVELOPE_KEYS, response.text


@pytest.mark.parametrize(
    "body",
    [
        {"messages": [{"role": "user", "content": "fine"}, {"role": "system", "content": "no such role"}]},
        {"messages": [{"role": "user", "content": "fine"}, {"role": "user"}]},
        {"messages": [{"role": "user", "content": "fine"}, {"role": "user", "content": []}]},
        {"messages": [{"role": "user", "content": [{"type": "image_file", "image_file": {}}]}]},
        {"messages": [{"role": "user", "content": "fine", "bogus": 1}]},
        {"messages": [{"role": "user", "content": "fine"}], "metadata": {str(i): "v" for i in range(17)}},
        {"messages": [{"role": "user", "content": "fine", "attachments": [{"file_id": "file-1"}]}]},
    ],
    ids=[
        "role",
        "no-content",
        "empty-parts",
        "image-without-file",
        "unknown-field",
        "metadata",
        "attachment",
    ],
)
def test_refused_thread_leaves_nothing_behind(server: ThreadlineServer, body: dict[str, Any]) -> None:
    before = len(_all(server, "/threads"))
    _refused(httpx.post(f"{server.url}/threads", json=body, headers=HEADERS))
    assert len(_all(server, "/threads")) == before


def test_refused_thread_and_run_leaves_nothing_behind(server: ThreadlineServer) -> None:
    assistant = httpx.post(f"{server.url}/assistants", json={"model": "scripted"}, headers=HEADERS).json()
    fine = {"messages": [{"role": "user", "content": "x"}]}
    before = len(_all(server, "/threads"))
    for body, status in [
        ({"assistant_id": "asst_missing", "thread": fine}, 404),
        ({"assistant_id": assistant["id"], "thread": {"messages": [{"role": "robot", "content": "x"}]}}, 400),
        ({"assistant_id": assistant["id"], "thread": fine, "temperature": 9}, 400),
        ({"assistant_id": assistant["id"], "thread": fine, "tool_choice": {"type": "function"}}, 400),
        ({"assistant_id": assistant["id"], "thread": {**fine, "metadata": {"k" * 65: "v"}}}, 400),
    ]:
        _refused(httpx.post(f"{server.url}/threads/runs", json=body, headers=HEADERS), status)
    assert len(_all(server, "/threads")) == before


def test_refused_run_adds_no_messages_and_no_run(server: ThreadlineServer) -> None:
    assistant = httpx.post(f"{server.url}/assistants", json={"model": "scripted"}, headers=HEADERS).json()
    thread = httpx.post(f"{server.url}/threads", json={}, headers=HEADERS).json()
    extra = [{"role": "user", "content": "added"}]
    for body, status in [
        ({"assistant_id": "asst_missing", "additional_messages": extra}, 404),
        (
            {
                "assistant_id": assistant["id"],
                "additional_messages": [*extra, {"role": "robot", "content": "x"}],
            },
            400,
        ),
        ({"assistant_id": assistant["id"], "additional_messages": extra, "max_prompt_tokens": 1}, 400),
    ]:
        _refused(httpx.post(f"{server.url}/threads/{thread['id']}/runs", json=body, headers=HEADERS), status)
    assert _all(server, f"/threads/{thread['id']}/messages") == []
    assert _all(server, f"/threads/{thread['id']}/runs") == []


def test_refused_assistant_is_not_created(server: ThreadlineServer) -> None:
    before = len(_all(server, "/assistants"))
    for body in [
        {"model": "scripted", "tools": [{"type": "function", "function": {"name": "has space"}}]},
        {"model": "scripted", "tools": [{"type": "retrieval"}]},
        {"model": "scripted", "top_p": 2},
        {"name": "no model"},
    ]:
        _refused(httpx.post(f"{server.url}/assistants", json=body, headers=HEADERS))
    assert len(_all(server, "/assistants")) == before
