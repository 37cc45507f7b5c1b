"""Input items of the Responses and Conversations APIs: what they are, and resolving them to entries.

An input item is parsed (``api/response_parsing.py``) into a :class:`NewItem`, or an
:class:`ItemReference` naming a stored one. Before a response or a conversation takes them,
``ItemResolver.resolve`` replaces each reference by a copy of the item it names, fills in the
results of file search calls given back without them (and the pages a web search call of this
server read: ``WEB_SEARCH_READ``), and reads ``input_file`` parts; each item
then becomes a thread entry (``new_entry``). A compaction item carries its summary encoded in its
``encrypted_content`` (``compaction_content``).
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
from dataclasses import dataclass
from typing import Any

from threadline.domain.content import ItemFields, Part, PendingFile
from threadline.domain.entities import BuiltinCall, ItemType, ListQuery, Message, MessageRole, ToolCalls
from threadline.domain.scope import Scope
from threadline.domain.steps import WEB_SEARCH_READ, FileSearchDetails, LogsOutput, WebSearchDetails
from threadline.errors import InvalidRequestError
from threadline.ids import builtin_item_id, container_id, new_id

HOSTED_PREFIXES = tuple(
    builtin_item_id(kind, "") for kind in ("file_search", "code_interpreter", "web_search")
)
HOSTED_SEARCH_THREADS = 64
HOSTED_SEARCH_RUNS = 32
"""How far a reference to a built-in call's item is looked for: the newest runs of the threads the
request's other items (or its conversation) come from."""


@dataclass(frozen=True, slots=True)
class NewItem:
    """An input item, parsed: a message (``content`` its parts) or another item (``content`` the one
    :class:`ItemFields` part holding its fields)."""

    type: ItemType
    role: MessageRole
    content: list[Part]
    given_id: str | None = None
    """The id the client sent with the item (one this server may have issued), else ``None``."""

    @property
    def fields(self) -> dict[str, Any]:
        part = self.content[0]
        assert isinstance(part, ItemFields), f"a {self.type} item has no item fields"
        return part.fields


@dataclass(frozen=True, slots=True)
class ItemReference:
    """An input item given by the id of a stored one (``param`` names it, for the error if unknown)."""

    id: str
    param: str


Input = NewItem | ItemReference


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


