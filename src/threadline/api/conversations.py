"""``/v1/conversations``: conversations and their items. A conversation is a thread (any thread of
the project, whichever API made it); its items are the thread's messages, function calls and outputs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from threadline.api.deps import Paging
from threadline.api.objects import list_object
from threadline.api.response_objects import conversation_object, item_object
from threadline.api.response_protocol import (
    CreateConversationRequest,
    CreateItemsRequest,
    UpdateConversationRequest,
)
from threadline.api.responses import Includes, Responses
from threadline.api.routing import CheckedRoute
from threadline.domain.entities import Page

router = APIRouter(route_class=CheckedRoute)


@router.post("/conversations")
async def create_conversation(body: CreateConversationRequest, responses: Responses) -> dict[str, Any]:
    return conversation_object(await responses.create_conversation(body.new_items(), body.metadata or {}))


@router.get("/conversations/{conversation_id}")
async def get_conversation(conversation_id: str, responses: Responses) -> dict[str, Any]:
    return conversation_object(await responses.get_conversation(conversation_id))


@router.post("/conversations/{conversation_id}")
async def update_conversation(
    conversation_id: str, body: UpdateConversationRequest, responses: Responses
) -> dict[str, Any]:
    return conversation_object(await responses.update_conversation(conversation_id, body.metadata or {}))


@router.delete("/conversations/{conversation_id}")
async def delete_conversation(conversation_id: str, responses: Responses) -> dict[str, Any]:
    await responses.delete_conversation(conversation_id)
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


@router.get("/conversations/{conversation_id}/items")
async def list_items(
    conversation_id: str, responses: Responses, query: Paging, include: Includes
) -> dict[str, Any]:
    page = await responses.list_items(conversation_id, query)
    return list_object(page, item_object)


@router.post("/conversations/{conversation_id}/items")
async def create_items(
    conversation_id: str, body: CreateItemsRequest, responses: Responses, include: Includes
) -> dict[str, Any]:
    added = await responses.add_items(conversation_id, body.new_items())
    return list_object(Page(added, has_more=False), item_object)


@router.get("/conversations/{conversation_id}/items/{item_id}")
async def get_item(
    conversation_id: str, item_id: str, responses: Responses, include: Includes
) -> dict[str, Any]:
    return item_object(await responses.get_item(conversation_id, item_id))


@router.delete("/conversations/{conversation_id}/items/{item_id}")
async def delete_item(conversation_id: str, item_id: str, responses: Responses) -> dict[str, Any]:
    return conversation_object(await responses.delete_item(conversation_id, item_id))
