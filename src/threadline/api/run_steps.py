"""``/v1/threads/{thread_id}/runs/{run_id}/steps``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from threadline.api.deps import Paging, Svc, include_query
from threadline.api.objects import list_object, step_object

router = APIRouter()

# ``include[]`` is checked, not used: no step carries file-search results yet.
_include = [Depends(include_query)]


@router.get("/threads/{thread_id}/runs/{run_id}/steps", dependencies=_include)
async def list_run_steps(thread_id: str, run_id: str, svc: Svc, query: Paging) -> dict[str, Any]:
    return list_object(await svc.list_run_steps(thread_id, run_id, query), step_object)


@router.get("/threads/{thread_id}/runs/{run_id}/steps/{step_id}", dependencies=_include)
async def get_run_step(thread_id: str, run_id: str, step_id: str, svc: Svc) -> dict[str, Any]:
    return step_object(await svc.get_run_step(thread_id, run_id, step_id))
