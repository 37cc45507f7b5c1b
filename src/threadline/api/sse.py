"""The only code that writes server-sent events: run events as OpenAI's stream, then ``done``.

A stream follows one run through the bus. It ends after the event that puts the run in a status the
client must act on or that is final (``requires_action``, ``completed``, ``failed`` ...), with
``event: done`` / ``data: [DONE]``. Idle streams get comment lines (never ``id:`` fields, which
would confuse the SDK's decoder). A client that goes away only drops its subscription.

A code_interpreter call is shown as OpenAI's were: a first ``thread.run.step.delta`` with its id,
type and ``code_interpreter: {"input": "", "outputs": []}``, then the code in several deltas
(``input`` pieces, in order, joining to the whole code), then its outputs. Both SDKs' helpers take
the first delta of a call as "created" and pass only the later ones to ``on_tool_call_delta`` /
``toolCallDelta``, so code sent whole in the first delta never reached those handlers.

The pieces are cut here from the code once the call is decided, not streamed while the model writes
it: a built-in call gets its step only when the model's turn is over (after the turn's message and
its function-call step, so a stream never interleaves two steps' deltas, which the SDKs' handlers
cannot follow), and the code shown is what the tool accepted, not a half-decoded JSON argument the
tool may yet refuse. The model's turn is short next to the code's run, so little is lost.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

from threadline.api.objects import (
    annotation_object,
    code_output_object,
    message_object,
    run_object,
    step_object,
    thread_object,
)
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
from threadline.domain.ports.storage import Subscription
from threadline.domain.run_states import WAITING

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 15.0

DONE = b"event: done\ndata: [DONE]\n\n"

PIECE_CHARS = 16
"""About how long each streamed piece of a code_interpreter call's code is (a few tokens)."""
MAX_PIECES = 256
"""At most this many pieces per call: longer code comes in longer pieces."""

_WORDS = re.compile(r"\s*\S+|\s+")


def pieces(code: str) -> list[str]:
    """``code`` cut into pieces that join back to it exactly, each ending at a word's end where it
    can (a piece starts with the whitespace before its first word, as model tokens do)."""
    size = max(PIECE_CHARS, -(-len(code) // MAX_PIECES))
    out: list[str] = []
    current = ""
    for word in _WORDS.findall(code):
        current += word
        if len(current) >= size:
            # A very long word (a data literal) is cut up rather than sent as one huge piece.
            out += [current[i : i + 4 * size] for i in range(0, len(current), 4 * size)]
            current = ""
    if current:
        out.append(current)
    return out


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
        if isinstance(event, ReasoningDelta):
            return b""  # the Assistants API shows no reasoning (and runs do not publish it)
        if isinstance(event, ImageDelta):
            image = {"index": event.index, "type": "image_file", "image_file": {"file_id": event.file_id}}
            delta = {"id": event.message_id, "object": "thread.message.delta", "delta": {"content": [image]}}
            return frame("thread.message.delta", delta)
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
                        {"index": n, **annotation_object(a)}
                        for n, a in enumerate(event.annotations, event.first_annotation)
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
            return b"".join(frame("thread.run.step.delta", d) for d in _builtin_deltas(event))
        return error_frame(event)


def _builtin_deltas(event: BuiltinCallDelta) -> list[dict[str, Any]]:
    """The step deltas that show ``event``: a call's header (id, type, and for code an empty input
    and outputs), its code in pieces, then the outputs it made."""
    bodies: list[tuple[str | None, dict[str, Any]]] = []
    if event.type != "code_interpreter":
        if event.call_id is not None:
            bodies.append((event.call_id, {}))
    else:
        if event.call_id is not None:
            bodies.append((event.call_id, {"input": "", "outputs": []}))
        bodies += [(None, {"input": piece}) for piece in pieces(event.input or "")]
        outputs = [
            {"index": n, **code_output_object(o)} for n, o in enumerate(event.outputs, event.first_output)
        ]
        if outputs:
            bodies.append((None, {"outputs": outputs}))
    deltas = []
    for call_id, body in bodies:
        call: dict[str, Any] = {"index": event.index, "type": event.type}
        if call_id is not None:
            call["id"] = call_id
        call[event.type] = body
        deltas.append(
            {
                "id": event.step_id,
                "object": "thread.run.step.delta",
                "delta": {"step_details": {"type": "tool_calls", "tool_calls": [call]}},
            }
        )
    return deltas


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
