"""What routes share: the services object, the beta-header and API-key checks, list parameters."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, Query, Request

from threadline.domain.entities import ListQuery
from threadline.domain.services import Services
from threadline.errors import AuthenticationError, InvalidRequestError, MissingBetaHeaderError

RUN_STEP_INCLUDES = ("step_details.tool_calls[*].file_search.results[*].content",)


async def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


async def check_api_key(request: Request) -> None:
    expected: str = request.app.state.settings.api_key
    if not expected:
        return
    header = request.headers.get("authorization", "")
    if header != f"Bearer {expected}":
        raise AuthenticationError("Incorrect API key provided.")


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


Svc = Annotated[Services, Depends(services)]
Paging = Annotated[ListQuery, Depends(list_query)]
