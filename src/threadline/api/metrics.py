"""``GET /metrics``: Prometheus's text format (see :mod:`threadline.metrics` for what is counted)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response

from threadline.api.routing import CheckedRoute
from threadline.domain.entities import JOB_STATUSES
from threadline.domain.run_states import ACTIVE
from threadline.metrics import CONTENT_TYPE_LATEST

router = APIRouter(route_class=CheckedRoute)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    runtime = request.app.state.runtime
    counts, holders = await runtime.stores.runs.census(time.time())
    for status in ACTIVE:
        runtime.metrics.runs.labels(status.value).set(counts.get(status.value, 0))
    runtime.metrics.workers.set(holders)
    runtime.metrics.uploads.set(request.app.state.upload_slots.in_progress())
    jobs = await runtime.jobs.job_census()
    for job_status in JOB_STATUSES:
        runtime.metrics.jobs.labels(job_status).set(jobs.get(job_status, 0))
    for model in runtime.router.local_models():
        runtime.metrics.models_up.labels(model.name).set(1 if model.problem() is None else 0)
    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)
