"""Rendering entities as OpenAI's JSON objects (``thread.run``, ``thread.message`` ...).

The only place that knows the wire shape of a response object; REST handlers and the SSE writer
both render through it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from threadline.domain.content import (
    Annotation,
    FileCitation,
    ImageFile,
    ImageUrl,
    InputFile,
    ItemFields,
    Part,
    Refusal,
    Text,
    UrlCitation,
)
from threadline.domain.entities import (
    Assistant,
    BuiltinCall,
    File,
    FileBatch,
    FileCounts,
    FunctionCall,
    Message,
    MessageCreation,
    Page,
    RequiredAction,
    Run,
    RunStep,
    RunTransition,
    SearchHit,
    StepDetails,
    Thread,
    ToolCallRecord,
    VectorStore,
    VectorStoreFile,
)
from threadline.domain.steps import (
    BuiltinDetails,
    CodeInterpreterDetails,
    CodeOutput,
    LogsOutput,
    WebSearchDetails,
)

T = TypeVar("T")
Obj = dict[str, Any]


def assistant_object(a: Assistant) -> Obj:
    return {
        "id": a.id,
        "object": "assistant",
        "created_at": a.created_at,
        "name": a.name,
        "description": a.description,
        "model": a.model,
        "instructions": a.instructions,
        "tools": a.tools,
        "tool_resources": a.tool_resources or {},
        "metadata": a.metadata,
        "temperature": a.temperature if a.temperature is not None else 1.0,
        "top_p": a.top_p if a.top_p is not None else 1.0,
        "response_format": a.response_format if a.response_format is not None else "auto",
    }


def thread_object(t: Thread) -> Obj:
    return {
        "id": t.id,
        "object": "thread",
        "created_at": t.created_at,
        "metadata": t.metadata,
        "tool_resources": t.tool_resources or {},
        "last_active_at": t.last_active_at,
    }


def message_object(m: Message) -> Obj:
    return {
        "id": m.id,
        "object": "thread.message",
        "created_at": m.created_at,
        "assistant_id": m.assistant_id or None,  # a response's messages have no assistant
        "thread_id": m.thread_id,
        "run_id": m.run_id,
        "status": m.status,
        "incomplete_details": m.incomplete_details,
        "completed_at": m.completed_at,
        "incomplete_at": m.incomplete_at,
        "role": m.role,
        "content": [assistants_part(part) for part in m.content],
        "attachments": m.attachments or [],
        "metadata": m.metadata,
    }


def assistants_part(part: Part) -> Obj:
    """A message part as the Assistants API shows it: a Responses ``input_file`` part (which that API
    has no type for) as its image, or as a text part naming the file."""
    if isinstance(part, Text):
        annotations = [annotation_object(a) for a in part.annotations]
        return {"type": "text", "text": {"value": part.value, "annotations": annotations}}
    if isinstance(part, Refusal):
        return {"type": "refusal", "refusal": part.refusal}
    if isinstance(part, ImageFile):
        return _image("image_file", {"file_id": part.file_id}, part.detail)
    if isinstance(part, ImageUrl):
        return _image("image_url", {"url": part.url}, part.detail)
    if isinstance(part, ItemFields):  # (not a message's: never listed as one)
        return part.fields
    if isinstance(part, InputFile) and part.image_url:
        return {"type": "image_url", "image_url": {"url": part.image_url, "detail": "auto"}}
    if isinstance(part, InputFile) and part.image:
        return {"type": "image_file", "image_file": {"file_id": part.file_id, "detail": "auto"}}
    name = part.filename or part.file_id if isinstance(part, InputFile) else part.given.get("filename")
    return {"type": "text", "text": {"value": f"[file: {name}]", "annotations": []}}


def _image(kind: str, image: Obj, detail: str | None) -> Obj:
    return {"type": kind, kind: image if detail is None else {**image, "detail": detail}}


def annotation_object(a: Annotation) -> Obj:
    """A text part's annotation as the Assistants API shows it (a ``url_citation`` in the same form)."""
    if isinstance(a, UrlCitation):
        return {
            "type": "url_citation",
            "text": a.text,
            "start_index": a.start_index,
            "end_index": a.end_index,
            "url_citation": {"url": a.url, "title": a.title},
        }
    kind = "file_citation" if isinstance(a, FileCitation) else "file_path"
    return {
        "type": kind,
        "text": a.text,
        "start_index": a.start_index,
        "end_index": a.end_index,
        kind: {"file_id": a.file_id},
    }


