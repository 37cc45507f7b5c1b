"""Vector stores: the stores themselves, search over them, and the ingestion job.

``VectorStoreService`` backs ``/v1/vector_stores`` and its search, and the worker's ingestion job;
the files and file batches a request names inside a store are ``VectorStoreFiles``
(``vector_store_files.py``), which adds them through ``add_files`` here. Adding a file writes an
``in_progress`` row and queues a ``vector_store_file.ingest`` job; the request returns at once.
``ingest`` (the job's handler, run by a worker) reads the file's bytes and hands them to the
retrieval engine (parse, chunk, embed in a bounded child process, index), then moves the row to
``completed`` or ``failed`` with a reason; a file removed or cancelled meanwhile has its indexing
stopped. Every status move is a guarded write from ``in_progress``: a file cancelled or removed
while it was being indexed is not revived, and its chunks are taken out again. A store's ``file_counts``,
``usage_bytes`` and ``status`` are computed from its files' rows when it is read, so they cannot
drift; ``expired`` comes from ``expires_at``, which moves with ``last_active_at``.

A thread gets a store of its own when its messages attach files for ``file_search`` (as OpenAI's
threads did): the services hand the store a ``ThreadStorePlan`` with the messages, and the store
layer, in the transaction that writes them, adds the files to the store the thread names (a live
one: not deleted, not expired) or makes the planned store (named for the thread, expiring 7 days
after it was last active) and names it in the thread's ``tool_resources.file_search``. Deleting the
thread leaves its store to expire, as OpenAI's did.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from threadline.domain.clock import now
from threadline.domain.entities import (
    DEFAULT_PROJECT,
    FileBatch,
    Job,
    ListQuery,
    NewFile,
    Page,
    SearchHit,
    ThreadStorePlan,
    VectorStore,
    VectorStoreFile,
)
from threadline.domain.files import FileRef, FileService
from threadline.domain.ports.retrieval import ChunkingStrategy, PreparationFailed, RankingOptions, Retrieval
from threadline.domain.ports.storage import JobQueue, VectorStoreRepository
from threadline.domain.updates import KEEP, Keep
from threadline.errors import FileContentError, InvalidRequestError, NotFoundError, ThreadlineError
from threadline.ids import new_id

log = logging.getLogger(__name__)

INGEST_JOB = "vector_store_file.ingest"
FILE_STATUSES = ("in_progress", "completed", "failed", "cancelled")
DAY_SECONDS = 86_400
AUTO_CHUNKING: dict[str, Any] = {
    "type": "static",
    "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400},
}
"""What ``auto`` means, and how a file added with it reports its strategy (as OpenAI does)."""
THREAD_STORE_EXPIRY: dict[str, Any] = {"anchor": "last_active_at", "days": 7}
"""How long a thread's own store (made for its attachments) outlives its last use, as at OpenAI."""
# What the ids made here look like: others are not looked up (PostgreSQL refuses text with NUL).
_STORE_ID = re.compile(r"vs_[A-Za-z0-9]{1,64}")
WATCH_SECONDS = 0.5
"""How often a file being indexed is checked for removal or cancellation (which stops its indexing)."""


EngineSource = Callable[[], Awaitable[Retrieval]]
"""The retrieval engine, loaded on first use (the embedding model takes a moment to load)."""


def chunking_of(strategy: Mapping[str, Any] | None) -> dict[str, Any]:
    """A request's ``chunking_strategy`` as stored and reported: ``auto`` (or none) is 800/400."""
    if strategy is None or strategy.get("type") == "auto":
        return copy.deepcopy(AUTO_CHUNKING)
    return {"type": "static", "static": dict(strategy["static"])}


def expiry_at(expires_after: Mapping[str, Any] | None, last_active_at: int) -> int | None:
    """When a store with this ``expires_after`` expires, last active at ``last_active_at``."""
    return None if expires_after is None else last_active_at + int(expires_after["days"]) * DAY_SECONDS


