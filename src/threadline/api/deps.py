"""What routes share: the services (one per aggregate), the beta-header and API-key checks, list parameters."""

from __future__ import annotations

import hmac
from typing import Annotated, Literal

from fastapi import Depends, Query, Request

from threadline.domain.assistants import AssistantService
from threadline.domain.entities import ListQuery
from threadline.domain.projects import Projects
from threadline.domain.runs import RunService
from threadline.domain.service_set import ServiceSet
from threadline.domain.threads import ThreadService
from threadline.errors import AuthenticationError, InvalidRequestError, MissingBetaHeaderError

RUN_STEP_INCLUDES = ("step_details.tool_calls[*].file_search.results[*].content",)


def project_services(request: Request) -> ServiceSet:
    """The services, seeing only the project the request's key opened (see :func:`authenticate`)."""
    svc: ServiceSet = request.app.state.services
    return svc.for_project(request.state.project_id)


async def services(request: Request) -> ServiceSet:
    return project_services(request)


def bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else ""


async def authenticate(request: Request) -> None:
    """Find the project the request's key opens (401 when it opens none)."""
    projects: Projects = request.app.state.runtime.projects
    request.state.project_id = await projects.project_for(bearer(request))


LIST_QUERY_PARAMETERS = frozenset({"include", "include[]"})
"""Query parameters that may be repeated; any other given twice is refused, not half-read."""


async def single_query_values(request: Request) -> None:
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name in seen and name not in LIST_QUERY_PARAMETERS:
            raise InvalidRequestError(
                f"Invalid value for '{name[:64]}': the parameter was given more than once.", param=name[:64]
            )
        seen.add(name)


async def checked_request(request: Request) -> None:
    """What every API route checks first, as one guard: the key (401), then parameters given twice
    (400)."""
    await authenticate(request)
    await single_query_values(request)


async def checked_beta_request(request: Request) -> None:
    """:func:`checked_request`, then the Assistants API's beta header (400)."""
    await checked_request(request)
    await require_beta(request)


async def require_admin(request: Request) -> None:
    expected: str = request.app.state.settings.admin_key
    if not expected:
        raise AuthenticationError("The admin API is off: set THREADLINE_ADMIN_KEY to use it.")
    if not hmac.compare_digest(bearer(request), expected):
        raise AuthenticationError("Incorrect admin key provided.")


async def require_beta(request: Request) -> None:
    if "assistants=v2" not in request.headers.get("openai-beta", ""):
        raise MissingBetaHeaderError(
            "You must provide the 'OpenAI-Beta' header to access the Assistants API. "
            "Please try again by setting the header 'OpenAI-Beta: assistants=v2'."
        )


Cursor = Annotated[str | None, Query(max_length=128, pattern=r"^[^\x00]*$")]
"""A list cursor (an object id). No NUL characters: PostgreSQL cannot compare text holding one."""


async def list_query(
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
    after: Cursor = None,
    before: Cursor = None,
) -> ListQuery:
    return ListQuery(limit=limit, order=order, after=after, before=before)


async def include_query(include: Annotated[list[str] | None, Query(alias="include[]")] = None) -> list[str]:
    """``include[]``: the extra run-step fields to fill in; OpenAI refuses values it does not know."""
    for value in include or []:
        if value not in RUN_STEP_INCLUDES:
            raise InvalidRequestError(
                f"Invalid value for 'include[]': {value[:100]!r}. Supported values are: "
                + ", ".join(f"'{v}'" for v in RUN_STEP_INCLUDES)
                + ".",
                param="include[]",
            )
    return include or []


Svc = Annotated[ServiceSet, Depends(services)]


# Each reads the request itself rather than depend on ``services``: a dependency less for FastAPI
# to resolve on every request.
async def assistants(request: Request) -> AssistantService:
    return project_services(request).assistants


async def threads(request: Request) -> ThreadService:
    return project_services(request).threads


async def runs(request: Request) -> RunService:
    return project_services(request).runs


Assistants = Annotated[AssistantService, Depends(assistants)]
Threads = Annotated[ThreadService, Depends(threads)]
Runs = Annotated[RunService, Depends(runs)]
Paging = Annotated[ListQuery, Depends(list_query)]
