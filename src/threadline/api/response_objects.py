"""Rendering responses, items and conversations as the Responses and Conversations APIs' JSON.

A response's ``output`` is read off its run's steps in order: a ``message_creation`` step is a
``message`` item, a ``tool_calls`` step one item per call (``function_call``, ``file_search_call``,
``code_interpreter_call``); the thread entries the run wrote (reasoning, MCP items) go among them
by turn. Thread entries render as conversation items.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from threadline.domain.content import (
    Annotation,
    FileCitation,
    ImageFile,
    ImageUrl,
    InputFile,
    Refusal,
    Text,
    UrlCitation,
)
from threadline.domain.entities import (
    BuiltinCall,
    FunctionCall,
    Message,
    MessageCreation,
    ResponseSettings,
    Run,
    Thread,
    ToolCalls,
)
from threadline.domain.ports.citations import cut_index, strip_markers
from threadline.domain.response_items import search_results
from threadline.domain.responses import ResponseView
from threadline.domain.run_states import RunStatus
from threadline.domain.steps import CodeInterpreterDetails, FileSearchDetails, LogsOutput, WebSearchDetails
from threadline.ids import builtin_item_id, call_item_id, container_id

Obj = dict[str, Any]

STATUS = {
    RunStatus.QUEUED: "queued",
    RunStatus.IN_PROGRESS: "in_progress",
    RunStatus.CANCELLING: "in_progress",
    RunStatus.REQUIRES_ACTION: "completed",
    RunStatus.COMPLETED: "completed",
    RunStatus.INCOMPLETE: "incomplete",
    RunStatus.FAILED: "failed",
    RunStatus.EXPIRED: "failed",
    RunStatus.CANCELLED: "cancelled",
}
"""A run's status as its response's (a response has no ``cancelling``, ``requires_action`` or ``expired``)."""


def response_status(run: Run) -> str:
    return STATUS[run.status]


def usage_object(usage: dict[str, int] | None) -> Obj | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.get("prompt_tokens", 0),
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": usage.get("completion_tokens", 0),
        "output_tokens_details": {"reasoning_tokens": usage.get("reasoning_tokens", 0)},
        "total_tokens": usage.get("total_tokens", 0),
    }


def error_object(run: Run) -> Obj | None:
    if run.status is RunStatus.EXPIRED:
        return {"code": "server_error", "message": "The response was not finished before it expired."}
    if run.last_error is None:
        return None
    return {
        "code": run.last_error.get("code") or "server_error",
        "message": run.last_error.get("message", ""),
    }


def incomplete_object(run: Run) -> Obj | None:
    if run.status is not RunStatus.INCOMPLETE:
        return None
    reason = (run.incomplete_details or {}).get("reason")
    return {
        "reason": "max_output_tokens" if reason in ("max_completion_tokens", "max_prompt_tokens") else reason
    }


def response_object(view: ResponseView, *, status: str | None = None) -> Obj:
    run = view.run
    settings = run.response or ResponseSettings()
    conversation = settings.conversation
    include = settings.include
    obj: Obj = {
        "id": run.id,
        "object": "response",
        "created_at": run.created_at,
        "status": status or response_status(run),
        "background": settings.background,
        "completed_at": run.completed_at,
        "conversation": {"id": conversation} if conversation else None,
        "error": error_object(run),
        "incomplete_details": incomplete_object(run),
        "instructions": settings.instructions,
        "max_output_tokens": run.max_completion_tokens,
        "max_tool_calls": settings.max_tool_calls,
        "metadata": run.metadata,
        "model": run.model,
        "output": output_items(view, include),
        "parallel_tool_calls": run.parallel_tool_calls,
        "previous_response_id": settings.previous_response_id,
        "prompt_cache_key": settings.prompt_cache_key,
        "prompt_cache_retention": settings.prompt_cache_retention,
        "reasoning": settings.reasoning or {"effort": None, "summary": None},
        "safety_identifier": settings.safety_identifier,
        "service_tier": "default",
        "store": settings.store,
        "temperature": run.temperature,
        "text": settings.text or {"format": {"type": "text"}},
        "tool_choice": settings.tool_choice,
        "tools": [tool_object(tool) for tool in settings.tools],
        "top_logprobs": settings.top_logprobs,
        "top_p": run.top_p,
        "truncation": settings.truncation,
        "usage": usage_object(run.usage),
        "user": settings.user,
    }
    if settings.prompt_cache_options is not None:  # an object when present, never null
        obj["prompt_cache_options"] = settings.prompt_cache_options
    return obj


def tool_object(tool: Obj) -> Obj:
    """A tool as sent, with the fields a response's tool always has (null when not sent)."""
    kind = tool.get("type")
    if kind == "function":
        return {"description": None, "parameters": None, "strict": None, **tool}
    if kind == "mcp":  # shown without its headers, which it was never stored with
        return {"allowed_tools": None, "headers": None, "server_description": None, **tool}
    if kind == "code_interpreter":
        return {**tool, "container": tool.get("container") or {"type": "auto"}}
    return tool


