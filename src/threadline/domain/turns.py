"""One turn of a run (one model call) as it is being written, and the guarded writes it makes.

Shared by the run loop (``run_loop.py``), the built-in calls it runs (``builtin_calls.py``) and the
run's endings (``run_endings.py``). Every write is a ``Change`` owned by the worker driving the run:
when the run is no longer in progress under it (cancelled, expired, taken over) the write is
refused and :class:`Lost` is raised. Events are published only after the write they announce.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from threadline.domain.clock import now
from threadline.domain.content import ItemFields, Part, Refusal, Text, text_content
from threadline.domain.entities import FunctionCall, Message, Run, RunStep, StepDetails, ToolCalls
from threadline.domain.events import Event, ReasoningDelta
from threadline.domain.lifecycle import message_event, publish, step_event
from threadline.domain.mcp import OfferedTool
from threadline.domain.ports.models import Usage
from threadline.domain.ports.storage import Bus, Change, Stores
from threadline.domain.ports.tools import Tool
from threadline.domain.run_states import RunStatus
from threadline.ids import new_id

IN_PROGRESS = frozenset({RunStatus.IN_PROGRESS})


class Lost(Exception):
    """The run is no longer in progress under this worker (cancelled, expired, taken over)."""


@dataclass
class Call:
    id: str
    name: str = ""
    arguments: str = ""
    tool: Tool | None = None
    """The implementation, when the model called a server-side tool."""
    mcp: OfferedTool | None = None
    """The MCP server's tool, when the model called one (``domain/mcp_calls.py`` runs it)."""
    position: int = 0
    """The call's index in the function-call step (the model's own index counts built-in calls too)."""


@dataclass
class Turn:
    """What one model call has produced so far."""

    number: int
    builtins: dict[str, Tool] = field(default_factory=dict)
    """The server-side tools offered in this turn, by function name."""
    mcp: dict[str, OfferedTool] = field(default_factory=dict)
    """The MCP servers' tools offered in this turn, by function name."""
    parts: dict[str, str] = field(default_factory=dict)
    """The message's content so far by kind (``text``, ``refusal``), in the order they began."""
    message: Message | None = None
    message_step: RunStep | None = None
    tool_step: RunStep | None = None
    calls: dict[int, Call] = field(default_factory=dict)
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


class TurnWriter:
    """The guarded writes of one worker's turns."""

    def __init__(self, stores: Stores, bus: Bus, worker_id: str) -> None:
        self.stores = stores
        self.bus = bus
        self.worker_id = worker_id

    async def write(self, run: Run, events: list[Event], **change: Any) -> None:
        """A write while the run stays in progress; raises when the run is no longer ours."""
        if not await self.stores.runs.transition(
            Change(run=run, expect=IN_PROGRESS, owner=self.worker_id, **change)
        ):
            raise Lost(run.id)
        await publish(self.bus, run.id, events)

    async def end_reasoning(self, run: Run, turn: Turn, status: str = "completed") -> None:
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
            content=[
                ItemFields({"summary": [{"type": "summary_text", "text": turn.reasoning}], "status": status})
            ],
            run_id=run.id,
            metadata={"turn": str(turn.number)},
            completed_at=ts,
            type="reasoning",
        )
        done = ReasoningDelta(item.id, turn.reasoning, done=True, status=status)
        await self.write(run, [done], new_messages=[item])


def new_step(run: Run, turn: Turn, kind: Any, details: StepDetails) -> RunStep:
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


def complete_message(turn: Turn) -> tuple[dict[str, Any], list[Event]]:
    """The turn's message and its step completed: the change that saves them, and their events."""
    assert turn.message is not None and turn.message_step is not None
    ts = now()
    message = dataclasses.replace(
        turn.message, content=content_parts(turn), status="completed", completed_at=ts
    )
    step = dataclasses.replace(turn.message_step, status="completed", completed_at=ts)
    turn.message, turn.message_step = message, step
    return {"messages": [message], "steps": [step]}, [message_event(message), step_event(step)]


def content_parts(turn: Turn) -> list[Part]:
    """The message's content parts, in the order the model began them (text, refusal)."""
    if not turn.parts:
        return text_content("")
    return [Text(value) if kind == "text" else Refusal(value) for kind, value in turn.parts.items()]


def function_calls(calls: list[Call]) -> ToolCalls:
    return ToolCalls([FunctionCall(c.id, c.name, c.arguments) for c in calls])


def run_usage(run: Run, turn: Turn) -> dict[str, int]:
    """The run's usage with this turn's added."""
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


def step_usage(turn: Turn) -> dict[str, int] | None:
    """The turn's model call's usage, as its step shows it."""
    if turn.usage is None:
        return None
    u = turn.usage
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    }
