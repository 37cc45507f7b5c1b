"""A background response's stream, recorded in the store so it can be picked up again.

``record`` keeps a background response's stream events (as ``response_stream.py`` translates
them) from its first event on, whoever is listening; ``resume`` serves them from any point, then
live until the response ends. The recording belongs to the claim that drives the run: the process
that takes a run over (``take_over``) records from where the recording stops, and a reader that
finds a response ended with its recording cut short (its process went away) finishes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from fastapi.responses import StreamingResponse

from threadline.api.response_sse import event_stream
from threadline.api.response_stream import FINAL, Obj, ResponseEvents
from threadline.api.sse import KEEPALIVE_SECONDS, frame
from threadline.domain.entities import MessageCreation, Run
from threadline.domain.events import ObjectEvent, ReasoningDelta
from threadline.domain.ports.storage import Subscription
from threadline.domain.responses import ResponseService
from threadline.domain.run_states import TERMINAL, RunStatus
from threadline.errors import InvalidRequestError

log = logging.getLogger(__name__)

_recorders: dict[str, asyncio.Task[None]] = {}
"""Running recorders by response id, held so they are not collected while they work."""
RESUME_POLL_SECONDS = 0.5
RECORDED_PAGE = 1000
ORPHAN_SECONDS = 3.0
"""How long a resumed stream waits on an ended response's recording before finishing it itself."""


def record(responses: ResponseService, subscription: Subscription, run: Run) -> None:
    """Keep a background response's stream events in the store, from its first event on, whoever is
    (or is not) listening; ``resume`` serves them. Called before the response exists."""
    _start(run.id, _record(ResponseEvents(responses, run), subscription, 1))


def take_over(responses: ResponseService, run: Run) -> None:
    """A worker claimed ``run`` again (its previous worker died or handed it back): if it is a
    background response, this process records its stream from where the recording stops. Called
    before the worker drives the run, so no event of the claim is missed."""
    if run.claims < 2 or not (run.response and run.response.background):
        return
    subscription = responses.bus.subscribe(run.id)
    _start(run.id, _take_over(responses, run, subscription, _recorders.get(run.id)))


def _start(response_id: str, work: Coroutine[Any, Any, None]) -> None:
    task = asyncio.create_task(work, name=f"record {response_id}")
    _recorders[response_id] = task

    def done(_: asyncio.Task[None]) -> None:
        if _recorders.get(response_id) is task:
            del _recorders[response_id]

    task.add_done_callback(done)


async def _take_over(
    responses: ResponseService, run: Run, subscription: Subscription, before: asyncio.Task[None] | None
) -> None:
    with subscription:
        if before is not None:
            # This process recorded the earlier claim: it stops at this claim's first event.
            await asyncio.gather(before, return_exceptions=True)
        try:
            recorded: list[Obj] = []
            while page := await responses.stores.responses.events(
                run.id, recorded[-1]["sequence_number"] if recorded else -1, RECORDED_PAGE
            ):
                recorded += page
            events = ResponseEvents.resumed(responses, run, recorded)
        except Exception:
            log.exception("response %s: reading its recorded stream failed", run.id)
            return
        if not events.finished:
            log.info("response %s: recording its stream again from event %d", run.id, events.sequence)
            await _record(events, subscription, run.claims)


async def _record(events: ResponseEvents, subscription: Subscription, claim: int) -> None:
    """Record the events of one claim of the run: the next claim's process records what follows."""
    stores = events.responses.stores
    with subscription:
        try:
            while not events.finished:
                event = await subscription.get(timeout=KEEPALIVE_SECONDS)
                if event is None:
                    latest = await stores.runs.get_by_id(events.run.id)
                    if latest is None or latest.status not in TERMINAL:
                        continue
                    event = ObjectEvent(f"thread.run.{latest.status.value}", latest)
                if (
                    isinstance(event, ObjectEvent)
                    and isinstance(event.obj, Run)
                    and event.obj.claims > claim
                    and event.obj.status is RunStatus.IN_PROGRESS
                ):
                    return  # taken over: the process that claimed it records from here
                await stores.responses.record_events(events.run.id, await events.translate(event))
        except Exception:
            log.exception("response %s: recording its stream failed", events.run.id)


def resume(responses: ResponseService, run: Run, starting_after: int) -> StreamingResponse:
    """A background response's stream from the event after ``starting_after`` (``-1``: from the first),
    then live until it ends."""
    if not (run.response and run.response.background):
        raise InvalidRequestError("Only responses created with background=true can be streamed again.")
    return event_stream(_tail(responses, run.id, starting_after))


async def _tail(responses: ResponseService, response_id: str, after: int) -> AsyncIterator[bytes]:
    stores = responses.stores
    quiet_since: float | None = None
    with responses.bus.subscribe(response_id) as wake:
        while True:
            batch = await stores.responses.events(response_id, after, 256)
            for event in batch:
                after = event["sequence_number"]
                yield frame(event["type"], event)
                if event["type"] in FINAL:
                    return
            if batch:
                quiet_since = None
                continue
            latest = await stores.runs.get_by_id(response_id)
            if latest is None:
                return
            if latest.status in TERMINAL and response_id not in _recorders:
                # Ended, but its recording stopped short and no recorder here is behind on it: its
                # process went away after the run's last write. Give one elsewhere time to catch up,
                # then finish the recording from what the store holds.
                loop = asyncio.get_running_loop()
                quiet_since = quiet_since or loop.time()
                if loop.time() - quiet_since >= ORPHAN_SECONDS:
                    await _finish_recording(responses, latest)
                    quiet_since = None
                    continue
            await wake.get(timeout=RESUME_POLL_SECONDS)


async def _finish_recording(responses: ResponseService, run: Run) -> None:
    """Record the closing events of a response that ended while nobody recorded: each item's
    ``*.done`` events, then the ending, numbered after what was recorded."""
    recorded: list[Obj] = []
    while page := await responses.stores.responses.events(
        run.id, recorded[-1]["sequence_number"] if recorded else -1, RECORDED_PAGE
    ):
        recorded += page
    events = ResponseEvents.resumed(responses, run, recorded)
    if events.finished:
        return
    view = await responses.view(run)
    closing: list[Obj] = []
    for entry in view.entries:
        if entry.type != "reasoning":
            closing += await events.translate(ObjectEvent("response.output_item.done", entry))
            continue
        thought = entry
        fields = thought.fields
        text = "".join(part["text"] for part in fields["summary"])
        status = str(fields.get("status") or "completed")
        closing += await events.translate(ReasoningDelta(thought.id, text, done=True, status=status))
    for step in view.steps:
        details = step.step_details
        if isinstance(details, MessageCreation) and details.message_id in view.messages:
            message = view.messages[details.message_id]
            closing += await events.translate(ObjectEvent("thread.message.completed", message))
        else:
            closing += await events.translate(ObjectEvent("thread.run.step.completed", step))
    closing += await events.translate(ObjectEvent(f"thread.run.{run.status.value}", run))
    try:
        await responses.stores.responses.record_events(run.id, closing)
    except Exception:
        # Another reader finished it first (the same sequence numbers): theirs stands.
        log.info("response %s: its recording was finished elsewhere", run.id)
