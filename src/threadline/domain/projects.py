"""Projects and their API keys: which project a request's key opens, and managing both.

Every assistant and thread (and everything under a thread) belongs to one project; a request sees
only its key's project. Keys are random (``tl-`` and 48 characters), shown once, and kept only as a
SHA-256 hash. ``THREADLINE_API_KEY``, when set, is one more key, for the default project. With no
key configured anywhere the server is open: every request is the default project's (the CLI refuses
to serve that way on anything but loopback).
"""

from __future__ import annotations

import hashlib
import time

from threadline.domain.clock import now
from threadline.domain.entities import DEFAULT_PROJECT, ApiKey, Project
from threadline.domain.ports.storage import ProjectRepository
from threadline.errors import AuthenticationError, InvalidRequestError, NotFoundError
from threadline.ids import API_KEY_PREFIX, new_api_key, new_id

OPEN_MODE_RECHECK_SECONDS = 1.0
"""How long "no keys exist" is trusted before asking the database again (keys are made elsewhere)."""


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class Projects:
    def __init__(self, projects: ProjectRepository, *, legacy_key: str = "") -> None:
        self.projects = projects
        self.legacy_key = legacy_key
        self._keyed = bool(legacy_key)
        self._open_checked_at = float("-inf")

    async def project_for(self, token: str) -> str:
        """The project a bearer token opens; :class:`AuthenticationError` when it opens none."""
        if self.legacy_key and token == self.legacy_key:
            return DEFAULT_PROJECT
        if token.startswith(API_KEY_PREFIX):
            project_id = await self.projects.project_of_key(secret_hash(token))
            if project_id is None:
                raise AuthenticationError("Incorrect API key provided.")
            return project_id
        if await self._keys_required():
            raise AuthenticationError("Incorrect API key provided.")
        return DEFAULT_PROJECT

    async def _keys_required(self) -> bool:
        if not self._keyed and time.monotonic() - self._open_checked_at > OPEN_MODE_RECHECK_SECONDS:
            # Once a key exists the server stays keyed, even if every key is later revoked.
            self._keyed = await self.projects.any_api_keys()
            self._open_checked_at = time.monotonic()
        return self._keyed

    async def open_mode(self) -> bool:
        return not self.legacy_key and not await self.projects.any_api_keys()

    # --- management (CLI and admin API) ----------------------------------------------------------

    async def create_project(self, name: str, thread_ttl_days: float | None = None) -> Project:
        name = name.strip()
        if not name or len(name) > 256:
            raise InvalidRequestError("A project needs a name of 1 to 256 characters.", param="name")
        if thread_ttl_days is not None and thread_ttl_days < 0:
            raise InvalidRequestError("thread_ttl_days must be 0 (never) or more.", param="thread_ttl_days")
        project = Project(new_id("project"), name, now(), thread_ttl_days)
        await self.projects.insert(project)
        return project

    async def list_projects(self) -> list[Project]:
        return await self.projects.list_projects()

    async def get_project(self, project_id: str) -> Project:
        project = await self.projects.get(project_id)
        if project is None:
            raise NotFoundError(f"No project found with id '{project_id}'.")
        return project

    async def create_key(self, project_id: str, name: str = "") -> tuple[ApiKey, str]:
        """A new key for the project, and its secret (shown this once, never stored)."""
        await self.get_project(project_id)
        secret = new_api_key()
        key = ApiKey(new_id("key"), project_id, name.strip()[:256], secret[:10], now())
        await self.projects.insert_api_key(key, secret_hash(secret))
        self._keyed = True
        return key, secret

    async def list_keys(self, project_id: str) -> list[ApiKey]:
        await self.get_project(project_id)
        return await self.projects.list_api_keys(project_id)

    async def revoke_key(self, key_id: str, project_id: str | None = None) -> None:
        if not await self.projects.revoke_api_key(key_id, project_id, now()):
            raise NotFoundError(f"No active API key found with id '{key_id}'.")
