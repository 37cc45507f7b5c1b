"""Rendering entities as OpenAI's JSON objects (``thread.run``, ``thread.message`` ...).

The only place that knows the wire shape of a response object; REST handlers and the SSE writer
both render through it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from threadline.domain.entities import Assistant, File, Message, Page, Run, RunStep, RunTransition, Thread

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
        "assistant_id": m.assistant_id,
        "thread_id": m.thread_id,
        "run_id": m.run_id,
        "status": m.status,
        "incomplete_details": m.incomplete_details,
        "completed_at": m.completed_at,
        "incomplete_at": m.incomplete_at,
        "role": m.role,
        "content": m.content,
        "attachments": m.attachments or [],
        "metadata": m.metadata,
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
        "required_action": r.required_action,
        "last_error": r.last_error,
        "model": r.model,
        "instructions": r.instructions,
        "tools": r.tools,
        "metadata": r.metadata,
        "incomplete_details": r.incomplete_details,
        "usage": r.usage,
        "temperature": r.temperature,
        "top_p": r.top_p,
        "max_prompt_tokens": r.max_prompt_tokens,
        "max_completion_tokens": r.max_completion_tokens,
        "truncation_strategy": r.truncation_strategy,
        "response_format": r.response_format,
        "tool_choice": r.tool_choice,
        "parallel_tool_calls": r.parallel_tool_calls,
    }


def step_object(s: RunStep) -> Obj:
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
        "step_details": s.step_details,
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
