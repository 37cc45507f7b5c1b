"""How a turn ends the run's work for now: answered, waiting for tool outputs, or ended.

``finish`` completes the answer (with what the run's built-in calls made: ``annotations.py``);
``require_action`` leaves a run waiting for its client's function outputs, or ends a response with
the calls as output items; ``too_large``, ``incomplete``, ``cut_off`` and ``fail`` end it short;
``stopped`` ends a cancelled one; ``lost`` is for a final write that lost a race (the run was
cancelled, expired or taken over meanwhile): a pending cancel is finished, any other winner left be.
Each final write is guarded like the turn's (``turns.py``); its events follow it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging

from threadline.domain.annotations import answer_content, pages_read
from threadline.domain.clock import now
from threadline.domain.content import ImageFile, ItemFields, Part, Text
from threadline.domain.entities import FunctionCall, Message, RequiredAction, Run, RunStep
from threadline.domain.events import ImageDelta, MessageDelta
from threadline.domain.lifecycle import end_run, message_event, moved, publish, run_event, step_event
from threadline.domain.ports.storage import Change
from threadline.domain.run_states import RunStatus
from threadline.domain.turns import (
    IN_PROGRESS,
    Call,
    Lost,
    Turn,
    TurnWriter,
    complete_message,
    function_calls,
    run_usage,
    step_usage,
)
from threadline.ids import call_item_id

log = logging.getLogger(__name__)

GIVEN_PAGES_ENTRIES = 64
"""How many of a thread's newest entries are looked at for web searches given back (their pages)."""


