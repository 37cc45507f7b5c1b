"""Conformance of ``/responses`` and ``/conversations`` against OpenAI's spec: schemathesis fuzzes
every implemented operation with valid and invalid requests.

Generated requests are aimed at real objects (a completed response, a finished function-call round,
a conversation holding messages, a call and its output) more often than at made-up ids; valid
create bodies name a served model and keep to the item and tool types this server runs, so the
scripted model (which echoes) answers them. Every answer must be below 500, have a documented status
and content type, and match the spec's schema; bad input must come back as a 4xx in OpenAI's error
envelope.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection

from tests.conformance.fuzzing import (
    CHECKS,
    ERROR_RESPONSE,
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

SPEC = "responses-openapi.yaml"
HEADERS = {"Authorization": "Bearer x"}
MODEL = "gpt-4o"
POSITIVE_EXAMPLES = 25
NEGATIVE_EXAMPLES = 15

OPERATIONS = [
    "POST /responses",
    "POST /responses/input_tokens",
    "POST /responses/compact",
    "GET /responses/{response_id}",
    "DELETE /responses/{response_id}",
    "POST /responses/{response_id}/cancel",
    "GET /responses/{response_id}/input_items",
    "POST /conversations",
    "GET /conversations/{conversation_id}",
    "POST /conversations/{conversation_id}",
    "DELETE /conversations/{conversation_id}",
    "GET /conversations/{conversation_id}/items",
    "POST /conversations/{conversation_id}/items",
    "GET /conversations/{conversation_id}/items/{item_id}",
    "DELETE /conversations/{conversation_id}/items/{item_id}",
]

# The item and tool types this server runs; a valid body with any other is refused (400), rightly,
# so aimed bodies keep to these to reach the model.
INPUT_TYPES = {
    "message",
    "function_call",
    "function_call_output",
    "file_search_call",
    "code_interpreter_call",
    "reasoning",
    "item_reference",  # made-up ids: refused (400), naming the reference
}
TOOL_TYPES = {"function", "file_search", "code_interpreter"}

# Fields of input items and content parts that are accepted and not used: an assistant message's
# ``annotations`` and ``logprobs`` (the server makes its own), a call's ``caller`` and a part's
# ``prompt_cache_breakpoint`` (no programmatic callers, no prompt cache). The server refuses unknown
# fields beside them (and a ``caller`` that is not an object) but does not look inside them, so a
# case made invalid only inside one of them may be accepted; it must still answer as the spec says.
UNUSED_FIELDS = ("annotations", "logprobs", "caller", "prompt_cache_breakpoint")
LENIENT_CHECKS = [check for check in CHECKS if check is not negative_data_rejection]

# --- the spec, adjusted ---------------------------------------------------------------------------


def _merge_all_of(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """An ``allOf`` of object schemas as one object schema, so that closing it keeps its fields."""
    if "allOf" not in schema:
        return schema
    merged: dict[str, Any] = {"type": "object", "properties": {}}
    required: list[str] = []
    for part in schema["allOf"]:
        if "$ref" in part:
            part = schemas[part["$ref"].rsplit("/", 1)[-1]]
        part = _merge_all_of(part, schemas)
        merged["properties"].update(part.get("properties", {}))
        required += part.get("required", [])
    if required:
        merged["required"] = sorted(set(required))
    return merged


def _drop_discriminators(schema: Any) -> None:
    if isinstance(schema, dict):
        schema.pop("discriminator", None)
        for value in schema.values():
            _drop_discriminators(value)
    elif isinstance(schema, list):
        for value in schema:
            _drop_discriminators(value)


def conformance_spec(raw: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's Responses and Conversations spec, adjusted where it says less (or other) than what
    OpenAI's service does."""
    spec = raw
    schemas = spec["components"]["schemas"]
    # The spec's discriminators have no ``mapping``, and OpenAPI then reads a ``type`` value as the
    # name of a schema ("message" would have to be a schema called ``message``): without them the
    # ``oneOf`` alone decides, by each variant's ``type`` enum.
    _drop_discriminators(spec)
    # The create body is an ``allOf`` of three open objects: closed as they stand, no two of them
    # would admit each other's fields.
    schemas["CreateResponse"] = _merge_all_of(schemas["CreateResponse"], schemas)
    # The spec's own examples of responses (``x-oaiMeta``) carry ``"usage": null`` (not counted yet)
    # and ``"user": null``, as the live service sent them; its schemas allow neither.
    nullable(schemas["Response"]["allOf"][2], "usage")
    nullable(schemas["ModelResponseProperties"], "user")
    # Name rules the spec states only in prose.
    schemas["FunctionTool"]["properties"]["name"]["pattern"] = NAME_PATTERN
    # This body schema forgets ``type: object``, so "valid" bodies would be arrays and strings.
    items = spec["paths"]["/conversations/{conversation_id}/items"]["post"]["requestBody"]
    items["content"]["application/json"]["schema"]["type"] = "object"
    # As for every OpenAI list: an empty page has no first or last id.
    for name in ("ConversationItemList", "ResponseItemList"):
        nullable(schemas[name], "first_id", "last_id")
    adjust(spec)
    # The spec documents a bare ``Error`` for these 404s; the service (and the SDK's parser) use the
    # envelope, as for every other error.
    for path, method in (("/responses/{response_id}", "delete"), ("/responses/{response_id}/cancel", "post")):
        spec["paths"][path][method]["responses"]["404"] = ERROR_RESPONSE
    # The stream's events, as schemathesis reads them: ``{"event": type, "data": JSON text}``.
    stream = spec["paths"]["/responses"]["post"]["responses"]["200"]["content"]["text/event-stream"]
    stream["schema"] = sse_event(None, json_data(ref("ResponseStreamEvent")))
    return spec


