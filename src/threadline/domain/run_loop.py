"""Driving a run: ask the model, stream what it says, run server-side tools, write steps and messages.

``execute`` is called by a worker for a run it has claimed (``in_progress``, leased to it). Each
model call is a turn. A turn that ends in calls to server-side tools (code_interpreter,
file_search, served by the ``ToolRegistry``) runs them in a ``tool_calls`` step of their own and
goes back to the model; one that calls client functions ends in ``requires_action`` (after any
built-in calls of the same response have run); one that answers ends the run, its message
carrying what the tools made (file citations, links to files the code wrote, its charts). A
built-in call's first delta carries its whole code, once the model has written the call; the
streams cut it into pieces (``api/sse.py`` says why). The charts are streamed as ``image_file``
parts just before the answer completes.

Every write is a guarded ``Change`` owned by that worker, so a run that was cancelled, expired or
taken over in the meantime is never overwritten. Events are published only after the write they
announce. Cancelling the task (cancel, expiry) stops a model call or a tool call alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from threadline.domain.clock import now
from threadline.domain.context import ContextBuilder
from threadline.domain.entities import (
    BuiltinCall,
    FunctionCall,
    ListQuery,
    Message,
    MessageCreation,
    RequiredAction,
    Run,
    RunStep,
    StepDetails,
    ToolCallRecord,
    ToolCalls,
)
from threadline.domain.events import (
    BuiltinCallDelta,
    Event,
    ImageDelta,
    MessageDelta,
    ReasoningDelta,
    StepDelta,
)
from threadline.domain.lifecycle import (
    end_run,
    message_event,
    moved,
    publish,
    run_event,
    step_event,
    text_content,
)
from threadline.domain.model_calls import ModelCallObserver, Timed
from threadline.domain.ports.citations import Source, annotate
from threadline.domain.ports.models import (
    Finish,
    ModelRequest,
    ProviderError,
    RefusalDelta,
    Route,
    Router,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from threadline.domain.ports.models import ReasoningDelta as Reasoning
from threadline.domain.ports.storage import Bus, Change, Store
from threadline.domain.ports.tools import NoTools, Tool, ToolCall, ToolError, ToolSet
from threadline.domain.run_states import RunStatus
from threadline.domain.steps import BuiltinDetails, CodeInterpreterDetails, FileSearchDetails, ImageOutput
from threadline.ids import call_item_id, new_id

log = logging.getLogger(__name__)

IN_PROGRESS = frozenset({RunStatus.IN_PROGRESS})

MAX_TOOL_ROUNDS = 32
"""Server-side tool rounds one run may take in a row before it fails (a model calling tools forever)."""


class _Lost(Exception):
    """The run is no longer in progress under this worker (cancelled, expired, taken over)."""


@dataclass
class _Call:
    id: str
    name: str = ""
    arguments: str = ""
    tool: Tool | None = None
    """The implementation, when the model called a server-side tool."""
    position: int = 0
    """The call's index in the function-call step (the model's own index counts built-in calls too)."""


@dataclass
class _Turn:
    """What one model call has produced so far."""

    number: int
    builtins: dict[str, Tool] = field(default_factory=dict)
    """The server-side tools offered in this turn, by function name."""
    parts: dict[str, str] = field(default_factory=dict)
    """The message's content so far by kind (``text``, ``refusal``), in the order they began."""
    message: Message | None = None
    message_step: RunStep | None = None
    tool_step: RunStep | None = None
    calls: dict[int, _Call] = field(default_factory=dict)
    functions: int = 0
    usage: Usage | None = None
    extra_usage: Usage | None = None
    """Model calls made for this turn besides the answer (summarising older messages)."""
    finish: str = "stop"
    emitted: bool = False
    message_id: str | None = None
    """The id its message takes: a redone turn reuses the one its dead worker had begun, so a
    stream that showed part of it can carry on with the same item."""
    reasoning: str = ""
    """The model's thinking before its answer, kept apart from the answer."""
    reasoning_id: str | None = None
    """A response's reasoning item, once its first piece is streamed (its id may be a redone turn's)."""
    reasoning_ended: bool = False
    reasoning_reuse: str | None = None
    """The reasoning item id a dead worker's unfinished turn had saved, taken again by the redo."""

    @property
    def text(self) -> str:
        return self.parts.get("text", "")


