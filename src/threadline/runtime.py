"""The running parts of one Threadline process, built from settings in one place.

``serve`` (the API app's lifespan), ``worker`` and ``assistants apply`` all open a ``Runtime``:
the database and the stores, the blob store for files' bytes, the background job queue, the event bus
(PostgreSQL LISTEN/NOTIFY when the database is PostgreSQL, in-process otherwise), the model
routing table, the server-side tools and the services.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from sqlalchemy.engine import make_url

from threadline.api import response_recording
from threadline.config import Settings
from threadline.domain.entities import Message, Run, RunStep, Thread
from threadline.domain.files import FileService, UploadedImages
from threadline.domain.input_files import InputFiles
from threadline.domain.ports.storage import BlobStore, Stores
from threadline.domain.ports.tool_services import Passage
from threadline.domain.ports.tools import Tool, ToolError
from threadline.domain.projects import Projects
from threadline.domain.scope import Scope
from threadline.domain.service_set import ServiceSet
from threadline.domain.vector_store_files import VectorStoreFiles
from threadline.domain.vector_stores import INGEST_JOB, VectorStoreService
from threadline.errors import ServiceUnavailableError, ThreadlineError
from threadline.events.bus import LocalBus
from threadline.metrics import Metrics
from threadline.providers.embeddings import embedder_for
from threadline.providers.routing import RoutingTable, build_router
from threadline.providers.tokenizers import tiktoken_encoding
from threadline.retrieval.engine import RetrievalEngine
from threadline.retrieval.parsing import ParseLimits
from threadline.store import Database, pgvector, sql_stores
from threadline.store.blobs import open_blob_store
from threadline.store.chunks import SqlChunkIndex
from threadline.store.files import SqlFileStore
from threadline.store.jobs import SqlJobQueue
from threadline.store.vector_stores import SqlVectorStoreRepository
from threadline.tools.code_interpreter import CodeInterpreterTool
from threadline.tools.file_search import FileSearchTool
from threadline.tools.registry import ToolRegistry
from threadline.tools.remote.guard import RemoteGuard
from threadline.tools.remote.mcp import McpClient, McpGateway
from threadline.tools.remote.search import build_search
from threadline.tools.remote.web_search import WebSearchTool
from threadline.tools.sandbox.launcher import SandboxLimits
from threadline.tools.sandbox.pool import SandboxPool
from threadline.workers.ingestion import IngestionProcesses
from threadline.workers.jobs import Handler
from threadline.workers.worker import Worker

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    stores: Stores
    bus: LocalBus
    router: RoutingTable
    services: ServiceSet
    metrics: Metrics
    projects: Projects
    files: FileService
    blobs: BlobStore
    jobs: SqlJobQueue
    vector_stores: VectorStoreService
    vector_store_files: VectorStoreFiles
    tools: ToolRegistry
    model_start: asyncio.Task[list[str]] | None = None
    """Embedded models starting in the background (``/readyz`` says not ready meanwhile)."""
    engine: LazyEngine | None = None

    @classmethod
    async def open(
        cls,
        settings: Settings,
        router: RoutingTable | None = None,
        tools: ToolRegistry | None = None,
        *,
        start_models: bool = False,
    ) -> Runtime:
        """Open everything; with ``start_models``, embedded models load and run their start-up check
        in the background (processes that run the model: a worker, or ``serve`` with its worker)."""
        blobs = open_blob_store(settings)  # first: a misconfigured store fails before anything opens
        await blobs.remove_abandoned()
        db = Database(
            settings.effective_database_url,
            pool_size=settings.database_pool_size,
            busy_timeout=settings.database_busy_timeout_seconds,
        )
        try:
            dense_in_database = await _dense_ranking_in_database(settings, db)
        except BaseException:
            await db.dispose()
            raise
        metrics = Metrics()
        stores = sql_stores(db, on_run_moved=metrics.run_moved)
        bus: LocalBus
        if db.is_sqlite:
            bus = LocalBus()
        else:
            from threadline.events.pg import PostgresBus

            dsn = make_url(db.url).set(drivername="postgresql").render_as_string(hide_password=False)
            pg_bus = PostgresBus(dsn, _loader(stores))
            await pg_bus.start()
            bus = pg_bus
        routes = router or build_router(settings)
        log.info("models: %s", routes.describe())
        files = FileService(SqlFileStore(db), blobs, max_bytes=settings.file_max_bytes)
        jobs = SqlJobQueue(db, max_attempts=settings.job_max_attempts)
        engine = LazyEngine(settings, db, dense_in_database)
        vector_stores = VectorStoreService(SqlVectorStoreRepository(db), files, jobs, engine.get)
        guard = RemoteGuard.from_settings(settings)
        input_files = InputFiles(
            IngestionProcesses(settings),
            max_characters=settings.input_file_max_characters,
            max_bytes=settings.file_max_bytes,
            fetcher=guard,
        )
        mcp = McpGateway(
            McpClient(guard.httpx_client_factory, timeout=settings.mcp_timeout_seconds),
            settings.secret_key,
        )
        scope = Scope(
            stores,
            bus,
            routes,
            files,
            vector_stores=vector_stores,
            input_files=input_files,
            mcp=mcp,
            run_expiry_seconds=settings.run_expiry_seconds,
        )
        services = ServiceSet.of(scope)
        projects = Projects(stores.projects, legacy_key=settings.api_key)
        runtime = cls(
            settings,
            db,
            stores,
            bus,
            routes,
            services,
            metrics,
            projects,
            files,
            blobs,
            jobs,
            vector_stores,
            VectorStoreFiles(vector_stores),
            tools or build_tools(settings, files, vector_stores, guard),
            engine=engine,
        )
        if start_models and routes.local_models():
            runtime.model_start = asyncio.create_task(routes.start_local_models())
        return runtime

    def job_handlers(self) -> dict[str, Handler]:
        """The background jobs this process's worker runs, by kind."""
        return {INGEST_JOB: self.vector_stores.ingest}

    def worker(self, job_handlers: Mapping[str, Handler] | None = None) -> Worker:
        """A worker on this runtime: its runs, its jobs (plus ``job_handlers``), metrics fed."""
        return Worker(
            self.settings,
            self.stores,
            self.bus,
            self.router,
            self.jobs,
            {**self.job_handlers(), **(job_handlers or {})},
            self.tools,
            observe_model_call=self.metrics.model_called,
            observe_job=self.metrics.job_attempted,
            images=UploadedImages(self.files),
            job_give_ups={INGEST_JOB: self.vector_stores.ingest_given_up},
            on_claim=partial(response_recording.take_over, self.services.responses),
            interruptible_jobs={INGEST_JOB},
            mcp=self.services.scope.mcp,
        )

    async def aclose(self) -> None:
        await self.tools.aclose()
        if self.model_start is not None:
            self.model_start.cancel()
            await asyncio.gather(self.model_start, return_exceptions=True)
        await self.blobs.aclose()
        await self.bus.aclose()
        await self.router.aclose()
        if self.engine is not None:
            self.engine.close()
        await self.db.dispose()


