"""A response's run events as the Responses API's stream: ``response.created`` ... ``response.completed``.

``ResponseEvents`` turns the run engine's events (``domain/events.py``) into OpenAI's Responses
events, numbering them with ``sequence_number`` from 0. Output items are numbered
(``output_index``) in the order they begin, which is the order of the run's steps, so the final
response's ``output`` lists them in the same order. The stream ends after the event that ends the
response (``response.completed``, ``.incomplete``, ``.failed``); unlike the Assistants stream, there
is no ``[DONE]`` line.

A run taken over after its worker died redoes its unfinished turn (``domain/run_loop.py``), reusing the
message id it had begun. The translation carries on as if nothing happened: the response's opening
events are sent once, an item already shown is not added again, and a redone answer's text is sent
only past what the stream already carried. A background response's stream is recorded so it can be
picked up again (``response_recording.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from threadline.api.response_objects import (
    MCP_FIELDS,
    builtin_item,
    content_parts,
    function_call_item,
    item_object,
    message_item,
    response_annotation,
    response_object,
    web_search_item,
)
from threadline.api.sse import pieces
from threadline.domain.entities import (
    BuiltinCall,
    FunctionCall,
    Message,
    Run,
    RunStep,
    ToolCalls,
)
from threadline.domain.events import (
    BuiltinCallDelta,
    Event,
    ImageDelta,
    MessageDelta,
    ObjectEvent,
    ReasoningDelta,
    StepDelta,
)
from threadline.domain.ports.citations import MarkerFilter, strip_markers
from threadline.domain.responses import ResponseService, ResponseView
from threadline.domain.run_states import TERMINAL, RunStatus
from threadline.domain.steps import WebSearchDetails
from threadline.ids import builtin_item_id, call_item_id, container_id

Obj = dict[str, Any]

ENDING = {
    RunStatus.COMPLETED: "response.completed",
    RunStatus.REQUIRES_ACTION: "response.completed",
    RunStatus.INCOMPLETE: "response.incomplete",
    RunStatus.FAILED: "response.failed",
    RunStatus.EXPIRED: "response.failed",
    RunStatus.CANCELLED: "response.failed",
}
FINAL = frozenset({*ENDING.values(), "error"})
"""The event types after which a response's stream ends."""


@dataclass
class _Text:
    raw: str = ""
    markers: MarkerFilter = field(default_factory=MarkerFilter)


@dataclass
class _Item:
    index: int
    id: str
    kind: str
    parts: set[int] = field(default_factory=set)
    name: str = ""
    arguments: str = ""
    done: bool = False