class RunLoop:
    def __init__(
        self,
        store: Store,
        bus: Bus,
        router: Router,
        worker_id: str,
        *,
        builder: ContextBuilder | None = None,
        tools: ToolSet | None = None,
        retries: int = 2,
        retry_backoff: float = 0.5,
        observe_model_call: ModelCallObserver | None = None,
    ) -> None:
        self.tools: ToolSet = tools if tools is not None else NoTools()
        self.context = builder or ContextBuilder(
            store, tools=self.tools, observe_model_call=observe_model_call
        )
        self.observe_model_call = observe_model_call
        """Told of each model call a turn makes (each attempt), for metrics."""
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
            steps = await self._resume(run, turn)
            turn.number = max((s.turn for s in steps), default=-1) + 1
            missing = self._forced_but_missing(run)
            if missing and not steps:
                await self._fail(run, "server_error", missing)
                return
            for _ in range(MAX_TOOL_ROUNDS + 1):
                served = await self._turn(run, route, steps, turn)
                if served is None:
                    return
                # Server-side tools answered: the next turn shows their outputs to the model.
                run, done = served
                steps = steps + done
                turn = _Turn(number=turn.number + 1)
            await self._fail(
                run, "server_error", f"The run called server-side tools {MAX_TOOL_ROUNDS} times in a row."
            )
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

    async def _resume(self, run: Run, turn: _Turn) -> list[RunStep]:
        """The run's finished steps. A turn left half-written by a worker that died is discarded
        first, so redoing it cannot leave a second assistant message for the same turn; the redone
        turn's message takes the discarded one's id."""
        if run.claims == 1:
            return []  # taken for the first time: nothing has run yet
        steps = await self.store.run_steps(run.id)
        partial = [s for s in steps if s.status == "in_progress"]
        finished = [s for s in steps if s.status != "in_progress"]
        thoughts = await self._unfinished_reasoning(run, max((s.turn for s in finished), default=-1) + 1)
        if partial or thoughts:
            messages = [
                s.step_details.message_id for s in partial if isinstance(s.step_details, MessageCreation)
            ]
            await self._write(
                run, [], discard_steps=[s.id for s in partial], discard_messages=messages + thoughts
            )
            turn.message_id = messages[0] if messages else None
            turn.reasoning_reuse = thoughts[0] if thoughts else None
            log.info("run %s: redoing a turn a previous worker left unfinished", run.id)
        return finished

    async def _unfinished_reasoning(self, run: Run, turn: int) -> list[str]:
        """The reasoning items a response's unfinished turn (``turn`` or later) saved."""
        if run.response is None:
            return []
        page = await self.store.list_messages(run.thread_id, ListQuery(limit=100), run.id, items=True)
        return [
            m.id for m in page.items if m.type == "reasoning" and int(m.metadata.get("turn", "-1")) >= turn
        ]

    # --- the model call --------------------------------------------------------------------

    def _forced_but_missing(self, run: Run) -> str | None:
        """Why the run's ``tool_choice`` cannot be obeyed, if it forces a tool this server lacks."""
        choice = run.tool_choice
        if not isinstance(choice, dict) or choice.get("type") == "function":
            return None
        kind = str(choice.get("type"))
        if self.tools.get(kind) is None:
            return f"tool_choice forces the {kind} tool, which this server has no implementation for."
        if not any(t.get("type") == kind for t in run.tools):
            return f"tool_choice forces the {kind} tool, which the run's tools do not include."
        return None

    async def _turn(
        self, run: Run, route: Route, steps: list[RunStep], turn: _Turn
    ) -> tuple[Run, list[RunStep]] | None:
        """One model call and what follows it. Returns the run and the turn's finished steps when
        server-side tools answered and the model must be asked again; ``None`` when the turn ended
        the run's work for now (answered, waiting for tool outputs, ended)."""
        prompt = await self.context.build(run, route, steps)
        turn.extra_usage = prompt.summary_usage
        if prompt.request is None:
            await self._too_large(run, turn, prompt.too_large)
            return None
        turn.builtins = self._builtins(run)
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
        return await self._finish(run, turn, steps)

    def _builtins(self, run: Run) -> dict[str, Tool]:
        found: dict[str, Tool] = {}
        for tool in run.tools:
            implementation = self.tools.get(tool.get("type", ""))
            if implementation is not None:
                found[implementation.name] = implementation
        return found

    async def _stream(self, run: Run, route: Route, request: ModelRequest, turn: _Turn) -> None:
        with Timed(self.observe_model_call, route.model, "answer") as timing:
            async for event in route.provider.stream(request):
                timing.event()
                if isinstance(event, Reasoning):
                    await self._reasoning(run, turn, event.text)
                    continue
                if isinstance(event, TextDelta | RefusalDelta | ToolCallDelta):
                    await self._end_reasoning(run, turn)
                if isinstance(event, TextDelta | RefusalDelta):
                    if event.text:
                        await self._content(run, turn, event.kind, event.text)
                elif isinstance(event, ToolCallDelta):
                    await self._tool_delta(run, turn, event)
                elif isinstance(event, Usage):
                    turn.usage = event
                elif isinstance(event, Finish):
                    turn.finish = event.reason
        await self._end_reasoning(run, turn)

    async def _reasoning(self, run: Run, turn: _Turn, text: str) -> None:
        """The model's thinking: a response streams it as its reasoning item; a run shows none of it.
        Thinking that comes after the answer began is not shown (the item is done by then)."""
        if not text or turn.reasoning_ended:
            return
        turn.reasoning += text
        if run.response is None:
            return
        turn.reasoning_id = turn.reasoning_id or turn.reasoning_reuse or new_id("reasoning")
        turn.emitted = True
        await self.bus.publish(run.id, ReasoningDelta(turn.reasoning_id, text))

    async def _end_reasoning(self, run: Run, turn: _Turn, status: str = "completed") -> None:
        """The thinking is over (the answer or a call began, or the reply ended): a response's
        reasoning item is saved, before anything the model says after it, and said to be done."""
        if turn.reasoning_ended:
            return
        turn.reasoning_ended = True
        if turn.reasoning_id is None:
            return
        ts = now()
        item = Message(
            id=turn.reasoning_id,
            thread_id=run.thread_id,
            created_at=ts,
            role="assistant",
            content=[{"summary": [{"type": "summary_text", "text": turn.reasoning}], "status": status}],
            run_id=run.id,
            metadata={"turn": str(turn.number)},
            completed_at=ts,
            type="reasoning",
        )
        done = ReasoningDelta(item.id, turn.reasoning, done=True, status=status)
        await self._write(run, [done], new_messages=[item])

    async def _content(self, run: Run, turn: _Turn, kind: Literal["text", "refusal"], text: str) -> None:
        if turn.message is None:
            await self._open_message(run, turn)
        assert turn.message is not None
        if kind not in turn.parts:
            turn.parts[kind] = ""
        turn.parts[kind] += text
        turn.emitted = True
        index = list(turn.parts).index(kind)
        await self.bus.publish(run.id, MessageDelta(turn.message.id, index, text, kind))

    async def _write(self, run: Run, events: list[Event], **change: Any) -> None:
        """A write while the run stays in progress; raises when the run is no longer ours."""
        if not await self.store.commit(Change(run=run, expect=IN_PROGRESS, owner=self.worker_id, **change)):
            raise _Lost(run.id)
        await publish(self.bus, run.id, events)

    async def _open_message(self, run: Run, turn: _Turn) -> None:
        ts = now()
        message = Message(
            id=turn.message_id or new_id("message"),
            thread_id=run.thread_id,
            created_at=ts,
            role="assistant",
            content=[],
            status="in_progress",
            assistant_id=run.assistant_id,
            run_id=run.id,
        )
        step = self._new_step(run, turn, "message_creation", MessageCreation(message.id))
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

    def _new_step(self, run: Run, turn: _Turn, kind: Any, details: StepDetails) -> RunStep:
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
        # No retry once a call has begun, even one not streamed yet: the turn must not mix attempts.
        turn.emitted = True
        call = turn.calls.get(delta.index)
        if call is None:
            call = turn.calls[delta.index] = _Call(id=new_id("call"), name=delta.name or "")
            call.arguments = delta.arguments
            call.tool = turn.builtins.get(call.name)
            if call.tool is not None:
                return  # a server-side call is shown in its own step once the model has written it
            step = await self._open_tool_step(run, turn)
            call.position = turn.functions
            turn.functions += 1
            event = StepDelta(step.id, call.position, delta.arguments, call_id=call.id, name=call.name)
        else:
            call.arguments += delta.arguments
            if call.tool is not None:
                return
            # A name arriving after the call's first fragment is streamed once, like OpenAI's.
            late_name = delta.name if delta.name and not call.name else None
            if late_name:
                call.name = late_name
            if not delta.arguments and not late_name:
                return
            assert turn.tool_step is not None
            event = StepDelta(turn.tool_step.id, call.position, delta.arguments, name=late_name)
        await self.bus.publish(run.id, event)

    async def _open_tool_step(self, run: Run, turn: _Turn) -> RunStep:
        """The turn's function-call step, created when its first call begins."""
        if turn.tool_step is not None:
            return turn.tool_step
        events: list[Event] = []
        changes: dict[str, Any] = {}
        if turn.message is not None:
            # Text came first: that message is done before the tool round starts.
            changes, events = self._complete_message(turn)
        step = self._new_step(run, turn, "tool_calls", ToolCalls([]))
        turn.tool_step = step
        events += [step_event(step, "created"), step_event(step, "in_progress")]
        await self._write(run, events, new_steps=[step], **changes)
        return step

    def _complete_message(self, turn: _Turn) -> tuple[dict[str, Any], list[Event]]:
        assert turn.message is not None and turn.message_step is not None
        ts = now()
        message = dataclasses.replace(
            turn.message, content=_content_parts(turn), status="completed", completed_at=ts
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
                if usage.reasoning_tokens:
                    # Kept for a response's output_tokens_details; a run's usage has no place for it.
                    used["reasoning_tokens"] = used.get("reasoning_tokens", 0) + usage.reasoning_tokens
        if turn.usage is None:
            # The upstream did not report usage: a rough estimate beats claiming zero.
            said = turn.reasoning + turn.text
            used["completion_tokens"] += max(1, len(said) // 4) if said else 0
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

    async def _finish(self, run: Run, turn: _Turn, steps: list[RunStep]) -> tuple[Run, list[RunStep]] | None:
        usage = self._usage(run, turn)
        calls = [turn.calls[i] for i in sorted(turn.calls)]
        if calls:
            return await self._calls(run, turn, calls, usage)
        if turn.message is None:
            await self._open_message(run, turn)
        assert turn.message_step is not None
        turn.message_step.usage = self._step_usage(turn)
        changes, events = self._complete_message(turn)
        assert turn.message is not None and turn.message_step is not None
        content = _answer_content(turn.message.content, steps)
        if content != turn.message.content:
            turn.message.content = content
            events[0] = message_event(turn.message)
            index = next((i for i, part in enumerate(content) if part["type"] == "text"), 0)
            annotations = (
                tuple(content[index]["text"]["annotations"]) if content[index]["type"] == "text" else ()
            )
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
        if not await self.store.commit(change):
            await self._lost(run)
            return None
        await publish(self.bus, run.id, [*events, run_event(ended)])
        return None

    async def _images(self, run: Run, turn: _Turn, content: list[dict[str, Any]]) -> None:
        """Stream the answer's charts (``image_file`` parts after its text) before it completes, as
        OpenAI did: the SDKs' handlers fire ``on_image_file_done`` for parts seen in deltas only."""
        assert turn.message is not None
        images = [(n, part) for n, part in enumerate(content) if part["type"] == "image_file"]
        if images and not turn.parts:
            # No words were streamed: announce the empty text part first, so each image lands at its
            # own index in the handlers' snapshot (Python's inserts past the end at the end).
            await self.bus.publish(run.id, MessageDelta(turn.message.id, 0, ""))
        for index, part in images:
            await self.bus.publish(run.id, ImageDelta(turn.message.id, index, part["image_file"]["file_id"]))

    async def _calls(
        self, run: Run, turn: _Turn, calls: list[_Call], usage: dict[str, int]
    ) -> tuple[Run, list[RunStep]] | None:
        functions = [c for c in calls if c.tool is None]
        if turn.finish in ("length", "content_filter"):
            # A call cut off mid-way has broken arguments: never hand it to a client or a tool.
            await self._cut_off(run, turn, functions, usage)
            return None
        for call in functions:
            if not call.name:
                raise ProviderError("The model produced a tool call without a function name.")
        run = dataclasses.replace(run, usage=usage)
        if turn.message is not None and turn.message.status == "in_progress":
            # Text came before server-side calls only: that message is done before they run.
            changes, events = self._complete_message(turn)
            await self._write(run, events, **changes)
        done = [turn.message_step] if turn.message_step is not None else []
        builtins = [c for c in calls if c.tool is not None]
        if builtins:
            done.append(await self._run_builtins(run, turn, builtins, with_usage=not functions))
        if functions:
            await self._require_action(run, turn, functions, usage)
            return None
        return run, done

    async def _cut_off(self, run: Run, turn: _Turn, functions: list[_Call], usage: dict[str, int]) -> None:
        if turn.tool_step is not None:
            # Keep what the client saw streamed: the step shows the calls as far as they got.
            step = dataclasses.replace(turn.tool_step, step_details=_function_calls(functions))
            await self._write(run, [], steps=[step])
        await self._incomplete(run, "max_completion_tokens", usage)

    async def _run_builtins(self, run: Run, turn: _Turn, calls: list[_Call], *, with_usage: bool) -> RunStep:
        """Run the turn's server-side calls, one after another, in a step of their own."""
        step = dataclasses.replace(self._new_step(run, turn, "tool_calls", ToolCalls([])), part=1)
        await self._write(
            run, [step_event(step, "created"), step_event(step, "in_progress")], new_steps=[step]
        )
        thread = await self.store.get_thread(run.thread_id)
        if run.response is not None:
            # A response names its resources in its tools (file_search's vector_store_ids ...).
            own = run.response.get("tool_resources") or {}
        else:
            assistant = await self.store.get_assistant(run.assistant_id)
            own = (assistant.tool_resources if assistant else None) or {}
        template = ToolCall(
            id="",
            arguments={},
            run_id=run.id,
            thread_id=run.thread_id,
            assistant_id=run.assistant_id,
            assistant_resources=own,
            thread_resources=(thread.tool_resources if thread else None) or {},
            project_id=thread.project_id if thread else "",
            ran_code_before=thread is not None and thread.kernel_worker_id is not None,
        )
        records: list[ToolCallRecord] = []
        for position, call in enumerate(calls):
            await self._run_builtin(run, step, position, call, records, template)
        step = dataclasses.replace(
            step,
            step_details=ToolCalls(records),
            status="completed",
            completed_at=now(),
            usage=self._step_usage(turn) if with_usage else None,
        )
        await self._write(run, [step_event(step)], steps=[step])
        return step

    async def _run_builtin(
        self,
        run: Run,
        step: RunStep,
        position: int,
        call: _Call,
        records: list[ToolCallRecord],
        template: ToolCall,
    ) -> None:
        """Show the call as started (saved, then streamed), run it, and stream its outputs."""
        tool = call.tool
        assert tool is not None
        record = BuiltinCall(call.id, tool.type, call.name, call.arguments, _blank(tool.type))
        records.append(record)
        request: ToolCall | None = None
        try:
            request = dataclasses.replace(
                template,
                id=call.id,
                arguments=_arguments(call.arguments),
                options=next((t.get(tool.type) or {} for t in run.tools if t.get("type") == tool.type), {}),
            )
            record.details = tool.start(request)
        except ToolError as exc:
            record.output = f"Error: {exc}"
        started = record.details
        code = started.input if isinstance(started, CodeInterpreterDetails) else None
        step.step_details = ToolCalls(list(records))
        delta = BuiltinCallDelta(step.id, position, tool.type, call_id=call.id, input=code)
        await self._write(run, [delta], steps=[dataclasses.replace(step)])
        if request is None or record.output is not None:
            return  # the call was refused before it started; the model hears why
        try:
            result = await tool.run(request)
        except ToolError as exc:
            record.output = f"Error: {exc}"
            return
        record.details, record.output = result.details, result.output
        if result.kernel_until is not None:
            await self.store.hold_kernel(run.thread_id, self.worker_id, result.kernel_until)
        if isinstance(result.details, CodeInterpreterDetails) and result.details.outputs:
            outputs = BuiltinCallDelta(step.id, position, tool.type, outputs=result.details.outputs)
            await self.bus.publish(run.id, outputs)

    async def _require_action(self, run: Run, turn: _Turn, calls: list[_Call], usage: dict[str, int]) -> None:
        assert turn.tool_step is not None
        step = dataclasses.replace(
            turn.tool_step, step_details=_function_calls(calls), usage=self._step_usage(turn)
        )
        if run.response is not None:
            await self._hand_over(run, step, calls, usage)
            return
        required = RequiredAction([FunctionCall(c.id, c.name, c.arguments) for c in calls])
        waiting = moved(run, RunStatus.REQUIRES_ACTION, required_action=required, usage=usage)
        waiting.worker_id = None
        waiting.lease_expires_at = None
        change = Change(run=waiting, expect=IN_PROGRESS, owner=self.worker_id, steps=[step])
        if not await self.store.commit(change):
            await self._lost(run)
            return
        await publish(self.bus, run.id, [run_event(waiting)])

    async def _hand_over(self, run: Run, step: RunStep, calls: list[_Call], usage: dict[str, int]) -> None:
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
                content=[{"call_id": c.id, "name": c.name, "arguments": c.arguments}],
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
        if not await self.store.commit(change):
            await self._lost(run)
            return
        await publish(self.bus, run.id, [step_event(step), run_event(ended)])

    async def _too_large(self, run: Run, turn: _Turn, limit: str | None) -> None:
        """Even the newest message does not fit: ``incomplete`` if max_prompt_tokens is the limit."""
        usage = self._usage(run, turn) if turn.extra_usage else None
        if limit == "max_prompt_tokens":
            await self._incomplete(run, "max_prompt_tokens", usage)
            return
        await self._fail(
            run,
            "invalid_prompt",
            "The thread's newest message does not fit in the model's context window.",
            turn,
        )

    async def _incomplete(self, run: Run, reason: str, usage: dict[str, int] | None) -> None:
        ended = await end_run(
            self.store,
            self.bus,
            run,
            RunStatus.INCOMPLETE,
            owner=self.worker_id,
            incomplete_details={"reason": reason},
            usage=usage,
        )
        if ended is None:
            await self._lost(run)

    async def _fail(self, run: Run, code: str, message: str, turn: _Turn | None = None) -> None:
        if turn is not None and not turn.reasoning_ended:
            # Cut off while thinking: the thinking streamed so far is kept, marked incomplete.
            with contextlib.suppress(_Lost):
                await self._end_reasoning(run, turn, "incomplete")
        partial = {turn.message.id: turn.text} if turn and turn.message and turn.text else None
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


def _content_parts(turn: _Turn) -> list[dict[str, Any]]:
    """The message's content parts, in the order the model began them (text, refusal)."""
    if not turn.parts:
        return text_content("")
    parts: list[dict[str, Any]] = []
    for kind, value in turn.parts.items():
        parts += text_content(value) if kind == "text" else [{"type": "refusal", "refusal": value}]
    return parts


def _answer_content(content: list[dict[str, Any]], steps: list[RunStep]) -> list[dict[str, Any]]:
    """The answer's content with what the run's built-in calls made, as OpenAI's answers had it:
    the model's citations of file search results (``【search:result†file】``, searches numbered in
    order) as ``file_citation`` annotations, its mentions of files the code wrote
    (``sandbox:/mnt/data/…``) as ``file_path`` annotations, and the code's charts as ``image_file``
    parts after the text."""
    searches: dict[int, list[Source]] = {}
    written: dict[str, str] = {}
    images: list[dict[str, Any]] = []
    calls = [c for s in steps if isinstance(s.step_details, ToolCalls) for c in s.step_details.calls]
    for details in (c.details for c in calls if isinstance(c, BuiltinCall)):
        if isinstance(details, FileSearchDetails):
            searches[len(searches)] = [Source(r.file_id, r.file_name, "") for r in details.results]
        else:
            written.update((f.path, f.file_id) for f in details.files)
            images += [
                {"type": "image_file", "image_file": {"file_id": o.file_id}}
                for o in details.outputs
                if isinstance(o, ImageOutput)
            ]
    if not (searches or written or images):
        return content
    parts = []
    for part in content:
        if part.get("type") == "text":
            text = part["text"]["value"]
            annotations = [
                {
                    "type": "file_citation",
                    "text": c.text,
                    "start_index": c.start_index,
                    "end_index": c.end_index,
                    "file_citation": {"file_id": c.file_id},
                }
                for c in annotate(text, searches)
            ] + _file_paths(text, written)
            annotations.sort(key=lambda a: int(a["start_index"]))
            part = {"type": "text", "text": {"value": text, "annotations": annotations}}
        parts.append(part)
    return parts + images


def _file_paths(text: str, written: dict[str, str]) -> list[dict[str, Any]]:
    """``file_path`` annotations over ``text``'s mentions of the files the code wrote (path → file
    id): ``sandbox:/mnt/data/out.csv`` as OpenAI's models link them, or the bare path."""
    if not written:
        return []
    paths = "|".join(re.escape(path) for path in sorted(written, key=len, reverse=True))
    # A mention ends where the path does: not inside a longer name (``out.csv2``, ``out.csv.bak``).
    mention = re.compile(rf"(?:sandbox:)?({paths})(?![A-Za-z0-9_/-]|\.[A-Za-z0-9])")
    return [
        {
            "type": "file_path",
            "text": m.group(0),
            "start_index": m.start(),
            "end_index": m.end(),
            "file_path": {"file_id": written[m.group(1)]},
        }
        for m in mention.finditer(text)
    ]


def _function_calls(calls: list[_Call]) -> ToolCalls:
    return ToolCalls([FunctionCall(c.id, c.name, c.arguments) for c in calls])


def _arguments(text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise ToolError(f"The arguments are not valid JSON: {text[:200]}") from None
    if not isinstance(value, dict):
        raise ToolError("The arguments must be a JSON object.")
    return value


def _blank(kind: str) -> BuiltinDetails:
    """A built-in call's step details before the tool has said anything."""
    return CodeInterpreterDetails("") if kind == "code_interpreter" else FileSearchDetails()