class LazyEngine:
    """The retrieval engine, built on first use: loading the embedding model takes a moment and
    memory that processes never searching or ingesting need not pay."""

    def __init__(self, settings: Settings, db: Database, dense_in_database: bool) -> None:
        self.settings = settings
        self.db = db
        self.dense_in_database = dense_in_database
        self._engine: RetrievalEngine | None = None
        self._building = asyncio.Lock()

    async def get(self) -> RetrievalEngine:
        async with self._building:
            if self._engine is None:
                embedder = await asyncio.to_thread(embedder_for, self.settings)
                limits = ParseLimits.from_settings(self.settings)
                codec = tiktoken_encoding("cl100k_base")
                index = SqlChunkIndex(
                    self.db,
                    dense_in_database=self.dense_in_database,
                    ef_search=self.settings.pgvector_ef_search,
                )
                # Files are parsed and embedded in bounded child processes; this process's model embeds queries.
                self._engine = RetrievalEngine(
                    index, embedder, codec, limits, IngestionProcesses(self.settings)
                )
            return self._engine

    def close(self) -> None:
        """Close the embedder's connections (an embeddings server's client), if it was built."""
        close = getattr(self._engine.embedder, "close", None) if self._engine is not None else None
        if close is not None:
            close()


async def _dense_ranking_in_database(settings: Settings, db: Database) -> bool:
    """Whether file search ranks by cosine with pgvector (``THREADLINE_PGVECTOR``), making it ready if so."""
    mode = settings.pgvector
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"THREADLINE_PGVECTOR: expected 'auto', 'on' or 'off', got {mode!r}")
    if not 1 <= settings.pgvector_ef_search <= 1000:
        raise ValueError(
            f"THREADLINE_PGVECTOR_EF_SEARCH: expected 1..1000, got {settings.pgvector_ef_search}"
        )
    if mode == "off" or (db.is_sqlite and mode == "auto"):
        return False
    reason = "pgvector needs PostgreSQL" if db.is_sqlite else await pgvector.enable(db)
    if reason is None:
        log.info("file search: cosine ranking in PostgreSQL on pgvector's HNSW index")
        return True
    if mode == "on":
        raise ServiceUnavailableError(f"THREADLINE_PGVECTOR=on, but {reason}")
    log.info("file search: cosine ranking in memory (pgvector not used: %s)", reason)
    return False