class ItemResolver:
    """Resolves and checks the input items of one project (the ``Scope`` says which)."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.stores = scope.stores

    async def resolve(
        self, items: list[Input], conversation: str | None = None, previous_response_id: str | None = None
    ) -> list[Input]:
        """``items`` with each ``item_reference`` replaced by a copy of the item it names: a thread
        entry of this project, or a built-in call a response of it made (found in the runs of the
        threads the other items come from, of ``conversation`` or of the previous response).

        A file search call given back without its results (the Agents SDK's and LangChain's
        default) whose id is one of those calls gets the results the call found, as the model
        would see them in a continued response; a web search call given back gets the pages its
        call read in the same way (never the client's: ``WEB_SEARCH_READ``)."""
        items = await self._read_files(items)
        wanted = [item for item in items if isinstance(item, ItemReference)]
        bare = {
            item.given_id
            for item in items
            if isinstance(item, NewItem)
            and (
                (item.type == "file_search_call" and item.fields.get("results") is None)
                or item.type == "web_search_call"
            )
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
        for entry in await self.stores.threads.messages_by_id([r.id for r in wanted] + given):
            if entry.thread_id not in threads:
                thread = await self.stores.threads.get(entry.thread_id, self.scope.project_id)
                threads[entry.thread_id] = thread is not None
            if threads[entry.thread_id]:
                found[entry.id] = NewItem(entry.type, entry.role, copy.deepcopy(entry.content))
        missing = {r.id for r in wanted if r.id not in found and r.id.startswith(HOSTED_PREFIXES)}
        missing |= {i for i in bare if i not in found or not _kept(found[i])}
        if missing:
            if conversation is not None and conversation not in threads:
                threads[conversation] = (
                    await self.stores.threads.get(conversation, self.scope.project_id) is not None
                )
            if previous_response_id is not None:
                previous = await self.stores.responses.get(previous_response_id, self.scope.project_id)
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
                kept = found[item.given_id].fields.get("results")
                if item.type == "web_search_call" and _kept(found[item.given_id]):
                    item = NewItem(item.type, item.role, found[item.given_id].content, item.given_id)
                elif kept is not None:
                    item = NewItem(
                        item.type, item.role, [ItemFields({**item.fields, "results": kept})], item.given_id
                    )
                out.append(item)
            else:
                out.append(item)
        return out

    async def _read_files(self, items: list[Input]) -> list[Input]:
        """``items`` with their messages' ``input_file`` parts read (see ``domain/input_files.py``)."""
        out: list[Input] = []
        for item in items:
            if isinstance(item, NewItem) and any(isinstance(part, PendingFile) for part in item.content):
                if self.scope.input_files is None:
                    raise InvalidRequestError("This server does not read input files.")
                item = NewItem(
                    item.type, item.role, await self.scope.input_files.read(item.content, self.scope.files)
                )
            out.append(item)
        return out

    async def _hosted_calls(self, thread_ids: list[str], item_ids: set[str]) -> dict[str, NewItem]:
        """The built-in calls among ``item_ids`` (``fs_X``/``ci_X`` for call ``call_X``) made by the
        newest runs of ``thread_ids``, as input items."""
        out: dict[str, NewItem] = {}
        for thread_id in thread_ids[:HOSTED_SEARCH_THREADS]:
            runs = await self.stores.runs.list_runs(thread_id, ListQuery(limit=HOSTED_SEARCH_RUNS))
            for run in runs.items:
                for step in await self.stores.runs.steps(run.id):
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

    async def check_outputs(self, thread_id: str, items: list[Message], fresh: bool) -> None:
        """A function call output must answer a call of this conversation (or of the same input)."""
        wanted = [m.fields["call_id"] for m in items if m.type == "function_call_output"]
        if not wanted:
            return
        known = {m.fields["call_id"] for m in items if m.type == "function_call"}
        if not fresh:
            recent = await self.stores.threads.newest_messages(thread_id, 256)
            known |= {m.fields["call_id"] for m in recent if m.type == "function_call"}
        for call_id in wanted:
            if call_id not in known:
                raise InvalidRequestError(
                    f"No tool call found for function call output with call_id {call_id}.", param="input"
                )


def _kept(item: NewItem) -> bool:
    """Whether a stored built-in call has what the model was told: a file search's results, the
    pages a web search read."""
    if item.type == "web_search_call":
        return WEB_SEARCH_READ in item.fields
    return item.fields.get("results") is not None


def new_entry(thread_id: str, item: NewItem, at: int) -> Message:
    """An input item as the thread entry it becomes."""
    return Message(
        id=new_id(item.type),
        thread_id=thread_id,
        created_at=at,
        role=item.role,
        content=item.content,
        type=item.type,
        completed_at=at,
    )


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
        return NewItem("file_search_call", "assistant", [ItemFields(fields)])
    if isinstance(details, WebSearchDetails):
        fields = web_search_fields(details)
        if not details.error:
            pages = [{"url": s.url, "title": s.title} for s in details.sources]
            fields[WEB_SEARCH_READ] = {"pages": pages, "text": call.output}
        return NewItem("web_search_call", "assistant", [ItemFields(fields)])
    outputs = [
        {"type": "logs", "logs": o.logs}
        if isinstance(o, LogsOutput)
        else {"type": "image", "url": f"/v1/files/{o.file_id}/content"}
        for o in details.outputs
    ]
    return NewItem(
        "code_interpreter_call",
        "assistant",
        [ItemFields({"code": details.input, "container_id": container_id(thread_id), "outputs": outputs})],
    )


def web_search_fields(details: WebSearchDetails) -> dict[str, Any]:
    """A web search call as a ``web_search_call`` item carries it: its status and its action."""
    action = {
        "type": "search",
        "query": details.query,
        "sources": [{"type": "url", "url": source.url} for source in details.sources],
    }
    return {"status": "failed" if details.error else "completed", "action": action}


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
