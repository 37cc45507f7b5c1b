"""``/v1/responses``: the Responses API, served by the run engine (see ``domain/responses.py``).

Without ``stream`` or ``background`` a create answers when the response is finished; with
``background`` it answers at once (``queued``) and the workers carry on; with ``stream`` it answers
with the response's event stream (``api/response_sse.py``). A background response's stream can be
picked up again with ``GET /v1/responses/{id}?stream=true&starting_after=N``
(``api/response_recording.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from threadline.api import response_recording, response_sse
from threadline.api.deps import Paging, Svc
from threadline.api.objects import list_object
from threadline.api.response_objects import compaction_item, item_object, response_object, usage_object
from threadline.api.response_protocol import (
    CompactRequest,
    CountTokensRequest,
    CreateResponseRequest,
    check_includes,
)
from threadline.api.response_tool_parsing import WEB_SEARCH_TYPES
from threadline.api.routing import CheckedRoute
from threadline.api.runs import settled
from threadline.domain.entities import Run
from threadline.domain.ports.models import Route
from threadline.domain.ports.tools import ToolSet
from threadline.domain.responses import ResponseService
from threadline.errors import InvalidRequestError
from threadline.ids import new_id
from threadline.providers.tokenizers import EstimateTokenizer

router = APIRouter(route_class=CheckedRoute)


async def responses(svc: Svc) -> ResponseService:
    return svc.responses


Responses = Annotated[ResponseService, Depends(responses)]


async def include_query(
    include: Annotated[list[str] | None, Query()] = None,
    include_brackets: Annotated[list[str] | None, Query(alias="include[]")] = None,
) -> list[str]:
    """``include``, as the SDK sends it (``include[]=...``) or as the spec spells it (``include=...``);
    values OpenAI does not know are refused."""
    return check_includes([*(include or []), *(include_brackets or [])])


Includes = Annotated[list[str], Depends(include_query)]


async def _finished(responses: ResponseService, run: Run) -> Run:
    """``run`` once it has ended, read back."""

    async def read() -> Run:
        return await responses.stores.runs.get_by_id(run.id) or run

    with responses.bus.subscribe(run.id) as subscription:
        return await settled(subscription, read)


WEB_SEARCH_OFF = (
    "Web search is not set up on this server: its operator turns it on with THREADLINE_WEB_SEARCH_URL "
    "(a SearxNG instance's base URL), or with THREADLINE_WEB_SEARCH_BACKEND=brave and "
    "THREADLINE_WEB_SEARCH_API_KEY."
)


def _check_tools(body: CreateResponseRequest, tools: ToolSet) -> None:
    """Refuse a tool the request needs and this server cannot run (web search with no backend)."""
    for i, tool in enumerate(body.tools or []):
        if tool.get("type") in WEB_SEARCH_TYPES and tools.get("web_search") is None:
            raise InvalidRequestError(WEB_SEARCH_OFF, param=f"tools[{i}].type")


@router.post("/responses", response_model=None)
async def create_response(
    body: CreateResponseRequest, request: Request, responses: Responses
) -> dict[str, Any] | StreamingResponse:
    command = body.command()
    _check_tools(body, request.app.state.runtime.tools)
    if body.stream or command.background:
        # Subscribe before the response exists, so its stream (or its recording) misses no event.
        response_id = new_id("response")
        subscription = responses.bus.subscribe(response_id)
        try:
            run = await responses.create_response(command, response_id)
        except BaseException:
            subscription.close()
            raise
        if not command.background:
            return response_sse.stream(responses, subscription, run)
        response_recording.record(responses, subscription, run)
        if body.stream:
            return response_recording.resume(responses, run, -1)
        return response_object(await responses.view(run))
    run = await _finished(responses, await responses.create_response(command))
    answer = response_object(await responses.view(run))
    await responses.forget(run)
    return answer


@router.post("/responses/input_tokens")
async def count_input_tokens(
    body: CountTokensRequest, request: Request, responses: Responses
) -> dict[str, Any]:
    command = body.command()
    responses.scope.check_model(command.model)
    runtime = request.app.state.runtime
    route: Route | None = runtime.router.resolve(command.model)
    assert route is not None, "a model that routes has a route"
    if route.tokenizer is None and runtime.model_start is None:
        # An embedded model this process does not run: estimated, rather than loaded to count.
        route = dataclasses.replace(route, tokenizer=EstimateTokenizer())
    count = await responses.count_input_tokens(command, route)
    return {"object": "response.input_tokens", "input_tokens": count}


@router.post("/responses/compact")
async def compact_conversation(
    body: CompactRequest, request: Request, responses: Responses
) -> dict[str, Any]:
    """The conversation summarised by its model (as runs summarise what no longer fits): its user
    messages as they were, then one ``compaction`` item, which a later response takes as input."""
    command = body.command()
    responses.scope.check_model(command.model)
    route: Route | None = request.app.state.router.resolve(command.model)
    assert route is not None, "a model that routes has a route"
    compacted = await responses.compact(command, route, request.app.state.runtime.metrics.model_called)
    usage = compacted.usage
    return {
        "id": compacted.id,
        "object": "response.compaction",
        "created_at": compacted.created_at,
        "output": [
            *(item_object(m) for m in compacted.user_messages),
            compaction_item(compacted.item_id, compacted.encrypted_content),
        ],
        "usage": usage_object(
            {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            }
        ),
    }


@router.get("/responses/{response_id}", response_model=None)
async def get_response(
    response_id: str,
    responses: Responses,
    include: Includes,
    stream: bool = False,
    starting_after: Annotated[int | None, Query(ge=0)] = None,
    include_obfuscation: bool = False,  # accepted; streams here carry no obfuscation padding
) -> dict[str, Any] | StreamingResponse:
    view = await responses.get_response(response_id)
    if stream:
        return response_recording.resume(
            responses, view.run, -1 if starting_after is None else starting_after
        )
    return response_object(view)


@router.delete("/responses/{response_id}")
async def delete_response(response_id: str, responses: Responses) -> dict[str, Any]:
    await responses.delete_response(response_id)
    return {"id": response_id, "object": "response", "deleted": True}


@router.post("/responses/{response_id}/cancel")
async def cancel_response(response_id: str, responses: Responses) -> dict[str, Any]:
    view = await responses.cancel_response(response_id)
    # Cancelling is asked for at once; the worker stops its model call a moment later.
    status = "cancelled" if view.run.status.value in ("cancelling", "cancelled") else None
    return response_object(view, status=status)


@router.get("/responses/{response_id}/input_items")
async def list_input_items(
    response_id: str, responses: Responses, query: Paging, include: Includes
) -> dict[str, Any]:
    page = await responses.input_items(response_id, query)
    return list_object(page, item_object)