def build_tools(
    settings: Settings, files: FileService, vector_stores: VectorStoreService, guard: RemoteGuard
) -> ToolRegistry:
    """The server-side tools this process runs: code_interpreter in the sandbox (which refuses,
    saying why, where no sandbox can be made), file_search over the vector stores, and web_search
    when a search backend is configured (through the remote guard)."""
    pool = SandboxPool(SandboxLimits.from_settings(settings))
    backend = ToolBackend(files, vector_stores)
    search = FileSearchTool(backend, wait_seconds=settings.file_search_wait_seconds)
    tools: list[Tool] = [CodeInterpreterTool(pool, backend), search]
    web = build_search(settings, guard)
    if web is not None:
        tools.append(
            WebSearchTool(
                web,
                guard,
                page_characters=settings.web_search_page_characters,
                max_characters=settings.web_search_max_characters,
            )
        )
    return ToolRegistry(tools)


class ToolBackend:
    """The files and vector stores the built-in tools work with, each call within the project it
    names (tools cannot see the domain; see :mod:`threadline.domain.ports.tool_services`)."""

    def __init__(self, files: FileService, vector_stores: VectorStoreService) -> None:
        self.files = files
        self.vector_stores = vector_stores

    async def read(self, project_id: str, file_id: str, limit: int) -> tuple[str, bytes]:
        try:
            file, data = await self.files.for_project(project_id).read_bytes(file_id, limit)
        except ThreadlineError as exc:
            raise ToolError(f"The file {file_id} cannot be placed in /mnt/data: {exc}") from None
        return file.filename, data

    async def save(self, project_id: str, filename: str, data: bytes, content_type: str) -> str:
        return (await self.files.for_project(project_id).save_output(filename, data, content_type)).id

    async def search(
        self, project_id: str, store_ids: Sequence[str], query: str, limit: int, score_threshold: float
    ) -> list[Passage]:
        service = self.vector_stores.for_project(project_id)
        hits = await service.search_stores(store_ids, query, limit, score_threshold)
        return [Passage(h.file_id, h.filename, h.score, h.text) for h in hits]

    async def indexing(self, project_id: str, store_ids: Sequence[str]) -> int:
        return await self.vector_stores.for_project(project_id).indexing(store_ids)


def _loader(stores: Stores) -> Callable[[str, str], Awaitable[Thread | Run | RunStep | Message | None]]:
    """How the PostgreSQL bus reads back an object whose event was too large to send."""

    async def load(kind: str, object_id: str) -> Thread | Run | RunStep | Message | None:
        if kind == "run":
            return await stores.runs.get_by_id(object_id)
        if kind == "step":
            return await stores.runs.get_step_by_id(object_id)
        if kind == "message":
            found = await stores.threads.messages_by_id([object_id])
            return found[0] if found else None
        return await stores.threads.get(object_id)

    return load
