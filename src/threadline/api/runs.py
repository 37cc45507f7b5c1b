"""``/v1/threads/{thread_id}/runs`` and ``POST /v1/threads/runs``.

With ``"stream": true`` in the body, create, create-and-run and submit-tool-outputs answer with the
run's event stream: the handler subscribes to the run before acting, so no event is missed. Polls
from the SDK's helpers are held until the run waits or ends (or a few seconds pass).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from threadline.api import sse
from threadline.api.deps import Paging, Runs, include_query, project_services
from threadline.api.objects import list_object, run_object, transition_object
from threadline.api.routing import CheckedRoute
from threadline.api.schemas import (
    CreateRunRequest,
    CreateThreadAndRunRequest,
    ModifyRunRequest,
    SubmitToolOutputsRunRequest,
)
from threadline.domain.entities import Run
from threadline.domain.events import ObjectEvent, is_run_event
from threadline.domain.ports.storage import Subscription
from threadline.domain.run_states import WAITING
from threadline.domain.runs import RunService
from threadline.ids import new_id

router = APIRouter(route_class=CheckedRoute)

RECHECK_SECONDS = 1.0
"""How often a held poll (or a create waiting for its response) reads the run even when no event
arrives."""


async def _streamed(runs: RunService, run_id: str, start: Awaitable[object]) -> StreamingResponse:
    """Subscribe to the run, then ``start`` it (create, submit ...): the stream misses no event.

    Errors before the stream starts (a 404, a locked thread) are ordinary JSON error responses.
    """
    subscription = runs.bus.subscribe(run_id)
    try:
        await start
    except BaseException:
        subscription.close()
        raise
    return sse.run_stream(subscription)


@router.post("/threads/runs", response_model=None)
async def create_thread_and_run(
    body: CreateThreadAndRunRequest, runs: Runs
) -> dict[str, Any] | StreamingResponse:
    if not body.stream:
        _, run = await runs.create_thread_and_run(body.command())
        return run_object(run)
    run_id = new_id("run")
    return await _streamed(runs, run_id, runs.create_thread_and_run(body.command(), run_id=run_id))


@router.post("/threads/{thread_id}/runs", response_model=None)
async def create_run(
    thread_id: str, body: CreateRunRequest, request: Request
) -> dict[str, Any] | StreamingResponse:
    # Read here, not as dependencies: on the fast lane (api/fast_lane.py) a route reads no more.
    await include_query(request.query_params.getlist("include[]") or None)
    runs = project_services(request).runs
    if not body.stream:
        return run_object(await runs.create_run(thread_id, body.command()))
    run_id = new_id("run")
    return await _streamed(runs, run_id, runs.create_run(thread_id, body.command(), run_id=run_id))


@router.get("/threads/{thread_id}/runs")
async def list_runs(thread_id: str, runs: Runs, query: Paging) -> dict[str, Any]:
    return list_object(await runs.list_runs(thread_id, query), run_object)


@router.get("/threads/{thread_id}/runs/{run_id}")
async def get_run(thread_id: str, run_id: str, request: Request, response: Response) -> dict[str, Any]:
    runs = project_services(request).runs
    hold: float = request.app.state.settings.poll_hold_seconds
    if hold <= 0 or request.headers.get("x-stainless-poll-helper") != "true":
        return run_object(await runs.get_run(thread_id, run_id))
    # A poll from the SDK's helpers, which poll until the run waits or ends: answer when it does (or
    # when the hold runs out), and tell the SDK to ask again at once.
    response.headers["openai-poll-after-ms"] = "0"
    with runs.bus.subscribe(run_id, is_run_event) as subscription:
        return run_object(
            await settled(subscription, lambda: runs.get_run(thread_id, run_id), hold, read_back=False)
        )


async def settled(
    subscription: Subscription,
    read: Callable[[], Awaitable[Run]],
    hold: float | None = None,
    *,
    read_back: bool = True,
) -> Run:
    """The run (``read``) once it waits or ends, or once ``hold`` seconds have passed. It is read
    after each of its run events (``read_back``; otherwise the run an event carries is taken as it
    is: events are published once their write has committed), and every so often anyway: a worker
    in another process publishes on its own bus, and a held poll must not be slower than the SDK's
    own polling."""
    latest = await read()
    deadline = None if hold is None else time.monotonic() + hold
    while latest.status not in WAITING:
        timeout = RECHECK_SECONDS
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            timeout = min(left, RECHECK_SECONDS)
        event = await subscription.get(timeout=timeout)
        if event is None:
            latest = await read()
        elif isinstance(event, ObjectEvent) and isinstance(event.obj, Run):
            latest = await read() if read_back else event.obj
    return latest


@router.post("/threads/{thread_id}/runs/{run_id}")
async def modify_run(thread_id: str, run_id: str, body: ModifyRunRequest, runs: Runs) -> dict[str, Any]:
    return run_object(await runs.modify_run(thread_id, run_id, body.new_metadata()))


@router.get("/threads/{thread_id}/runs/{run_id}/transitions")
async def list_run_transitions(thread_id: str, run_id: str, runs: Runs) -> dict[str, Any]:
    """A Threadline extension: every status change of the run, oldest first, with when and why."""
    transitions = await runs.list_run_transitions(thread_id, run_id)
    return {"object": "list", "data": [transition_object(thread_id, tr) for tr in transitions]}


@router.post("/threads/{thread_id}/runs/{run_id}/cancel")
async def cancel_run(thread_id: str, run_id: str, runs: Runs) -> dict[str, Any]:
    return run_object(await runs.cancel_run(thread_id, run_id))


@router.post("/threads/{thread_id}/runs/{run_id}/submit_tool_outputs", response_model=None)
async def submit_tool_outputs_to_run(
    thread_id: str, run_id: str, body: SubmitToolOutputsRunRequest, runs: Runs
) -> dict[str, Any] | StreamingResponse:
    outputs = body.outputs()
    if not body.stream:
        return run_object(await runs.submit_tool_outputs(thread_id, run_id, outputs))
    return await _streamed(runs, run_id, runs.submit_tool_outputs(thread_id, run_id, outputs))
