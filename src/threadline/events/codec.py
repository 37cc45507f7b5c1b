"""Events to and from JSON, for buses that cross process boundaries."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from threadline.domain.entities import Message, Run, RunStep, Thread
from threadline.domain.events import (
    BuiltinCallDelta,
    ErrorEvent,
    Event,
    ImageDelta,
    MessageDelta,
    ObjectEvent,
    ReasoningDelta,
    StepDelta,
)
from threadline.domain.records import (
    annotation_from,
    annotation_record,
    content_from,
    content_record,
    required_action_from,
    required_action_record,
    response_from,
    response_record,
    step_details_from,
    step_details_record,
)
from threadline.domain.run_states import RunStatus
from threadline.domain.steps import CodeOutput, ImageOutput, LogsOutput

_OBJECTS: dict[str, type[Thread | Run | RunStep | Message]] = {
    "thread": Thread,
    "run": Run,
    "step": RunStep,
    "message": Message,
}
_KINDS = {cls: kind for kind, cls in _OBJECTS.items()}
_SIMPLE: dict[str, type[MessageDelta | ReasoningDelta | ImageDelta | StepDelta | ErrorEvent]] = {
    "message_delta": MessageDelta,
    "reasoning_delta": ReasoningDelta,
    "image_delta": ImageDelta,
    "step_delta": StepDelta,
    "error": ErrorEvent,
}
_SIMPLE_KINDS = {cls: kind for kind, cls in _SIMPLE.items()}


def encode(event: Event) -> dict[str, Any]:
    if isinstance(event, ObjectEvent):
        obj = dataclasses.asdict(event.obj)
        if isinstance(event.obj, RunStep):
            obj["step_details"] = step_details_record(event.obj.step_details)
        elif isinstance(event.obj, Run):
            obj["required_action"] = required_action_record(event.obj.required_action)
            obj["response"] = response_record(event.obj.response)
        elif isinstance(event.obj, Message):
            obj["content"] = content_record(event.obj.content)
        return {"k": _KINDS[type(event.obj)], "name": event.name, "obj": obj}
    if isinstance(event, BuiltinCallDelta):
        return {"k": "builtin_delta", **dataclasses.asdict(event)}
    if isinstance(event, MessageDelta):
        annotations = [annotation_record(a) for a in event.annotations]
        return {"k": "message_delta", **dataclasses.asdict(event), "annotations": annotations}
    return {"k": _SIMPLE_KINDS[type(event)], **dataclasses.asdict(event)}


def reference(event: ObjectEvent) -> dict[str, Any]:
    """A small stand-in for an event too large to send: the receiver reads the object back."""
    return {"k": _KINDS[type(event.obj)], "name": event.name, "ref": event.obj.id}


def decode(data: dict[str, Any]) -> Event:
    kind = data.pop("k")
    if kind == "message_delta":
        data["annotations"] = tuple(annotation_from(a) for a in data["annotations"])
    if kind in _SIMPLE:
        return _SIMPLE[kind](**data)
    if kind == "builtin_delta":
        data["outputs"] = tuple(_output(o) for o in data["outputs"])
        return BuiltinCallDelta(**data)
    values = data["obj"]
    cls = _OBJECTS[kind]
    if cls is Run:
        values["status"] = RunStatus(values["status"])
        values["required_action"] = required_action_from(values["required_action"])
        values["response"] = response_from(values["response"])
    elif cls is RunStep:
        values["step_details"] = step_details_from(values["step_details"])
    elif cls is Message:
        values["content"] = content_from(values["content"])
    return ObjectEvent(data["name"], cls(**values))


def _output(values: dict[str, Any]) -> CodeOutput:
    return LogsOutput(values["logs"]) if "logs" in values else ImageOutput(values["file_id"])


def dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
