"""``/v1/assistants``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from threadline.api.deps import Assistants, Paging
from threadline.api.objects import assistant_object, deleted_object, list_object
from threadline.api.routing import CheckedRoute
from threadline.api.schemas import CreateAssistantRequest, ModifyAssistantRequest

router = APIRouter(route_class=CheckedRoute)


@router.post("/assistants")
async def create_assistant(body: CreateAssistantRequest, assistants: Assistants) -> dict[str, Any]:
    return assistant_object(await assistants.create_assistant(body.command()))


@router.get("/assistants")
async def list_assistants(assistants: Assistants, query: Paging) -> dict[str, Any]:
    return list_object(await assistants.list_assistants(query), assistant_object)


@router.get("/assistants/{assistant_id}")
async def get_assistant(assistant_id: str, assistants: Assistants) -> dict[str, Any]:
    return assistant_object(await assistants.get_assistant(assistant_id))


@router.post("/assistants/{assistant_id}")
async def modify_assistant(
    assistant_id: str, body: ModifyAssistantRequest, assistants: Assistants
) -> dict[str, Any]:
    return assistant_object(await assistants.modify_assistant(assistant_id, body.command()))


@router.delete("/assistants/{assistant_id}")
async def delete_assistant(assistant_id: str, assistants: Assistants) -> dict[str, Any]:
    await assistants.delete_assistant(assistant_id)
    return deleted_object(assistant_id, "assistant")