@functools.cache
def load_schema() -> Any:
    return schemathesis.openapi.from_dict(conformance_spec(reference_spec(SPEC)))


def implemented() -> Any:
    return load_schema()


# --- real objects to aim at -----------------------------------------------------------------------


@dataclass
class World:
    """Real objects for generated requests to aim at, on the module's shared server."""

    server: ThreadlineServer
    sdk: openai.OpenAI
    ids: dict[str, str]
    background_response: str
    """A finished response made with ``background``: the only kind that can be cancelled."""
    scratch_conversation: str

    def path_parameters(self, operation_id: str, names: list[str]) -> dict[str, str]:
        if operation_id == "cancelResponse":
            return {"response_id": self.background_response}
        return {name: self.ids[name] for name in names}

    def fresh(self, operation_id: str) -> dict[str, str]:
        """Path parameters naming objects made just now, for operations that destroy their target."""
        if operation_id == "deleteResponse":
            return {"response_id": self.sdk.responses.create(model=MODEL, input="bye").id}
        if operation_id == "deleteConversation":
            return {"conversation_id": self.sdk.conversations.create().id}
        assert operation_id == "deleteConversationItem", operation_id
        added = self.sdk.conversations.items.create(
            self.scratch_conversation, items=[{"type": "message", "role": "user", "content": "x"}]
        )
        return {"conversation_id": self.scratch_conversation, "item_id": added.data[0].id}


ADD = {
    "type": "function",
    "name": "add",
    "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}},
}


@pytest.fixture(scope="module")
def world(shared_server: ThreadlineServer, model: ScriptedModel) -> Iterator[World]:
    load_schema()  # skips at once when the spec is missing
    with openai.OpenAI(base_url=shared_server.url, api_key="x", max_retries=0) as sdk:
        response = sdk.responses.create(model=MODEL, input="hello", instructions="Be brief.")
        assert response.status == "completed" and response.output_text == "echo: hello", response

        # A function-call round: its second response's input holds a function call output.
        model.script(Reply(tool_calls=[ToolCall("add", {"a": 1, "b": 2})]), Reply(text="3"))
        calling = sdk.responses.create(model=MODEL, input="1+2?", tools=[ADD])  # type: ignore[list-item]
        call = calling.output[0]
        assert call.type == "function_call", calling
        answered = sdk.responses.create(
            model=MODEL,
            previous_response_id=calling.id,
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": "3"}],
            tools=[ADD],  # type: ignore[list-item]
        )
        assert answered.output_text == "3", answered

        conversation = sdk.conversations.create(
            metadata={"topic": "sums"},
            items=[
                {"type": "message", "role": "user", "content": "what is 2+2?"},
                {"type": "function_call", "call_id": "call_1", "name": "add", "arguments": '{"a":2,"b":2}'},
                {"type": "function_call_output", "call_id": "call_1", "output": "4"},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "4"}]},
            ],
        )
        turn = sdk.responses.create(model=MODEL, input="and 3+3?", conversation=conversation.id)
        assert turn.status == "completed", turn
        item = sdk.conversations.items.list(conversation.id, order="asc").data[0]

        background = sdk.responses.create(model=MODEL, input="later", background=True)
        done = _wait_until_finished(sdk, background.id)

        yield World(
            server=shared_server,
            sdk=sdk,
            ids={
                "response_id": answered.id,
                "conversation_id": conversation.id,
                "item_id": item.id,
            },
            background_response=done,
            scratch_conversation=sdk.conversations.create().id,
        )


