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
"""

from __future__ import annotations

import base64
import binascii
import copy
import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from threadline.domain.chat import model_error
from threadline.domain.context import Counter, entry_messages, paired, summarise_entries
from threadline.domain.entities import (
    BuiltinCall,
    ItemType,
    ListQuery,
    Message,
    MessageCreation,
    MessageRole,
    Page,
    Run,
    RunStep,
    Thread,
    ToolCalls,
)
from threadline.domain.files import referenced_files
from threadline.domain.input_files import pending
from threadline.domain.model_calls import ModelCallObserver
from threadline.domain.ports.models import ChatMessage, ProviderError, Route, Usage
from threadline.domain.ports.storage import ThreadLockedError
from threadline.domain.ports.tools import FUNCTIONS
from threadline.domain.run_states import ACTIVE
from threadline.domain.services import Services
from threadline.domain.steps import FileSearchDetails, LogsOutput
from threadline.errors import InvalidRequestError, NotFoundError
from threadline.ids import builtin_item_id, container_id, new_id

MAX_REASONING_ITEMS = 1000
"""The most entries of one response (its reasoning items, its function calls) read for its output."""
MAX_COUNTED_ENTRIES = 10_000
"""The most entries of a conversation ``count_input_tokens`` reads."""
HOSTED_PREFIXES = (builtin_item_id("file_search", ""), builtin_item_id("code_interpreter", ""))
HOSTED_SEARCH_THREADS = 64
HOSTED_SEARCH_RUNS = 32
"""How far a reference to a built-in call's item is looked for: the newest runs of the threads the
request's other items (or its conversation) come from."""


@dataclass(frozen=True, slots=True)
class NewItem:
    """An input item, parsed: a message (``content`` as stored message parts) or a function call or
    output (``content`` is the one part holding the item's fields)."""

    type: ItemType
    role: MessageRole
    content: list[dict[str, Any]]
    given_id: str | None = None
    """The id the client sent with the item (one this server may have issued), else ``None``."""


@dataclass(frozen=True, slots=True)
class ItemReference:
    """An input item given by the id of a stored one (``param`` names it, for the error if unknown)."""

    id: str
    param: str


Input = NewItem | ItemReference


@dataclass(slots=True)
class NewResponse:
    """A create-response request, parsed. ``tools`` are in the run engine's form (functions nested
    under ``function``); ``settings`` are the fields echoed back that the engine does not use."""

    model: str
    input: list[Input]
    instructions: str | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_resources: dict[str, Any] = field(default_factory=dict)
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True
    response_format: Any = "auto"
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    truncation: Literal["auto", "disabled"] = "disabled"
    previous_response_id: str | None = None
    conversation: str | None = None
    reasoning_effort: str | None = None
    background: bool = False
    store: bool = True
    settings: dict[str, Any] = field(default_factory=dict)


COMPACTION_PREFIX = "tlc1."
"""How the ``encrypted_content`` of this server's compaction items begins (then base64 JSON)."""


def compaction_content(summary: str) -> str:
    """A compaction item's ``encrypted_content``: its summary, encoded (not encrypted: it is what the
    client could as well have sent as a message)."""
    # A model's lone surrogates and NULs cannot be stored when the item comes back: replaced.
    kept = summary.replace("\x00", "").encode("utf-8", "replace").decode()
    data = json.dumps({"summary": kept}, ensure_ascii=False).encode()
    return COMPACTION_PREFIX + base64.urlsafe_b64encode(data).decode()


def compaction_summary(content: str) -> str | None:
    """The summary a compaction item's ``encrypted_content`` carries; ``None`` if it was not made here."""
    if not content.startswith(COMPACTION_PREFIX):
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(content[len(COMPACTION_PREFIX) :].encode()))
    except (binascii.Error, ValueError):
        return None
    summary = value.get("summary") if isinstance(value, dict) else None
    return summary if isinstance(summary, str) and "\x00" not in summary else None


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
    reasoning: list[Message] = field(default_factory=list)
    """The model's reasoning items, each shown before what its turn (``metadata["turn"]``) wrote."""


def _found(kind: str, object_id: str, param: str | None = None) -> NotFoundError:
    return NotFoundError(f"{kind} with id '{object_id}' not found.", param=param)


