"""Typed run events. ``api/sse.py`` turns them into OpenAI's server-sent events."""

from __future__ import annotations

from dataclasses import dataclass

from threadline.domain.entities import Message, Run, RunStep, Thread


@dataclass(frozen=True, slots=True)
class ObjectEvent:
    """``thread.created``, ``thread.run.<status>``, ``thread.run.step.<status>``, ``thread.message.<status>``.

    ``obj`` is a snapshot taken when the event was made; publishers never mutate it afterwards.
    """

    name: str
    obj: Thread | Run | RunStep | Message


@dataclass(frozen=True, slots=True)
class MessageDelta:
    """A fragment of a message's text part ``index``."""

    message_id: str
    index: int
    text: str


@dataclass(frozen=True, slots=True)
class StepDelta:
    """A fragment of tool call ``index`` in a ``tool_calls`` step; ``call_id`` and ``name`` come once."""

    step_id: str
    index: int
    arguments: str
    call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """Something failed after a stream had started; streams send it as ``event: error``."""

    message: str
    code: str = "server_error"


Event = ObjectEvent | MessageDelta | StepDelta | ErrorEvent
