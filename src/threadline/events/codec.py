"""Events to and from JSON, for buses that cross process boundaries."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from threadline.domain.entities import Message, Run, RunStep, Thread
from threadline.domain.run_states import RunStatus
from threadline.events.types import ErrorEvent, Event, MessageDelta, ObjectEvent, StepDelta

_OBJECTS: dict[str, type[Thread | Run | RunStep | Message]] = {
    "thread": Thread,
    "run": Run,
    "step": RunStep,
    "message": Message,
}
_KINDS = {cls: kind for kind, cls in _OBJECTS.items()}
_SIMPLE: dict[str, type[MessageDelta | StepDelta | ErrorEvent]] = {
    "message_delta": MessageDelta,
    "step_delta": StepDelta,
    "error": ErrorEvent,
}
_SIMPLE_KINDS = {cls: kind for kind, cls in _SIMPLE.items()}


def encode(event: Event) -> dict[str, Any]:
    if isinstance(event, ObjectEvent):
        return {"k": _KINDS[type(event.obj)], "name": event.name, "obj": dataclasses.asdict(event.obj)}
    return {"k": _SIMPLE_KINDS[type(event)], **dataclasses.asdict(event)}


def reference(event: ObjectEvent) -> dict[str, Any]:
    """A small stand-in for an event too large to send: the receiver reads the object back."""
    return {"k": _KINDS[type(event.obj)], "name": event.name, "ref": event.obj.id}


def decode(data: dict[str, Any]) -> Event:
    kind = data.pop("k")
    if kind in _SIMPLE:
        return _SIMPLE[kind](**data)
    values = data["obj"]
    cls = _OBJECTS[kind]
    if cls is Run:
        values["status"] = RunStatus(values["status"])
    return ObjectEvent(data["name"], cls(**values))


def dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
