"""``/v1/threads/{thread_id}/runs/{run_id}/steps``."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from threadline.api.deps import RUN_STEP_INCLUDES, Paging, Runs, include_query
from threadline.api.objects import list_object, step_object
from threadline.api.routing import CheckedRoute

router = APIRouter(route_class=CheckedRoute)

Include = Annotated[list[str], Depends(include_query)]


@router.get("/threads/{thread_id}/runs/{run_id}/steps")
async def list_run_steps(
    thread_id: str, run_id: str, runs: Runs, query: Paging, include: Include
) -> dict[str, Any]:
    render = partial(step_object, file_search_content=RUN_STEP_INCLUDES[0] in include)
    return list_object(await runs.list_run_steps(thread_id, run_id, query), render)


@router.get("/threads/{thread_id}/runs/{run_id}/steps/{step_id}")
async def get_run_step(
    thread_id: str, run_id: str, step_id: str, runs: Runs, include: Include
) -> dict[str, Any]:
    step = await runs.get_run_step(thread_id, run_id, step_id)
    return step_object(step, file_search_content=RUN_STEP_INCLUDES[0] in include)
