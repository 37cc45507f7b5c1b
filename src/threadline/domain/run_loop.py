"""One turn of a run: ask the model, stream what it says, and write the steps and messages.

``execute`` is called by a worker for a run it has claimed (``in_progress``, leased to it). Every
write is a guarded ``Change`` owned by that worker, so a run that was cancelled, expired or taken
over in the meantime is never overwritten. Events are published only after the write they announce.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

from threadline.domain.context import ContextBuilder
from threadline.domain.entities import Message, Run, RunStep
from threadline.domain.lifecycle import (
    end_run,
    message_event,
    moved,
    now,
    publish,
    run_event,
    step_event,
    text_content,
)
from threadline.domain.ports import Bus, Change, Store
from threadline.domain.run_states import RunStatus
from threadline.events.types import Event, MessageDelta, StepDelta
from threadline.ids import new_id
from threadline.providers.base import (
    Finish,
    ModelRequest,
    ProviderError,
    Route,
    Router,
    TextDelta,
    ToolCallDelta,
    Usage,
)

log = logging.getLogger(__name__)

IN_PROGRESS = frozenset({RunStatus.IN_PROGRESS})


class _Lost(Exception):
    """The run is no longer in progress under this worker (cancelled, expired, taken over)."""


@dataclass
class _Call:
    id: str
    name: str = ""
    arguments: str = ""


@dataclass
class _Turn:
    """What one model call has produced so far."""

    number: int
    text: str = ""
    message: Message | None = None
    message_step: RunStep | None = None
    tool_step: RunStep | None = None
    calls: dict[int, _Call] = field(default_factory=dict)
    usage: Usage | None = None
    extra_usage: Usage | None = None
    """Model calls made for this turn besides the answer (summarising older messages)."""
    finish: str = "stop"
    emitted: bool = False


class RunLoop:
    def __init__(
        self,
        store: Store,
        bus: Bus,
        router: Router,
        worker_id: str,
        *,
        builder: ContextBuilder | None = None,
        retries: int = 2,
        retry_backoff: float = 0.5,
    ) -> None:
        self.context = builder or ContextBuilder(store)
        self.store = store
        self.bus = bus
        self.router = router
        self.worker_id = worker_id
        self.retries = retries
        self.retry_backoff = retry_backoff

    async def execute(self, run: Run) -> None:
        """Drive ``run`` (claimed by this worker) to requires_action or a terminal status."""
        await publish(self.bus, run.id, [run_event(run)])
        route = self.router.resolve(run.model)
        if route is None:
            await self._fail(run, "server_error", f"No route serves the model '{run.model}'.")
            return
        turn = _Turn(number=0)
        try:
            steps = await self._resume(run)
            turn.number = max((s.turn for s in steps), default=-1) + 1
            await self._turn(run, route, steps, turn)
        except _Lost:
            await self._lost(run)
        except asyncio.CancelledError:
            # Cancelled (by cancel or expiry): keep what was generated, and let the final write
            # land even though this task is being torn down.
            await asyncio.shield(self._stopped(run, turn))
            raise
        except ProviderError as exc:
            log.warning("run %s: model call failed: %s", run.id, exc.message)
            await self._fail(run, exc.code, exc.message, turn)
        except Exception:
            log.exception("run %s: unexpected error", run.id)
            await self._fail(run, "server_error", "The server had an error while processing the run.", turn)

    async def _resume(self, run: Run) -> list[RunStep]:
        """The run's finished steps. A turn left half-written by a worker that died is discarded
        first, so redoing it cannot leave a second assistant message for the same turn."""
        if run.claims == 1:
            return []  # taken for the first time: nothing has run yet
        steps = await self.store.run_steps(run.id)
        partial = [s for s in steps if s.status == "in_progress"]
        if partial:
            messages = [
                s.step_details["message_creation"]["message_id"]
                for s in partial
                if s.type == "message_creation"
            ]
            await self._write(run, [], discard_steps=[s.id for s in partial], discard_messages=messages)
            log.info("run %s: redoing a turn a previous worker left unfinished", run.id)
        return [s for s in steps if s.status != "in_progress"]

    # --- the model call --------------------------------------------------------------------

    async def _turn(self, run: Run, route: Route, steps: list[RunStep], turn: _Turn) -> None:
        prompt = await self.context.build(run, route, steps)
        turn.extra_usage = prompt.summary_usage
        if prompt.request is None:
            await self._too_large(run, turn, prompt.too_large)
            return
        request = prompt.request
        attempt = 0
        while True:
            try:
                await self._stream(run, route, request, turn)
                break
            except ProviderError as exc:
                if not exc.retryable or turn.emitted or attempt >= self.retries:
                    raise
                attempt += 1
                delay = self.retry_backoff * 2 ** (attempt - 1)
                log.info("run %s: retrying model call in %.1fs (%s)", run.id, delay, exc.message)
                await asyncio.sleep(delay)
        await self._finish(run, turn)

    async def _stream(self, run: Run, route: Route, request: ModelRequest, turn: _Turn) -> None:
        async for event in route.provider.stream(request):
            if isinstance(event, TextDelta):
                if not event.text:
                    continue
                if turn.message is None:
                    await self._open_message(run, turn)
                assert turn.message is not None
                turn.text += event.text
                turn.emitted = True
                await self.bus.publish(run.id, MessageDelta(turn.message.id, 0, event.text))
            elif isinstance(event, ToolCallDelta):
                await self._tool_delta(run, turn, event)
            elif isinstance(event, Usage):
                turn.usage = event
            elif isinstance(event, Finish):
                turn.finish = event.reason

    async def _write(self, run: Run, events: list[Event], **change: Any) -> None:
        """A write while the run stays in progress; raises when the run is no longer ours."""
        if not await self.store.commit(Change(run=run, expect=IN_PROGRESS, owner=self.worker_id, **change)):
            raise _Lost(run.id)
        await publish(self.bus, run.id, events)

    async def _open_message(self, run: Run, turn: _Turn) -> None:
        ts = now()
        message = Message(
            id=new_id("message"),
            thread_id=run.thread_id,
            created_at=ts,
            role="assistant",
            content=[],
            status="in_progress",
            assistant_id=run.assistant_id,
            run_id=run.id,
        )
        step = self._new_step(
            run,
            turn,
            "message_creation",
            {"type": "message_creation", "message_creation": {"message_id": message.id}},
        )
        turn.message, turn.message_step = message, step
        await self._write(
            run,
            [
                step_event(step, "created"),
                step_event(step, "in_progress"),
                message_event(message, "created"),
                message_event(message, "in_progress"),
            ],
            new_steps=[step],
            new_messages=[message],
        )

    def _new_step(self, run: Run, turn: _Turn, kind: Any, details: dict[str, Any]) -> RunStep:
        return RunStep(
            id=new_id("step"),
            run_id=run.id,
            thread_id=run.thread_id,
            assistant_id=run.assistant_id,
            created_at=now(),
            type=kind,
            step_details=details,
            turn=turn.number,
        )

    async def _tool_delta(self, run: Run, turn: _Turn, delta: ToolCallDelta) -> None:
        events: list[Event] = []
        if turn.tool_step is None:
            changes: dict[str, Any] = {}
            if turn.message is not None:
                # Text came first: that message is done before the tool round starts.
                changes, events = self._complete_message(turn)
            step = self._new_step(run, turn, "tool_calls", {"type": "tool_calls", "tool_calls": []})
            turn.tool_step = step
            events += [step_event(step, "created"), step_event(step, "in_progress")]
            await self._write(run, events, new_steps=[step], **changes)
            events = []
        step = turn.tool_step
        call = turn.calls.get(delta.index)
        if call is None:
            call = turn.calls[delta.index] = _Call(id=new_id("call"), name=delta.name or "")
            call.arguments = delta.arguments
            event = StepDelta(step.id, delta.index, delta.arguments, call_id=call.id, name=call.name)
        else:
            # A name arriving after the call's first fragment is streamed once, like OpenAI's.
            late_name = delta.name if delta.name and not call.name else None
            if late_name:
                call.name = late_name
            call.arguments += delta.arguments
            if not delta.arguments and not late_name:
                return
            event = StepDelta(step.id, delta.index, delta.arguments, name=late_name)
        turn.emitted = True
        await self.bus.publish(run.id, event)

    def _complete_message(self, turn: _Turn) -> tuple[dict[str, Any], list[Event]]:
        assert turn.message is not None and turn.message_step is not None
        ts = now()
        message = dataclasses.replace(
            turn.message, content=text_content(turn.text), status="completed", completed_at=ts
        )
        step = dataclasses.replace(turn.message_step, status="completed", completed_at=ts)
        turn.message, turn.message_step = message, step
        return {"messages": [message], "steps": [step]}, [message_event(message), step_event(step)]

    # --- ending the turn -------------------------------------------------------------------

    def _usage(self, run: Run, turn: _Turn) -> dict[str, int]:
        used = dict(run.usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
        for usage in (turn.usage, turn.extra_usage):
            if usage is not None:
                used["prompt_tokens"] += usage.prompt_tokens
                used["completion_tokens"] += usage.completion_tokens
        if turn.usage is None:
            # The upstream did not report usage: a rough estimate beats claiming zero.
            used["completion_tokens"] += max(1, len(turn.text) // 4) if turn.text else 0
        used["total_tokens"] = used["prompt_tokens"] + used["completion_tokens"]
        return used

    @staticmethod
    def _step_usage(turn: _Turn) -> dict[str, int] | None:
        if turn.usage is None:
            return None
        u = turn.usage
        return {
            "prompt_tokens": u.prompt_tokens,
            "completion_tokens": u.completion_tokens,
            "total_tokens": u.prompt_tokens + u.completion_tokens,
        }

    async def _finish(self, run: Run, turn: _Turn) -> None:
        usage = self._usage(run, turn)
        if turn.calls:
            await self._require_action(run, turn, usage)
            return
        if turn.message is None:
            await self._open_message(run, turn)
        assert turn.message_step is not None
        turn.message_step.usage = self._step_usage(turn)
        changes, events = self._complete_message(turn)
        assert turn.message is not None and turn.message_step is not None
        truncated = turn.finish == "length" and run.max_completion_tokens is not None
        if truncated:
            turn.message.status = "incomplete"
            turn.message.completed_at = None
            turn.message.incomplete_at = now()
            turn.message.incomplete_details = {"reason": "max_tokens"}
            events[0] = message_event(turn.message)
            ended = moved(
                run,
                RunStatus.INCOMPLETE,
                usage=usage,
                incomplete_details={"reason": "max_completion_tokens"},
            )
        else:
            ended = moved(run, RunStatus.COMPLETED, usage=usage, completed_at=now())
        change = Change(run=ended, expect=IN_PROGRESS, owner=self.worker_id, release_thread=True, **changes)
        if not await self.store.commit(change):
            await self._lost(run)
            return
        await publish(self.bus, run.id, [*events, run_event(ended)])

    async def _require_action(self, run: Run, turn: _Turn, usage: dict[str, int]) -> None:
        assert turn.tool_step is not None
        calls = [turn.calls[i] for i in sorted(turn.calls)]
        for call in calls:
            if not call.name:
                raise ProviderError("The model produced a tool call without a function name.")
        tool_calls = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments, "output": None},
            }
            for c in calls
        ]
        step = dataclasses.replace(
            turn.tool_step,
            step_details={"type": "tool_calls", "tool_calls": tool_calls},
            usage=self._step_usage(turn),
        )
        required = {
            "type": "submit_tool_outputs",
            "submit_tool_outputs": {
                "tool_calls": [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                    for c in calls
                ]
            },
        }
        waiting = moved(run, RunStatus.REQUIRES_ACTION, required_action=required, usage=usage)
        waiting.worker_id = None
        waiting.lease_expires_at = None
        change = Change(run=waiting, expect=IN_PROGRESS, owner=self.worker_id, steps=[step])
        if not await self.store.commit(change):
            await self._lost(run)
            return
        await publish(self.bus, run.id, [run_event(waiting)])

    async def _too_large(self, run: Run, turn: _Turn, limit: str | None) -> None:
        """Even the newest message does not fit: ``incomplete`` if max_prompt_tokens is the limit."""
        usage = self._usage(run, turn) if turn.extra_usage else None
        if limit == "max_prompt_tokens":
            ended = await end_run(
                self.store,
                self.bus,
                run,
                RunStatus.INCOMPLETE,
                owner=self.worker_id,
                incomplete_details={"reason": "max_prompt_tokens"},
                usage=usage,
            )
            if ended is None:
                await self._lost(run)
            return
        await self._fail(
            run,
            "invalid_prompt",
            "The thread's newest message does not fit in the model's context window.",
            turn,
        )

    async def _fail(self, run: Run, code: str, message: str, turn: _Turn | None = None) -> None:
        partial = {turn.message.id: turn.text} if turn and turn.message else None
        ended = await end_run(
            self.store,
            self.bus,
            run,
            RunStatus.FAILED,
            owner=self.worker_id,
            last_error={"code": code, "message": message},
            usage=self._usage(run, turn) if turn and (turn.usage or turn.extra_usage) else None,
            partial_text=partial,
        )
        if ended is None:
            await self._lost(run)

    async def _stopped(self, run: Run, turn: _Turn) -> None:
        """The turn was interrupted: if a cancel asked for it, the run ends ``cancelled``."""
        current = await self.store.get_run_by_id(run.id)
        if current is None or current.status is not RunStatus.CANCELLING:
            return
        partial = {turn.message.id: turn.text} if turn.message else None
        await end_run(self.store, self.bus, current, RunStatus.CANCELLED, partial_text=partial)

    async def _lost(self, run: Run) -> None:
        """Our final write lost a race: finish a pending cancel, otherwise leave the winner be."""
        current = await self.store.get_run_by_id(run.id)
        if current is not None and current.status is RunStatus.CANCELLING:
            await end_run(self.store, self.bus, current, RunStatus.CANCELLED)
        else:
            log.info("run %s: moved to %s by someone else", run.id, current.status if current else "deleted")