class _ProgressReport:
    """An indexing file's progress, written to its row as the preparer reports it (the newest count
    only, one write at a time) and logged at every tenth of the file."""

    def __init__(self, stores: VectorStoreRepository, row: VectorStoreFile) -> None:
        self.stores = stores
        self.row = row
        self.latest: tuple[int, int] | None = None
        self.written: tuple[int, int] | None = None
        self.changed = asyncio.Event()

    def tell(self, done: int, total: int) -> None:
        self.latest = (done, total)
        self.changed.set()

    async def run(self) -> None:
        while True:
            await self.changed.wait()
            self.changed.clear()
            await self.write()

    async def write(self) -> None:
        latest = self.latest
        if latest is None or latest == self.written:
            return
        done, total = latest
        row = self.row
        await self.stores.file_progress(row.vector_store_id, row.id, row.chunking_strategy, done, total)
        before = self.written[0] if self.written else -1
        self.written = latest
        if done in (0, total) or (before * 10) // max(1, total) != (done * 10) // max(1, total):
            log.info(
                "vector store %s: file %s: %d of %d chunks embedded", row.vector_store_id, row.id, done, total
            )


def _matches(attributes: Mapping[str, Any] | None, condition: Mapping[str, Any]) -> bool:
    """Whether ``attributes`` satisfy a comparison (``eq``, ``ne``, ``gt`` ...) or compound filter."""
    kind = condition["type"]
    if kind in ("and", "or"):
        results = (_matches(attributes, f) for f in condition["filters"])
        return all(results) if kind == "and" else any(results)
    value, wanted = (attributes or {}).get(condition["key"]), condition["value"]
    if kind == "eq":
        return bool(value == wanted)
    if kind == "ne":
        return bool(value != wanted)
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (value, wanted))
    if not numbers and not (isinstance(value, str) and isinstance(wanted, str)):
        return False  # order is defined between numbers, or between strings, only
    ordered = {"gt": value > wanted, "gte": value >= wanted, "lt": value < wanted, "lte": value <= wanted}
    return bool(ordered[kind])


def without_overlap(chunks: Sequence[str]) -> list[str]:
    """Each chunk less its start that repeats the end of the chunk before (windows overlap, see
    ``retrieval/chunking.py``), so that the pieces joined are the text; a chunk whose start is not
    found at the end of the one before (no overlap, or one shorter than the probe) follows it on a
    new line, whole."""
    pieces: list[str] = []
    previous = ""
    for chunk in chunks:
        piece = "\n" + chunk if pieces else chunk
        probe = chunk[:_OVERLAP_PROBE]
        at = previous.find(probe) if probe else -1
        while at != -1:
            if chunk.startswith(previous[at:]):
                piece = chunk[len(previous) - at :]
                break
            at = previous.find(probe, at + 1)
        pieces.append(piece)
        previous = chunk
    return pieces


_OVERLAP_PROBE = 8
"""Characters of a chunk's start looked for in the chunk before (overlaps are longer)."""


@dataclass(frozen=True, slots=True)
class VectorStoreUpdate:
    """A modify-vector-store request: a ``metadata`` of ``None`` keeps the store's metadata, as
    OpenAI's does; ``name`` and ``expires_after`` may be set to ``None``."""

    name: str | Keep | None = KEEP
    metadata: dict[str, str] | Keep | None = KEEP
    expires_after: dict[str, Any] | Keep | None = KEEP


