"""The services of one project, made together: assistants, threads (and messages), runs (and
steps), responses (and conversations). The API reaches them through one request dependency
(``api/deps.py``), which narrows the process's set to the request's project."""

from __future__ import annotations

from dataclasses import dataclass

from threadline.domain.assistants import AssistantService
from threadline.domain.responses import ResponseService
from threadline.domain.runs import RunService
from threadline.domain.scope import Scope
from threadline.domain.threads import ThreadService


@dataclass(frozen=True, slots=True)
class ServiceSet:
    scope: Scope
    assistants: AssistantService
    threads: ThreadService
    runs: RunService
    responses: ResponseService

    @classmethod
    def of(cls, scope: Scope) -> ServiceSet:
        assistants = AssistantService(scope)
        threads = ThreadService(scope)
        runs = RunService(scope, assistants, threads)
        return cls(scope, assistants, threads, runs, ResponseService(scope, runs))

    def for_project(self, project_id: str) -> ServiceSet:
        """The same services, seeing only ``project_id``'s objects (one set per request: cheap)."""
        return ServiceSet.of(self.scope.for_project(project_id))
