"""What the services of one project share: storage, events, the model catalog, files, the clock.

One ``Scope`` is made per process (``runtime.py``) and narrowed to a project per request
(``for_project``); each service (assistants, threads, runs, responses) takes it. Beside the
dependencies, it holds the checks every create and modify request makes: that the model is served,
that the files and vector stores it names exist, and the vector stores its tool resources ask for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from threadline.domain.clock import now
from threadline.domain.entities import DEFAULT_PROJECT, Message, NewFile, ThreadStoreFiles, ThreadStorePlan
from threadline.domain.files import FileRef, FileService, attached_search_files
from threadline.domain.input_files import InputFiles
from threadline.domain.ports.mcp import McpServers
from threadline.domain.ports.storage import Bus, Stores
from threadline.domain.vector_stores import VectorStoreService
from threadline.errors import InvalidRequestError, NotFoundError


class ModelCatalog(Protocol):
    def routes(self, model: str) -> bool:
        """Whether a run asking for ``model`` has somewhere to go."""


def not_found(kind: str, object_id: str) -> NotFoundError:
    return NotFoundError(f"No {kind} found with id '{object_id}'.")


@dataclass(frozen=True, slots=True)
class Scope:
    stores: Stores
    bus: Bus
    models: ModelCatalog
    files: FileService
    vector_stores: VectorStoreService | None = None
    """Checks ``file_search`` vector store ids and makes the stores ``vector_stores`` asks for."""
    input_files: InputFiles | None = None
    """Reads the ``input_file`` parts of responses' input (none: such parts are refused)."""
    mcp: McpServers | None = None
    """Reaches remote MCP servers for the ``mcp`` tool (none: the tool is refused)."""
    project_id: str = DEFAULT_PROJECT
    """Every object the services create, find, list or delete is in this project."""
    clock: Callable[[], int] = now
    run_expiry_seconds: int = 600

    def for_project(self, project_id: str) -> Scope:
        """The same scope, seeing only ``project_id``'s objects (one per request: cheap)."""
        vector_stores = self.vector_stores.for_project(project_id) if self.vector_stores is not None else None
        return dataclasses.replace(
            self, project_id=project_id, files=self.files.for_project(project_id), vector_stores=vector_stores
        )

    def check_model(self, model: str, param: str = "model") -> None:
        if not self.models.routes(model):
            raise InvalidRequestError(
                f"The model '{model}' is not served here: no route matches it. "
                "See THREADLINE_MODELS_FILE or THREADLINE_UPSTREAM_BASE_URL.",
                param=param,
                code="model_not_found",
            )

    async def check_files(self, refs: Sequence[FileRef]) -> None:
        """Refuse a request naming files (attachments, ``image_file`` parts, tool resources) that
        this project does not have."""
        await self.files.check_references(refs)

    async def with_stores(self, resources: dict[str, Any] | None, at: str = "") -> dict[str, Any] | None:
        """``tool_resources`` once their ``file_search`` vector store ids are checked and the vector
        stores ``file_search.vector_stores`` describes are made: those named by id instead."""
        search = (resources or {}).get("file_search")
        if resources is None or search is None or self.vector_stores is None:
            return resources
        param = f"{at}tool_resources.file_search.vector_store_ids"
        await self.vector_stores.check_store_ids(search.get("vector_store_ids") or [], param)
        if search.get("vector_stores") is None:
            return resources
        made = [
            await self.vector_stores.create_store(
                name=None,
                metadata=helper.get("metadata"),
                expires_after=None,
                files=[NewFile(file_id) for file_id in helper.get("file_ids") or []],
                chunking_strategy=helper.get("chunking_strategy"),
            )
            for helper in search["vector_stores"]
        ]
        return {**resources, "file_search": {"vector_store_ids": [store.id for store in made]}}

    def store_plan(self, thread_id: str, messages: list[Message]) -> ThreadStorePlan | None:
        """Where files the messages attach for ``file_search`` go, if they attach any: the thread's
        own vector store (see :class:`ThreadStorePlan`)."""
        if self.vector_stores is None or not attached_search_files(messages):
            return None
        return self.vector_stores.thread_store_plan(thread_id)

    def ingest(self, joined: ThreadStoreFiles | None) -> None:
        """Wake the worker for the files the thread's store was just given (their jobs are saved)."""
        if joined is not None and joined.added and self.vector_stores is not None:
            self.vector_stores.jobs.wake()