def output_items(view: ResponseView, include: Sequence[str] = ()) -> list[Obj]:
    """The response's items in the order they happened: turn by turn, a turn's items that came
    before the model spoke (listed MCP tools, calls the user approved), its reasoning, what its
    steps wrote (answer, calls), then its MCP calls and approval requests."""
    placed: list[tuple[int, int, int, Obj]] = []
    for n, entry in enumerate(view.entries):
        placed.append((_turn(entry), _rank(entry), n, item_object(entry)))
    for n, step in enumerate(view.steps):
        details = step.step_details
        at = (step.turn, 2, n)
        if isinstance(details, MessageCreation):
            message = view.messages.get(details.message_id)
            if message is not None:
                placed.append((*at, message_item(message)))
            continue
        assert isinstance(details, ToolCalls)
        for call in details.calls:
            if isinstance(call, FunctionCall):
                item = function_call_item(call.id, call.name, call.arguments, call_item_id(call.id))
            else:
                status = "in_progress" if step.status == "in_progress" else "completed"
                item = builtin_item(call, status, view.run.thread_id, include)
            placed.append((*at, item))
    placed.sort(key=lambda p: p[:3])
    return [item for *_, item in placed]


def _turn(entry: Message) -> int:
    return int(entry.metadata.get("turn", "0"))


def _rank(entry: Message) -> int:
    """Where an entry of a response goes among its turn's items (its steps are 2)."""
    if entry.type == "reasoning":
        return 1
    return 0 if entry.metadata.get("place") == "start" else 3


def function_call_item(
    call_id: str, name: str, arguments: str, item_id: str, status: str = "completed"
) -> Obj:
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def builtin_item(call: BuiltinCall, status: str, thread_id: str, include: Sequence[str] = ()) -> Obj:
    details = call.details
    if isinstance(details, CodeInterpreterDetails):
        outputs = [
            {"type": "logs", "logs": o.logs}
            if isinstance(o, LogsOutput)
            else {"type": "image", "url": f"/v1/files/{o.file_id}/content"}
            for o in details.outputs
        ]
        return {
            "type": "code_interpreter_call",
            "id": builtin_item_id(call.type, call.id),
            "status": status if call.output is None else "completed",
            "code": details.input,
            "container_id": container_id(thread_id),
            "outputs": outputs,
        }
    if isinstance(details, WebSearchDetails):
        return web_search_item(
            builtin_item_id(call.type, call.id), details, status, include, done=call.output is not None
        )
    assert isinstance(details, FileSearchDetails)
    results = None
    if "file_search_call.results" in include:
        results = search_results(details)
    return {
        "type": "file_search_call",
        "id": builtin_item_id(call.type, call.id),
        "status": status if call.output is None else "completed",
        "queries": _queries(call.arguments),
        "results": results,
    }


def web_search_item(
    item_id: str, details: WebSearchDetails, status: str, include: Sequence[str] = (), *, done: bool = True
) -> Obj:
    """A ``web_search_call`` item: its search action (with its sources when ``include`` asks), and
    ``failed`` with the reason when the search failed."""
    action: Obj = {
        "type": "search",
        "query": details.query,
        "queries": [details.query] if details.query else [],
    }
    if "web_search_call.action.sources" in include:
        action["sources"] = [{"type": "url", "url": source.url} for source in details.sources]
    item: Obj = {"type": "web_search_call", "id": item_id, "status": status, "action": action}
    if done:
        item["status"] = "failed" if details.error else "completed"
    if details.error:
        item["error"] = details.error
    return item


def _queries(arguments: str) -> list[str]:
    try:
        value = json.loads(arguments or "{}")
    except ValueError:
        return []
    if not isinstance(value, dict):
        return []
    queries = value.get("queries") or ([value["query"]] if value.get("query") else [])
    return [str(q) for q in queries]


