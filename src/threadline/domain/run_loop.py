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

This module is the turn: build the context, call the model, assemble its deltas into a message and
calls. The built-in calls run in ``builtin_calls.py``, the endings are ``run_endings.py``, what the
answer shows of the calls is ``annotations.py``, and the turn's state and writes ``turns.py``. A
response's MCP tools (listing, calls, approvals) are ``mcp_calls.py``: offered beside the others,
their calls run after the built-in ones, and a call that needs approval ends the response.

Every write is a guarded ``Change`` owned by that worker, so a run that was cancelled, expired or
taken over in the meantime is never overwritten. Events are published only after the write they
announce. Cancelling the task (cancel, expiry) stops a model call or a tool call alike.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any, Literal

from threadline.domain.builtin_calls import BuiltinCalls
from threadline.domain.clock import now
from threadline.domain.context import ContextBuilder
from threadline.domain.entities import ListQuery, Message, MessageCreation, Run, RunStep, ToolCalls
from threadline.domain.events import Event, MessageDelta, ReasoningDelta, StepDelta
from threadline.domain.lifecycle import message_event, publish, run_event, step_event
from threadline.domain.mcp_calls import McpRun, item_events
from threadline.domain.model_calls import ModelCallObserver, Timed
from threadline.domain.ports.mcp import McpServers
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
from threadline.domain.ports.storage import Bus, Stores
from threadline.domain.ports.tools import NoTools, Tool, ToolSet
from threadline.domain.run_endings import RunEndings
from threadline.domain.turns import Call, Lost, Turn, TurnWriter, complete_message, new_step, run_usage
from threadline.ids import new_id

log = logging.getLogger(__name__)

MAX_TOOL_ROUNDS = 32
"""Server-side tool rounds one run may take in a row before it fails (a model calling tools forever)."""