class VectorStoreService:
    """The stores of one project, search over them, and indexing their files (the job). Split by job
    from ``VectorStoreFiles``: what a store holds is handled there, what reads or changes the store
    as a whole (search touches its activity and expiry) or runs in the worker stays here."""

    def __init__(
        self,
        stores: VectorStoreRepository,
        files: FileService,
        jobs: JobQueue,
        engine: EngineSource,
        *,
        clock: Callable[[], int] = now,
        project_id: str = DEFAULT_PROJECT,
    ) -> None:
        self.stores = stores
        self.files = files
        self.jobs = jobs
        self.engine = engine
        self.clock = clock
        self.project_id = project_id

    def for_project(self, project_id: str) -> VectorStoreService:
        scoped = copy.copy(self)
        scoped.project_id = project_id
        scoped.files = self.files.for_project(project_id)
        return scoped

    # --- stores ----------------------------------------------------------------------------

    async def create_store(
        self,
        *,
        name: str | None,
        metadata: dict[str, str] | None,
        expires_after: dict[str, Any] | None,
        files: Sequence[NewFile] = (),
        chunking_strategy: dict[str, Any] | None = None,
    ) -> VectorStore:
        await self.check_files([f.file_id for f in files], "file_ids")
        created_at = self.clock()
        store = VectorStore(
            id=new_id("vector_store"),
            project_id=self.project_id,
            created_at=created_at,
            name=name,
            metadata=metadata or {},
            expires_after=expires_after,
            expires_at=expiry_at(expires_after, created_at),
            last_active_at=created_at,
        )
        await self.stores.insert_store(store)
        await self.add_files(store.id, files, chunking_strategy, None)
        return await self.get_store(store.id)

    def thread_store_plan(self, thread_id: str) -> ThreadStorePlan:
        """How files attached for ``file_search`` on ``thread_id`` are stored: in the store it names,
        or in a new one named for the thread, expiring 7 days after it was last active."""
        at = self.clock()
        store = VectorStore(
            id=new_id("vector_store"),
            project_id=self.project_id,
            created_at=at,
            name=thread_id,
            metadata={},
            expires_after=dict(THREAD_STORE_EXPIRY),
            expires_at=expiry_at(THREAD_STORE_EXPIRY, at),
            last_active_at=at,
        )
        return ThreadStorePlan(store, at, self.ingest_job)

    async def get_store(self, store_id: str) -> VectorStore:
        store = (
            await self.stores.get_store(store_id, self.project_id) if _STORE_ID.fullmatch(store_id) else None
        )
        if store is None:
            raise NotFoundError(f"No vector store found with id '{store_id}'.", param="vector_store_id")
        return store

    async def list_stores(self, query: ListQuery) -> Page[VectorStore]:
        return await self.stores.list_stores(query, self.project_id)

    async def modify_store(self, store_id: str, update: VectorStoreUpdate) -> VectorStore:
        store = await self.get_store(store_id)
        if not isinstance(update.name, Keep):
            store.name = update.name
        if update.metadata is not None and not isinstance(update.metadata, Keep):
            store.metadata = update.metadata
        if not isinstance(update.expires_after, Keep):
            store.expires_after = update.expires_after
            store.expires_at = expiry_at(store.expires_after, store.last_active_at)
        await self.stores.update_store(store)
        return store

    async def delete_store(self, store_id: str) -> None:
        if not await self.stores.delete_store(store_id, self.project_id):
            raise NotFoundError(f"No vector store found with id '{store_id}'.", param="vector_store_id")
        await (await self.engine()).remove(store_id)

    async def check_store_ids(self, store_ids: Sequence[str], param: str) -> None:
        """Refuse a request naming a vector store this project does not have (OpenAI's 400)."""
        plausible = [store_id for store_id in store_ids if _STORE_ID.fullmatch(store_id)]
        found = await self.stores.existing_store_ids(plausible, self.project_id) if plausible else set()
        for index, store_id in enumerate(store_ids):
            if store_id not in found:
                raise InvalidRequestError(
                    f"No vector store found with id '{store_id[:100]}'.", param=f"{param}[{index}]"
                )

    # --- adding files (here and in ``VectorStoreFiles``) -------------------------------------

    async def check_files(self, file_ids: Sequence[str], param: str) -> None:
        await self.files.check_references([FileRef(fid, f"{param}[{i}]") for i, fid in enumerate(file_ids)])

    async def add_files(
        self,
        store_id: str,
        files: Sequence[NewFile],
        chunking_strategy: dict[str, Any] | None,
        batch: FileBatch | None,
        attributes: dict[str, Any] | None = None,
    ) -> list[VectorStoreFile]:
        created_at = self.clock()
        rows = [
            VectorStoreFile(
                id=f.file_id,
                vector_store_id=store_id,
                project_id=self.project_id,
                created_at=created_at,
                status="in_progress",
                chunking_strategy=chunking_of(f.chunking_strategy or chunking_strategy),
                attributes=f.attributes if f.attributes is not None else attributes,
                batch_id=batch.id if batch else None,
            )
            for f in {f.file_id: f for f in files}.values()
        ]
        # The rows and their ingestion jobs commit together: no file is left in_progress with no job.
        await self.stores.add_files(rows, batch, [self.ingest_job(store_id, row.id) for row in rows])
        self.jobs.wake()
        return rows

    def ingest_job(self, store_id: str, file_id: str) -> Job:
        """The job that indexes a file just written ``in_progress`` into a store (not saved yet)."""
        payload = {"vector_store_id": store_id, "file_id": file_id, "project_id": self.project_id}
        return self.jobs.new_job(INGEST_JOB, payload)

    async def indexing(self, store_ids: Sequence[str]) -> int:
        """How many files of these stores are still being indexed (gone or expired stores: none)."""
        at, pending = self.clock(), 0
        for store_id in store_ids:
            if not _STORE_ID.fullmatch(store_id):
                continue
            store = await self.stores.get_store(store_id, self.project_id)
            if store is not None and store.status(at) != "expired":
                pending += store.file_counts.in_progress
        return pending

    # --- search ----------------------------------------------------------------------------

    async def search(
        self,
        store_id: str,
        queries: Sequence[str],
        max_num_results: int,
        score_threshold: float,
        filters: Mapping[str, Any] | None,
    ) -> list[SearchHit]:
        await self._searchable(store_id)
        return await self._hits([store_id], "\n".join(queries), max_num_results, score_threshold, filters)

    async def search_stores(
        self, store_ids: Sequence[str], query: str, max_num_results: int, score_threshold: float
    ) -> list[SearchHit]:
        """One ranking over several stores (an assistant's and its thread's: the ``file_search``
        tool), so a store holding only weak matches cannot put its best one first. Stores expired or
        deleted since the run started are skipped: there is nothing to find in them."""
        searchable = []
        for store_id in dict.fromkeys(store_ids):
            try:
                await self._searchable(store_id)
            except ThreadlineError:
                continue
            searchable.append(store_id)
        if not searchable:
            return []
        return await self._hits(searchable, query, max_num_results, score_threshold, None)

    async def _searchable(self, store_id: str) -> None:
        """Refuse an expired store; a search keeps the store active (its expiry moves on)."""
        store = await self.get_store(store_id)
        at = self.clock()
        if store.status(at) == "expired":
            raise InvalidRequestError(
                f"Vector store '{store_id}' has expired and can no longer be searched.",
                param="vector_store_id",
            )
        store.last_active_at = at
        store.expires_at = expiry_at(store.expires_after, at)
        await self.stores.update_store(store)

    async def _hits(
        self,
        store_ids: Sequence[str],
        query: str,
        max_num_results: int,
        score_threshold: float,
        filters: Mapping[str, Any] | None,
    ) -> list[SearchHit]:
        # With filters, rank more than asked for: results are filtered after ranking.
        depth = 50 if filters else max_num_results
        engine = await self.engine()
        found = await engine.search(store_ids, query, RankingOptions(depth, score_threshold))
        rows: dict[tuple[str, str], VectorStoreFile] = {}
        for store_id in store_ids:
            wanted = {r.file_id for r in found if r.vector_store_id == store_id}
            if wanted:
                rows.update(((store_id, f.id), f) for f in await self.stores.files_by_id(store_id, wanted))
        hits: list[SearchHit] = []
        seen: set[tuple[str, str]] = set()
        for result in found:
            row = rows.get((result.vector_store_id, result.file_id))
            if row is None or row.status != "completed":
                continue  # removed or cancelled since it was indexed
            if filters and not _matches(row.attributes, filters):
                continue
            if (row.id, result.text) in seen:
                continue  # the same file in two of the stores
            seen.add((row.id, result.text))
            filename = (await self.files.get_file(row.id)).filename
            hits.append(SearchHit(row.id, filename, result.score, row.attributes, result.text))
            if len(hits) == max_num_results:
                break
        return hits

    # --- ingestion -------------------------------------------------------------------------

    async def ingest_given_up(self, job: Job) -> None:
        """An ingestion job failed for good because its worker died on the last attempt: its file ends
        ``failed`` rather than staying ``in_progress``."""
        error = {"code": "server_error", "message": "Indexing the file stopped: the worker running it died."}
        await self.stores.finish_file(
            job.payload["vector_store_id"], job.payload["file_id"], "failed", 0, error
        )

    async def ingest(self, job: Job) -> None:
        """The ``vector_store_file.ingest`` job: index one file; safe to run again after a crash.

        While it runs, the file's row is watched: a file removed or cancelled meanwhile (its store
        deleted, its batch cancelled) stops the work at once (the preparer kills its process)."""
        store_id, file_id = job.payload["vector_store_id"], job.payload["file_id"]
        scoped = self.for_project(job.payload["project_id"])
        row = await self.stores.get_file(store_id, file_id, scoped.project_id)
        if row is None or row.status != "in_progress":
            return  # removed or cancelled before its turn
        engine = await self.engine()
        work = asyncio.ensure_future(self._index(scoped, engine, row))
        watch = asyncio.ensure_future(self._until_stopped(store_id, file_id, scoped.project_id))
        try:
            await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (work, watch):
                if not task.done():
                    task.cancel()
            await asyncio.gather(work, watch, return_exceptions=True)
        if work.cancelled():
            log.info(
                "vector store %s: file %s was removed or cancelled while it was indexed", store_id, file_id
            )
            await engine.remove(store_id, file_id)
            return
        try:
            size = work.result()
        except (FileContentError, NotFoundError, PreparationFailed) as exc:
            # The file's own fault (a limit, a damaged file) or a crash retrying will not mend.
            code = (
                exc.code
                if exc.code in ("unsupported_file", "invalid_file", "server_error")
                else "invalid_file"
            )
            await self.stores.finish_file(
                store_id, file_id, "failed", 0, {"code": code, "message": exc.message}
            )
            return
        except Exception as exc:
            if job.attempts >= job.max_attempts:
                # The last try: the file must not stay in_progress forever.
                error = {"code": "server_error", "message": f"Indexing the file failed: {exc}"}
                await self.stores.finish_file(store_id, file_id, "failed", 0, error)
            raise
        if not await self.stores.finish_file(store_id, file_id, "completed", size, None):
            # Cancelled or removed while it was indexed: its chunks must not be found.
            await engine.remove(store_id, file_id)

    async def _index(self, scoped: VectorStoreService, engine: Retrieval, row: VectorStoreFile) -> int:
        """Index the file of ``row``; returns its size in bytes."""
        file, chunks = await scoped.files.file_content(row.id)
        data = b"".join([chunk async for chunk in chunks])
        static = row.chunking_strategy["static"]
        strategy = ChunkingStrategy(static["max_chunk_size_tokens"], static["chunk_overlap_tokens"])
        report = _ProgressReport(self.stores, row)
        writing = asyncio.ensure_future(report.run())
        try:
            await engine.ingest(
                row.vector_store_id, row.id, file.filename, data, strategy, scoped.project_id, report.tell
            )
        finally:
            writing.cancel()
            await asyncio.gather(writing, return_exceptions=True)
        await report.write()  # the last count, if the loop was stopped before it
        return file.bytes

    async def _until_stopped(self, store_id: str, file_id: str, project_id: str) -> None:
        """Return once the file is no longer ``in_progress`` in its store (removed, cancelled)."""
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            try:
                row = await self.stores.get_file(store_id, file_id, project_id)
            except Exception:
                log.warning("vector store %s: could not check file %s", store_id, file_id, exc_info=True)
                continue
            if row is None or row.status != "in_progress":
                return