def run_object(r: Run) -> Obj:
    return {
        "id": r.id,
        "object": "thread.run",
        "created_at": r.created_at,
        "assistant_id": r.assistant_id,
        "thread_id": r.thread_id,
        "status": r.status.value,
        "started_at": r.started_at,
        "expires_at": r.expires_at,
        "cancelled_at": r.cancelled_at,
        "failed_at": r.failed_at,
        "completed_at": r.completed_at,
        "required_action": required_action_object(r.required_action),
        "last_error": r.last_error,
        "model": r.model,
        "instructions": r.instructions,
        "tools": r.tools,
        "metadata": r.metadata,
        "incomplete_details": r.incomplete_details,
        "usage": _run_usage(r.usage),
        "temperature": r.temperature,
        "top_p": r.top_p,
        "max_prompt_tokens": r.max_prompt_tokens,
        "max_completion_tokens": r.max_completion_tokens,
        "truncation_strategy": r.truncation_strategy,
        "response_format": r.response_format,
        "tool_choice": r.tool_choice,
        "parallel_tool_calls": r.parallel_tool_calls,
    }


def _run_usage(usage: dict[str, int] | None) -> Obj | None:
    """A run's usage as the spec has it (a response's reasoning tokens are counted beside it)."""
    if usage is None:
        return None
    return {k: usage.get(k, 0) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}


def required_action_object(action: RequiredAction | None) -> Obj | None:
    if action is None:
        return None
    calls = [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in action.calls
    ]
    return {"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": calls}}


def step_object(s: RunStep, *, file_search_content: bool = False) -> Obj:
    return {
        "id": s.id,
        "object": "thread.run.step",
        "created_at": s.created_at,
        "run_id": s.run_id,
        "assistant_id": s.assistant_id,
        "thread_id": s.thread_id,
        "type": s.type,
        "status": s.status,
        "cancelled_at": s.cancelled_at,
        "completed_at": s.completed_at,
        "expired_at": s.expired_at,
        "failed_at": s.failed_at,
        "last_error": s.last_error,
        "step_details": step_details_object(s.step_details, file_search_content),
        "usage": s.usage,
        "metadata": s.metadata,
    }


def transition_object(thread_id: str, tr: RunTransition) -> Obj:
    return {
        "object": "thread.run.transition",
        "run_id": tr.run_id,
        "thread_id": thread_id,
        "status": tr.to_status.value,
        "at": round(tr.at, 3),
        "cause": tr.cause,
        "worker_id": tr.worker_id,
    }


def file_object(f: File) -> Obj:
    return {
        "id": f.id,
        "object": "file",
        "bytes": f.bytes,
        "created_at": f.created_at,
        "expires_at": f.expires_at,
        "filename": f.filename,
        "purpose": f.purpose,
        "status": f.status,
        "status_details": f.status_details,
    }


def step_details_object(details: StepDetails, file_search_content: bool = False) -> Obj:
    if isinstance(details, MessageCreation):
        return {"type": "message_creation", "message_creation": {"message_id": details.message_id}}
    return {
        "type": "tool_calls",
        "tool_calls": [tool_call_object(c, file_search_content) for c in details.calls],
    }


def tool_call_object(call: ToolCallRecord, file_search_content: bool = False) -> Obj:
    if isinstance(call, FunctionCall):
        function = {"name": call.name, "arguments": call.arguments, "output": call.output}
        return {"id": call.id, "type": "function", "function": function}
    assert isinstance(call, BuiltinCall)
    return {"id": call.id, "type": call.type, call.type: builtin_object(call.details, file_search_content)}