def response_annotation(annotation: Annotation, cuts: Sequence[tuple[int, int]] = ()) -> Obj:
    """A text part's annotation as a Responses ``output_text`` annotation, on the text with its
    citation markers cut out (``cuts``): a citation's ``index`` is where its marker stood."""
    if isinstance(annotation, FileCitation):
        marker = annotation.text
        filename = marker.split("†", 1)[1].rstrip("】") if "†" in marker else ""
        return {
            "type": "file_citation",
            "file_id": annotation.file_id,
            "filename": filename,
            "index": cut_index(annotation.start_index, cuts),
        }
    if isinstance(annotation, UrlCitation):
        return {
            "type": "url_citation",
            "url": annotation.url,
            "title": annotation.title,
            "start_index": cut_index(annotation.start_index, cuts),
            "end_index": cut_index(annotation.end_index, cuts),
        }
    return {
        "type": "file_path",
        "file_id": annotation.file_id,
        "index": cut_index(annotation.end_index, cuts),
    }


def content_parts(message: Message) -> list[Obj]:
    parts: list[Obj] = []
    output = message.role == "assistant"
    for part in message.content:
        if isinstance(part, Text) and output:
            value, cuts = strip_markers(part.value)
            annotations = [response_annotation(a, cuts) for a in part.annotations]
            parts.append({"type": "output_text", "text": value, "annotations": annotations, "logprobs": []})
        elif isinstance(part, Text):
            parts.append({"type": "input_text", "text": part.value})
        elif isinstance(part, Refusal):
            parts.append({"type": "refusal", "refusal": part.refusal})
        elif isinstance(part, ImageUrl):
            parts.append({"type": "input_image", "image_url": part.url, "detail": part.detail or "auto"})
        elif isinstance(part, InputFile):
            # As it was given (its id and name), not the text the model was shown.
            shown = {"type": "input_file", "file_id": part.file_id, "filename": part.filename}
            if part.file_url:
                shown["file_url"] = part.file_url
            parts.append(shown)
        elif isinstance(part, ImageFile) and not output:
            # An answer's charts are in its code_interpreter_call item's outputs, as OpenAI's were.
            parts.append({"type": "input_image", "file_id": part.file_id, "detail": part.detail or "auto"})
    return parts


def message_item(message: Message) -> Obj:
    return {
        "type": "message",
        "id": message.id,
        "status": message.status,
        "role": message.role,
        "content": content_parts(message),
    }


def item_object(entry: Message) -> Obj:
    """A thread entry as a conversation (or input) item."""
    if entry.type == "function_call":
        fields = entry.fields
        return function_call_item(fields["call_id"], fields["name"], fields["arguments"], entry.id)
    if entry.type == "function_call_output":
        fields = entry.fields
        return {
            "type": "function_call_output",
            "id": entry.id,
            "call_id": fields["call_id"],
            "output": fields["output"],
            "status": "completed",
        }
    if entry.type == "file_search_call":
        fields = entry.fields
        return {
            "type": "file_search_call",
            "id": entry.id,
            "status": "completed",
            "queries": fields.get("queries") or [],
            "results": fields.get("results"),
        }
    if entry.type == "web_search_call":
        fields = entry.fields
        item = {"type": "web_search_call", "id": entry.id, "status": fields.get("status") or "completed"}
        return {**item, "action": fields.get("action") or {"type": "search"}}
    if entry.type == "code_interpreter_call":
        fields = entry.fields
        return {
            "type": "code_interpreter_call",
            "id": entry.id,
            "status": "completed",
            "code": fields.get("code"),
            "container_id": fields.get("container_id") or container_id(entry.thread_id),
            "outputs": fields.get("outputs") or [],
        }
    if entry.type == "reasoning":
        # Kept as it came: its summary, text and encrypted content are returned unchanged.
        return {"type": "reasoning", "id": entry.id, **entry.fields}
    if entry.type == "compaction":
        return compaction_item(entry.id, entry.fields["encrypted_content"])
    if entry.type in MCP_FIELDS:
        fields = entry.fields
        return {"type": entry.type, "id": entry.id, **{k: fields.get(k) for k in MCP_FIELDS[entry.type]}}
    return message_item(entry)


MCP_FIELDS = {
    "mcp_list_tools": ("server_label", "tools", "error"),
    "mcp_call": ("server_label", "name", "arguments", "output", "error", "status", "approval_request_id"),
    "mcp_approval_request": ("server_label", "name", "arguments"),
    "mcp_approval_response": ("approval_request_id", "approve", "reason"),
}
"""The fields each MCP item shows (its entry may keep more, e.g. a refused call's name)."""


def compaction_item(item_id: str, encrypted_content: str) -> Obj:
    return {"type": "compaction", "id": item_id, "encrypted_content": encrypted_content}


def conversation_object(thread: Thread) -> Obj:
    return {
        "id": thread.id,
        "object": "conversation",
        "created_at": thread.created_at,
        "metadata": thread.metadata,
    }
