"""Typed run events, named after OpenAI's stream events; the engine publishes them on a bus.

They belong to the domain (the run loop makes them); ``events/`` only carries them between
processes and ``api/sse.py`` renders them as server-sent events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from threadline.domain.content import Annotation
from threadline.domain.entities import Message, Run, RunStep, Thread
from threadline.domain.steps import BuiltinType, CodeOutput


@dataclass(frozen=True, slots=True)
class ObjectEvent:
    """``thread.created``, ``thread.run.<status>``, ``thread.run.step.<status>``, ``thread.message.<status>``.

    ``obj`` is a snapshot taken when the event was made; publishers never mutate it afterwards.
    """

    name: str
    obj: Thread | Run | RunStep | Message


def is_run_event(event: object) -> bool:
    """Whether ``event`` is one of a run's status changes (it carries the run)."""
    return isinstance(event, ObjectEvent) and isinstance(event.obj, Run)


@dataclass(frozen=True, slots=True)
class MessageDelta:
    """A fragment of a message's content part ``index``: text, or a refusal from the model, or the
    annotations its text turned out to hold."""

    message_id: str
    index: int
    text: str
    kind: Literal["text", "refusal"] = "text"
    annotations: tuple[Annotation, ...] = ()
    """Annotations found in the part's text so far (citations), numbered from ``first_annotation``."""
    first_annotation: int = 0


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """A fragment of a response's ``reasoning`` item (the model's thinking before its answer); the
    last one has ``done`` and carries the whole text. Only responses publish it: the Assistants API
    shows no reasoning."""

    item_id: str
    text: str
    done: bool = False
    status: str = "completed"
    """The item's status once done: ``incomplete`` when the model call failed while thinking."""


@dataclass(frozen=True, slots=True)
class ImageDelta:
    """An ``image_file`` content part of a message (a chart the code made), sent before the message
    completes so stream handlers see it as they see text (the SDKs' ``on_image_file_done``)."""

    message_id: str
    index: int
    file_id: str


@dataclass(frozen=True, slots=True)
class StepDelta:
    """A fragment of tool call ``index`` in a ``tool_calls`` step; ``call_id`` and ``name`` come once."""

    step_id: str
    index: int
    arguments: str
    call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class BuiltinCallDelta:
    """Progress of server-side call ``index`` in a ``tool_calls`` step.

    Its first delta carries ``call_id`` (and a code interpreter's whole ``input``: the streams cut it
    into pieces, see ``api/sse.py``); later ones carry the outputs produced, numbered from
    ``first_output``.
    """

    step_id: str
    index: int
    type: BuiltinType
    call_id: str | None = None
    input: str | None = None
    outputs: tuple[CodeOutput, ...] = ()
    first_output: int = 0


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """Something failed after a stream had started; streams send it as ``event: error``."""

    message: str
    code: str = "server_error"


Event = ObjectEvent | MessageDelta | ReasoningDelta | ImageDelta | StepDelta | BuiltinCallDelta | ErrorEvent
