"""Runs and their steps, within one project: queue, read, cancel, take tool outputs.

Queuing a run locks its thread (one active run per thread) and wakes the workers, which execute it
(``domain/run_loop.py``); a run's steps are written by them, and read here.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from threadline.domain.assistants import AssistantService, found_assistant
from threadline.domain.commands import FunctionOutput, NewRun, NewThreadAndRun
from threadline.domain.entities import (
    Assistant,
    FunctionCall,
    ListQuery,
    Message,
    Page,
    Run,
    RunStep,
    RunTransition,
    Thread,
    ToolCalls,
)
from threadline.domain.events import ObjectEvent
from threadline.domain.lifecycle import end_run, moved, publish, run_event, snapshot, step_event
from threadline.domain.ports.storage import Change, ThreadLockedError
from threadline.domain.run_states import TERMINAL, RunStatus
from threadline.domain.scope import Scope, not_found
from threadline.domain.threads import ThreadService, found_thread
from threadline.errors import InvalidRequestError
from threadline.ids import new_id


class RunService:
    def __init__(self, scope: Scope, assistants: AssistantService, threads: ThreadService) -> None:
        self.scope = scope
        self.stores = scope.stores
        self.bus = scope.bus
        self.assistants = assistants
        self.threads = threads

    async def create_run(self, thread_id: str, command: NewRun, run_id: str | None = None) -> Run:
        """Queue a run. Stream followers subscribe to ``run_id`` before calling, to miss nothing."""
        # Both looked up in one read; the assistant's 404 comes first, as it did when they were two.
        assistant, thread = await self.stores.runs.parents(
            command.assistant_id, thread_id, self.scope.project_id
        )
        assistant = found_assistant(assistant, command.assistant_id)
        found_thread(thread, thread_id)
        await self.scope.check_files(command.file_refs())
        run, messages = self._new_run(thread_id, assistant, command, run_id)
        await self.announce(run)
        try:
            joined = await self.stores.runs.insert(
                run, messages, search=self.scope.store_plan(thread_id, messages)
            )
        except ThreadLockedError as locked:
            raise InvalidRequestError(
                f"Thread {thread_id} already has an active run {locked.run_id}."
            ) from None
        self.scope.ingest(joined)
        await self.bus.notify_work()
        return run

    async def create_thread_and_run(
        self, command: NewThreadAndRun, run_id: str | None = None
    ) -> tuple[Thread, Run]:
        assistant = await self.assistants.get_assistant(command.run.assistant_id)
        await self.scope.check_files(command.file_refs())
        given = await self.scope.with_stores(command.tool_resources)
        resources = await self.scope.with_stores(command.thread.tool_resources, "thread.")
        if given is not None:
            resources = given
        thread, messages, plan = self.threads.new_thread(
            dataclasses.replace(command.thread, tool_resources=resources)
        )
        run, _ = self._new_run(thread.id, assistant, command.run, run_id)
        # One transaction: the thread, its messages (their files in its store) and its run (holding
        # its lock) exist together or not at all.
        await publish(self.bus, run.id, [ObjectEvent("thread.created", snapshot(thread))])
        await self.announce(run)
        joined = await self.stores.threads.insert(thread, messages, run, search=plan)
        if joined is not None:
            thread.tool_resources = joined.tool_resources
        self.scope.ingest(joined)
        await self.bus.notify_work()
        return thread, run

    def _new_run(
        self, thread_id: str, assistant: Assistant, command: NewRun, run_id: str | None
    ) -> tuple[Run, list[Message]]:
        model = command.model or assistant.model
        self.scope.check_model(model)
        instructions = command.instructions
        if instructions is None:
            instructions = assistant.instructions or ""
        if command.additional_instructions:
            instructions = f"{instructions}\n\n{command.additional_instructions}".strip()
        tools = command.tools
        if tools is None:
            tools = assistant.tools
        created_at = self.scope.clock()

        def pick(name: str, default: Any) -> Any:
            value = getattr(command, name)
            if value is None:
                value = getattr(assistant, name, None)
            return default if value is None else value

        run = Run(
            id=run_id or new_id("run"),
            thread_id=thread_id,
            assistant_id=assistant.id,
            created_at=created_at,
            model=model,
            instructions=instructions,
            tools=tools,
            metadata=command.metadata,
            expires_at=created_at + self.scope.run_expiry_seconds,
            temperature=pick("temperature", 1.0),
            top_p=pick("top_p", 1.0),
            max_prompt_tokens=command.max_prompt_tokens,
            max_completion_tokens=command.max_completion_tokens,
            truncation_strategy=command.truncation_strategy or {"type": "auto", "last_messages": None},
            tool_choice=command.tool_choice or "auto",
            parallel_tool_calls=pick("parallel_tool_calls", True),
            response_format=pick("response_format", "auto"),
            reasoning_effort=pick("reasoning_effort", None),
            queued_at=time.time(),
        )
        messages = [self.threads.new_message(thread_id, m, created_at) for m in command.additional_messages]
        return run, messages

    async def announce(self, run: Run) -> None:
        """Publish a new run's first events *before* it is written: once the row exists a worker may
        claim it at once, and its ``in_progress`` must never reach a stream ahead of ``created``.
        (Nobody else can follow an id that was just made, so a failed write misleads no one; the
        stream that asked for it ends with the error.)"""
        await publish(self.bus, run.id, [ObjectEvent("thread.run.created", snapshot(run)), run_event(run)])

    async def get_run(self, thread_id: str, run_id: str) -> Run:
        run = await self.stores.runs.get(thread_id, run_id, self.scope.project_id)
        if run is None:
            await self.threads.get_thread(
                thread_id
            )  # an unknown (or another project's) thread is its own 404
            raise not_found("run", run_id)
        return run

    async def list_runs(self, thread_id: str, query: ListQuery) -> Page[Run]:
        await self.threads.get_thread(thread_id)
        return await self.stores.runs.list_runs(thread_id, query)

    async def modify_run(self, thread_id: str, run_id: str, metadata: dict[str, str] | None) -> Run:
        """Set a run's metadata; ``None`` (the client sent none) leaves it as it is."""
        run = await self.get_run(thread_id, run_id)
        if metadata is not None:
            run.metadata = metadata
            await self.stores.runs.update_metadata(run)
        return run

    async def cancel_run(self, thread_id: str, run_id: str) -> Run:
        """Ask a run to stop. Runs no worker holds end at once; a running one stops its model call."""
        while True:
            run = await self.get_run(thread_id, run_id)
            if run.status in TERMINAL:
                raise InvalidRequestError(f"Cannot cancel run with status '{run.status.value}'.")
            if run.status is RunStatus.CANCELLING:
                return run
            cancelling = moved(run, RunStatus.CANCELLING)
            if await self.stores.runs.transition(Change(run=cancelling, expect=frozenset({run.status}))):
                break
            # The run moved between our read and our write (claimed, finished): look again.
        await publish(self.bus, run.id, [run_event(cancelling)])
        if run.status is not RunStatus.IN_PROGRESS:
            await end_run(self.stores, self.bus, cancelling, RunStatus.CANCELLED)
        return cancelling

    async def submit_tool_outputs(self, thread_id: str, run_id: str, outputs: list[FunctionOutput]) -> Run:
        run = await self.get_run(thread_id, run_id)
        if run.status is not RunStatus.REQUIRES_ACTION or run.required_action is None:
            raise InvalidRequestError(f'Runs in status "{run.status.value}" do not accept tool outputs.')
        expected = [c.id for c in run.required_action.calls]
        given = [o.tool_call_id for o in outputs]
        if sorted(map(str, given)) != sorted(expected) or len(set(given)) != len(given):
            raise InvalidRequestError(
                f"Expected tool outputs for call_ids {expected}, got {given}.", param="tool_outputs"
            )
        by_id = {o.tool_call_id: o.output or "" for o in outputs}
        steps = [
            s
            for s in await self.stores.runs.steps(run.id)
            if s.type == "tool_calls" and s.status == "in_progress"
        ]
        ts = self.scope.clock()
        for step in steps:
            assert isinstance(step.step_details, ToolCalls)
            for call in step.step_details.calls:
                if isinstance(call, FunctionCall) and call.id in by_id:
                    call.output = by_id[call.id]
            step.status = "completed"
            step.completed_at = ts
        queued = moved(run, RunStatus.QUEUED, required_action=None, queued_at=time.time())
        change = Change(run=queued, expect=frozenset({RunStatus.REQUIRES_ACTION}), steps=steps)
        if not await self.stores.runs.transition(change):
            current = await self.get_run(thread_id, run_id)
            raise InvalidRequestError(f'Runs in status "{current.status.value}" do not accept tool outputs.')
        await publish(self.bus, run.id, [*(step_event(s) for s in steps), run_event(queued)])
        await self.bus.notify_work()
        return queued

    # --- run steps and history --------------------------------------------------------------

    async def list_run_transitions(self, thread_id: str, run_id: str) -> list[RunTransition]:
        await self.get_run(thread_id, run_id)
        return await self.stores.runs.history(run_id)

    async def get_run_step(self, thread_id: str, run_id: str, step_id: str) -> RunStep:
        await self.get_run(thread_id, run_id)
        step = await self.stores.runs.get_step(thread_id, run_id, step_id)
        if step is None:
            raise not_found("run step", step_id)
        return step

    async def list_run_steps(self, thread_id: str, run_id: str, query: ListQuery) -> Page[RunStep]:
        await self.get_run(thread_id, run_id)
        return await self.stores.runs.list_steps(thread_id, run_id, query)