def _wait_until_finished(sdk: openai.OpenAI, response_id: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while sdk.responses.retrieve(response_id).status in ("queued", "in_progress"):
        assert time.monotonic() < deadline, f"{response_id} did not finish"
        time.sleep(0.05)
    return response_id


def test_spec_lists_exactly_the_implemented_operations() -> None:
    labels = [result.ok().label for result in implemented().get_all_operations()]
    assert sorted(labels) == sorted(OPERATIONS)


def _supported(values: Any, kinds: set[str], default: str | None = None) -> Any:
    if not isinstance(values, list):
        return values
    return [v for v in values if isinstance(v, dict) and v.get("type", default) in kinds]


def _supported_items(values: Any) -> Any:
    """The input items of types this server runs; a plain user message if none are left."""
    kept = _supported(values, INPUT_TYPES, "message")
    return kept if kept or not isinstance(values, list) else [{"role": "user", "content": "hi"}]


def _aim_body(case: Any, world: World, stream: bool) -> None:
    """Make a generated valid body one this server can run: a served model, supported item and tool
    types, real objects to continue; ``stream`` as asked."""
    body = case.body
    if not isinstance(body, dict):
        return
    if "items" in body:
        body["items"] = _supported_items(body["items"])
    operation_id = case.operation.definition.raw["operationId"]
    if operation_id not in ("createResponse", "Getinputtokencounts", "Compactconversation"):
        return
    body["model"] = MODEL
    if operation_id == "createResponse":
        body["stream"] = stream
    # Stored prompts, moderation and automatic context management are not served here (refused
    # with a 400).
    for name in ("prompt", "moderation", "context_management"):
        body.pop(name, None)
    if "input" in body:
        body["input"] = _supported_items(body["input"])
    if "tools" in body:
        body["tools"] = _supported(body["tools"], TOOL_TYPES)
    if "previous_response_id" in body:
        body["previous_response_id"] = world.ids["response_id"]
    if "conversation" in body:
        body["conversation"] = world.ids["conversation_id"]


def _mutated_only_inside(case: Any, fields: tuple[str, ...]) -> bool:
    """Whether every change that made this negative case invalid lies within one of ``fields``."""
    mutations = getattr(case.meta.phase.data, "mutations", ()) if case.meta else ()
    inside = [f"/properties/{name}/" for name in fields]
    return bool(mutations) and all(any(part in m.schema_pointer for part in inside) for m in mutations)


@pytest.mark.parametrize("label", OPERATIONS)
def test_operation_conforms_to_spec(label: str, world: World) -> None:
    method, path = label.split(" ", 1)
    operation = load_schema()[path][method]
    _fuzz(operation, GenerationMode.POSITIVE, POSITIVE_EXAMPLES, world)
    if operation.body or operation.query:
        _fuzz(operation, GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES, world)


def _fuzz(operation: Any, mode: GenerationMode, examples: int, world: World) -> None:
    operation_id: str = operation.definition.raw["operationId"]
    real = world.path_parameters(operation_id, [p.name for p in operation.path_parameters])
    # Twice as often at real objects as at made-up ids.
    target = st.sampled_from(["real", "made-up", "real"] if real else ["made-up"])

    @fuzz(
        examples,
        case=operation.as_strategy(generation_mode=mode, headers=HEADERS),
        target=target,
        aim=st.sampled_from(["no", "yes", "yes, streaming"]),
    )
    def check(case: Any, target: str, aim: str) -> None:
        if target == "real":
            destroys = operation.method.upper() == "DELETE"
            case.path_parameters = world.fresh(operation_id) if destroys else dict(real)
        # Only valid bodies: a changed invalid body might become valid, and then rightly succeed.
        if aim != "no" and mode is GenerationMode.POSITIVE:
            _aim_body(case, world, stream=aim == "yes, streaming")
        planted = plant(case) if mode is GenerationMode.POSITIVE else None
        response = case.call(base_url=world.server.url, timeout=30)
        if planted is not None:
            check_refused(response, planted, case.as_curl_command())
            return
        inside_unused = _mutated_only_inside(case, UNUSED_FIELDS)
        checks = LENIENT_CHECKS if inside_unused else CHECKS
        check_answer(case, response, checks)

    check()
