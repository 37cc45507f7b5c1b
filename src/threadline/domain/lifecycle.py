"""Moving runs between statuses: the writes and events that go with each transition.

Used by the API (cancel, submit tool outputs), the run loop and the expiry sweeper alike, so a run
ends the same way whoever ends it: its open steps closed, its half-written message marked
incomplete, the thread unlocked, and the events published only after the write landed.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from typing import Any

from threadline.domain.clock import now
from threadline.domain.content import text_content
from threadline.domain.entities import Message, MessageCreation, Run, RunStep, StepStatus
from threadline.domain.events import Event, ObjectEvent
from threadline.domain.ports.storage import Bus, Change, Stores
from threadline.domain.run_states import TERMINAL, RunStatus, can_move

_FIELD_READERS: dict[type[Any], Callable[[Any], tuple[Any, ...]]] = {}


def snapshot(obj: Any) -> Any:
    """A copy for an event, so later changes to ``obj`` never show in what was published: the
    same shallow copy as ``dataclasses.replace(obj)``, made from its fields read at once (a run
    has some forty; ``replace`` checks each one by name)."""
    cls = type(obj)
    read = _FIELD_READERS.get(cls)
    if read is None:
        fields = dataclasses.fields(obj)
        if len(fields) < 2 or any(not f.init or f.kw_only for f in fields):
            return dataclasses.replace(obj)
        read = _FIELD_READERS[cls] = operator.attrgetter(*(f.name for f in fields))
    return cls(*read(obj))


def run_event(run: Run) -> ObjectEvent:
    return ObjectEvent(f"thread.run.{run.status.value}", snapshot(run))


def step_event(step: RunStep, name: str | None = None) -> ObjectEvent:
    return ObjectEvent(f"thread.run.step.{name or step.status}", snapshot(step))


def message_event(message: Message, name: str | None = None) -> ObjectEvent:
    return ObjectEvent(f"thread.message.{name or message.status}", snapshot(message))


async def publish(bus: Bus, run_id: str, events: list[Event]) -> None:
    for event in events:
        await bus.publish(run_id, event)


def moved(run: Run, to: RunStatus, **fields: Any) -> Run:
    """``run`` in status ``to`` with ``fields`` set; refuses moves the transition table forbids."""
    if not can_move(run.status, to):
        raise ValueError(f"run {run.id}: {run.status} -> {to} is not an allowed transition")
    changed = dataclasses.replace(run, status=to, **fields)
    if to in TERMINAL:
        changed.expires_at = None
        changed.worker_id = None
        changed.lease_expires_at = None
    return changed


_STEP_END: dict[RunStatus, tuple[StepStatus, str, str | None]] = {
    RunStatus.CANCELLED: ("cancelled", "cancelled_at", "run_cancelled"),
    RunStatus.FAILED: ("failed", "failed_at", "run_failed"),
    RunStatus.EXPIRED: ("expired", "expired_at", "run_expired"),
    RunStatus.INCOMPLETE: ("completed", "completed_at", "max_tokens"),
    RunStatus.COMPLETED: ("completed", "completed_at", None),
}


async def end_run(
    stores: Stores,
    bus: Bus,
    run: Run,
    to: RunStatus,
    *,
    owner: str | None = None,
    last_error: dict[str, Any] | None = None,
    incomplete_details: dict[str, Any] | None = None,
    usage: dict[str, int] | None = None,
    partial_text: dict[str, str] | None = None,
) -> Run | None:
    """End ``run`` (as observed) in terminal status ``to``; ``None`` when someone else moved it first.

    Open steps end with the run; their in-progress messages become ``incomplete`` (keeping any
    ``partial_text`` already generated for them), except on ``completed``.
    """
    ts = now()
    fields: dict[str, Any] = {"required_action": None}
    if to is RunStatus.CANCELLED:
        fields["cancelled_at"] = ts
    elif to is RunStatus.FAILED:
        fields["failed_at"] = ts
        fields["last_error"] = last_error
    elif to is RunStatus.COMPLETED:
        fields["completed_at"] = ts
    elif to is RunStatus.INCOMPLETE:
        fields["incomplete_details"] = incomplete_details
    if usage is not None:
        fields["usage"] = usage
    ended = moved(run, to, **fields)

    step_status, stamp, reason = _STEP_END[to]
    steps: list[RunStep] = []
    messages: list[Message] = []
    open_steps = [s for s in await stores.runs.steps(run.id) if s.status == "in_progress"]
    message_ids = [
        s.step_details.message_id for s in open_steps if isinstance(s.step_details, MessageCreation)
    ]
    for step in open_steps:
        step = dataclasses.replace(step, status=step_status)
        setattr(step, stamp, ts)
        if to is RunStatus.FAILED and last_error is not None:
            step.last_error = step_error(last_error)
        steps.append(step)
    for message in await stores.threads.messages_by_id(message_ids):
        if message.status != "in_progress":
            continue
        message = dataclasses.replace(message, status="incomplete", incomplete_at=ts)
        message.incomplete_details = {"reason": reason}
        if partial_text and message.id in partial_text:
            message.content = text_content(partial_text[message.id])
        messages.append(message)

    change = Change(
        run=ended,
        expect=frozenset({run.status}),
        owner=owner,
        steps=steps,
        messages=messages,
        release_thread=True,
    )
    if not await stores.runs.transition(change):
        return None
    events: list[Event] = [message_event(m) for m in messages]
    events += [step_event(s) for s in steps]
    events.append(run_event(ended))
    await publish(bus, run.id, events)
    return ended


STEP_ERROR_CODES = frozenset({"server_error", "rate_limit_exceeded"})
"""The only codes a step's ``last_error`` may carry (a run's may also be ``invalid_prompt``)."""


def step_error(run_error: dict[str, Any]) -> dict[str, Any]:
    """A run's ``last_error`` as its steps show it."""
    code = run_error.get("code")
    return {
        "code": code if code in STEP_ERROR_CODES else "server_error",
        "message": run_error.get("message", ""),
    }