class ResponseService:
    """Responses and conversations for one project (the ``Services`` it wraps say which)."""

    def __init__(self, services: Services) -> None:
        self.svc = services
        self.store = services.store

    # --- responses -------------------------------------------------------------------------

    async def create_response(self, request: NewResponse, response_id: str | None = None) -> Run:
        """Queue a response. Stream followers subscribe to ``response_id`` before calling."""
        svc = self.svc
        svc.check_model(request.model)
        request.input = await self.resolve(request.input, request.conversation, request.previous_response_id)
        await self._check_references(request)
        created_at = svc.clock()
        run = Run(
            id=response_id or new_id("response"),
            thread_id="",
            assistant_id="",
            created_at=created_at,
            model=request.model,
            instructions=request.instructions or "",
            tools=request.tools,
            metadata=request.metadata,
            expires_at=created_at + svc.run_expiry_seconds,
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
            self._entry(thread.id, item, created_at) for item in request.input if isinstance(item, NewItem)
        ]
        # A branch's calls are in the thread it copies, which is not written yet.
        await self._check_outputs(source[0] if source else thread.id, items, new_thread and source is None)
        run.response = {
            **request.settings,
            "previous_response_id": request.previous_response_id,
            "conversation": thread.id if thread.kind != "response" else None,
            "background": request.background,
            "store": request.store,
            "tool_resources": request.tool_resources,
            "input_ids": [item.id for item in items],
        }
        await svc.announce(run)
        try:
            if new_thread and source is None:
                await self.store.insert_thread(thread, items, run)
            else:
                if source is not None:
                    await self.store.copy_thread(source[0], thread, source[1])
                await self.store.insert_run(run, items)
        except ThreadLockedError as locked:
            raise InvalidRequestError(
                f"Another response or run ({locked.run_id}) is in progress on conversation {thread.id}; "
                "wait for it to finish.",
                param="conversation",
                code="conversation_locked",
            ) from None
        await svc.bus.notify_work()
        return run

    async def _check_references(self, request: NewResponse) -> None:
        messages = [
            {"content": item.content}
            for item in request.input
            if isinstance(item, NewItem) and item.type == "message"
        ]
        fields = {"input": messages, "tool_resources": request.tool_resources}
        await self.svc.files.check_references(referenced_files(fields))
        store_ids = (request.tool_resources.get("file_search") or {}).get("vector_store_ids") or []
        if store_ids and self.svc.vector_stores is not None:
            await self.svc.vector_stores.check_store_ids(store_ids, "tools.vector_store_ids")

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
            project_id=self.svc.project_id,
            kind="response",
        )
        if request.previous_response_id is None:
            return fresh, True, None
        previous = await self.store.get_response(request.previous_response_id, self.svc.project_id)
        if previous is None:
            raise _found("Previous response", request.previous_response_id, "previous_response_id")
        if previous.status in ACTIVE:
            raise InvalidRequestError(
                f"Previous response with id '{previous.id}' is still {previous.status.value}; "
                "wait for it to finish.",
                param="previous_response_id",
            )
        thread = await self.store.get_thread(previous.thread_id)
        assert thread is not None
        newest = await self.store.list_runs(thread.id, ListQuery(limit=1))
        if thread.kind == "response" and newest.items and newest.items[0].id == previous.id:
            return thread, False, None
        last = await self._last_entry(previous)
        if last is None:
            return fresh, True, None
        return fresh, True, (thread.id, last)

    async def _last_entry(self, response: Run) -> str | None:
        """The id of the last thread entry a response wrote or was given."""
        page = await self.store.list_messages(response.thread_id, ListQuery(limit=1), response.id, items=True)
        if page.items:
            return page.items[0].id
        inputs = (response.response or {}).get("input_ids") or []
        return inputs[-1] if inputs else None

    async def resolve(
        self, items: list[Input], conversation: str | None = None, previous_response_id: str | None = None
    ) -> list[Input]:
        """``items`` with each ``item_reference`` replaced by a copy of the item it names: a thread
        entry of this project, or a built-in call a response of it made (found in the runs of the
        threads the other items come from, of ``conversation`` or of the previous response).

        A file search call given back without its results (the Agents SDK's and LangChain's
        default) whose id is one of those calls gets the results the call found, as the model
        would see them in a continued response."""
        items = await self._read_files(items)
        wanted = [item for item in items if isinstance(item, ItemReference)]
        bare = {
            item.given_id
            for item in items
            if isinstance(item, NewItem)
            and item.type == "file_search_call"
            and item.content[0].get("results") is None
            and item.given_id is not None
            and item.given_id.startswith(HOSTED_PREFIXES)
        }
        if not wanted and not bare:
            return items
        given = [
            i.given_id for i in items if isinstance(i, NewItem) and i.given_id and len(i.given_id) <= 128
        ]
        found: dict[str, NewItem] = {}
        threads: dict[str, bool] = {}
        for entry in await self.store.messages_by_id([r.id for r in wanted] + given):
            if entry.thread_id not in threads:
                thread = await self.store.get_thread(entry.thread_id, self.svc.project_id)
                threads[entry.thread_id] = thread is not None
            if threads[entry.thread_id]:
                found[entry.id] = NewItem(entry.type, entry.role, copy.deepcopy(entry.content))
        missing = {r.id for r in wanted if r.id not in found and r.id.startswith(HOSTED_PREFIXES)}
        missing |= {i for i in bare if i not in found or found[i].content[0].get("results") is None}
        if missing:
            if conversation is not None and conversation not in threads:
                threads[conversation] = (
                    await self.store.get_thread(conversation, self.svc.project_id) is not None
                )
            if previous_response_id is not None:
                previous = await self.store.get_response(previous_response_id, self.svc.project_id)
                if previous is not None:
                    threads[previous.thread_id] = True
            searched = [t for t, ours in threads.items() if ours]
            found.update(await self._hosted_calls(searched, missing))
        out: list[Input] = []
        for item in items:
            if isinstance(item, ItemReference):
                if item.id not in found:
                    raise InvalidRequestError(f"Item with id '{item.id}' not found.", param=item.param)
                out.append(found[item.id])
            elif item.given_id in bare and item.given_id in found and found[item.given_id].type == item.type:
                kept = found[item.given_id].content[0].get("results")
                if kept is not None:
                    item = NewItem(
                        item.type, item.role, [{**item.content[0], "results": kept}], item.given_id
                    )
                out.append(item)
            else:
                out.append(item)
        return out

    async def _read_files(self, items: list[Input]) -> list[Input]:
        """``items`` with their messages' ``input_file`` parts read (see ``domain/input_files.py``)."""
        out: list[Input] = []
        for item in items:
            if isinstance(item, NewItem) and any(pending(part) for part in item.content):
                if self.svc.input_files is None:
                    raise InvalidRequestError("This server does not read input files.")
                item = NewItem(
                    item.type, item.role, await self.svc.input_files.read(item.content, self.svc.files)
                )
            out.append(item)
        return out

    async def count_input_tokens(self, request: NewResponse, route: Route) -> int:
        """The prompt tokens a response made of ``request`` would start with: its instructions, the
        conversation or previous response it continues, its input items and its tools."""
        self.svc.check_model(request.model)
        items = await self.resolve(request.input, request.conversation, request.previous_response_id)
        history = await self._history(request)
        given = [self._entry("", item, 0) for item in items if isinstance(item, NewItem)]
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
        self.svc.check_model(request.model)
        items = await self.resolve(request.input, None, request.previous_response_id)
        history = await self._history(request)
        given = [self._entry("", item, 0) for item in items if isinstance(item, NewItem)]
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
        previous = await self.store.get_response(request.previous_response_id, self.svc.project_id)
        if previous is None:
            raise _found("Previous response", request.previous_response_id, "previous_response_id")
        last = await self._last_entry(previous)
        return await self._entries(previous.thread_id, last) if last is not None else []

    async def _entries(self, thread_id: str, through: str | None) -> list[Message]:
        """A thread's entries, oldest first, up to ``through`` (all when ``None``)."""
        newest_first: list[Message] = []
        before: str | None = None
        while len(newest_first) < MAX_COUNTED_ENTRIES:
            page = await self.store.newest_messages(thread_id, 256, before=before)
            newest_first += page
            if len(page) < 256:
                break
            before = page[-1].id
        ids = [m.id for m in newest_first]
        if through is not None and through in ids:
            newest_first = newest_first[ids.index(through) :]
        return list(reversed(newest_first))

    async def _hosted_calls(self, thread_ids: list[str], item_ids: set[str]) -> dict[str, NewItem]:
        """The built-in calls among ``item_ids`` (``fs_X``/``ci_X`` for call ``call_X``) made by the
        newest runs of ``thread_ids``, as input items."""
        out: dict[str, NewItem] = {}
        for thread_id in thread_ids[:HOSTED_SEARCH_THREADS]:
            runs = await self.store.list_runs(thread_id, ListQuery(limit=HOSTED_SEARCH_RUNS))
            for run in runs.items:
                for step in await self.store.run_steps(run.id):
                    if not isinstance(step.step_details, ToolCalls):
                        continue
                    for call in step.step_details.calls:
                        if isinstance(call, BuiltinCall):
                            item = hosted_item(call, run.thread_id)
                            if item is not None and builtin_item_id(call.type, call.id) in item_ids:
                                out[builtin_item_id(call.type, call.id)] = item
                if len(out) == len(item_ids):
                    return out
        return out

    def _entry(self, thread_id: str, item: NewItem, at: int) -> Message:
        return Message(
            id=new_id(item.type),
            thread_id=thread_id,
            created_at=at,
            role=item.role,
            content=item.content,
            type=item.type,
            completed_at=at,
        )

    async def _check_outputs(self, thread_id: str, items: list[Message], fresh: bool) -> None:
        """A function call output must answer a call of this conversation (or of the same input)."""
        wanted = [m.content[0]["call_id"] for m in items if m.type == "function_call_output"]
        if not wanted:
            return
        known = {m.content[0]["call_id"] for m in items if m.type == "function_call"}
        if not fresh:
            recent = await self.store.newest_messages(thread_id, 256)
            known |= {m.content[0]["call_id"] for m in recent if m.type == "function_call"}
        for call_id in wanted:
            if call_id not in known:
                raise InvalidRequestError(
                    f"No tool call found for function call output with call_id {call_id}.", param="input"
                )

    async def _response(self, response_id: str) -> Run:
        run = await self.store.get_response(response_id, self.svc.project_id)
        if run is None or (run.response or {}).get("store") is False:
            raise _found("Response", response_id)
        return run

    async def get_response(self, response_id: str) -> ResponseView:
        return await self.view(await self._response(response_id))

    async def forget(self, run: Run) -> None:
        """Delete a finished ``store: false`` response, once its client has it."""
        if (run.response or {}).get("store") is False:
            await self.store.delete_response(run.id)

    async def view(self, run: Run) -> ResponseView:
        steps = await self.store.run_steps(run.id)
        ids = [s.step_details.message_id for s in steps if isinstance(s.step_details, MessageCreation)]
        messages = {m.id: m for m in await self.store.messages_by_id(ids)} if ids else {}
        return ResponseView(run, steps, messages, await self._reasoning(run))

    async def _reasoning(self, run: Run) -> list[Message]:
        """The reasoning items the response's model calls wrote, oldest first."""
        if not run.thread_id:
            return []
        query = ListQuery(limit=MAX_REASONING_ITEMS, order="asc")
        page = await self.store.list_messages(run.thread_id, query, run.id, items=True)
        return [m for m in page.items if m.type == "reasoning"]

    async def delete_response(self, response_id: str) -> None:
        run = await self._response(response_id)
        if run.status in ACTIVE:
            await self.svc.cancel_run(run.thread_id, run.id)
        await self.store.delete_response(run.id)

    async def cancel_response(self, response_id: str) -> ResponseView:
        run = await self._response(response_id)
        if not (run.response or {}).get("background"):
            raise InvalidRequestError("Only responses created with background=true can be cancelled.")
        if run.status in ACTIVE:
            run = await self.svc.cancel_run(run.thread_id, run.id)
        return await self.view(run)

    async def input_items(self, response_id: str, query: ListQuery) -> Page[Message]:
        run = await self._response(response_id)
        items = await self.store.messages_by_id((run.response or {}).get("input_ids") or [])
        return _page(items, query)

    # --- conversations ---------------------------------------------------------------------

    async def create_conversation(self, items: list[Input], metadata: dict[str, str]) -> Thread:
        at = self.svc.clock()
        given = [i for i in await self.resolve(items) if isinstance(i, NewItem)]
        thread = Thread(
            id=new_id("conversation"),
            created_at=at,
            metadata=metadata,
            last_active_at=at,
            project_id=self.svc.project_id,
            kind="conversation",
        )
        entries = [self._entry(thread.id, item, at) for item in given]
        await self._check_outputs(thread.id, entries, True)
        await self.store.insert_thread(thread, entries)
        return thread

    async def get_conversation(self, conversation_id: str, param: str | None = None) -> Thread:
        """A conversation: any thread of the project but a response's own."""
        thread = await self.store.get_thread(conversation_id, self.svc.project_id)
        if thread is None or thread.kind == "response":
            raise _found("Conversation", conversation_id, param)
        return thread

    async def update_conversation(self, conversation_id: str, metadata: dict[str, str]) -> Thread:
        thread = dataclasses.replace(await self.get_conversation(conversation_id), metadata=metadata)
        await self.store.update_thread(thread)
        return thread

    async def delete_conversation(self, conversation_id: str) -> None:
        """Gone as a conversation (and as a thread); as OpenAI's, the responses made on it are kept."""
        await self.get_conversation(conversation_id)
        await self.store.retire_conversation(conversation_id)

    async def list_items(self, conversation_id: str, query: ListQuery) -> Page[Message]:
        await self.get_conversation(conversation_id)
        return await self.store.list_messages(conversation_id, query, None, items=True)

    async def add_items(self, conversation_id: str, items: list[Input]) -> list[Message]:
        await self.get_conversation(conversation_id)
        at = self.svc.clock()
        given = [i for i in await self.resolve(items, conversation_id) if isinstance(i, NewItem)]
        entries = [self._entry(conversation_id, item, at) for item in given]
        await self._check_outputs(conversation_id, entries, False)
        try:
            for entry in entries:
                await self.store.insert_message(entry)
        except ThreadLockedError as locked:
            raise InvalidRequestError(
                f"Can't add items to {conversation_id} while {locked.run_id} is in progress on it.",
                code="conversation_locked",
            ) from None
        return entries

    async def get_item(self, conversation_id: str, item_id: str) -> Message:
        await self.get_conversation(conversation_id)
        item = await self.store.get_message(conversation_id, item_id, items=True)
        if item is None:
            raise _found("Item", item_id)
        return item

    async def delete_item(self, conversation_id: str, item_id: str) -> Thread:
        thread = await self.get_conversation(conversation_id)
        if not await self.store.delete_message(conversation_id, item_id, items=True):
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


