"""The Responses and Conversations APIs on the run engine: a response is a run, a conversation a thread.

A response is stored as a run whose ``response`` field holds the request's settings runs lack, and
executed by the workers like any run (claims, leases, crash safety, cancel). Its input items are
entries of a thread: the conversation's, the previous response's, or a thread of its own (``kind``
``response``, unlisted). Messages are thread messages, so a thread made by the Assistants API is a
conversation and the reverse. A response never waits in ``requires_action``: its client function
calls end it, as output items that join the thread, and their outputs arrive as the input of the
next response.

``previous_response_id`` continues the previous response's thread while that response is the
thread's newest; a second response from the same one branches, on a copy of the thread as it stood.
Input items are resolved to thread entries by ``response_items.py``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any

from threadline.domain.chat import model_error
from threadline.domain.commands import NewResponse, content_refs, resource_refs
from threadline.domain.entities import (
    ListQuery,
    Message,
    MessageCreation,
    Page,
    ResponseSettings,
    Run,
    RunStep,
    Thread,
)
from threadline.domain.model_calls import ModelCallObserver
from threadline.domain.ports.models import ChatMessage, ProviderError, Route, Usage
from threadline.domain.ports.storage import ThreadLockedError
from threadline.domain.ports.tools import FUNCTIONS
from threadline.domain.prompt_messages import Counter, entry_messages, paired
from threadline.domain.response_items import Input, ItemResolver, NewItem, compaction_content, new_entry
from threadline.domain.run_states import ACTIVE
from threadline.domain.runs import RunService
from threadline.domain.scope import Scope
from threadline.domain.summaries import summarise_entries
from threadline.errors import InvalidRequestError, NotFoundError
from threadline.ids import new_id

MAX_REASONING_ITEMS = 1000
"""The most entries of one response (its reasoning items, its function calls) read for its output."""
MAX_COUNTED_ENTRIES = 10_000
"""The most entries of a conversation ``count_input_tokens`` reads."""


@dataclass(frozen=True, slots=True)
class Compaction:
    """What ``/v1/responses/compact`` answers: the conversation's user messages, as they were, and
    one compaction item carrying the summary of all of it."""

    id: str
    created_at: int
    user_messages: list[Message]
    item_id: str
    encrypted_content: str
    usage: Usage


@dataclass(slots=True)
class ResponseView:
    """A response with what its output is made of: its steps, and the messages they wrote."""

    run: Run
    steps: list[RunStep]
    messages: dict[str, Message]
    entries: list[Message] = field(default_factory=list)
    """The output items the run kept as thread entries (the model's reasoning, MCP items), placed
    among what the steps wrote by their turn (``metadata["turn"]``)."""


def _found(kind: str, object_id: str, param: str | None = None) -> NotFoundError:
    return NotFoundError(f"{kind} with id '{object_id}' not found.", param=param)


class ResponseService:
    """Responses and conversations for one project (the ``Scope`` says which). Responses are runs:
    ``runs`` announces and cancels them."""

    def __init__(self, scope: Scope, runs: RunService) -> None:
        self.scope = scope
        self.stores = scope.stores
        self.bus = scope.bus
        self.runs = runs
        self.items = ItemResolver(scope)

    # --- responses -------------------------------------------------------------------------

    async def create_response(self, request: NewResponse, response_id: str | None = None) -> Run:
        """Queue a response. Stream followers subscribe to ``response_id`` before calling."""
        scope = self.scope
        scope.check_model(request.model)
        request.input = await self.items.resolve(
            request.input, request.conversation, request.previous_response_id
        )
        await self._check_references(request)
        sealed = self._seal_headers(request)
        created_at = scope.clock()
        run = Run(
            id=response_id or new_id("response"),
            thread_id="",
            assistant_id="",
            created_at=created_at,
            model=request.model,
            instructions=request.instructions or "",
            tools=request.tools,
            metadata=request.metadata,
            expires_at=created_at + scope.run_expiry_seconds,
            temperature=1.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            max_completion_tokens=request.max_output_tokens,
            truncation_strategy={"type": request.truncation, "last_messages": None},
            tool_choice=request.tool_choice,
            parallel_tool_calls=request.parallel_tool_calls,
            response_format=request.response_format,
            reasoning_effort=request.reasoning_effort,
            queued_at=time.time(),
        )
        thread, new_thread, source = await self._thread_for(request, created_at)
        run.thread_id = thread.id
        items = [
            new_entry(thread.id, item, created_at) for item in request.input if isinstance(item, NewItem)
        ]
        # A branch's calls are in the thread it copies, which is not written yet.
        await self.items.check_outputs(
            source[0] if source else thread.id, items, new_thread and source is None
        )
        await self._check_approvals(request, items, source[0] if source else thread.id)
        run.response = ResponseSettings(
            **request.settings,
            previous_response_id=request.previous_response_id,
            conversation=thread.id if thread.kind != "response" else None,
            background=request.background,
            store=request.store,
            tool_resources=request.tool_resources,
            input_ids=[item.id for item in items],
            mcp_headers=sealed or None,
        )
        await self.runs.announce(run)
        try:
            if new_thread and source is None:
                await self.stores.threads.insert(thread, items, run)
            else:
                if source is not None:
                    await self.stores.threads.copy(source[0], thread, source[1])
                await self.stores.runs.insert(run, items)
        except ThreadLockedError as locked:
            raise InvalidRequestError(
                f"Another response or run ({locked.run_id}) is in progress on conversation {thread.id}; "
                "wait for it to finish.",
                param="conversation",
                code="conversation_locked",
            ) from None
        await self.bus.notify_work()
        return run

    def _seal_headers(self, request: NewResponse) -> dict[str, str]:
        """The ``mcp`` tools' headers, sealed for the run (``domain/mcp.py``); never kept plain."""
        headers: dict[str, dict[str, str]] = request.tool_resources.pop("mcp_headers", None) or {}
        if not any(tool.get("type") == "mcp" for tool in request.tools):
            return {}
        if self.scope.mcp is None:
            raise InvalidRequestError("MCP servers are not available on this server.", param="tools")
        return {label: self.scope.mcp.seal(given) for label, given in headers.items() if given}

    async def _check_approvals(self, request: NewResponse, entries: list[Message], chain: str) -> None:
        """Each ``mcp_approval_response`` must answer a request of this chain (or of the same input)
        whose server is among the request's tools (with its headers: they are not kept between
        responses). The answer keeps the call it answers, for the run and for the model."""
        answers = [e for e in entries if e.type == "mcp_approval_response"]
        if not answers:
            return
        labels = {tool["server_label"] for tool in request.tools if tool.get("type") == "mcp"}
        given = {e.fields.get("request_id"): e for e in entries if e.type == "mcp_approval_request"}
        for answer in answers:
            fields = answer.fields
            wanted = str(fields["approval_request_id"])
            asked = given.get(wanted) or await self._approval_request(wanted, chain)
            if asked is None:
                raise InvalidRequestError(f"No MCP approval request found with id '{wanted}'.", param="input")
            call = asked.fields
            if call.get("server_label") not in labels:
                raise InvalidRequestError(
                    f"Approving '{wanted}' needs the mcp tool with server_label '{call.get('server_label')}' "
                    "in 'tools', with its headers (they are not kept between responses).",
                    param="tools",
                )
            fields.update({k: call.get(k) for k in ("server_label", "name", "arguments")})

    async def _approval_request(self, request_id: str, chain: str) -> Message | None:
        for entry in await self.stores.threads.messages_by_id([request_id]):
            ours = await self.stores.threads.get(entry.thread_id, self.scope.project_id) is not None
            if entry.type == "mcp_approval_request" and ours:
                return entry
        for entry in await self.stores.threads.newest_messages(chain, 512):
            if entry.type == "mcp_approval_request" and request_id in (
                entry.id,
                entry.fields.get("request_id"),
            ):
                return entry
        return None

    async def _check_references(self, request: NewResponse) -> None:
        messages = [item for item in request.input if isinstance(item, NewItem) and item.type == "message"]
        refs = resource_refs(request.tool_resources)
        for i, message in enumerate(messages):
            refs += content_refs(message.content, f"input[{i}].")
        await self.scope.check_files(refs)
        store_ids = (request.tool_resources.get("file_search") or {}).get("vector_store_ids") or []
        if store_ids and self.scope.vector_stores is not None:
            await self.scope.vector_stores.check_store_ids(store_ids, "tools.vector_store_ids")

    async def _thread_for(self, request: NewResponse, at: int) -> tuple[Thread, bool, tuple[str, str] | None]:
        """The thread the response runs on; whether it is new; and, for a branch, the thread it is
        copied from and the last entry copied."""
        _one_continuation(request)
        if request.conversation is not None:
            return await self.get_conversation(request.conversation, param="conversation"), False, None
        fresh = Thread(
            id=new_id("thread"),
            created_at=at,
            last_active_at=at,
            project_id=self.scope.project_id,
            kind="response",
        )
        if request.previous_response_id is None:
            return fresh, True, None
        previous = await self.stores.responses.get(request.previous_response_id, self.scope.project_id)
        if previous is None:
            raise _found("Previous response", request.previous_response_id, "previous_response_id")
        if previous.status in ACTIVE:
            raise InvalidRequestError(
                f"Previous response with id '{previous.id}' is still {previous.status.value}; "
                "wait for it to finish.",
                param="previous_response_id",
            )
        thread = await self.stores.threads.get(previous.thread_id)
        assert thread is not None
        newest = await self.stores.runs.list_runs(thread.id, ListQuery(limit=1))
        if thread.kind == "response" and newest.items and newest.items[0].id == previous.id:
            return thread, False, None
        last = await self._last_entry(previous)
        if last is None:
            return fresh, True, None
        return fresh, True, (thread.id, last)

    async def _last_entry(self, response: Run) -> str | None:
        """The id of the last thread entry a response wrote or was given."""
        page = await self.stores.threads.list_messages(
            response.thread_id, ListQuery(limit=1), response.id, items=True
        )
        if page.items:
            return page.items[0].id
        inputs = response.response.input_ids if response.response else []
        return inputs[-1] if inputs else None

    async def count_input_tokens(self, request: NewResponse, route: Route) -> int:
        """The prompt tokens a response made of ``request`` would start with: its instructions, the
        conversation or previous response it continues, its input items and its tools."""
        self.scope.check_model(request.model)
        items = await self.items.resolve(request.input, request.conversation, request.previous_response_id)
        history = await self._history(request)
        given = [new_entry("", item, 0) for item in items if isinstance(item, NewItem)]
        head: list[ChatMessage] = (
            [{"role": "system", "content": request.instructions}] if request.instructions else []
        )
        entries = [message for entry in history + given for message in entry_messages(entry)]
        counter = Counter(route)
        total = await counter.messages(head + paired(entries))
        if request.tools:
            offered = [_offered(tool) for tool in request.tools]
            total += await counter.messages([{"role": "system", "content": json.dumps(offered)}])
        return total

    async def compact(
        self, request: NewResponse, route: Route, observe: ModelCallObserver | None = None
    ) -> Compaction:
        """The conversation of ``request`` (the previous response's, then its input) compacted:
        summarised by the model as a run's older messages are, and nothing stored."""
        self.scope.check_model(request.model)
        items = await self.items.resolve(request.input, None, request.previous_response_id)
        history = await self._history(request)
        given = [new_entry("", item, 0) for item in items if isinstance(item, NewItem)]
        entries = history + given
        if not entries:
            raise InvalidRequestError(
                "Nothing to compact: give 'input' or 'previous_response_id'.", param="input"
            )
        try:
            summary, usage = await summarise_entries(route, entries, observe)
        except ProviderError as exc:
            raise model_error(exc) from exc
        users = [e for e in entries if e.type == "message" and e.role == "user"]
        return Compaction(
            id=new_id("response"),
            created_at=int(time.time()),
            user_messages=users,
            item_id=new_id("compaction"),
            encrypted_content=compaction_content(summary),
            usage=usage,
        )

    async def _history(self, request: NewResponse) -> list[Message]:
        """The entries a response of ``request`` would see before its input, oldest first."""
        _one_continuation(request)
        if request.conversation is not None:
            thread = await self.get_conversation(request.conversation, param="conversation")
            return await self._entries(thread.id, None)
        if request.previous_response_id is None:
            return []
        previous = await self.stores.responses.get(request.previous_response_id, self.scope.project_id)
        if previous is None:
            raise _found("Previous response", request.previous_response_id, "previous_response_id")
        last = await self._last_entry(previous)
        return await self._entries(previous.thread_id, last) if last is not None else []

    async def _entries(self, thread_id: str, through: str | None) -> list[Message]:
        """A thread's entries, oldest first, up to ``through`` (all when ``None``)."""
        newest_first: list[Message] = []
        before: str | None = None
        while len(newest_first) < MAX_COUNTED_ENTRIES:
            page = await self.stores.threads.newest_messages(thread_id, 256, before=before)
            newest_first += page
            if len(page) < 256:
                break
            before = page[-1].id
        ids = [m.id for m in newest_first]
        if through is not None and through in ids:
            newest_first = newest_first[ids.index(through) :]
        return list(reversed(newest_first))

    async def _response(self, response_id: str) -> Run:
        run = await self.stores.responses.get(response_id, self.scope.project_id)
        if run is None or (run.response is not None and not run.response.store):
            raise _found("Response", response_id)
        return run

    async def get_response(self, response_id: str) -> ResponseView:
        return await self.view(await self._response(response_id))

    async def forget(self, run: Run) -> None:
        """Delete a finished ``store: false`` response, once its client has it."""
        if run.response is not None and not run.response.store:
            await self.stores.responses.delete(run.id)

    async def view(self, run: Run) -> ResponseView:
        steps = await self.stores.runs.steps(run.id)
        ids = [s.step_details.message_id for s in steps if isinstance(s.step_details, MessageCreation)]
        messages = {m.id: m for m in await self.stores.threads.messages_by_id(ids)} if ids else {}
        return ResponseView(run, steps, messages, await self._entries_of(run))

    async def _entries_of(self, run: Run) -> list[Message]:
        """The reasoning and MCP items the response's run wrote, oldest first."""
        if not run.thread_id:
            return []
        query = ListQuery(limit=MAX_REASONING_ITEMS, order="asc")
        page = await self.stores.threads.list_messages(run.thread_id, query, run.id, items=True)
        return [m for m in page.items if m.type == "reasoning" or m.type.startswith("mcp_")]

    async def delete_response(self, response_id: str) -> None:
        run = await self._response(response_id)
        if run.status in ACTIVE:
            await self.runs.cancel_run(run.thread_id, run.id)
        await self.stores.responses.delete(run.id)

    async def cancel_response(self, response_id: str) -> ResponseView:
        run = await self._response(response_id)
        if run.response is None or not run.response.background:
            raise InvalidRequestError("Only responses created with background=true can be cancelled.")
        if run.status in ACTIVE:
            run = await self.runs.cancel_run(run.thread_id, run.id)
        return await self.view(run)

    async def input_items(self, response_id: str, query: ListQuery) -> Page[Message]:
        run = await self._response(response_id)
        items = await self.stores.threads.messages_by_id(run.response.input_ids if run.response else [])
        return _page(items, query)

    # --- conversations ---------------------------------------------------------------------

    async def create_conversation(self, items: list[Input], metadata: dict[str, str]) -> Thread:
        at = self.scope.clock()
        given = [i for i in await self.items.resolve(items) if isinstance(i, NewItem)]
        thread = Thread(
            id=new_id("conversation"),
            created_at=at,
            metadata=metadata,
            last_active_at=at,
            project_id=self.scope.project_id,
            kind="conversation",
        )
        entries = [new_entry(thread.id, item, at) for item in given]
        await self.items.check_outputs(thread.id, entries, True)
        await self.stores.threads.insert(thread, entries)
        return thread

    async def get_conversation(self, conversation_id: str, param: str | None = None) -> Thread:
        """A conversation: any thread of the project but a response's own."""
        thread = await self.stores.threads.get(conversation_id, self.scope.project_id)
        if thread is None or thread.kind == "response":
            raise _found("Conversation", conversation_id, param)
        return thread

    async def update_conversation(self, conversation_id: str, metadata: dict[str, str]) -> Thread:
        thread = dataclasses.replace(await self.get_conversation(conversation_id), metadata=metadata)
        await self.stores.threads.update(thread)
        return thread

    async def delete_conversation(self, conversation_id: str) -> None:
        """Gone as a conversation (and as a thread); as OpenAI's, the responses made on it are kept."""
        await self.get_conversation(conversation_id)
        await self.stores.threads.retire_conversation(conversation_id)

    async def list_items(self, conversation_id: str, query: ListQuery) -> Page[Message]:
        await self.get_conversation(conversation_id)
        return await self.stores.threads.list_messages(conversation_id, query, None, items=True)

    async def add_items(self, conversation_id: str, items: list[Input]) -> list[Message]:
        await self.get_conversation(conversation_id)
        at = self.scope.clock()
        given = [i for i in await self.items.resolve(items, conversation_id) if isinstance(i, NewItem)]
        entries = [new_entry(conversation_id, item, at) for item in given]
        await self.items.check_outputs(conversation_id, entries, False)
        try:
            for entry in entries:
                await self.stores.threads.insert_message(entry)
        except ThreadLockedError as locked:
            raise InvalidRequestError(
                f"Can't add items to {conversation_id} while {locked.run_id} is in progress on it.",
                code="conversation_locked",
            ) from None
        return entries

    async def get_item(self, conversation_id: str, item_id: str) -> Message:
        await self.get_conversation(conversation_id)
        item = await self.stores.threads.get_message(conversation_id, item_id, items=True)
        if item is None:
            raise _found("Item", item_id)
        return item

    async def delete_item(self, conversation_id: str, item_id: str) -> Thread:
        thread = await self.get_conversation(conversation_id)
        if not await self.stores.threads.delete_message(conversation_id, item_id, items=True):
            raise _found("Item", item_id)
        return thread


def _offered(tool: dict[str, Any]) -> dict[str, Any]:
    """A run engine tool as the model is offered it (a built-in tool as its function)."""
    spec = FUNCTIONS.get(str(tool.get("type")))
    if spec is None:
        return tool
    return {
        "type": "function",
        "function": {"name": spec.name, "description": spec.description, "parameters": spec.parameters},
    }


def _page(items: list[Message], query: ListQuery) -> Page[Message]:
    """A page of a short list already in memory, by OpenAI's cursor rules."""
    ordered = list(reversed(items)) if query.order == "desc" else list(items)
    ids = [m.id for m in ordered]
    if query.after in ids:
        ordered = ordered[ids.index(query.after) + 1 :]
    elif query.before in ids:
        ordered = ordered[: ids.index(query.before)]
    return Page(ordered[: query.limit], has_more=len(ordered) > query.limit)


def _one_continuation(request: NewResponse) -> None:
    if request.conversation is not None and request.previous_response_id is not None:
        raise InvalidRequestError(
            "Mutually exclusive parameters: 'previous_response_id' and 'conversation'. "
            "Ensure you are only providing one of them.",
            param="conversation",
        )
