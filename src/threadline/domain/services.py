"""Services: one method per API operation, each taking validated input and returning entities.

The API layer parses requests and renders results; everything in between — lookups, the thread
lock, run set-up, cancellation, tool outputs — happens here.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from threadline.domain.clock import now
from threadline.domain.content import Part, Text, text_content
from threadline.domain.entities import (
    DEFAULT_PROJECT,
    Assistant,
    FunctionCall,
    ListQuery,
    Message,
    NewFile,
    Page,
    Run,
    RunStep,
    RunTransition,
    Thread,
    ThreadStoreFiles,
    ThreadStorePlan,
    ToolCalls,
)
from threadline.domain.events import ObjectEvent
from threadline.domain.files import (
    FileService,
    attached_code_files,
    attached_search_files,
    referenced_files,
    thread_store_id,
    with_code_files,
    with_search_store,
)
from threadline.domain.input_files import InputFiles
from threadline.domain.lifecycle import end_run, moved, publish, run_event, snapshot, step_event
from threadline.domain.ports.mcp import McpServers
from threadline.domain.ports.storage import Bus, Change, Stores, ThreadLockedError
from threadline.domain.records import part_from
from threadline.domain.run_states import TERMINAL, RunStatus
from threadline.domain.vector_stores import VectorStoreService
from threadline.errors import InvalidRequestError, NotFoundError
from threadline.ids import new_id

log = logging.getLogger(__name__)


class ModelCatalog(Protocol):
    def routes(self, model: str) -> bool:
        """Whether a run asking for ``model`` has somewhere to go."""


def _not_found(kind: str, object_id: str) -> NotFoundError:
    return NotFoundError(f"No {kind} found with id '{object_id}'.")


def message_content(content: str | list[dict[str, Any]]) -> list[Part]:
    """A create-message ``content`` (a string or request parts) as message parts. A request's image
    parts have the stored form's shape."""
    if isinstance(content, str):
        return text_content(content)
    return [Text(part["text"]) if part["type"] == "text" else part_from(part) for part in content]