class RunLoop:
    def __init__(
        self,
        stores: Stores,
        bus: Bus,
        router: Router,
        worker_id: str,
        *,
        builder: ContextBuilder | None = None,
        tools: ToolSet | None = None,
        retries: int = 2,
        retry_backoff: float = 0.5,
        observe_model_call: ModelCallObserver | None = None,
        mcp: McpServers | None = None,
    ) -> None:
        self.mcp = mcp
        """Reaches the MCP servers of responses' ``mcp`` tools (``domain/mcp_calls.py``)."""
        self._remote: dict[str, McpRun] = {}
        """The MCP side of each run this loop drives, by run id."""
        self.tools: ToolSet = tools if tools is not None else NoTools()
        self.context = builder or ContextBuilder(
            stores.threads, tools=self.tools, observe_model_call=observe_model_call
        )
        self.observe_model_call = observe_model_call
        """Told of each model call a turn makes (each attempt), for metrics."""
        self.stores = stores
        self.bus = bus
        self.router = router
        self.worker_id = worker_id
        self.retries = retries
        self.retry_backoff = retry_backoff
        self.writer = TurnWriter(stores, bus, worker_id)
        self.builtin_calls = BuiltinCalls(self.writer)
        self.endings = RunEndings(self.writer)

    async def execute(self, run: Run) -> None:
        """Drive ``run`` (claimed by this worker) to requires_action or a terminal status."""
        await publish(self.bus, run.id, [run_event(run)])
        route = self.router.resolve(run.model)
        if route is None:
            await self.endings.fail(run, "server_error", f"No route serves the model '{run.model}'.")
            return
        turn = Turn(number=0)
        remote = self._remote[run.id] = McpRun(self.mcp, self.stores.threads, run, self.writer.write)
        try:
            steps = await self._resume(run, turn)
            mcp_turn = await remote.resume() if remote.configured and run.claims > 1 else -1
            turn.number = max(max((s.turn for s in steps), default=-1), mcp_turn) + 1
            missing = self._forced_but_missing(run)
            if missing and not steps:
                await self.endings.fail(run, "server_error", missing)
                return
            if remote.configured:
                taken = [t["function"]["name"] for t in run.tools if t.get("type") == "function"]
                await remote.prepare(turn.number, [*taken, *self._builtins(run)])
                await remote.carry_out_approvals(turn.number, run.response.input_ids if run.response else [])
            for _ in range(MAX_TOOL_ROUNDS + 1):
                served = await self._turn(run, route, steps, turn)
                if served is None:
                    return
                # Server-side tools answered: the next turn shows their outputs to the model.
                run, done = served
                steps = steps + done
                turn = Turn(number=turn.number + 1)
            await self.endings.fail(
                run, "server_error", f"The run called server-side tools {MAX_TOOL_ROUNDS} times in a row."
            )
        except Lost:
            await self.endings.lost(run)
        except asyncio.CancelledError:
            # Cancelled (by cancel or expiry): keep what was generated, and let the final write
            # land even though this task is being torn down.
            await asyncio.shield(self.endings.stopped(run, turn))
            raise
        except ProviderError as exc:
            log.warning("run %s: model call failed: %s", run.id, exc.message)
            await self.endings.fail(run, exc.code, exc.message, turn)
        except Exception:
            log.exception("run %s: unexpected error", run.id)
            await self.endings.fail(
                run, "server_error", "The server had an error while processing the run.", turn
            )
        finally:
            self._remote.pop(run.id, None)

    async def _resume(self, run: Run, turn: Turn) -> list[RunStep]:
        """The run's finished steps. A turn left half-written by a worker that died is discarded
        first, so redoing it cannot leave a second assistant message for the same turn; the redone
        turn's message takes the discarded one's id."""
        if run.claims == 1:
            return []  # taken for the first time: nothing has run yet
        steps = await self.stores.runs.steps(run.id)
        partial = [s for s in steps if s.status == "in_progress"]
        finished = [s for s in steps if s.status != "in_progress"]
        thoughts = await self._unfinished_reasoning(run, max((s.turn for s in finished), default=-1) + 1)
        if partial or thoughts:
            messages = [
                s.step_details.message_id for s in partial if isinstance(s.step_details, MessageCreation)
            ]
            await self.writer.write(
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
        page = await self.stores.threads.list_messages(
            run.thread_id, ListQuery(limit=100), run.id, items=True
        )
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
        self, run: Run, route: Route, steps: list[RunStep], turn: Turn
    ) -> tuple[Run, list[RunStep]] | None:
        """One model call and what follows it. Returns the run and the turn's finished steps when
        server-side tools answered and the model must be asked again; ``None`` when the turn ended
        the run's work for now (answered, waiting for tool outputs, ended)."""
        prompt = await self.context.build(run, route, steps)
        turn.extra_usage = prompt.summary_usage
        if prompt.request is None:
            await self.endings.too_large(run, turn, prompt.too_large)
            return None
        turn.builtins = self._builtins(run)
        request = prompt.request
        remote = self._remote.get(run.id)
        if remote is not None and remote.tools:
            # The MCP servers' tools, as functions beside the others.
            turn.mcp = remote.tools
            choice = request.tool_choice
            if choice is None:
                choice = run.tool_choice if run.tool_choice in ("none", "required") else "auto"
            if remote.called and (choice == "required" or isinstance(choice, dict)):
                choice = "auto"  # as for built-in tools: forcing holds until a tool has answered
            request = dataclasses.replace(
                request,
                tools=[*request.tools, *(tool.spec() for tool in remote.tools.values())],
                tool_choice=choice,
                parallel_tool_calls=run.parallel_tool_calls,
            )
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

    async def _stream(self, run: Run, route: Route, request: ModelRequest, turn: Turn) -> None:
        with Timed(self.observe_model_call, route.model, "answer") as timing:
            async for event in route.provider.stream(request):
                timing.event()
                if isinstance(event, Reasoning):
                    await self._reasoning(run, turn, event.text)
                    continue
                if isinstance(event, TextDelta | RefusalDelta | ToolCallDelta):
                    await self.writer.end_reasoning(run, turn)
                if isinstance(event, TextDelta | RefusalDelta):
                    if event.text:
                        await self._content(run, turn, event.kind, event.text)
                elif isinstance(event, ToolCallDelta):
                    await self._tool_delta(run, turn, event)
                elif isinstance(event, Usage):
                    turn.usage = event
                elif isinstance(event, Finish):
                    turn.finish = event.reason
        await self.writer.end_reasoning(run, turn)

    async def _reasoning(self, run: Run, turn: Turn, text: str) -> None:
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

    async def _content(self, run: Run, turn: Turn, kind: Literal["text", "refusal"], text: str) -> None:
        if turn.message is None:
            await self._open_message(run, turn)
        assert turn.message is not None
        if kind not in turn.parts:
            turn.parts[kind] = ""
        turn.parts[kind] += text
        turn.emitted = True
        index = list(turn.parts).index(kind)
        await self.bus.publish(run.id, MessageDelta(turn.message.id, index, text, kind))

    async def _open_message(self, run: Run, turn: Turn) -> None:
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
        step = new_step(run, turn, "message_creation", MessageCreation(message.id))
        turn.message, turn.message_step = message, step
        await self.writer.write(
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

    async def _tool_delta(self, run: Run, turn: Turn, delta: ToolCallDelta) -> None:
        # No retry once a call has begun, even one not streamed yet: the turn must not mix attempts.
        turn.emitted = True
        call = turn.calls.get(delta.index)
        if call is None:
            call = turn.calls[delta.index] = Call(id=new_id("call"), name=delta.name or "")
            call.arguments = delta.arguments
            call.tool = turn.builtins.get(call.name)
            call.mcp = turn.mcp.get(call.name) if call.tool is None else None
            if call.tool is not None or call.mcp is not None:
                return  # a server-side call is shown in its own step once the model has written it
            step = await self._open_tool_step(run, turn)
            call.position = turn.functions
            turn.functions += 1
            event = StepDelta(step.id, call.position, delta.arguments, call_id=call.id, name=call.name)
        else:
            call.arguments += delta.arguments
            if call.tool is not None or call.mcp is not None:
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

    async def _open_tool_step(self, run: Run, turn: Turn) -> RunStep:
        """The turn's function-call step, created when its first call begins."""
        if turn.tool_step is not None:
            return turn.tool_step
        events: list[Event] = []
        changes: dict[str, Any] = {}
        if turn.message is not None:
            # Text came first: that message is done before the tool round starts.
            changes, events = complete_message(turn)
        step = new_step(run, turn, "tool_calls", ToolCalls([]))
        turn.tool_step = step
        events += [step_event(step, "created"), step_event(step, "in_progress")]
        await self.writer.write(run, events, new_steps=[step], **changes)
        return step

    async def _finish(self, run: Run, turn: Turn, steps: list[RunStep]) -> tuple[Run, list[RunStep]] | None:
        usage = run_usage(run, turn)
        calls = [turn.calls[i] for i in sorted(turn.calls)]
        if calls:
            return await self._calls(run, turn, calls, usage)
        if turn.message is None:
            await self._open_message(run, turn)
        await self.endings.finish(run, turn, steps, usage)
        return None

    async def _calls(
        self, run: Run, turn: Turn, calls: list[Call], usage: dict[str, int]
    ) -> tuple[Run, list[RunStep]] | None:
        functions = [c for c in calls if c.tool is None and c.mcp is None]
        if turn.finish in ("length", "content_filter"):
            # A call cut off mid-way has broken arguments: never hand it to a client or a tool.
            await self.endings.cut_off(run, turn, functions, usage)
            return None
        for call in functions:
            if not call.name:
                raise ProviderError("The model produced a tool call without a function name.")
        run = dataclasses.replace(run, usage=usage)
        if turn.message is not None and turn.message.status == "in_progress":
            # Text came before server-side calls only: that message is done before they run.
            changes, events = complete_message(turn)
            await self.writer.write(run, events, **changes)
        done = [turn.message_step] if turn.message_step is not None else []
        builtins = [c for c in calls if c.tool is not None]
        if builtins:
            done.append(await self.builtin_calls.run(run, turn, builtins, with_usage=not functions))
        asks = await self._mcp_calls(run, turn, [c for c in calls if c.mcp is not None])
        if functions:
            await self.endings.require_action(run, turn, functions, usage)
            return None
        if asks:
            await self.endings.await_approval(run, usage)
            return None
        return run, done

    async def _mcp_calls(self, run: Run, turn: Turn, calls: list[Call]) -> list[Message]:
        """Run the turn's MCP calls the policy lets run, in order; the others wait for approval,
        as ``mcp_approval_request`` items saved here (the response then ends)."""
        remote = self._remote.get(run.id)
        if remote is None or not calls:
            return []
        remote.run = run
        asks: list[Message] = []
        for call in calls:
            assert call.mcp is not None
            if remote.needs_approval(call.mcp):
                asks.append(remote.approval_request(turn.number, call.mcp, call.arguments))
            else:
                await remote.call(turn.number, call.mcp, call.arguments)
        if asks:
            events = [
                e
                for ask in asks
                for e in item_events(ask, "response.output_item.added", "response.output_item.done")
            ]
            await self.writer.write(run, events, new_messages=asks)
        return asks