def hosted_item(call: BuiltinCall, thread_id: str) -> NewItem | None:
    """A finished built-in call of a run as the input item that gives it back."""
    details = call.details
    if call.output is None:
        return None
    if isinstance(details, FileSearchDetails):
        try:
            arguments = json.loads(call.arguments or "{}")
        except ValueError:
            arguments = {}
        query = arguments.get("query") if isinstance(arguments, dict) else None
        fields = {"queries": [str(query)] if query else [], "results": search_results(details)}
        return NewItem("file_search_call", "assistant", [fields])
    outputs = [
        {"type": "logs", "logs": o.logs}
        if isinstance(o, LogsOutput)
        else {"type": "image", "url": f"/v1/files/{o.file_id}/content"}
        for o in details.outputs
    ]
    return NewItem(
        "code_interpreter_call",
        "assistant",
        [{"code": details.input, "container_id": container_id(thread_id), "outputs": outputs}],
    )


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


def search_results(details: FileSearchDetails) -> list[dict[str, Any]]:
    """A file search call's results as a ``file_search_call`` item carries them."""
    return [
        {
            "file_id": r.file_id,
            "filename": r.file_name,
            "score": r.score,
            "text": "\n".join(r.content),
            "attributes": {},
        }
        for r in details.results
    ]
