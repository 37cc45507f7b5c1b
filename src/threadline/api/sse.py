"""The only code that writes server-sent events: run events as OpenAI's stream, then ``done``.

A stream follows one run through the bus. It ends after the event that puts the run in a status the
client must act on or that is final (``requires_action``, ``completed``, ``failed`` ...), with
``event: done`` / ``data: [DONE]``. Idle streams get comment lines (never ``id:`` fields, which
would confuse the SDK's decoder). A client that goes away only drops its subscription.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from threadline.api.objects import code_output_object, message_object, run_object, step_object, thread_object
from threadline.domain.entities import Message, Run, RunStep, Thread
from threadline.domain.events import BuiltinCallDelta, ErrorEvent, Event, MessageDelta, ObjectEvent, StepDelta
from threadline.domain.ports import Subscription
from threadline.domain.run_states import WAITING

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 15.0

DONE = b"event: done\ndata: [DONE]\n\n"


def frame(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _object(obj: Thread | Run | RunStep | Message) -> dict[str, Any]:
    if isinstance(obj, Run):
        return run_object(obj)
    if isinstance(obj, RunStep):
        return step_object(obj)
    if isinstance(obj, Message):
        return message_object(obj)
    return thread_object(obj)


class _Renderer:
    """Renders one stream's events; remembers which parts were announced, to send fields once."""

    def __init__(self) -> None:
        self._text_parts: set[tuple[str, int]] = set()

    def render(self, event: Event) -> bytes:
        if isinstance(event, ObjectEvent):
            return frame(event.name, _object(event.obj))
        if isinstance(event, MessageDelta):
            part: dict[str, Any]
            if event.kind == "refusal":
                part = {"index": event.index, "type": "refusal", "refusal": event.text}
            else:
                text: dict[str, Any] = {"value": event.text}
                key = (event.message_id, event.index)
                if key not in self._text_parts:
                    self._text_parts.add(key)
                    text["annotations"] = []
                if event.annotations:
                    text["annotations"] = [
                        {"index": n, **a} for n, a in enumerate(event.annotations, event.first_annotation)
                    ]
                part = {"index": event.index, "type": "text", "text": text}
            delta = {"id": event.message_id, "object": "thread.message.delta", "delta": {"content": [part]}}
            return frame("thread.message.delta", delta)
        if isinstance(event, StepDelta):
            call: dict[str, Any] = {"index": event.index, "type": "function"}
            if event.call_id is not None:
                call["id"] = event.call_id
                call["function"] = {"name": event.name or "", "arguments": event.arguments, "output": None}
            else:
                call["function"] = {"arguments": event.arguments}
                if event.name:
                    call["function"]["name"] = event.name
            delta = {
                "id": event.step_id,
                "object": "thread.run.step.delta",
                "delta": {"step_details": {"type": "tool_calls", "tool_calls": [call]}},
            }
            return frame("thread.run.step.delta", delta)
        if isinstance(event, BuiltinCallDelta):
            return frame("thread.run.step.delta", _builtin_delta(event))
        return error_frame(event)


def _builtin_delta(event: BuiltinCallDelta) -> dict[str, Any]:
    call: dict[str, Any] = {"index": event.index, "type": event.type}
    body: dict[str, Any] = {}
    if event.call_id is not None:
        call["id"] = event.call_id
    if event.type == "code_interpreter":
        if event.input is not None:
            body["input"] = event.input
        outputs = [
            {"index": n, **code_output_object(o)} for n, o in enumerate(event.outputs, event.first_output)
        ]
        if outputs or event.call_id is not None:
            body["outputs"] = outputs
    call[event.type] = body
    return {
        "id": event.step_id,
        "object": "thread.run.step.delta",
        "delta": {"step_details": {"type": "tool_calls", "tool_calls": [call]}},
    }


def error_frame(event: ErrorEvent) -> bytes:
    # Python's SDK raises on an "error" key; Node's reads data.error or data; the spec wants the
    # Error fields at the top level. This payload satisfies all three.
    error = {"message": event.message, "type": "server_error", "param": None, "code": event.code}
    return frame("error", {"error": error, **error})


ENDING = frozenset(f"thread.run.{status.value}" for status in WAITING)
"""The run events after which a stream says ``done``: the client must act, or the run is over."""


def ends_stream(event: Event) -> bool:
    # By the event's name, not its object's status: an object read back from the store (a bus too
    # small to carry it) may already be further along than the event that announced it.
    return isinstance(event, ObjectEvent) and event.name in ENDING


async def follow(subscription: Subscription, keepalive: float | None = None) -> AsyncIterator[bytes]:
    """Frames for the run's events until it waits or ends, then ``done``."""
    keepalive = KEEPALIVE_SECONDS if keepalive is None else keepalive
    renderer = _Renderer()
    with subscription:
        try:
            while True:
                event = await subscription.get(timeout=keepalive)
                if event is None:
                    yield b": keep-alive\n\n"
                    continue
                yield renderer.render(event)
                if ends_stream(event) or isinstance(event, ErrorEvent):
                    break
        except Exception:
            # The stream itself broke (the run goes on): say so in a way both SDKs raise on.
            log.exception("a run's event stream failed")
            yield error_frame(ErrorEvent("The server had an error while streaming this run."))
        yield DONE


def run_stream(subscription: Subscription) -> StreamingResponse:
    """The response that streams ``subscription``'s run; the subscription is closed however it ends."""
    # ``follow`` closes it once it runs, but a client gone before the first byte means the generator
    # never starts: the background task (run after the response, even a cut one) covers that case.
    return StreamingResponse(
        follow(subscription),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        background=BackgroundTask(subscription.close),
    )