class ResponseEvents:
    """Translates one response's run events; ``finished`` once the response has ended."""

    def __init__(self, responses: ResponseService, run: Run) -> None:
        self.responses = responses
        self.run = run
        self.sequence = 0
        self.items: dict[str, _Item] = {}
        """Output items by the engine's key: a message id, or a call id."""
        self.calls: dict[tuple[str, int], str] = {}
        """Call ids by step id and position, for deltas that name only their position."""
        self.finished = False
        self.claims = run.claims
        """The claim whose events arrive: a higher one is a redo after a takeover."""
        self.opened: set[str] = set()
        """The response's opening events already sent (``response.created`` ...), each sent once."""
        self.sent: dict[tuple[str, int], int] = {}
        """Characters of each content part (by item id and part) the stream has carried."""
        self.seen: dict[tuple[str, int], int] = {}
        """Characters of each content part the current claim's turn has produced."""
        self.annotations: dict[tuple[str, int], int] = {}
        """Annotations of each content part the stream has carried."""
        self.texts: dict[tuple[str, int], _Text] = {}
        """Each text part's text as the current claim's turn wrote it, and what is held back of it
        (a citation marker's start). ``sent`` and ``seen`` count the text shown, markers cut out."""

    @classmethod
    def resumed(cls, responses: ResponseService, run: Run, recorded: list[Obj]) -> ResponseEvents:
        """The translation state a recorded stream leaves: its numbering, its items, the text it carried."""
        events = cls(responses, run)
        events.claims = 0
        by_id: dict[str, _Item] = {}
        for event in recorded:
            kind = event["type"]
            events.sequence = event["sequence_number"] + 1
            if kind in FINAL:
                events.finished = True
            elif kind in _OPENING:
                events.opened.add(kind)
            elif kind == "response.output_item.added":
                added = event["item"]
                own = added["type"] in ("message", "reasoning", *MCP_FIELDS)
                key = added["id"] if own else added.get("call_id") or _call_id(added)
                by_id[added["id"]] = events._item(key, added["id"], added["type"])
            elif kind == "response.output_item.done" and event["item"]["id"] in by_id:
                by_id[event["item"]["id"]].done = True
            elif kind == "response.content_part.added" and event["item_id"] in by_id:
                by_id[event["item_id"]].parts.add(event["content_index"])
            elif kind in ("response.output_text.delta", "response.refusal.delta"):
                at = (event["item_id"], event["content_index"])
                events.sent[at] = events.sent.get(at, 0) + len(event["delta"])
            elif kind == "response.reasoning_summary_text.delta":
                at = (event["item_id"], event["summary_index"])
                events.sent[at] = events.sent.get(at, 0) + len(event["delta"])
            elif kind == "response.output_text.annotation.added":
                at = (event["item_id"], event["content_index"])
                events.annotations[at] = max(events.annotations.get(at, 0), event["annotation_index"] + 1)
        return events

    def error(self, message: str) -> Obj:
        self.finished = True
        return self._event("error", code="server_error", message=message, param=None)

    def _event(self, kind: str, **fields: Any) -> Obj:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def _item(self, key: str, item_id: str, kind: str) -> _Item:
        item = self.items[key] = _Item(len(self.items), item_id, kind)
        return item

    async def translate(self, event: Event) -> list[Obj]:
        if isinstance(event, ObjectEvent):
            obj = event.obj
            if isinstance(obj, Run):
                return await self._run(event.name, obj)
            if isinstance(obj, Message) and obj.type in MCP_FIELDS:
                return self._mcp(event.name, obj)
            if isinstance(obj, Message):
                return self._message(event.name, obj)
            if isinstance(obj, RunStep):
                return self._step(obj)
            return []
        if isinstance(event, MessageDelta):
            return self._text(event)
        if isinstance(event, ReasoningDelta):
            return self._reasoning(event)
        if isinstance(event, StepDelta):
            return self._arguments(event)
        if isinstance(event, BuiltinCallDelta):
            return self._builtin(event)
        if isinstance(event, ImageDelta):
            return []  # a Responses message holds no images: charts are the call's outputs
        error = self.error(event.message)
        error["code"] = event.code
        return [error]

    async def _run(self, name: str, run: Run) -> list[Obj]:
        self.run = run
        if run.claims > self.claims:
            # Claimed again: the turn a dead worker left unfinished is redone from its start.
            self.claims = run.claims
            self.seen.clear()
            self.texts.clear()
        if name == "thread.run.created":
            return self._opening("response.created", run)
        if run.status is RunStatus.QUEUED and run.response is not None and run.response.background:
            return self._opening("response.queued", run)
        if name == "thread.run.in_progress":
            return self._opening("response.in_progress", run)
        if run.status in TERMINAL or run.status is RunStatus.REQUIRES_ACTION:
            self.finished = True
            view = await self.responses.view(run)
            return [self._event(ENDING[run.status], response=response_object(view))]
        return []

    def _opening(self, kind: str, run: Run) -> list[Obj]:
        if kind in self.opened:
            return []
        self.opened.add(kind)
        return [self._event(kind, response=self._snapshot(run))]

    def _snapshot(self, run: Run) -> Obj:
        # A streamed response is being worked on from the start (OpenAI's says so in
        # response.created); only a background one waits in a queue, as far as its client is told.
        queued = run.status is RunStatus.QUEUED and not (run.response and run.response.background)
        return response_object(ResponseView(run, [], {}), status="in_progress" if queued else None)

    def _message(self, name: str, message: Message) -> list[Obj]:
        if name == "thread.message.created":
            if message.id in self.items:
                return []  # a redone turn's message, shown already
            item = self._item(message.id, message.id, "message")
            added = {**message_item(message), "content": []}
            return [self._event("response.output_item.added", output_index=item.index, item=added)]
        if message.status == "in_progress" or message.id not in self.items:
            return []
        item = self.items[message.id]
        out: list[Obj] = []
        at = {"item_id": item.id, "output_index": item.index}
        for index, part in enumerate(content_parts(message)):
            if index not in item.parts:
                out.append(
                    self._event("response.content_part.added", **at, content_index=index, part=_empty(part))
                )
            key = (item.id, index)
            held = self._unsent(key, self.texts[key].markers.flush()) if key in self.texts else ""
            if held:  # the start of a marker that never ended: it was text after all
                out.append(
                    self._event(
                        "response.output_text.delta", **at, content_index=index, delta=held, logprobs=[]
                    )
                )
            if part["type"] == "output_text":
                out.append(
                    self._event(
                        "response.output_text.done", **at, content_index=index, text=part["text"], logprobs=[]
                    )
                )
            elif part["type"] == "refusal":
                out.append(
                    self._event("response.refusal.done", **at, content_index=index, refusal=part["refusal"])
                )
            out.append(self._event("response.content_part.done", **at, content_index=index, part=part))
        out.append(
            self._event("response.output_item.done", output_index=item.index, item=message_item(message))
        )
        return out

    def _mcp(self, name: str, entry: Message) -> list[Obj]:
        """An MCP item the run wrote: added, its own events (``response.mcp_call.in_progress``,
        ``response.mcp_call_arguments.delta`` …, as the run names them), done; each once."""
        item = self.items.get(entry.id)
        if name == "response.output_item.added":
            if item is not None:
                return []  # shown before a takeover
            item = self._item(entry.id, entry.id, entry.type)
            return [self._event(name, output_index=item.index, item=item_object(entry))]
        if item is None or item.done:
            return []
        at = {"item_id": item.id, "output_index": item.index}
        if name == "response.output_item.done":
            item.done = True
            return [self._event(name, output_index=item.index, item=item_object(entry))]
        arguments = str(entry.fields.get("arguments") or "")
        if name == "response.mcp_call_arguments.delta":
            return [self._event(name, **at, delta=arguments)]
        if name == "response.mcp_call_arguments.done":
            return [self._event(name, **at, arguments=arguments)]
        return [self._event(name, **at)]

    def _text(self, delta: MessageDelta) -> list[Obj]:
        item = self.items.get(delta.message_id)
        if item is None:
            return []
        out: list[Obj] = []
        at = {"item_id": item.id, "output_index": item.index, "content_index": delta.index}
        if delta.index not in item.parts:
            item.parts.add(delta.index)
            part: Obj = (
                {"type": "refusal", "refusal": ""}
                if delta.kind == "refusal"
                else {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            )
            out.append(self._event("response.content_part.added", **at, part=part))
        key = (item.id, delta.index)
        text = self.texts.setdefault(key, _Text())
        if delta.kind == "text":
            text.raw += delta.text
        cuts = strip_markers(text.raw)[1] if delta.annotations else []
        for n, annotation in enumerate(delta.annotations, delta.first_annotation):
            if n < self.annotations.get(key, 0):
                continue  # carried before a takeover
            self.annotations[key] = n + 1
            out.append(
                self._event(
                    "response.output_text.annotation.added",
                    **at,
                    annotation_index=n,
                    annotation=response_annotation(annotation, cuts),
                )
            )
        # Citation markers are cut out of the text, as from the finished answer's.
        shown = self._unsent(key, text.markers.feed(delta.text) if delta.kind == "text" else delta.text)
        if shown and delta.kind == "refusal":
            out.append(self._event("response.refusal.delta", **at, delta=shown))
        elif shown:
            out.append(self._event("response.output_text.delta", **at, delta=shown, logprobs=[]))
        return out

    def _reasoning(self, delta: ReasoningDelta) -> list[Obj]:
        """A reasoning item as OpenAI streams one: added with an empty summary part, the part's text
        in deltas, then the text, the part and the item done."""
        out: list[Obj] = []
        item = self.items.get(delta.item_id)
        if item is None:
            item = self._item(delta.item_id, delta.item_id, "reasoning")
            added = {"type": "reasoning", "id": item.id, "summary": [], "status": "in_progress"}
            out.append(self._event("response.output_item.added", output_index=item.index, item=added))
        if item.done:
            return out
        at = {"item_id": item.id, "output_index": item.index, "summary_index": 0}
        if 0 not in item.parts:
            item.parts.add(0)
            part = {"type": "summary_text", "text": ""}
            out.append(self._event("response.reasoning_summary_part.added", **at, part=part))
        if not delta.done:
            shown = self._unsent((item.id, 0), delta.text)
            if shown:
                out.append(self._event("response.reasoning_summary_text.delta", **at, delta=shown))
            return out
        item.done = True
        part = {"type": "summary_text", "text": delta.text}
        done = {"type": "reasoning", "id": item.id, "summary": [part], "status": delta.status}
        cut = {"status": "incomplete"} if delta.status == "incomplete" else {}
        return [
            *out,
            self._event("response.reasoning_summary_text.done", **at, text=delta.text),
            self._event("response.reasoning_summary_part.done", **at, part=part, **cut),
            self._event("response.output_item.done", output_index=item.index, item=done),
        ]

    def _unsent(self, key: tuple[str, int], shown: str) -> str:
        """Of ``shown``, the next text of part ``key``, what the stream has not carried yet: text a
        redone turn produces again is not sent twice, only what goes past what was sent."""
        start = self.seen.get(key, 0)
        self.seen[key] = start + len(shown)
        unsent = shown[max(self.sent.get(key, 0) - start, 0) :]
        self.sent[key] = max(self.sent.get(key, 0), self.seen[key])
        return unsent

    def _arguments(self, delta: StepDelta) -> list[Obj]:
        out: list[Obj] = []
        if delta.call_id is not None:
            self.calls[(delta.step_id, delta.index)] = delta.call_id
            item = self._item(delta.call_id, call_item_id(delta.call_id), "function_call")
            item.name = delta.name or ""
            added = function_call_item(delta.call_id, item.name, "", item.id, status="in_progress")
            out.append(self._event("response.output_item.added", output_index=item.index, item=added))
        else:
            call_id = self.calls.get((delta.step_id, delta.index))
            if call_id is None:
                return []
            item = self.items[call_id]
            item.name = item.name or delta.name or ""
        if delta.arguments:
            item.arguments += delta.arguments
            out.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item.id,
                    output_index=item.index,
                    delta=delta.arguments,
                )
            )
        return out

    def _builtin(self, delta: BuiltinCallDelta) -> list[Obj]:
        if delta.call_id is None or delta.call_id in self.items:
            return []  # outputs are shown in the item once the call is done
        kinds = {"file_search": "file_search_call", "web_search": "web_search_call"}
        kind = kinds.get(delta.type, "code_interpreter_call")
        item = self._item(delta.call_id, builtin_item_id(delta.type, delta.call_id), kind)
        at = {"item_id": item.id, "output_index": item.index}
        added: Obj
        if kind == "web_search_call":
            details = WebSearchDetails(delta.input or "")
            added = web_search_item(item.id, details, "in_progress", done=False)
            return [
                self._event("response.output_item.added", output_index=item.index, item=added),
                self._event("response.web_search_call.in_progress", **at),
                self._event("response.web_search_call.searching", **at),
            ]
        if kind == "file_search_call":
            added = {"type": kind, "id": item.id, "status": "in_progress", "queries": [], "results": None}
            return [
                self._event("response.output_item.added", output_index=item.index, item=added),
                self._event("response.file_search_call.in_progress", **at),
                self._event("response.file_search_call.searching", **at),
            ]
        code = delta.input or ""
        added = {
            "type": kind,
            "id": item.id,
            "status": "in_progress",
            "code": "",
            "container_id": container_id(self.run.thread_id),
            "outputs": [],
        }
        return [
            self._event("response.output_item.added", output_index=item.index, item=added),
            self._event("response.code_interpreter_call.in_progress", **at),
            *(self._event("response.code_interpreter_call_code.delta", **at, delta=p) for p in pieces(code)),
            self._event("response.code_interpreter_call_code.done", **at, code=code),
            self._event("response.code_interpreter_call.interpreting", **at),
        ]

    def _step(self, step: RunStep) -> list[Obj]:
        if step.status != "completed" or not isinstance(step.step_details, ToolCalls):
            return []
        out: list[Obj] = []
        include = self.run.response.include if self.run.response else []
        for call in step.step_details.calls:
            item = self.items.get(call.id)
            if item is None:
                continue
            at = {"item_id": item.id, "output_index": item.index}
            if isinstance(call, FunctionCall):
                out.append(
                    self._event(
                        "response.function_call_arguments.done",
                        **at,
                        name=call.name,
                        arguments=call.arguments,
                    )
                )
                done = function_call_item(call.id, call.name, call.arguments, item.id)
            else:
                assert isinstance(call, BuiltinCall)
                out.append(self._event(f"response.{item.kind}.completed", **at))
                done = builtin_item(call, "completed", self.run.thread_id, include)
            out.append(self._event("response.output_item.done", output_index=item.index, item=done))
        return out


_OPENING = frozenset({"response.created", "response.queued", "response.in_progress"})


def _call_id(item: Obj) -> str:
    """A built-in call item's call id, from its item id (``fs_…``/``ci_…`` for ``call_…``)."""
    return "call_" + str(item["id"]).split("_", 1)[-1]


def _empty(part: Obj) -> Obj:
    if part["type"] == "output_text":
        return {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    return {"type": part["type"], part["type"]: ""} if part["type"] == "refusal" else part