class RunEndings:
    """The endings of one worker's turns."""

    def __init__(self, writer: TurnWriter) -> None:
        self.writer = writer
        self.stores = writer.stores
        self.bus = writer.bus
        self.worker_id = writer.worker_id

    async def _given_pages(self, run: Run, turn: Turn) -> dict[str, str]:
        """The pages read by this server's web searches given back in the run's thread, when the
        answer links any page (see ``annotations.pages_read``)."""
        assert turn.message is not None
        if "http" not in turn.message.text:
            return {}
        return pages_read(await self.stores.threads.newest_messages(run.thread_id, GIVEN_PAGES_ENTRIES))

    async def finish(self, run: Run, turn: Turn, steps: list[RunStep], usage: dict[str, int]) -> None:
        """The model answered: its message completes, and the run with it."""
        assert turn.message is not None and turn.message_step is not None
        turn.message_step.usage = step_usage(turn)
        changes, events = complete_message(turn)
        assert turn.message is not None and turn.message_step is not None
        content = answer_content(turn.message.content, steps, await self._given_pages(run, turn))
        if content != turn.message.content:
            turn.message.content = content
            events[0] = message_event(turn.message)
            index = next((i for i, part in enumerate(content) if isinstance(part, Text)), 0)
            text = content[index]
            annotations = text.annotations if isinstance(text, Text) else ()
            if annotations:
                # Streamed too, as OpenAI's were, so a stream's snapshot ends with them.
                await self.bus.publish(
                    run.id, MessageDelta(turn.message.id, index, "", annotations=annotations)
                )
            await self._images(run, turn, content)
        if turn.finish in ("length", "content_filter"):
            # The answer was cut short: the message says so, never passing as complete.
            filtered = turn.finish == "content_filter"
            turn.message.status = "incomplete"
            turn.message.completed_at = None
            turn.message.incomplete_at = now()
            turn.message.incomplete_details = {"reason": "content_filter" if filtered else "max_tokens"}
            events[0] = message_event(turn.message)
        if turn.finish == "length" and run.max_completion_tokens is not None:
            # The run's own budget ran out. A run is incomplete only when one of its limits was reached
            # (that is what its incomplete_details name); a cut from the model's own limit or a filter
            # ends the run completed with the message marked incomplete, so pollers waiting for
            # "completed" (as OpenAI's examples do) still finish.
            reason = {"reason": "max_completion_tokens"}
            ended = moved(run, RunStatus.INCOMPLETE, usage=usage, incomplete_details=reason)
        else:
            ended = moved(run, RunStatus.COMPLETED, usage=usage, completed_at=now())
        change = Change(run=ended, expect=IN_PROGRESS, owner=self.worker_id, release_thread=True, **changes)
        if not await self.stores.runs.transition(change):
            await self.lost(run)
            return
        await publish(self.bus, run.id, [*events, run_event(ended)])

    async def _images(self, run: Run, turn: Turn, content: list[Part]) -> None:
        """Stream the answer's charts (``image_file`` parts after its text) before it completes, as
        OpenAI did: the SDKs' handlers fire ``on_image_file_done`` for parts seen in deltas only."""
        assert turn.message is not None
        images = [(n, part) for n, part in enumerate(content) if isinstance(part, ImageFile)]
        if images and not turn.parts:
            # No words were streamed: announce the empty text part first, so each image lands at its
            # own index in the handlers' snapshot (Python's inserts past the end at the end).
            await self.bus.publish(run.id, MessageDelta(turn.message.id, 0, ""))
        for index, part in images:
            await self.bus.publish(run.id, ImageDelta(turn.message.id, index, part.file_id))

    async def cut_off(self, run: Run, turn: Turn, functions: list[Call], usage: dict[str, int]) -> None:
        """The model was cut off while writing calls: their arguments are broken, so no client or
        tool gets them, and the run ends ``incomplete``."""
        if turn.tool_step is not None:
            # Keep what the client saw streamed: the step shows the calls as far as they got.
            step = dataclasses.replace(turn.tool_step, step_details=function_calls(functions))
            await self.writer.write(run, [], steps=[step])
        await self.incomplete(run, "max_completion_tokens", usage)

    async def require_action(self, run: Run, turn: Turn, calls: list[Call], usage: dict[str, int]) -> None:
        assert turn.tool_step is not None
        step = dataclasses.replace(turn.tool_step, step_details=function_calls(calls), usage=step_usage(turn))
        if run.response is not None:
            await self._hand_over(run, step, calls, usage)
            return
        required = RequiredAction([FunctionCall(c.id, c.name, c.arguments) for c in calls])
        waiting = moved(run, RunStatus.REQUIRES_ACTION, required_action=required, usage=usage)
        waiting.worker_id = None
        waiting.lease_expires_at = None
        change = Change(run=waiting, expect=IN_PROGRESS, owner=self.worker_id, steps=[step])
        if not await self.stores.runs.transition(change):
            await self.lost(run)
            return
        await publish(self.bus, run.id, [run_event(waiting)])

    async def _hand_over(self, run: Run, step: RunStep, calls: list[Call], usage: dict[str, int]) -> None:
        """A response ends with its client function calls as output items; their outputs come as the
        input of a later response. The calls join the thread, so that response's model sees them."""
        ts = now()
        step = dataclasses.replace(step, status="completed", completed_at=ts)
        items = [
            Message(
                id=call_item_id(c.id),
                thread_id=run.thread_id,
                created_at=ts,
                role="assistant",
                content=[ItemFields({"call_id": c.id, "name": c.name, "arguments": c.arguments})],
                run_id=run.id,
                type="function_call",
            )
            for c in calls
        ]
        ended = moved(run, RunStatus.COMPLETED, usage=usage, completed_at=ts)
        change = Change(
            run=ended,
            expect=IN_PROGRESS,
            owner=self.worker_id,
            steps=[step],
            new_messages=items,
            release_thread=True,
        )
        if not await self.stores.runs.transition(change):
            await self.lost(run)
            return
        await publish(self.bus, run.id, [step_event(step), run_event(ended)])

    async def await_approval(self, run: Run, usage: dict[str, int]) -> None:
        """A response whose MCP calls wait for approval ends completed with its approval requests
        (saved already); the next request's ``mcp_approval_response`` items carry on."""
        ended = await end_run(
            self.stores, self.bus, run, RunStatus.COMPLETED, owner=self.worker_id, usage=usage
        )
        if ended is None:
            await self.lost(run)

    async def too_large(self, run: Run, turn: Turn, limit: str | None) -> None:
        """Even the newest message does not fit: ``incomplete`` if max_prompt_tokens is the limit."""
        usage = run_usage(run, turn) if turn.extra_usage else None
        if limit == "max_prompt_tokens":
            await self.incomplete(run, "max_prompt_tokens", usage)
            return
        await self.fail(
            run,
            "invalid_prompt",
            "The thread's newest message does not fit in the model's context window.",
            turn,
        )

    async def incomplete(self, run: Run, reason: str, usage: dict[str, int] | None) -> None:
        ended = await end_run(
            self.stores,
            self.bus,
            run,
            RunStatus.INCOMPLETE,
            owner=self.worker_id,
            incomplete_details={"reason": reason},
            usage=usage,
        )
        if ended is None:
            await self.lost(run)

    async def fail(self, run: Run, code: str, message: str, turn: Turn | None = None) -> None:
        if turn is not None and not turn.reasoning_ended:
            # Cut off while thinking: the thinking streamed so far is kept, marked incomplete.
            with contextlib.suppress(Lost):
                await self.writer.end_reasoning(run, turn, "incomplete")
        partial = {turn.message.id: turn.text} if turn and turn.message and turn.text else None
        ended = await end_run(
            self.stores,
            self.bus,
            run,
            RunStatus.FAILED,
            owner=self.worker_id,
            last_error={"code": code, "message": message},
            usage=run_usage(run, turn) if turn and (turn.usage or turn.extra_usage) else None,
            partial_text=partial,
        )
        if ended is None:
            await self.lost(run)

    async def stopped(self, run: Run, turn: Turn) -> None:
        """The turn was interrupted: if a cancel asked for it, the run ends ``cancelled``."""
        current = await self.stores.runs.get_by_id(run.id)
        if current is None or current.status is not RunStatus.CANCELLING:
            return
        partial = {turn.message.id: turn.text} if turn.message else None
        await end_run(self.stores, self.bus, current, RunStatus.CANCELLED, partial_text=partial)

    async def lost(self, run: Run) -> None:
        """Our final write lost a race: finish a pending cancel, otherwise leave the winner be."""
        current = await self.stores.runs.get_by_id(run.id)
        if current is not None and current.status is RunStatus.CANCELLING:
            await end_run(self.stores, self.bus, current, RunStatus.CANCELLED)
        else:
            log.info("run %s: moved to %s by someone else", run.id, current.status if current else "deleted")
