"""The services of one project, made together: assistants, threads (and messages), runs (and
steps), responses (and conversations). The API reaches them through one request dependency
(``api/deps.py``), which narrows the process's set to the request's project."""

from __future__ import annotations

from dataclasses import dataclass, field

from threadline.domain.assistants import AssistantService
from threadline.domain.responses import ResponseService
from threadline.domain.runs import RunService
from threadline.domain.scope import Scope
from threadline.domain.threads import ThreadService

MAX_SCOPED = 256
"""Projects whose narrowed services :meth:`ServiceSet.for_project` keeps at once."""


@dataclass(frozen=True, slots=True)
class ServiceSet:
    scope: Scope
    assistants: AssistantService
    threads: ThreadService
    runs: RunService
    responses: ResponseService
    scoped: dict[str, ServiceSet] = field(default_factory=dict, compare=False, repr=False)
    """The sets already narrowed to a project (:meth:`for_project`), kept: the services hold nothing
    of a request."""

    @classmethod
    def of(cls, scope: Scope) -> ServiceSet:
        assistants = AssistantService(scope)
        threads = ThreadService(scope)
        runs = RunService(scope, assistants, threads)
        return cls(scope, assistants, threads, runs, ResponseService(scope, runs))

    def for_project(self, project_id: str) -> ServiceSet:
        """The same services, seeing only ``project_id``'s objects: made once per project (a few
        hundred at most are kept), not once per request."""
        found = self.scoped.get(project_id)
        if found is None:
            if len(self.scoped) >= MAX_SCOPED:
                self.scoped.clear()
            found = self.scoped[project_id] = ServiceSet.of(self.scope.for_project(project_id))
        return found
