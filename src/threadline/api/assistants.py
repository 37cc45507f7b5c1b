"""``/v1/assistants``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from threadline.api.deps import Paging, Svc
from threadline.api.objects import assistant_object, deleted_object, list_object
from threadline.api.routing import CheckedRoute
from threadline.api.schemas import CreateAssistantRequest, ModifyAssistantRequest

router = APIRouter(route_class=CheckedRoute)


@router.post("/assistants")
async def create_assistant(body: CreateAssistantRequest, svc: Svc) -> dict[str, Any]:
    return assistant_object(await svc.create_assistant(body.fields()))


@router.get("/assistants")
async def list_assistants(svc: Svc, query: Paging) -> dict[str, Any]:
    return list_object(await svc.list_assistants(query), assistant_object)


@router.get("/assistants/{assistant_id}")
async def get_assistant(assistant_id: str, svc: Svc) -> dict[str, Any]:
    return assistant_object(await svc.get_assistant(assistant_id))


@router.post("/assistants/{assistant_id}")
async def modify_assistant(assistant_id: str, body: ModifyAssistantRequest, svc: Svc) -> dict[str, Any]:
    return assistant_object(await svc.modify_assistant(assistant_id, body.fields()))


@router.delete("/assistants/{assistant_id}")
async def delete_assistant(assistant_id: str, svc: Svc) -> dict[str, Any]:
    await svc.delete_assistant(assistant_id)
    return deleted_object(assistant_id, "assistant")