def builtin_object(details: BuiltinDetails, file_search_content: bool = False) -> Obj:
    if isinstance(details, CodeInterpreterDetails):
        return {"input": details.input, "outputs": [code_output_object(o) for o in details.outputs]}
    if isinstance(details, WebSearchDetails):  # a Responses tool: no Assistants shape of its own
        return {"query": details.query, "sources": [{"type": "url", "url": s.url} for s in details.sources]}
    found: Obj = {}
    if details.ranking_options is not None:
        ranking = details.ranking_options
        found["ranking_options"] = {"ranker": ranking.ranker, "score_threshold": ranking.score_threshold}
    results = []
    for r in details.results:
        result: Obj = {"file_id": r.file_id, "file_name": r.file_name, "score": r.score}
        if file_search_content:
            result["content"] = [{"type": "text", "text": text} for text in r.content]
        results.append(result)
    found["results"] = results
    return found


def code_output_object(output: CodeOutput) -> Obj:
    if isinstance(output, LogsOutput):
        return {"type": "logs", "logs": output.logs}
    return {"type": "image", "image": {"file_id": output.file_id}}


def list_object(page: Page[T], render: Callable[[T], Obj]) -> Obj:
    data = [render(item) for item in page.items]
    return {
        "object": "list",
        "data": data,
        # OpenAI sends null for an empty list's cursors; the spec's schema calls them strings.
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": page.has_more,
    }


def deleted_object(object_id: str, kind: str) -> Obj:
    return {"id": object_id, "object": f"{kind}.deleted", "deleted": True}


def _counts(counts: FileCounts) -> Obj:
    return {
        "in_progress": counts.in_progress,
        "completed": counts.completed,
        "failed": counts.failed,
        "cancelled": counts.cancelled,
        "total": counts.total,
    }


def vector_store_object(store: VectorStore, at: int) -> Obj:
    """The store as it is at ``at`` (its status says ``expired`` once ``expires_at`` has passed)."""
    return {
        "id": store.id,
        "object": "vector_store",
        "created_at": store.created_at,
        "name": store.name,
        "usage_bytes": store.usage_bytes,
        "file_counts": _counts(store.file_counts),
        "status": store.status(at),
        "expires_after": store.expires_after,
        "expires_at": store.expires_at,
        "last_active_at": store.last_active_at,
        "metadata": store.metadata,
    }


def vector_store_file_object(f: VectorStoreFile) -> Obj:
    obj: Obj = {
        "id": f.id,
        "object": "vector_store.file",
        "usage_bytes": f.usage_bytes,
        "created_at": f.created_at,
        "vector_store_id": f.vector_store_id,
        "status": f.status,
        "last_error": f.last_error,
        "chunking_strategy": f.chunking_strategy,
        "attributes": f.attributes,
    }
    if f.progress is not None:
        # Threadline's own, while the file is indexed (the console shows it); clients ignore it.
        obj["progress"] = {"chunks_done": f.progress[0], "chunks_total": f.progress[1]}
    return obj


def file_batch_object(b: FileBatch) -> Obj:
    return {
        "id": b.id,
        "object": "vector_store.files_batch",
        "created_at": b.created_at,
        "vector_store_id": b.vector_store_id,
        "status": b.status,
        "file_counts": _counts(b.file_counts),
    }


def search_results_object(queries: list[str], hits: list[SearchHit]) -> Obj:
    return {
        "object": "vector_store.search_results.page",
        "search_query": queries,
        "data": [
            {
                "file_id": h.file_id,
                "filename": h.filename,
                "score": h.score,
                "attributes": h.attributes,
                "content": [{"type": "text", "text": h.text}],
            }
            for h in hits
        ],
        "has_more": False,
        "next_page": None,
    }