class Services:
    def __init__(
        self,
        stores: Stores,
        bus: Bus,
        models: ModelCatalog,
        files: FileService,
        *,
        run_expiry_seconds: int = 600,
        clock: Callable[[], int] = now,
        project_id: str = DEFAULT_PROJECT,
        vector_stores: VectorStoreService | None = None,
    ) -> None:
        self.stores = stores
        self.bus = bus
        self.models = models
        self.files = files
        self.run_expiry_seconds = run_expiry_seconds
        self.clock = clock
        self.project_id = project_id
        """Every object these services create, find, list or delete is in this project."""
        self.vector_stores = vector_stores
        """Checks ``file_search`` vector store ids and makes the stores ``vector_stores`` asks for."""
        self.input_files: InputFiles | None = None
        """Reads the ``input_file`` parts of responses' input (none: such parts are refused)."""
        self.mcp: McpServers | None = None
        """Reaches remote MCP servers for the ``mcp`` tool (none: the tool is refused)."""

    def for_project(self, project_id: str) -> Services:
        """The same services, seeing only ``project_id``'s objects (one per request: cheap)."""
        scoped = copy.copy(self)
        scoped.project_id = project_id
        scoped.files = self.files.for_project(project_id)
        if self.vector_stores is not None:
            scoped.vector_stores = self.vector_stores.for_project(project_id)
        return scoped

    def check_model(self, model: str, param: str = "model") -> None:
        if not self.models.routes(model):
            raise InvalidRequestError(
                f"The model '{model}' is not served here: no route matches it. "
                "See THREADLINE_MODELS_FILE or THREADLINE_UPSTREAM_BASE_URL.",
                param=param,
                code="model_not_found",
            )

    async def _check_files(self, fields: dict[str, Any]) -> None:
        """Refuse a request whose attachments, ``image_file`` parts or tool resources name unknown files
        or vector stores; then make the vector stores its ``file_search.vector_stores`` describe, and
        name them in ``vector_store_ids`` instead (``fields`` is changed in place)."""
        await self.files.check_references(referenced_files(fields))
        for holder, at in ((fields, ""), (fields.get("thread") or {}, "thread.")):
            search = (holder.get("tool_resources") or {}).get("file_search")
            if search is None or self.vector_stores is None:
                continue
            param = f"{at}tool_resources.file_search.vector_store_ids"
            await self.vector_stores.check_store_ids(search.get("vector_store_ids") or [], param)
            if search.get("vector_stores") is not None:
                made = [
                    await self.vector_stores.create_store(
                        name=None,
                        metadata=helper.get("metadata"),
                        expires_after=None,
                        files=[NewFile(file_id) for file_id in helper.get("file_ids") or []],
                        chunking_strategy=helper.get("chunking_strategy"),
                    )
                    for helper in search["vector_stores"]
                ]
                holder["tool_resources"] = {
                    **holder["tool_resources"],
                    "file_search": {"vector_store_ids": [store.id for store in made]},
                }

    def _store_plan(self, thread_id: str, messages: list[Message]) -> ThreadStorePlan | None:
        """Where files the messages attach for ``file_search`` go, if they attach any: the thread's
        own vector store (see :class:`ThreadStorePlan`)."""
        if self.vector_stores is None or not attached_search_files(messages):
            return None
        return self.vector_stores.thread_store_plan(thread_id)

    async def _ingest(self, joined: ThreadStoreFiles | None) -> None:
        """Wake the worker for the files the thread's store was just given (their jobs are saved)."""
        if joined is not None and joined.added and self.vector_stores is not None:
            self.vector_stores.jobs.wake()

    # --- assistants ------------------------------------------------------------------------

    async def create_assistant(self, fields: dict[str, Any], assistant_id: str | None = None) -> Assistant:
        self.check_model(fields["model"])
        await self._check_files(fields)
        assistant = Assistant(
            id=assistant_id or new_id("assistant"),
            created_at=self.clock(),
            project_id=self.project_id,
            **fields,
        )
        await self.stores.assistants.insert(assistant)
        return assistant

    async def apply_assistant(self, assistant_id: str, fields: dict[str, Any]) -> Assistant:
        """Create or update the assistant with this id (declarations); safe to run concurrently."""
        assistant = Assistant(id=assistant_id, created_at=self.clock(), project_id=self.project_id, **fields)
        await self.stores.assistants.upsert(assistant)
        return await self.get_assistant(assistant_id)

    async def get_assistant(self, assistant_id: str) -> Assistant:
        assistant = await self.stores.assistants.get(assistant_id, self.project_id)
        if assistant is None:
            raise _not_found("assistant", assistant_id)
        return assistant

    async def list_assistants(self, query: ListQuery) -> Page[Assistant]:
        return await self.stores.assistants.list_assistants(query, self.project_id)

    async def modify_assistant(self, assistant_id: str, fields: dict[str, Any]) -> Assistant:
        assistant = await self.get_assistant(assistant_id)
        if "model" in fields:
            self.check_model(fields["model"])
        await self._check_files(fields)
        assistant = dataclasses.replace(assistant, **fields)
        await self.stores.assistants.update(assistant)
        return assistant

    async def delete_assistant(self, assistant_id: str) -> None:
        if not await self.stores.assistants.delete(assistant_id, self.project_id):
            raise _not_found("assistant", assistant_id)

    # --- threads ---------------------------------------------------------------------------

    def _new_message(self, thread_id: str, fields: dict[str, Any], created_at: int | None = None) -> Message:
        return Message(
            id=new_id("message"),
            thread_id=thread_id,
            created_at=self.clock() if created_at is None else created_at,
            role=fields["role"],
            content=message_content(fields["content"]),
            attachments=fields.get("attachments"),
            metadata=fields.get("metadata") or {},
            completed_at=None,
        )

    def _new_thread(self, fields: dict[str, Any]) -> tuple[Thread, list[Message], ThreadStorePlan | None]:
        thread = Thread(
            id=new_id("thread"),
            created_at=self.clock(),
            metadata=fields.get("metadata") or {},
            tool_resources=fields.get("tool_resources"),
            project_id=self.project_id,
        )
        thread.last_active_at = thread.created_at
        messages = [self._new_message(thread.id, m, thread.created_at) for m in fields.get("messages") or []]
        # Files its messages attach for code_interpreter join the thread's resources (as the store
        # does for messages added later), so the thread comes back as it was saved.
        joined = with_code_files(thread.tool_resources, attached_code_files(messages))
        if joined is not None:
            thread.tool_resources = joined
        plan = self._store_plan(thread.id, messages)
        if plan is not None and thread_store_id(thread.tool_resources) is None:
            # Files attached for file_search: the thread is made (and announced) with its own store.
            thread.tool_resources = with_search_store(thread.tool_resources, plan.new_store.id)
        return thread, messages, plan

    async def create_thread(self, fields: dict[str, Any]) -> Thread:
        await self._check_files(fields)
        thread, messages, plan = self._new_thread(fields)
        joined = await self.stores.threads.insert(thread, messages, search=plan)
        if joined is not None:
            thread.tool_resources = joined.tool_resources
        await self._ingest(joined)
        return thread

    async def get_thread(self, thread_id: str) -> Thread:
        thread = await self.stores.threads.get(thread_id, self.project_id)
        if thread is None or thread.kind == "response":  # a response's own thread is reached through it
            raise _not_found("thread", thread_id)
        return thread

    async def list_threads(self, query: ListQuery, metadata: dict[str, str]) -> Page[Thread]:
        return await self.stores.threads.list_threads(query, metadata, self.project_id)

    async def modify_thread(self, thread_id: str, fields: dict[str, Any]) -> Thread:
        thread = await self.get_thread(thread_id)
        await self._check_files(fields)
        thread = dataclasses.replace(thread, **fields)
        await self.stores.threads.update(thread)
        return thread

    async def delete_thread(self, thread_id: str) -> None:
        if not await self.stores.threads.delete(thread_id, self.project_id):
            raise _not_found("thread", thread_id)

    # --- messages --------------------------------------------------------------------------

    async def create_message(self, thread_id: str, fields: dict[str, Any]) -> Message:
        await self.get_thread(thread_id)
        await self._check_files(fields)
        message = self._new_message(thread_id, fields)
        try:
            joined = await self.stores.threads.insert_message(
                message, search=self._store_plan(thread_id, [message])
            )
        except ThreadLockedError as locked:
            raise InvalidRequestError(
                f"Can't add messages to {thread_id} while a run {locked.run_id} is active."
            ) from None
        await self._ingest(joined)
        return message

    async def get_message(self, thread_id: str, message_id: str) -> Message:
        await self.get_thread(thread_id)
        message = await self.stores.threads.get_message(thread_id, message_id)
        if message is None or message.type != "message":  # function calls are Responses items only
            raise _not_found("message", message_id)
        return message

    async def list_messages(self, thread_id: str, query: ListQuery, run_id: str | None) -> Page[Message]:
        await self.get_thread(thread_id)
        return await self.stores.threads.list_messages(thread_id, query, run_id)

    async def modify_message(
        self, thread_id: str, message_id: str, metadata: dict[str, str] | None
    ) -> Message:
        """Set a message's metadata; ``None`` (the client sent none) leaves it as it is."""
        message = await self.get_message(thread_id, message_id)
        if metadata is not None:
            message.metadata = metadata
            await self.stores.threads.update_message_metadata(message)
        return message

    async def delete_message(self, thread_id: str, message_id: str) -> None:
        await self.get_thread(thread_id)
        if not await self.stores.threads.delete_message(thread_id, message_id):
            raise _not_found("message", message_id)

    # --- runs ------------------------------------------------------------------------------

    async def create_run(self, thread_id: str, fields: dict[str, Any], run_id: str | None = None) -> Run:
        """Queue a run. Stream followers subscribe to ``run_id`` before calling, to miss nothing."""
        assistant = await self.get_assistant(fields["assistant_id"])
        await self.get_thread(thread_id)
        await self._check_files(fields)
        run, messages = self._new_run(thread_id, assistant, fields, run_id)
        await self.announce(run)
        try:
            joined = await self.stores.runs.insert(
                run, messages, search=self._store_plan(thread_id, messages)
            )
        except ThreadLockedError as locked:
            raise InvalidRequestError(
                f"Thread {thread_id} already has an active run {locked.run_id}."
            ) from None
        await self._ingest(joined)
        await self.bus.notify_work()
        return run

    async def create_thread_and_run(
        self, fields: dict[str, Any], run_id: str | None = None
    ) -> tuple[Thread, Run]:
        assistant = await self.get_assistant(fields["assistant_id"])
        await self._check_files(fields)
        thread_fields = dict(fields.get("thread") or {})
        if fields.get("tool_resources") is not None:
            thread_fields["tool_resources"] = fields["tool_resources"]
        thread, messages, plan = self._new_thread(thread_fields)
        run, _ = self._new_run(thread.id, assistant, fields, run_id)
        # One transaction: the thread, its messages (their files in its store) and its run (holding
        # its lock) exist together or not at all.
        await publish(self.bus, run.id, [ObjectEvent("thread.created", snapshot(thread))])
        await self.announce(run)
        joined = await self.stores.threads.insert(thread, messages, run, search=plan)
        if joined is not None:
            thread.tool_resources = joined.tool_resources
        await self._ingest(joined)
        await self.bus.notify_work()
        return thread, run

    def _new_run(
        self, thread_id: str, assistant: Assistant, fields: dict[str, Any], run_id: str | None
    ) -> tuple[Run, list[Message]]:
        model = fields.get("model") or assistant.model
        self.check_model(model)
        instructions = fields.get("instructions")
        if instructions is None:
            instructions = assistant.instructions or ""
        if fields.get("additional_instructions"):
            instructions = f"{instructions}\n\n{fields['additional_instructions']}".strip()
        tools = fields.get("tools")
        if tools is None:
            tools = assistant.tools
        created_at = self.clock()

        def pick(name: str, default: Any) -> Any:
            value = fields.get(name)
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
            metadata=fields.get("metadata") or {},
            expires_at=created_at + self.run_expiry_seconds,
            temperature=pick("temperature", 1.0),
            top_p=pick("top_p", 1.0),
            max_prompt_tokens=fields.get("max_prompt_tokens"),
            max_completion_tokens=fields.get("max_completion_tokens"),
            truncation_strategy=fields.get("truncation_strategy") or {"type": "auto", "last_messages": None},
            tool_choice=fields.get("tool_choice") or "auto",
            parallel_tool_calls=pick("parallel_tool_calls", True),
            response_format=pick("response_format", "auto"),
            reasoning_effort=pick("reasoning_effort", None),
            queued_at=time.time(),
        )
        messages = [
            self._new_message(thread_id, m, created_at) for m in fields.get("additional_messages") or []
        ]
        return run, messages

    async def announce(self, run: Run) -> None:
        """Publish a new run's first events *before* it is written: once the row exists a worker may
        claim it at once, and its ``in_progress`` must never reach a stream ahead of ``created``.
        (Nobody else can follow an id that was just made, so a failed write misleads no one; the
        stream that asked for it ends with the error.)"""
        await publish(self.bus, run.id, [ObjectEvent("thread.run.created", snapshot(run)), run_event(run)])

    async def get_run(self, thread_id: str, run_id: str) -> Run:
        run = await self.stores.runs.get(thread_id, run_id, self.project_id)
        if run is None:
            await self.get_thread(thread_id)  # an unknown (or another project's) thread is its own 404
            raise _not_found("run", run_id)
        return run

    async def list_runs(self, thread_id: str, query: ListQuery) -> Page[Run]:
        await self.get_thread(thread_id)
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

    async def submit_tool_outputs(self, thread_id: str, run_id: str, outputs: list[dict[str, Any]]) -> Run:
        run = await self.get_run(thread_id, run_id)
        if run.status is not RunStatus.REQUIRES_ACTION or run.required_action is None:
            raise InvalidRequestError(f'Runs in status "{run.status.value}" do not accept tool outputs.')
        expected = [c.id for c in run.required_action.calls]
        given = [o.get("tool_call_id") for o in outputs]
        if sorted(map(str, given)) != sorted(expected) or len(set(given)) != len(given):
            raise InvalidRequestError(
                f"Expected tool outputs for call_ids {expected}, got {given}.", param="tool_outputs"
            )
        by_id = {o["tool_call_id"]: o.get("output") or "" for o in outputs}
        steps = [
            s
            for s in await self.stores.runs.steps(run.id)
            if s.type == "tool_calls" and s.status == "in_progress"
        ]
        ts = self.clock()
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

    # --- run steps -------------------------------------------------------------------------

    async def list_run_transitions(self, thread_id: str, run_id: str) -> list[RunTransition]:
        await self.get_run(thread_id, run_id)
        return await self.stores.runs.history(run_id)

    async def get_run_step(self, thread_id: str, run_id: str, step_id: str) -> RunStep:
        await self.get_run(thread_id, run_id)
        step = await self.stores.runs.get_step(thread_id, run_id, step_id)
        if step is None:
            raise _not_found("run step", step_id)
        return step

    async def list_run_steps(self, thread_id: str, run_id: str, query: ListQuery) -> Page[RunStep]:
        await self.get_run(thread_id, run_id)
        return await self.stores.runs.list_steps(thread_id, run_id, query)
