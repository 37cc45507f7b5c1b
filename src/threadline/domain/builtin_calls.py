"""Running a turn's server-side tool calls (code_interpreter, file_search ...) in a step of their own.

The calls run one after another. Each is saved and streamed as started before it runs (a code
interpreter's whole code in its first delta, once the model has written the call; the streams cut
it into pieces, ``api/sse.py`` says why), then run, then its outputs are streamed. A call the tool
refuses (bad arguments) or that fails with ``ToolError`` gets the error as its output, so the model
hears why; any other exception fails the run.

What differs between kinds of call is said by a :class:`BuiltinKind` registered for the tool type
(``register``): a new kind of built-in tool registers one here, and the loop is left as it is.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Protocol

from threadline.domain.clock import now
from threadline.domain.entities import BuiltinCall, Run, RunStep, ToolCallRecord, ToolCalls
from threadline.domain.events import BuiltinCallDelta
from threadline.domain.lifecycle import step_event
from threadline.domain.ports.tools import ToolCall, ToolError
from threadline.domain.steps import (
    BuiltinDetails,
    CodeInterpreterDetails,
    CodeOutput,
    FileSearchDetails,
    WebSearchDetails,
)
from threadline.domain.turns import Call, Turn, TurnWriter, new_step, step_usage


class BuiltinKind(Protocol):
    """How a run shows one kind of built-in call."""

    def blank(self) -> BuiltinDetails:
        """The call's step details before the tool has said anything."""

    def started(self, details: BuiltinDetails) -> str | None:
        """What the call's first delta carries once it is started (a code interpreter's code)."""

    def outputs(self, details: BuiltinDetails) -> tuple[CodeOutput, ...]:
        """What is streamed of the finished call's outputs before its step completes."""


class CodeInterpreterKind:
    def blank(self) -> BuiltinDetails:
        return CodeInterpreterDetails("")

    def started(self, details: BuiltinDetails) -> str | None:
        return details.input if isinstance(details, CodeInterpreterDetails) else None

    def outputs(self, details: BuiltinDetails) -> tuple[CodeOutput, ...]:
        return details.outputs if isinstance(details, CodeInterpreterDetails) else ()


class FileSearchKind:
    def blank(self) -> BuiltinDetails:
        return FileSearchDetails()

    def started(self, details: BuiltinDetails) -> str | None:
        return None

    def outputs(self, details: BuiltinDetails) -> tuple[CodeOutput, ...]:
        return ()


class WebSearchKind:
    def blank(self) -> BuiltinDetails:
        return WebSearchDetails("")

    def started(self, details: BuiltinDetails) -> str | None:
        """The query: the item a stream adds names what is searched for."""
        return details.query if isinstance(details, WebSearchDetails) else None

    def outputs(self, details: BuiltinDetails) -> tuple[CodeOutput, ...]:
        return ()


KINDS: dict[str, BuiltinKind] = {}
"""The kinds of built-in call a run can show, by tool type."""


def register(tool_type: str, kind: BuiltinKind) -> None:
    KINDS[tool_type] = kind


register("code_interpreter", CodeInterpreterKind())
register("file_search", FileSearchKind())
register("web_search", WebSearchKind())


class BuiltinCalls:
    """Runs a turn's built-in calls for one worker."""

    def __init__(self, writer: TurnWriter) -> None:
        self.writer = writer
        self.stores = writer.stores

    async def run(self, run: Run, turn: Turn, calls: list[Call], *, with_usage: bool) -> RunStep:
        """Run the turn's server-side calls, one after another, in a step of their own."""
        step = dataclasses.replace(new_step(run, turn, "tool_calls", ToolCalls([])), part=1)
        await self.writer.write(
            run, [step_event(step, "created"), step_event(step, "in_progress")], new_steps=[step]
        )
        template = await self._template(run)
        records: list[ToolCallRecord] = []
        for position, call in enumerate(calls):
            await self._run_one(run, step, position, call, records, template)
        step = dataclasses.replace(
            step,
            step_details=ToolCalls(records),
            status="completed",
            completed_at=now(),
            usage=step_usage(turn) if with_usage else None,
        )
        await self.writer.write(run, [step_event(step)], steps=[step])
        return step

    async def _template(self, run: Run) -> ToolCall:
        """What every call of the run is given: its thread's and its owner's resources."""
        thread = await self.stores.threads.get(run.thread_id)
        if run.response is not None:
            # A response names its resources in its tools (file_search's vector_store_ids ...).
            own = run.response.tool_resources or {}
        else:
            assistant = await self.stores.assistants.get(run.assistant_id)
            own = (assistant.tool_resources if assistant else None) or {}
        return ToolCall(
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

    async def _run_one(
        self,
        run: Run,
        step: RunStep,
        position: int,
        call: Call,
        records: list[ToolCallRecord],
        template: ToolCall,
    ) -> None:
        """Show the call as started (saved, then streamed), run it, and stream its outputs."""
        tool = call.tool
        assert tool is not None
        kind = KINDS[tool.type]
        record = BuiltinCall(call.id, tool.type, call.name, call.arguments, kind.blank())
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
        step.step_details = ToolCalls(list(records))
        delta = BuiltinCallDelta(
            step.id, position, tool.type, call_id=call.id, input=kind.started(record.details)
        )
        await self.writer.write(run, [delta], steps=[dataclasses.replace(step)])
        if request is None or record.output is not None:
            return  # the call was refused before it started; the model hears why
        try:
            result = await tool.run(request)
        except ToolError as exc:
            record.output = f"Error: {exc}"
            return
        record.details, record.output = result.details, result.output
        if result.kernel_until is not None:
            await self.stores.runs.hold_kernel(run.thread_id, self.writer.worker_id, result.kernel_until)
        if outputs := kind.outputs(result.details):
            await self.writer.bus.publish(
                run.id, BuiltinCallDelta(step.id, position, tool.type, outputs=outputs)
            )


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
