"""``/v1/threads/{thread_id}/messages``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from threadline.api.deps import Paging, Threads
from threadline.api.objects import deleted_object, list_object, message_object
from threadline.api.routing import CheckedRoute
from threadline.api.schemas import CreateMessageRequest, ModifyMessageRequest

router = APIRouter(route_class=CheckedRoute)


@router.post("/threads/{thread_id}/messages")
async def create_message(thread_id: str, body: CreateMessageRequest, threads: Threads) -> dict[str, Any]:
    return message_object(await threads.create_message(thread_id, body.command()))


@router.get("/threads/{thread_id}/messages")
async def list_messages(
    thread_id: str,
    threads: Threads,
    query: Paging,
    run_id: Annotated[str | None, Query(max_length=128)] = None,
) -> dict[str, Any]:
    return list_object(await threads.list_messages(thread_id, query, run_id), message_object)


@router.get("/threads/{thread_id}/messages/{message_id}")
async def get_message(thread_id: str, message_id: str, threads: Threads) -> dict[str, Any]:
    return message_object(await threads.get_message(thread_id, message_id))


@router.post("/threads/{thread_id}/messages/{message_id}")
async def modify_message(
    thread_id: str, message_id: str, body: ModifyMessageRequest, threads: Threads
) -> dict[str, Any]:
    return message_object(await threads.modify_message(thread_id, message_id, body.new_metadata()))


@router.delete("/threads/{thread_id}/messages/{message_id}")
async def delete_message(thread_id: str, message_id: str, threads: Threads) -> dict[str, Any]:
    await threads.delete_message(thread_id, message_id)
    return deleted_object(message_id, "thread.message")
