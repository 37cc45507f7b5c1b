"""``/v1/threads``, including ``GET /v1/threads``, which OpenAI never offered."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request

from threadline.api.deps import Paging, Threads, project_services
from threadline.api.objects import deleted_object, list_object, thread_object
from threadline.api.routing import CheckedRoute
from threadline.api.schemas import MAX_METADATA_PAIRS, CreateThreadRequest, ModifyThreadRequest
from threadline.domain.commands import NewThread
from threadline.errors import InvalidRequestError

router = APIRouter(route_class=CheckedRoute)

_METADATA_PARAM = re.compile(r"^metadata\[(.{1,64})\]$")


def metadata_filter(request: Request) -> dict[str, str]:
    """``metadata[key]=value`` query parameters, as a mapping."""
    found: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        match = _METADATA_PARAM.match(name)
        if match:
            found[match.group(1)] = value
        elif name.startswith("metadata"):
            raise InvalidRequestError(
                "Filter threads by metadata with metadata[key]=value.", param=name[:100]
            )
    if len(found) > MAX_METADATA_PAIRS:
        raise InvalidRequestError(f"At most {MAX_METADATA_PAIRS} metadata filters are allowed.")
    return found


@router.post("/threads")
async def create_thread(request: Request, body: CreateThreadRequest | None = None) -> dict[str, Any]:
    threads = project_services(request).threads
    return thread_object(await threads.create_thread(body.command() if body is not None else NewThread()))


@router.get("/threads")
async def list_threads(request: Request, threads: Threads, query: Paging) -> dict[str, Any]:
    return list_object(await threads.list_threads(query, metadata_filter(request)), thread_object)


@router.get("/threads/{thread_id}")
async def get_thread(thread_id: str, threads: Threads) -> dict[str, Any]:
    return thread_object(await threads.get_thread(thread_id))


@router.post("/threads/{thread_id}")
async def modify_thread(thread_id: str, body: ModifyThreadRequest, threads: Threads) -> dict[str, Any]:
    return thread_object(await threads.modify_thread(thread_id, body.command()))


@router.delete("/threads/{thread_id}")
async def delete_thread(thread_id: str, threads: Threads) -> dict[str, Any]:
    await threads.delete_thread(thread_id)
    return deleted_object(thread_id, "thread")
