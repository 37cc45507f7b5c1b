"""The admin API (``THREADLINE_ADMIN_KEY``): projects and their API keys, shaped like OpenAI's
``/v1/organization/projects`` endpoints."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import Field

from threadline.api.routing import CheckedRoute
from threadline.api.schemas import Strict
from threadline.domain.entities import ApiKey, Project
from threadline.domain.projects import Projects

router = APIRouter(route_class=CheckedRoute)


class CreateProjectRequest(Strict):
    name: str = Field(min_length=1, max_length=256)
    thread_ttl_days: float | None = Field(default=None, ge=0)


class CreateApiKeyRequest(Strict):
    name: str = Field(default="", max_length=256)


def project_object(p: Project) -> dict[str, Any]:
    return {
        "id": p.id,
        "object": "organization.project",
        "name": p.name,
        "created_at": p.created_at,
        "status": "active",
        "thread_ttl_days": p.thread_ttl_days,
    }


def key_object(k: ApiKey) -> dict[str, Any]:
    return {
        "id": k.id,
        "object": "organization.project.api_key",
        "name": k.name,
        "redacted_value": f"{k.prefix}…",
        "created_at": k.created_at,
        "revoked_at": k.revoked_at,
    }


def _projects(request: Request) -> Projects:
    projects: Projects = request.app.state.runtime.projects
    return projects


@router.post("/organization/projects")
async def create_project(body: CreateProjectRequest, request: Request) -> dict[str, Any]:
    return project_object(await _projects(request).create_project(body.name, body.thread_ttl_days))


@router.get("/organization/projects")
async def list_projects(request: Request) -> dict[str, Any]:
    return {"object": "list", "data": [project_object(p) for p in await _projects(request).list_projects()]}


@router.get("/organization/projects/{project_id}")
async def retrieve_project(project_id: str, request: Request) -> dict[str, Any]:
    return project_object(await _projects(request).get_project(project_id))


@router.post("/organization/projects/{project_id}/api_keys")
async def create_project_api_key(
    project_id: str, body: CreateApiKeyRequest, request: Request
) -> dict[str, Any]:
    key, secret = await _projects(request).create_key(project_id, body.name)
    return {**key_object(key), "value": secret}


@router.get("/organization/projects/{project_id}/api_keys")
async def list_project_api_keys(project_id: str, request: Request) -> dict[str, Any]:
    return {"object": "list", "data": [key_object(k) for k in await _projects(request).list_keys(project_id)]}


@router.delete("/organization/projects/{project_id}/api_keys/{key_id}")
async def delete_project_api_key(project_id: str, key_id: str, request: Request) -> dict[str, Any]:
    await _projects(request).revoke_key(key_id, project_id)
    return {"object": "organization.project.api_key.deleted", "id": key_id, "deleted": True}
